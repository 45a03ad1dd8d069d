"""The planning objective on the first-principles furnace model, shared by the oracle and the physics MPC.

Both controllers plan on the batched numba physics (:class:`~furnace_env.physics.FurnaceSim`,
one row per candidate action sequence) from a :class:`PhysicsSnapshot`: the plant's hidden state
and the disturbances, held at their current values over the horizon. They differ only in where
the snapshot comes from: the oracle copies the true one out of the env, the physics MPC
(:mod:`planners.physics_mpc`) builds it from a state estimate on nominal plant parameters. The
objective is written once here so that the two cannot drift apart.

The objective is the env's own step cost summed over the horizon, plus the trip penalty for a
sequence that trips (a tripped candidate keeps accumulating cost: the kernel keeps stepping it,
so a trip is never cheaper than staying up), plus an optional smoothness term.

Search coordinates: ``"ratio"`` (fuel command, burner excess air mapped onto [-1, 1]; the air
command follows from the fuel command, the excess air and the fuel quality the planner believes
in) or ``"raw"`` (the env's actions). See :mod:`planners.oracle` for why the ratio coordinates
decorrelate the search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from furnace_env.cost import CostWeights
from furnace_env.physics import FurnaceParams, FurnaceSim
from furnace_env.ratio import air_coordinate, air_ratio
from planners.optim import Objective

__all__ = ["PhysicsSnapshot", "SimCache", "physics_objective", "decode_actions", "encode_actions", "COORDS"]

#: Search coordinates the physics planners accept.
COORDS = ("ratio", "raw")


@dataclass(frozen=True)
class PhysicsSnapshot:
    """Everything the physics needs to roll a furnace forward from now (arrays are copies)."""

    state: np.ndarray
    """Kernel state row ``[7]``: temperature, thermocouple, fuel, air, O2 and CO analyser readings,
    time running fuel-rich (see :mod:`furnace_env.physics`)."""
    o2_buf: np.ndarray
    """O2 analyser dead-time ring buffer ``[L_o2]``, %."""
    co_buf: np.ndarray
    """CO analyser dead-time ring buffer ``[L_co]``, ppm."""
    k: int
    """Sub-step counter (positions in the ring buffers)."""
    dist: np.ndarray
    """Exogenous inputs ``[4]`` held over the horizon: setpoint degC, load W, fuel quality, leak kg/s."""
    cmd: np.ndarray
    """Commands ``[2]`` now applied (in [-1, 1]; the smoothness term's first reference)."""
    plant: FurnaceParams | None = None
    """The plant to roll out (None: the simulators' own, the model's)."""
    plant_at: Callable[[int], np.ndarray] | None = field(default=None, compare=False)
    """Parameter array (``FurnaceParams.to_array()`` layout) in force ``t`` steps into the horizon, when
    the plant changes during it (the oracle's plant events); None: ``plant`` throughout."""


class SimCache:
    """One :class:`FurnaceSim` per batch size, reused across plans (allocating one per call costs more
    than a small rollout)."""

    def __init__(self, params: FurnaceParams, weights: CostWeights) -> None:
        self.params, self.weights = params, weights
        self._sims: dict[int, FurnaceSim] = {}

    def __call__(self, n: int) -> FurnaceSim:
        sim = self._sims.get(n)
        if sim is None:
            sim = self._sims[n] = FurnaceSim(n, self.params, self.weights)
        return sim


def decode_actions(u, params: FurnaceParams, coords: str, excess_air: tuple[float, float],
                   quality: float) -> np.ndarray:
    """Search coordinates ``[..., 2]`` -> env actions ``[..., 2]`` in [-1, 1] at fuel quality ``quality``."""
    u = u.detach().cpu().numpy() if isinstance(u, torch.Tensor) else np.asarray(u)
    u = u.astype(np.float64)
    if coords == "raw":
        return np.clip(u, -1.0, 1.0)
    fuel_cmd = np.clip(u[..., 0], -1.0, 1.0)
    lam = air_ratio(u[..., 1], excess_air)
    air = lam * params.afr * quality * 0.5 * (fuel_cmd + 1.0) * params.fuel_max
    return np.stack([fuel_cmd, np.clip(2.0 * air / params.air_max - 1.0, -1.0, 1.0)], axis=-1)


def encode_actions(action, params: FurnaceParams, coords: str, excess_air: tuple[float, float],
                   quality: float) -> np.ndarray:
    """Env actions ``[..., 2]`` -> search coordinates (the inverse of :func:`decode_actions` inside its range)."""
    a = np.asarray(action, dtype=np.float64)
    if coords == "raw":
        return a.copy()
    fuel = np.maximum(0.5 * (a[..., 0] + 1.0) * params.fuel_max, 1e-9)
    lam = 0.5 * (a[..., 1] + 1.0) * params.air_max / (params.afr * quality * fuel)
    return np.stack([a[..., 0], air_coordinate(lam, excess_air)], axis=-1)


def physics_objective(snap: PhysicsSnapshot, sims: SimCache, trip_penalty: float, smooth: float,
                      decode: Callable[[torch.Tensor], np.ndarray]) -> Objective:
    """Cost of candidate sequences ``u [N, H, 2]`` (search coordinates) rolled out on the physics from ``snap``.

    ``decode`` maps search coordinates to env actions; ``sims`` supplies the batched simulator (its
    parameters are the model's: the true plant for the oracle, the nominal one for the physics MPC).
    """

    def objective(u: torch.Tensor) -> torch.Tensor:
        a = np.ascontiguousarray(decode(u))
        n, h, _ = a.shape
        sim = sims(n)
        if snap.plant is not None:
            sim.set_params(snap.plant)
        sim.state[:] = snap.state
        sim.o2_buf[:] = snap.o2_buf
        sim.co_buf[:] = snap.co_buf
        sim.k = snap.k
        dist = np.ascontiguousarray(np.broadcast_to(snap.dist, (n, 4)))
        total = np.zeros(n)
        tripped = np.zeros(n, dtype=bool)
        for t in range(h):
            if snap.plant_at is not None:
                sim.p[:] = snap.plant_at(t)
            sim.step(np.ascontiguousarray(a[:, t]), dist)
            total += sim.cost
            tripped |= sim.tripped != 0
        total += trip_penalty * tripped
        if smooth > 0:
            prev = np.concatenate([np.broadcast_to(snap.cmd, (n, 1, 2)), a[:, :-1]], axis=1)
            total += smooth * ((a - prev) ** 2).sum(axis=(1, 2))
        return torch.from_numpy(total).to(u.dtype)

    return objective
