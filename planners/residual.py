"""Residual RL on the PI controller: an agent adds a bounded correction to PI's demand.

Residual policy learning (Silver et al. 2018, "Residual Policy Learning"; Johannink et al. 2019,
"Residual Reinforcement Learning for Robot Control") starts the agent from a working controller
instead of from random actions: the agent's action ``u`` in ``[-1, 1]^2`` becomes a residual
``bound * u`` (action units: ``[-1, 1]`` spans the full stroke) added to the PI loops' fuel and
air demand, and PI's safety layer (:func:`furnace_env.pi.safety_layer`: the air/fuel cross-limits and
the CO override) is applied *after* the residual. Whatever the agent asks, fuel never exceeds
what the measured air burns, air never falls below what the measured fuel needs, and while
measured CO is above the override threshold the residual can only take fuel away and add air.
With ``u = 0`` the commands are exactly PI's.

The agent observes what PI observes (the env's 8 measurements) plus PI's own action (what PI
alone would send this step), 10 inputs in all.

* :class:`ResidualPI` is that interface, written once: :meth:`~ResidualPI.observe` advances PI
  by one step and returns the agent's observation, :meth:`~ResidualPI.act` turns the agent's
  action into env commands.
* :class:`ResidualPIWrapper` offers it to a training agent as a gymnasium env.
* :class:`planners.sb3_policy.SB3Policy` uses it at evaluation (a zip whose
  ``furnace_env_record`` holds ``residual``: :func:`residual_record`, :func:`residual_from_record`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from furnace_env.physics import FurnaceParams, is_real
from furnace_env.pi import PIConfig, PIController, PIDemand, safety_layer

__all__ = ["DEFAULT_RESIDUAL_BOUND", "ResidualPI", "ResidualPIWrapper", "residual_record",
           "residual_from_record"]

#: Default bound of the residual, action units (0.1: 5 % of full flow either way).
DEFAULT_RESIDUAL_BOUND = 0.1


class ResidualPI:
    """PI plus a bounded residual under PI's safety layer, on a batch of ``N`` furnaces.

    ``bound``: the largest residual, action units, in ``(0, 2]``. ``pi_config`` and ``params``:
    the PI controller's gains and the plant's actuator ranges (defaults: the tuned PI, nominal
    plant). Call :meth:`observe` then :meth:`act` once per control step.
    """

    def __init__(self, bound: float = DEFAULT_RESIDUAL_BOUND, pi_config: PIConfig | None = None,
                 params: FurnaceParams | None = None) -> None:
        if not (is_real(bound) and math.isfinite(bound) and 0.0 < bound <= 2.0):
            raise ValueError(f"residual bound={bound!r} must be a number in (0, 2] (action units)")
        self.bound = float(bound)
        self.pi = PIController(pi_config, params)
        self._demand: PIDemand | None = None
        self._pi_action: np.ndarray | None = None

    def reset(self) -> None:
        """Start a new episode (PI restarts bumpless from the next observation)."""
        self.pi.reset()
        self._demand = self._pi_action = None

    def observe(self, obs: np.ndarray) -> np.ndarray:
        """Advance PI on env observations ``[N, 8]``; the agent's observations ``[N, 10]``
        (the measurements, then PI's own action)."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != 8:
            raise ValueError(f"observations of shape {obs.shape}; expected (N, 8) env observations")
        self._demand = self.pi.demand(obs)
        self._pi_action = safety_layer(self._demand)
        return np.concatenate([obs, self._pi_action], axis=1).astype(np.float32)

    @property
    def demand(self) -> PIDemand:
        """PI's demand and limits at the last observation (what the residual is added to)."""
        if self._demand is None:
            raise RuntimeError("ResidualPI.demand before observe(): call observe(obs) first")
        return self._demand

    @property
    def pi_action(self) -> np.ndarray:
        """PI's own action ``[N, 2]`` at the last observation (residual zero)."""
        if self._pi_action is None:
            raise RuntimeError("ResidualPI.pi_action before observe(): call observe(obs) first")
        return self._pi_action

    def act(self, action: np.ndarray) -> np.ndarray:
        """Env commands ``[N, 2]`` for the agent's actions ``[N, 2]`` (clipped to [-1, 1], scaled by
        ``bound``, added to the last observation's PI demand, then PI's safety layer)."""
        if self._demand is None:
            raise RuntimeError("ResidualPI.act before observe(): call observe(obs) first")
        u = np.asarray(action, dtype=np.float64).reshape(len(self._demand.fuel), 2)
        return safety_layer(self._demand, self.bound * np.clip(u, -1.0, 1.0))


class ResidualPIWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A Furnace-v0 env whose actions are residuals on PI and whose observations include PI's action.

    Observation: the env's 8 measurements, then PI's action (fuel, air command in [-1, 1]): 10
    values. Action: the residual ``u`` in ``[-1, 1]^2``, applied as ``bound * u`` under PI's
    safety layer (:class:`ResidualPI`). ``info`` gains ``pi_action`` and ``applied_action`` (the
    env command after the safety layer). The reward, termination and truncation are the env's.
    """

    def __init__(self, env: gym.Env, bound: float = DEFAULT_RESIDUAL_BOUND,
                 pi_config: PIConfig | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, bound=bound, pi_config=pi_config)
        gym.Wrapper.__init__(self, env)
        if env.observation_space.shape != (8,):
            raise ValueError(f"ResidualPIWrapper needs the env's 8 measurements; got observations of shape "
                             f"{env.observation_space.shape} (wrap the plain Furnace-v0 env)")
        self.residual = ResidualPI(bound, pi_config, env.unwrapped.params)
        low = np.concatenate([env.observation_space.low, [-1.0, -1.0]]).astype(np.float32)
        high = np.concatenate([env.observation_space.high, [1.0, 1.0]]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.residual.reset()
        return self.residual.observe(obs[None])[0], info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        pi_action = self.residual.pi_action[0]
        applied = self.residual.act(np.asarray(action)[None])[0]
        obs, reward, terminated, truncated, info = self.env.step(applied)
        info = {**info, "pi_action": pi_action, "applied_action": applied}
        return self.residual.observe(obs[None])[0], reward, terminated, truncated, info


def residual_record(bound: float, pi_config: PIConfig | None = None) -> dict[str, Any]:
    """The residual's settings as saved in a model zip's ``furnace_env_record["residual"]`` (JSON)."""
    cfg = pi_config if pi_config is not None else PIConfig()
    return {"bound": float(bound), "pi": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in dataclasses.asdict(cfg).items()}}


def residual_from_record(record: dict[str, Any], params: FurnaceParams | None = None) -> ResidualPI:
    """The :class:`ResidualPI` a zip's ``residual`` record describes (the gains it was trained on)."""
    pi = dict(record.get("pi") or {})
    if "trim_limits" in pi:
        pi["trim_limits"] = tuple(pi["trim_limits"])
    return ResidualPI(float(record["bound"]), PIConfig(**pi), params)
