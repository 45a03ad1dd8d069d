"""The oracle: the same MPC and optimisers, planning on the TRUE batched physics from the TRUE hidden state.

Information structure (what makes it the upper bound of the score scale). At each control step
the oracle copies the plant's full hidden state out of the env it controls (temperatures,
actuator positions, analyser states and their dead-time buffers, the sub-step counter) and the
disturbances in force now (setpoint, load, fuel quality, tramp air: the row
``env.unwrapped._sched[env.unwrapped._k]``). It then assumes the setpoint and the disturbances
*stay at their current values* over the horizon: no preview of future setpoint steps or load
changes, which no other planner gets either. So it is what a perfect model of the plant and a
perfect state estimator could achieve with the same knowledge of the future as the others.

Each candidate action sequence is rolled out by the numba kernel
(:class:`~furnace_env.physics.FurnaceSim` with one row per candidate); the objective is the env's
own step cost summed over the horizon, plus the env's trip penalty for a sequence that trips.
A tripped candidate keeps accumulating cost (the kernel keeps stepping it), so a trip is never
cheaper than staying up. The physics is not differentiable here, so the oracle uses the
gradient-free optimisers (CEM by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from furnace_env.physics import FurnaceSim
from planners.mpc import MPCController
from planners.optim import Objective, TrajectoryOptimizer, make_optimizer

__all__ = ["OracleConfig", "OracleModel", "make_oracle", "DEFAULT_ORACLE_OPTIMIZER"]

#: The oracle's default optimiser settings (chosen in BENCHMARKS.md: doubling them changes little).
DEFAULT_ORACLE_OPTIMIZER: dict[str, Any] = {"n_candidates": 128, "iterations": 5, "elite_frac": 0.1,
                                            "init_std": 0.3, "beta": 2.0, "keep_elites": 0.3}


@dataclass(frozen=True)
class OracleConfig:
    """Objective of the oracle planner."""

    smooth: float = 0.0
    """Weight of the squared change of each command between steps (0: the env's cost only)."""
    trip_penalty: float | None = None
    """Cost of a trip within the horizon (None: the env's own ``trip_penalty``)."""
    tail: int = 0
    """Terminal cost: steps the plan's last action is held after the horizon, their costs added.
    It values where a plan leaves the furnace (a plan that coasts on stored heat and ends below the
    setpoint pays for it), which a horizon shorter than the thermal time constant cannot see."""
    tail_weight: float = 1.0
    """Weight of the tail's costs."""
    block: int = 1
    """Move blocking: the first planned action is held for one step (it is the one applied), every
    later one for ``block`` steps. The optimiser then searches ``1 + ceil((horizon - 1) / block)``
    actions instead of ``horizon``: a long horizon at a small search dimension (1: no blocking)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.smooth) and self.smooth >= 0):
            raise ValueError(f"OracleConfig.smooth={self.smooth!r} must be finite and >= 0")
        if self.trip_penalty is not None and not (math.isfinite(self.trip_penalty) and self.trip_penalty >= 0):
            raise ValueError(f"OracleConfig.trip_penalty={self.trip_penalty!r} must be finite and >= 0 or None")
        if isinstance(self.tail, bool) or not isinstance(self.tail, int) or self.tail < 0:
            raise ValueError(f"OracleConfig.tail={self.tail!r} must be an integer >= 0")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"OracleConfig.block={self.block!r} must be an integer >= 1")
        if not (math.isfinite(self.tail_weight) and self.tail_weight >= 0):
            raise ValueError(f"OracleConfig.tail_weight={self.tail_weight!r} must be finite and >= 0")


class OracleModel:
    """A :class:`~planners.mpc.PlanningModel` that reads the true state of ``env`` at every plan."""

    def __init__(self, env, config: OracleConfig | None = None, horizon: int | None = None) -> None:
        base = env.unwrapped
        for attr in ("_sim", "_sched", "_k", "_cmd", "params", "weights"):
            if not hasattr(base, attr):
                raise ValueError(f"the oracle needs a FurnaceEnv (missing {attr!r} on {type(base).__name__})")
        self.env = base
        self.cfg = config if config is not None else OracleConfig()
        self._sims: dict[int, FurnaceSim] = {}
        self.horizon = horizon

    def n_decisions(self, horizon: int) -> int:
        """Planned actions that cover ``horizon`` steps under the move blocking."""
        return 1 + math.ceil((horizon - 1) / self.cfg.block)

    def expand(self, actions: np.ndarray) -> np.ndarray:
        """Planned actions ``[N, D, 2]`` -> per-step commands ``[N, horizon, 2]`` (move blocking)."""
        d = actions.shape[1]
        if self.cfg.block == 1:
            return actions
        steps = self.horizon if self.horizon is not None else 1 + (d - 1) * self.cfg.block
        counts = np.minimum(np.r_[1, np.full(d - 1, self.cfg.block)], np.maximum(steps - np.r_[0, 1 + self.cfg.block * np.arange(d - 1)], 0))
        return np.repeat(actions, counts, axis=1)

    def reset(self) -> None:
        """Nothing to forget: the true state is read afresh at every plan."""

    def observe(self, obs: np.ndarray) -> None:
        """The oracle ignores the (noisy) measurements: it reads the true state in :meth:`make_objective`."""

    def nominal_action(self) -> np.ndarray:
        """The commands now applied to the plant (bumpless start)."""
        return np.array(self.env._cmd[0], dtype=np.float64)

    def _sim(self, n: int) -> FurnaceSim:
        sim = self._sims.get(n)
        if sim is None:
            sim = self._sims[n] = FurnaceSim(n, self.env.params, self.env.weights)
        return sim

    def snapshot(self) -> dict[str, Any]:
        """The plant's true hidden state and the disturbances in force now (copies)."""
        base = self.env
        if base._sched is None:
            raise RuntimeError("reset() the env before planning with the oracle")
        src = base._sim
        k = min(base._k, base._sched.shape[0] - 1)
        return {"state": src.state[0].copy(), "o2_buf": src.o2_buf[0].copy(), "co_buf": src.co_buf[0].copy(),
                "k": int(src.k), "dist": base._sched[k].copy(), "cmd": base._cmd[0].copy()}

    def make_objective(self, obs: np.ndarray | None = None) -> Objective:
        """Cost of candidate sequences ``[N, H, 2]`` on the true physics, disturbances held constant."""
        snap = self.snapshot()
        smooth = self.cfg.smooth
        penalty = self.env.trip_penalty if self.cfg.trip_penalty is None else self.cfg.trip_penalty
        cmd0 = snap["cmd"]

        def objective(actions: torch.Tensor) -> torch.Tensor:
            a = self.expand(np.ascontiguousarray(actions.detach().cpu().numpy(), dtype=np.float64))
            n, h, _ = a.shape
            sim = self._sim(n)
            sim.state[:] = snap["state"]
            sim.o2_buf[:] = snap["o2_buf"]
            sim.co_buf[:] = snap["co_buf"]
            sim.k = snap["k"]
            dist = np.ascontiguousarray(np.broadcast_to(snap["dist"], (n, 4)))
            total = np.zeros(n)
            tripped = np.zeros(n, dtype=bool)
            for t in range(h):
                sim.step(np.ascontiguousarray(a[:, t]), dist)
                total += sim.cost
                tripped |= sim.tripped != 0
            if self.cfg.tail > 0:
                last = np.ascontiguousarray(a[:, -1])
                for _ in range(self.cfg.tail):
                    sim.step(last, dist)
                    total += self.cfg.tail_weight * sim.cost
                    tripped |= sim.tripped != 0
            total += penalty * tripped
            if smooth > 0:
                prev = np.concatenate([np.broadcast_to(cmd0, (n, 1, 2)), a[:, :-1]], axis=1)
                total += smooth * ((a - prev) ** 2).sum(axis=(1, 2))
            return torch.from_numpy(total).to(actions.dtype)

        return objective


def make_oracle(env, optimizer: str = "cem", horizon: int = 30, seed: int = 0, smooth: float = 0.0,
                trip_penalty: float | None = None, tail: int = 0, tail_weight: float = 1.0, block: int = 1, keep_last: int = 4, n_fresh: int = 4,
                selection: str = "best", temperature: float = 0.5, **optimizer_kwargs: Any) -> MPCController:
    """The oracle controller for ``env`` (the env it will act on; the comparison harness's factory).

    ``optimizer`` is a gradient-free optimiser name ("cem", "mppi", "random"); ``optimizer_kwargs``
    override :data:`DEFAULT_ORACLE_OPTIMIZER` (for CEM) or the optimiser's defaults.
    Horizon 30 steps (150 s) covers the temperature loop's dominant time constant (~195 s
    identified, with 20 s dead time) well enough for a receding horizon, and the CO analyser's
    15 s delay many times over.
    """
    if optimizer not in ("cem", "mppi", "random"):
        raise ValueError(f"oracle optimizer={optimizer!r}; allowed: 'cem', 'mppi', 'random' "
                         "(the true physics has no gradients)")
    kwargs = {**(DEFAULT_ORACLE_OPTIMIZER if optimizer == "cem" else {}), **optimizer_kwargs}
    opt = make_optimizer(optimizer, **kwargs)
    model = OracleModel(env, OracleConfig(smooth=smooth, trip_penalty=trip_penalty, tail=tail,
                                          tail_weight=tail_weight, block=block), horizon=horizon)
    traj = TrajectoryOptimizer(opt, horizon=model.n_decisions(horizon), action_dim=2, keep_last=keep_last, n_fresh=n_fresh,
                               selection=selection, temperature=temperature, dtype=torch.float64)
    return MPCController(model, traj, generator=torch.Generator().manual_seed(seed), name="oracle")
