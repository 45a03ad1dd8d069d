"""The industrial reference: temperature PI on fuel, O2-trim PI on air, air/fuel cross-limiting.

This is the zero point of the score scale, so it is tuned honestly (see
``evaluate/tune_pi.py`` and docs/tuning.md): the gains start from SIMC rules on an identified
first-order-plus-dead-time model of the temperature loop and are then refined by a grid
search on the training scenario mix, on the very cost the env rewards.

Structure (per control step, all in fractions of full flow):

* Temperature PI (velocity form, with conditional integration as anti-windup) gives the
  firing demand ``d``.
* The air demand is ``d * r * trim``: ``r`` is the air/fuel ratio at the design excess air,
  ``trim`` the output of a slow O2 PI acting on the measured O2 against a setpoint curve
  that rises at low fire (where the burner needs more air for clean combustion), with a
  CO override that adds air whenever the measured CO exceeds a threshold.
* Cross-limiting (lead-lag): fuel may not exceed what the *measured* air can burn at the
  trimmed ratio, and air may not fall below what the *measured* fuel needs, so air leads
  on increases and fuel leads on decreases.

The cross-limits and the CO override are the controller's *safety layer*
(:func:`safety_layer`): :meth:`PIController.demand` gives the PI loops' demand with the limits
of the current measurements, and the safety layer turns it, plus an optional residual from
another controller (``planners.residual``), into the commands. PI itself applies it with no
residual, so the layer a residual agent meets is exactly PI's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from furnace_env.control import Controller
from furnace_env.env import validate_observation
from furnace_env.physics import FurnaceParams, is_real

__all__ = ["PIConfig", "PIController", "PIDemand", "safety_layer", "make_pi"]


@dataclass(frozen=True)
class PIConfig:
    """Gains and set-up of :class:`PIController` (defaults: the tuned values, see ``evaluate/tune_pi.py``)."""

    kp: float = 0.0068
    """Temperature loop proportional gain, firing fraction per K."""
    ti: float = 90.0
    """Temperature loop integral time, s."""
    o2_sp_ref: float = 3.0
    """Measured O2 setpoint at the reference firing fraction, % dry."""
    o2_sp_slope: float = 2.0
    """Rise of the O2 setpoint per unit drop of firing fraction below ``fire_ref``, % dry."""
    fire_ref: float = 0.6
    """Firing fraction where the O2 setpoint is ``o2_sp_ref``."""
    o2_kp: float = 0.01
    """O2 trim proportional gain, ratio per % O2."""
    o2_ti: float = 40.0
    """O2 trim integral time, s."""
    excess_air: float = 0.15
    """Design excess air of the base air/fuel ratio (before trim)."""
    co_override: float = 100.0
    """Measured CO above which the trim adds air regardless of O2 (CO override), ppm."""
    co_gain: float = 0.02
    """Trim increase per step per 100 ppm of CO above ``co_override``."""
    trim_limits: tuple[float, float] = (0.85, 1.25)
    """Bounds of the multiplicative O2 trim."""
    cross_limit_lambda: float = 1.06
    """Cross-limiting: fuel may not exceed measured air / (afr * this)."""

    def __post_init__(self) -> None:
        # Every number first (a residual agent's zip carries these): a NaN set-point slope or a string
        # gain would otherwise surface as NaN actions or a numpy TypeError in mid-episode.
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "trim_limits" and not (is_real(v) and np.isfinite(v)):
                raise ValueError(f"PIConfig.{f.name}={v!r} must be a finite number")
        for name in ("kp", "ti", "o2_kp", "o2_ti", "cross_limit_lambda"):
            v = getattr(self, name)
            if not v > 0:
                raise ValueError(f"PIConfig.{name}={v!r} must be finite and > 0")
        tl = self.trim_limits
        if not (isinstance(tl, list | tuple) and len(tl) == 2 and all(is_real(v) and np.isfinite(v) for v in tl)):
            raise ValueError(f"PIConfig.trim_limits={tl!r} must be two finite numbers (low, high)")
        lo, hi = tl
        if not 0 < lo <= 1.0 <= hi:
            raise ValueError(f"PIConfig.trim_limits={self.trim_limits!r} must satisfy 0 < low <= 1 <= high")


class PIDemand(NamedTuple):
    """One step of the PI loops on a batch of furnaces, before the safety layer (fractions of full flow)."""

    fuel: np.ndarray
    """Fuel demand: the temperature PI's firing demand, ``[N]``."""
    air: np.ndarray
    """Air demand: the firing demand at the trimmed air/fuel ratio, ``[N]``."""
    fuel_cap: np.ndarray
    """Cross-limit: the most fuel the *measured* air can burn at ``cross_limit_lambda``, ``[N]``."""
    air_floor: np.ndarray
    """Cross-limit: the least air the *measured* fuel needs at the trimmed ratio, ``[N]``."""
    co_high: np.ndarray
    """CO override active: measured CO above ``co_override``, ``[N]`` bool."""


def safety_layer(demand: PIDemand, residual: np.ndarray | None = None) -> np.ndarray:
    """Env actions ``[N, 2]`` from the PI demand plus an optional residual, under PI's limits.

    ``residual`` ``[N, 2]`` is in action units (``[-1, 1]`` spans the full stroke, so 0.1 is 5 %
    of full flow) and is added to the demand before the limits, so it can never lift fuel above
    what the measured air burns nor pull air below what the measured fuel needs (the cross-limits
    hold whatever it asks). While the CO override is active (measured CO above its threshold)
    the residual may only take fuel away and add air: the override wins over any agent.
    """
    fuel, air = demand.fuel, demand.air
    if residual is not None:
        r = np.asarray(residual, dtype=np.float64).reshape(len(fuel), 2) * 0.5  # action units -> fractions
        r_fuel = np.where(demand.co_high, np.minimum(r[:, 0], 0.0), r[:, 0])
        r_air = np.where(demand.co_high, np.maximum(r[:, 1], 0.0), r[:, 1])
        fuel, air = fuel + r_fuel, air + r_air
    fuel_sp = np.minimum(fuel, demand.fuel_cap)  # fuel limited by measured air
    air_sp = np.maximum(air, demand.air_floor)  # air at least what measured fuel needs
    action = np.stack([2.0 * fuel_sp - 1.0, 2.0 * air_sp - 1.0], axis=1)
    return np.clip(action, -1.0, 1.0).astype(np.float32)


class PIController(Controller):
    """Temperature PI + O2-trim PI + cross-limiting, on a batch of furnaces (see module docstring)."""

    name = "pi"

    def __init__(self, config: PIConfig | None = None, params: FurnaceParams | None = None) -> None:
        self.cfg = config if config is not None else PIConfig()
        self.params = params if params is not None else FurnaceParams()
        self.reset()

    def reset(self) -> None:
        self._fire: np.ndarray | None = None  # firing demand (integrator state), fraction
        self._trim: np.ndarray | None = None
        self._prev_e: np.ndarray | None = None
        self._prev_eo2: np.ndarray | None = None

    def handover(self, obs: np.ndarray, action: np.ndarray) -> None:
        """Take over bumplessly from another controller that applied ``action [N, 2]`` (or ``[2]``).

        The integrators start where that controller left the commands: the firing demand at its
        fuel command and the trim at the ratio its air command implied (within the trim limits);
        the previous errors are the current ones, so the first PI step moves the commands only by
        its own integral increment, not by a proportional kick.
        """
        c, p = self.cfg, self.params
        obs = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        a = np.atleast_2d(np.asarray(action, dtype=np.float64))
        if a.shape != (obs.shape[0], 2) or not np.isfinite(a).all():
            raise ValueError(f"handover action of shape {a.shape} (finite, one row per observation "
                             f"{obs.shape[0]}) expected, got {action!r}")
        fuel_cmd, air_cmd = ((np.clip(a, -1.0, 1.0) + 1.0) / 2.0).T
        fuel_meas = obs[:, 4] / 3600.0 / p.fuel_max
        self._fire = fuel_cmd.copy()
        base = p.afr * (1.0 + c.excess_air) * p.fuel_max / p.air_max
        self._trim = np.clip(air_cmd / np.maximum(np.maximum(fuel_cmd, fuel_meas) * base, 1e-6), *c.trim_limits)
        self._prev_e = obs[:, 1] - obs[:, 0]
        self._prev_eo2 = self.o2_setpoint(fuel_meas) - obs[:, 2]

    def o2_setpoint(self, fire: np.ndarray) -> np.ndarray:
        """Measured-O2 setpoint curve against firing fraction, % dry."""
        c = self.cfg
        return np.clip(c.o2_sp_ref + c.o2_sp_slope * (c.fire_ref - fire), 1.0, 6.0)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return safety_layer(self.demand(obs))

    def demand(self, obs: np.ndarray) -> PIDemand:
        """Advance the PI loops by one step on observations ``[N, 8]``; the demand and its limits.

        Call once per control step: the integrators move on every call."""
        obs = validate_observation(obs)[0]  # before the integrators see it
        c, p = self.cfg, self.params
        temp, sp, o2 = obs[:, 0], obs[:, 1], obs[:, 2]
        fuel_meas = obs[:, 4] / 3600.0 / p.fuel_max
        air_meas = obs[:, 5] / 3600.0 / p.air_max
        e = sp - temp
        if self._fire is None or len(self._fire) != len(obs):
            # Bumpless start from the plant's current operating point.
            self._fire = fuel_meas.copy()
            self._trim = np.ones(len(obs))
            self._prev_e = e.copy()
            self._prev_eo2 = np.zeros(len(obs))
        # Temperature PI in velocity form; no integration while the demand is saturated.
        d_fire = c.kp * ((e - self._prev_e) + e * p.dt / c.ti)
        fire = np.clip(self._fire + d_fire, 0.0, 1.0)
        self._fire, self._prev_e = fire, e
        # O2 trim (velocity PI on the measured O2 against the firing-rate curve).
        eo2 = self.o2_setpoint(fuel_meas) - o2
        d_trim = c.o2_kp * ((eo2 - self._prev_eo2) + eo2 * p.dt / c.o2_ti)
        d_trim = d_trim + c.co_gain * np.maximum(obs[:, 3] - c.co_override, 0.0) / 100.0
        self._trim = np.clip(self._trim + d_trim, *c.trim_limits)
        self._prev_eo2 = eo2
        # Air/fuel ratio in flow fractions: kg air per kg fuel, scaled to the actuator ranges.
        ratio = p.afr * (1.0 + c.excess_air) * self._trim * p.fuel_max / p.air_max
        cross = p.afr * c.cross_limit_lambda * p.fuel_max / p.air_max
        return PIDemand(fuel=fire, air=fire * ratio, fuel_cap=air_meas / cross, air_floor=fuel_meas * ratio,
                        co_high=obs[:, 3] > c.co_override)

    def with_config(self, **changes) -> PIController:
        """A fresh controller with some gains changed (for tuning)."""
        return PIController(dataclasses.replace(self.cfg, **changes), self.params)


def make_pi(env=None, **config: Any) -> PIController:
    """Factory for the comparison harness: the tuned PI controller, with ``PIConfig`` overrides.

    Uses the env's physical parameters when one is given (the valve and damper ranges).
    """
    params = env.unwrapped.params if env is not None else None
    return PIController(PIConfig(**config), params)
