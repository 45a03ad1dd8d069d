"""The furnace's per-step cost: written once, evaluated by numba, numpy and torch alike.

The reward of Furnace-v0 is ``-step_cost(...)`` of the noise-free measured signals (the
thermocouple, the stack analysers and the fuel meter: what the operator and the emission
permit see). The planners evaluate the very same function in torch on the world model's
predicted observations. It uses arithmetic operators and ``abs`` only, so one source
serves all three back-ends.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CostWeights", "step_cost", "cost_terms", "obs_cost", "obs_cost_terms", "trip_cost", "TRIP_PENALTY"]


@dataclass(frozen=True)
class CostWeights:
    """Weights and limits of the per-step cost (all terms are dimensionless per control step)."""

    w_track: float = 1.0
    """Weight of the absolute temperature error per ``track_scale`` kelvin."""
    track_scale: float = 10.0
    """Temperature error that costs ``w_track``, K."""
    w_fuel: float = 10.0
    """Weight of the fuel flow relative to ``fuel_ref`` (1 % fuel costs as much as 1 K error)."""
    fuel_ref: float = 108.0
    """Reference fuel flow, kg/h (the nominal firing rate, 1.5 MW)."""
    w_co: float = 5.0
    """Weight of the measured CO above its limit, per ``co_limit``."""
    co_limit: float = 100.0
    """CO emission limit, ppm (dry)."""
    w_o2: float = 5.0
    """Weight of the measured O2 below its minimum, per percentage point."""
    o2_min: float = 1.0
    """Minimum flue-gas O2 for safe operation, % (dry)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"CostWeights.{f.name}={v!r}: must be finite and >= 0")
        for name in ("track_scale", "fuel_ref", "co_limit"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CostWeights.{name}={getattr(self, name)!r}: must be > 0")

    def to_array(self) -> np.ndarray:
        """Pack the fields in declaration order (the order :func:`step_cost` takes them)."""
        return np.array([float(getattr(self, f.name)) for f in dataclasses.fields(self)])


def cost_terms(temp, setpoint, o2, co, fuel, w_track, track_scale, w_fuel, fuel_ref, w_co,
               co_limit, w_o2, o2_min):
    """The four cost terms (tracking, fuel, CO excess, O2 deficit) for scalars or arrays.

    temp, setpoint in degC; o2 in % dry; co in ppm dry; fuel in kg/h.
    """
    track = w_track * abs(temp - setpoint) / track_scale
    fuel_t = w_fuel * fuel / fuel_ref
    # relu(x) = (x + |x|) / 2, spelled out so that numba compiles this function unchanged.
    co_t = w_co * ((co - co_limit) + abs(co - co_limit)) * 0.5 / co_limit
    o2_t = w_o2 * ((o2_min - o2) + abs(o2_min - o2)) * 0.5
    return track, fuel_t, co_t, o2_t


def step_cost(temp, setpoint, o2, co, fuel, w_track, track_scale, w_fuel, fuel_ref, w_co,
              co_limit, w_o2, o2_min):
    """Per-step cost, the sum of :func:`cost_terms` (the reward is its negative)."""
    track, fuel_t, co_t, o2_t = cost_terms(temp, setpoint, o2, co, fuel, w_track, track_scale,
                                           w_fuel, fuel_ref, w_co, co_limit, w_o2, o2_min)
    return track + fuel_t + co_t + o2_t


def obs_cost(obs, weights: CostWeights):
    """:func:`step_cost` on observation arrays/tensors ``[..., N_OBS]`` (channel order of ``OBS_NAMES``)."""
    return step_cost(obs[..., 0], obs[..., 1], obs[..., 2], obs[..., 3], obs[..., 4],
                     *dataclasses.astuple(weights))


def obs_cost_terms(obs, weights: CostWeights):
    """:func:`cost_terms` (tracking, fuel, CO excess, O2 deficit) on observation arrays/tensors."""
    return cost_terms(obs[..., 0], obs[..., 1], obs[..., 2], obs[..., 3], obs[..., 4],
                      *dataclasses.astuple(weights))


#: Fixed part of a trip's cost (see :func:`trip_cost`); the env's default ``trip_penalty``.
TRIP_PENALTY = 500.0


def trip_cost(steps_left, trip_penalty: float, weights: CostWeights, fuel_max_kg_h: float):
    """Cost of a trip with ``steps_left`` control steps of the episode remaining.

    ``trip_penalty`` plus, for every remaining step, the fuel cost of full fire: a tripped
    furnace loses its production and must be purged and reheated, so a trip can never be
    cheaper than running on. (Without the second term an early deliberate trip would end the
    episode's cost early and beat every honest controller.)
    """
    return trip_penalty + steps_left * weights.w_fuel * fuel_max_kg_h / weights.fuel_ref
