"""The oracle: the same MPC and optimisers, planning on the TRUE batched physics from the TRUE hidden state.

Information structure (what makes it the upper bound of the score scale). At each control step
the oracle takes the env's public snapshot (``env.unwrapped.get_state()``, a
:class:`~furnace_env.state.FurnaceState`): the plant's full hidden state (temperatures, actuator
positions, analyser states and their dead-time buffers, the sub-step counter), the episode's true
plant (the scenario's drawn ``plant`` and its ``plant_events``) and the disturbances in force now
(setpoint, load, fuel quality, tramp air). It then assumes the setpoint and the disturbances
*stay at their current values* over the horizon: no preview of future setpoint steps or load
changes, which no other planner gets either. The plant is part of the perfect model: rollouts
use the plant in force at each step of the horizon, plant events included, as the true physics
will. So it is what a perfect model of the plant and a perfect state estimator could achieve
with the same knowledge of the exogenous future as the others. It ignores the (noisy) measurements.

Each candidate action sequence is rolled out by the numba kernel
(:class:`~furnace_env.physics.FurnaceSim` with one row per candidate); the objective is the env's
own step cost summed over the horizon, plus the env's trip penalty for a sequence that trips.
A tripped candidate keeps accumulating cost (the kernel keeps stepping it), so a trip is never
cheaper than staying up. The physics is not differentiable here, so the oracle uses the
gradient-free optimisers (CEM by default).

Search coordinates. By default (``coords="ratio"``) the optimiser searches over (fuel command,
burner excess air) rather than (fuel command, air command); the air command follows from the
fuel command, the excess air and the true fuel quality. This is only a change of variables (the
range of excess air covers every sensible command pair, fuel-rich included), but it decorrelates
the search: with raw commands, every fuel perturbation that is not matched by the air moves the
excess air, and the small fuel saving of running near the CO knee (a few per cent of the cost)
drowns in that sampling noise. ``coords="raw"`` searches the env's action space directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from furnace_env.physics import FurnaceParams, FurnaceSim
from furnace_env.ratio import DEFAULT_EXCESS_AIR
from furnace_env.state import FurnaceState
from planners.mpc import MPCController
from planners.optim import Objective, TrajectoryOptimizer, make_optimizer

__all__ = ["OracleConfig", "OracleModel", "make_oracle", "DEFAULT_ORACLE_OPTIMIZER"]

#: The oracle's default CEM settings: a converged budget, doubling it changes the return little
#: (docs/benchmarks/oracle.md).
DEFAULT_ORACLE_OPTIMIZER: dict[str, Any] = {"n_candidates": 128, "iterations": 20, "elite_frac": 0.1,
                                            "init_std": 0.1, "beta": 3.0, "keep_elites": 0.3}


@dataclass(frozen=True)
class OracleConfig:
    """Objective and search space of the oracle planner."""

    smooth: float = 0.0
    """Weight of the squared change of each command between steps (0: the env's cost only)."""
    trip_penalty: float | None = None
    """Cost of a trip within the horizon (None: the env's own ``trip_penalty``)."""
    coords: str = "ratio"
    """Search coordinates: ``"ratio"`` (fuel command, excess air) or ``"raw"`` (the env's actions)."""
    excess_air: tuple[float, float] = DEFAULT_EXCESS_AIR
    """Excess-air range ``lambda - 1`` mapped onto [-1, 1] in ``"ratio"`` coordinates."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.smooth) and self.smooth >= 0):
            raise ValueError(f"OracleConfig.smooth={self.smooth!r} must be finite and >= 0")
        if self.trip_penalty is not None and not (math.isfinite(self.trip_penalty) and self.trip_penalty >= 0):
            raise ValueError(f"OracleConfig.trip_penalty={self.trip_penalty!r} must be finite and >= 0 or None")
        if self.coords not in ("ratio", "raw"):
            raise ValueError(f"OracleConfig.coords={self.coords!r}; allowed: 'ratio', 'raw'")
        lo, hi = self.excess_air
        if not -1.0 < lo < hi:
            raise ValueError(f"OracleConfig.excess_air={self.excess_air!r} must satisfy -1 < low < high")


class OracleModel:
    """A :class:`~planners.mpc.PlanningModel` that reads the true state of ``env`` at every plan."""

    def __init__(self, env, config: OracleConfig | None = None) -> None:
        base = getattr(env, "unwrapped", env)
        for attr in ("get_state", "params", "weights", "trip_penalty"):
            if not hasattr(base, attr):
                raise ValueError(f"the oracle needs a FurnaceEnv (missing {attr!r} on {type(base).__name__})")
        self.env = base
        self.cfg = config if config is not None else OracleConfig()
        self._sims: dict[int, FurnaceSim] = {}

    # -- PlanningModel -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Nothing to forget: the true state is read afresh at every plan."""

    def observe(self, obs: np.ndarray) -> None:
        """Ignored: the oracle reads the true state in :meth:`make_objective`."""

    def nominal_action(self) -> np.ndarray:
        """The commands now applied to the plant, in search coordinates (a bumpless start)."""
        state = self.state()
        return self.encode(state.command, float(state.disturbance[2]), state.plant)

    def decode(self, u: np.ndarray | torch.Tensor, quality: float | None = None,
               plant: FurnaceParams | None = None) -> np.ndarray:
        """Search coordinates ``[..., 2]`` -> env actions ``[..., 2]`` in [-1, 1] (at the fuel quality
        and plant in force now unless given)."""
        u = u.detach().cpu().numpy() if isinstance(u, torch.Tensor) else np.asarray(u)
        u = u.astype(np.float64)
        if self.cfg.coords == "raw":
            return np.clip(u, -1.0, 1.0)
        p, q = self._plant_and_quality(plant, quality)
        lo, hi = self.cfg.excess_air
        fuel_cmd = np.clip(u[..., 0], -1.0, 1.0)
        lam = 1.0 + lo + (hi - lo) * 0.5 * (np.clip(u[..., 1], -1.0, 1.0) + 1.0)
        air = lam * p.afr * q * 0.5 * (fuel_cmd + 1.0) * p.fuel_max
        return np.stack([fuel_cmd, np.clip(2.0 * air / p.air_max - 1.0, -1.0, 1.0)], axis=-1)

    def encode(self, action: np.ndarray, quality: float | None = None,
               plant: FurnaceParams | None = None) -> np.ndarray:
        """Env actions ``[..., 2]`` -> search coordinates (the inverse of :meth:`decode` inside its range)."""
        a = np.asarray(action, dtype=np.float64)
        if self.cfg.coords == "raw":
            return a.copy()
        p, q = self._plant_and_quality(plant, quality)
        lo, hi = self.cfg.excess_air
        fuel = np.maximum(0.5 * (a[..., 0] + 1.0) * p.fuel_max, 1e-9)
        lam = 0.5 * (a[..., 1] + 1.0) * p.air_max / (p.afr * q * fuel)
        u1 = np.clip(2.0 * (lam - 1.0 - lo) / (hi - lo) - 1.0, -1.0, 1.0)
        return np.stack([a[..., 0], u1], axis=-1)

    def make_objective(self, obs: np.ndarray | None = None) -> Objective:
        """Cost of candidate sequences ``[N, H, 2]`` (search coordinates) on the true physics and
        plant, disturbances and setpoint held at their current values."""
        snap = self.state()
        smooth = self.cfg.smooth
        penalty = self.env.trip_penalty if self.cfg.trip_penalty is None else self.cfg.trip_penalty
        q = float(snap.disturbance[2])

        def objective(u: torch.Tensor) -> torch.Tensor:
            a = np.ascontiguousarray(self.decode(u, q, snap.plant))
            n, h, _ = a.shape
            sim = self._sim(n)
            sim.set_params(snap.plant)
            sim.state[:] = snap.physics
            sim.o2_buf[:] = snap.o2_buf
            sim.co_buf[:] = snap.co_buf
            sim.k = snap.substep
            dist = np.ascontiguousarray(np.broadcast_to(snap.disturbance, (n, 4)))
            total = np.zeros(n)
            tripped = np.zeros(n, dtype=bool)
            for t in range(h):
                if snap.plant_table is not None:
                    sim.p[:] = snap.plant_at(snap.step + t)  # the plant events, as the true physics applies them
                sim.step(np.ascontiguousarray(a[:, t]), dist)
                total += sim.cost
                tripped |= sim.tripped != 0
            total += penalty * tripped
            if smooth > 0:
                prev = np.concatenate([np.broadcast_to(snap.command, (n, 1, 2)), a[:, :-1]], axis=1)
                total += smooth * ((a - prev) ** 2).sum(axis=(1, 2))
            return torch.from_numpy(total).to(u.dtype)

        return objective

    # -- helpers -----------------------------------------------------------------------------------
    def state(self) -> FurnaceState:
        """The env's true state now (its public snapshot)."""
        try:
            return self.env.get_state()
        except RuntimeError as err:
            raise RuntimeError("reset() the env before planning with the oracle") from err

    def quality(self) -> float:
        """The true fuel quality in force now."""
        return float(self.state().disturbance[2])

    def _plant_and_quality(self, plant: FurnaceParams | None, quality: float | None) -> tuple[FurnaceParams, float]:
        if plant is not None and quality is not None:
            return plant, quality
        state = self.state()
        return (state.plant if plant is None else plant,
                float(state.disturbance[2]) if quality is None else quality)

    def _sim(self, n: int) -> FurnaceSim:
        sim = self._sims.get(n)
        if sim is None:
            sim = self._sims[n] = FurnaceSim(n, self.env.params, self.env.weights)
        return sim


def make_oracle(env, optimizer: str = "cem", horizon: int = 30, seed: int = 0, smooth: float = 0.0,
                trip_penalty: float | None = None, coords: str = "ratio", keep_last: int = 4,
                n_fresh: int = 4, selection: str = "best", temperature: float = 0.5,
                **optimizer_kwargs: Any) -> MPCController:
    """The oracle controller for ``env`` (the env it will act on; the comparison harness's factory).

    ``optimizer`` is a gradient-free optimiser name ("cem", "mppi", "random"); ``optimizer_kwargs``
    override :data:`DEFAULT_ORACLE_OPTIMIZER` (for CEM) or the optimiser's defaults. The horizon,
    30 steps (150 s), covers most of the temperature loop's time constant (195 s identified, 20 s
    dead time) and the CO analyser's 15 s delay many times; 40 and 60 steps did no better at the
    same budget (a larger search space; docs/benchmarks/oracle.md).
    """
    if optimizer not in ("cem", "mppi", "random"):
        raise ValueError(f"oracle optimizer={optimizer!r}; allowed: 'cem', 'mppi', 'random' "
                         "(the true physics has no gradients)")
    kwargs = {**(DEFAULT_ORACLE_OPTIMIZER if optimizer == "cem" else {}), **optimizer_kwargs}
    opt = make_optimizer(optimizer, **kwargs)
    model = OracleModel(env, OracleConfig(smooth=smooth, trip_penalty=trip_penalty, coords=coords))
    traj = TrajectoryOptimizer(opt, horizon=horizon, action_dim=2, keep_last=keep_last, n_fresh=n_fresh,
                               selection=selection, temperature=temperature, dtype=torch.float64)
    return MPCController(model, traj, generator=torch.Generator().manual_seed(seed), name="oracle")
