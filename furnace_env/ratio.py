"""Air/fuel-ratio action coordinates: a fuel command and the burner's excess air.

The env's actions are the fuel-valve and air-damper commands. Good combustion lives on a narrow
ridge of their ratio (excess air ``lambda - 1`` of a few per cent: too little makes CO, too much
heats the stack), which is diagonal in those coordinates. Industrial burners are run by
ratio control for that reason: the fuel command sets the firing rate and the air follows at a
chosen excess air. :class:`RatioActions` maps ``[fuel command, excess-air command]`` in
``[-1, 1]^2`` to the env's commands and back (at the nominal fuel quality: the controller still
has to trim for the fuel and leak it cannot see); the planners search in these coordinates, and
:class:`RatioActionWrapper` offers the same coordinates to any agent (the SB3 baselines'
``--action_coords ratio``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from furnace_env.physics import FurnaceParams

__all__ = ["RatioActions", "RatioActionWrapper", "DEFAULT_EXCESS_AIR", "ACTION_COORDS", "air_ratio", "air_coordinate"]

#: Excess-air range ``lambda - 1`` mapped onto the excess-air command's [-1, 1].
DEFAULT_EXCESS_AIR: tuple[float, float] = (-0.05, 1.0)
#: Action coordinates an agent may use: the env's own ("raw") or :class:`RatioActions` ("ratio").
ACTION_COORDS: tuple[str, ...] = ("raw", "ratio")


def air_ratio(u1, excess_air: tuple[float, float] = DEFAULT_EXCESS_AIR):
    """Burner air ratio ``lambda`` of the excess-air command ``u1`` (clipped to [-1, 1]; numpy or torch)."""
    lo, hi = excess_air
    return 1.0 + lo + (hi - lo) * 0.5 * (_lib(u1).clip(u1, -1.0, 1.0) + 1.0)


def air_coordinate(lam, excess_air: tuple[float, float] = DEFAULT_EXCESS_AIR, clip: bool = True) -> np.ndarray:
    """The excess-air command of air ratios ``lam``: the inverse of :func:`air_ratio` (clipped to [-1, 1]
    unless ``clip`` is False)."""
    lo, hi = excess_air
    u1 = 2.0 * (np.asarray(lam) - 1.0 - lo) / (hi - lo) - 1.0
    return np.clip(u1, -1.0, 1.0) if clip else u1


class RatioActions:
    """``[fuel command, excess-air command]`` <-> the env's ``[fuel valve, air damper]`` commands."""

    def __init__(self, params: FurnaceParams | None = None,
                 excess_air: tuple[float, float] = DEFAULT_EXCESS_AIR) -> None:
        lo, hi = (float(v) for v in excess_air)
        if not -1.0 < lo < hi:
            raise ValueError(f"excess_air={tuple(excess_air)!r} must satisfy -1 < low < high")
        p = params if params is not None else FurnaceParams()
        self.excess_air = (lo, hi)
        # Stoichiometric air command per unit fuel command, in actuator fractions.
        self.air_per_fuel = p.afr * p.fuel_max / p.air_max

    def to_env(self, u):
        """Ratio coordinates ``[..., 2]`` -> env actions (numpy or torch; differentiable in torch)."""
        lib = _lib(u)
        fuel = lib.clip(u[..., 0], -1.0, 1.0)
        lam = air_ratio(u[..., 1], self.excess_air)
        air = lam * self.air_per_fuel * 0.5 * (fuel + 1.0)
        return lib.stack([fuel, lib.clip(2.0 * air - 1.0, -1.0, 1.0)], -1)

    def from_env(self, action) -> np.ndarray:
        """Env actions -> ratio coordinates (the inverse of :meth:`to_env` inside its range)."""
        a = np.asarray(action, dtype=np.float64)
        fuel = np.maximum(0.5 * (a[..., 0] + 1.0), 1e-6)
        lam = 0.5 * (a[..., 1] + 1.0) / (self.air_per_fuel * fuel)
        return np.stack([a[..., 0], air_coordinate(lam, self.excess_air)], -1)


def _lib(x):
    """torch for a tensor, numpy otherwise (torch is imported only if a tensor is passed)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


class RatioActionWrapper(gym.ActionWrapper):
    """Furnace-v0 with :class:`RatioActions` coordinates as its action space (``Box(-1, 1, (2,))``)."""

    def __init__(self, env: gym.Env, excess_air: tuple[float, float] = DEFAULT_EXCESS_AIR) -> None:
        super().__init__(env)
        self.ratio = RatioActions(env.unwrapped.params, excess_air)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    def action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            a = np.full(3, np.nan)  # not numeric: reported below
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action={action!r}: expected two finite numbers in [-1, 1] "
                             "(fuel command, excess-air command)")
        return self.ratio.to_env(a).astype(np.float32)
