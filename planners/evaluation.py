"""Evaluation as free functions that work for any controller with ``predict`` (SB3 models included)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from furnace_env.cost import CostWeights
from furnace_env.scenarios import Scenario

__all__ = ["Episode", "run_episode", "episode_metrics", "normalised_score"]


@dataclass
class Episode:
    """One evaluated episode: arrays over the ``T`` steps taken (observations include the first)."""

    obs: np.ndarray
    """Observations ``[T + 1, 8]`` as the controller saw them."""
    obs_clean: np.ndarray
    """Noise-free measurements ``[T + 1, 8]`` (what the reward is computed on)."""
    actions: np.ndarray
    """Actions applied, ``[T, 2]`` (after clipping)."""
    rewards: np.ndarray
    """Rewards ``[T]``."""
    fuel: np.ndarray
    """True fuel flow at the end of each step, kg/s ``[T]``."""
    co_true: np.ndarray
    """True flue CO at the end of each step, ppm ``[T]``."""
    trip: str
    """Trip reason, or ``""``."""
    latency: np.ndarray
    """Wall-clock seconds of each ``predict`` call ``[T]``."""
    dt: float
    """Control step, s."""
    extras: dict[str, Any] = field(default_factory=dict)


def run_episode(controller, env: gym.Env, seed: int, deterministic: bool = True,
                options: dict | None = None,
                perturb: Callable[[np.ndarray], np.ndarray] | None = None) -> Episode:
    """Run one episode of ``controller`` on ``env`` from ``env.reset(seed=seed)``.

    ``perturb(action) -> action``, when given, changes each action before it reaches the plant
    (exploration noise); the controller is told the applied action through its ``applied``
    method where it has one, and the episode records the applied actions.
    """
    if hasattr(controller, "reset") and not hasattr(controller, "policy"):
        controller.reset()
    obs, info = env.reset(seed=seed, options=options)
    obs_l, clean_l, act_l, rew_l, fuel_l, co_l, lat_l = [obs], [info["obs_clean"]], [], [], [], [], []
    state, start = None, np.ones((1,), dtype=bool)
    trip = ""
    while True:
        t0 = time.perf_counter()
        action, state = controller.predict(obs, state=state, episode_start=start, deterministic=deterministic)
        lat_l.append(time.perf_counter() - t0)
        start = np.zeros((1,), dtype=bool)
        if perturb is not None:
            action = perturb(action)
            if callable(getattr(controller, "applied", None)):
                controller.applied(action)
        obs, reward, terminated, truncated, info = env.step(action)
        obs_l.append(obs)
        clean_l.append(info["obs_clean"])
        act_l.append(np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0))
        rew_l.append(reward)
        fuel_l.append(info["fuel_flow_true"])
        co_l.append(info["co_true"])
        if terminated or truncated:
            trip = info["trip"]
            break
    unwrapped = env.unwrapped
    extras_fn = getattr(controller, "episode_extras", None)
    return Episode(
        obs=np.asarray(obs_l), obs_clean=np.asarray(clean_l), actions=np.asarray(act_l),
        rewards=np.asarray(rew_l, dtype=np.float64), fuel=np.asarray(fuel_l), co_true=np.asarray(co_l),
        trip=trip, latency=np.asarray(lat_l), dt=float(unwrapped.params.dt),
        extras=extras_fn() if callable(extras_fn) else {},
    )


def episode_metrics(ep: Episode, weights: CostWeights | None = None) -> dict[str, float]:
    """Per-episode metrics on the noise-free measurements.

    ``return``; ``iae`` (integral of |T - T_sp| over time, K s); ``fuel_kg``; ``violation_share``
    (share of steps with measured CO above its limit or O2 below its minimum);
    ``co_ppm_s`` (integral of measured CO above the limit, ppm s); ``trips`` (0/1);
    ``latency_ms`` (mean per-step ``predict`` time); ``travel_fuel`` and ``travel_air``: how far
    each actuator's command moved, in full strokes (closed to open: 2 action units) per hour of
    operation, the valve-wear figure a control engineer checks before putting a controller on a
    plant (a command held still travels 0; one that flips between the ends every step travels
    720 strokes per hour at the 5 s step). A supervised controller's record adds
    ``trust_held_share``, ``trust_alarms`` and ``trust_first_alarm`` (the step of its first alarm, -1: none).
    """
    w = weights if weights is not None else CostWeights()
    clean = ep.obs_clean
    # Step k's error: temperature at its end against the setpoint in force during it.
    err = clean[1:, 0] - clean[:-1, 1]
    co = clean[1:, 3]
    o2 = clean[1:, 2]
    violated = (co > w.co_limit) | (o2 < w.o2_min)
    hours = len(ep.actions) * ep.dt / 3600.0
    travel = (np.abs(np.diff(ep.actions, axis=0)).sum(axis=0) / 2.0 / hours
              if len(ep.actions) > 1 else np.zeros(2))
    return {
        "return": float(ep.rewards.sum()),
        "iae": float(np.abs(err).sum() * ep.dt),
        "fuel_kg": float(ep.fuel.sum() * ep.dt),
        "violation_share": float(violated.mean()) if len(violated) else 0.0,
        "co_ppm_s": float(np.maximum(co - w.co_limit, 0.0).sum() * ep.dt),
        "trips": float(ep.trip != ""),
        "latency_ms": float(ep.latency.mean() * 1e3) if len(ep.latency) else 0.0,
        "steps": float(len(ep.rewards)),
        "travel_fuel": float(travel[0]),
        "travel_air": float(travel[1]),
        # A supervised controller's record: the share of steps its fallback held control, and its alarms.
        **({"trust_held_share": float(np.mean(ep.extras["trust_held"])) if len(ep.extras["trust_held"]) else 0.0,
            "trust_alarms": float(ep.extras.get("trust_alarms", 0)),
            "trust_first_alarm": float(np.argmax(ep.extras["trust_held"])) if np.any(ep.extras["trust_held"]) else -1.0}
           if "trust_held" in ep.extras else {}),
    }


def normalised_score(ret: float | np.ndarray, ret_ref: float | np.ndarray,
                     ret_oracle: float | np.ndarray) -> float | np.ndarray:
    """Score on the scale reference PI = 0, oracle = 1: ``(R - R_pi) / (R_oracle - R_pi)``."""
    denom = np.asarray(ret_oracle, dtype=np.float64) - np.asarray(ret_ref, dtype=np.float64)
    if np.any(np.abs(denom) < 1e-9):
        raise ValueError(f"oracle return {ret_oracle!r} equals the reference's {ret_ref!r}: score undefined")
    return (np.asarray(ret, dtype=np.float64) - ret_ref) / denom


def make_scenario_env(scenario: str | Scenario, **kw: Any) -> gym.Env:
    """``gym.make("Furnace-v0", scenario=...)`` with the project's defaults.

    The ``TimeLimit`` is the scenario's own length, so a scenario longer than the registered
    240 steps runs to its end (see ``FurnaceEnv``, "Time limit").
    """
    import furnace_env  # noqa: F401  (registers the id)
    from furnace_env.scenarios import get_scenario

    sc = get_scenario(scenario)
    kw.setdefault("max_episode_steps", sc.n_steps)
    return gym.make("Furnace-v0", scenario=sc, **kw)
