"""The physics MPC: the oracle's planner on nominal physics, from a state estimate (the information-limited reference).

What an advanced-process-control vendor would deploy on this furnace: the first-principles
model (:mod:`furnace_env.physics`) with the *design* plant parameters, an unscented Kalman
filter (:class:`~planners.estimation.FurnaceUKF`) that estimates the hidden states and the
unmeasured disturbances (load, fuel quality, tramp air) from the measurements alone, and the
oracle's objective (:func:`~planners.physics_objective.physics_objective`) and optimiser (CEM
at :data:`~planners.oracle.DEFAULT_ORACLE_OPTIMIZER`) from that estimate. It reads only the
observation; the env is used for its public task definition (cost weights and trip penalty)
and nothing else.

Against the oracle (same planner, true state, true disturbances, true plant) the gap is the
value of information: what perfect knowledge of the disturbances is worth. Against a learned
world-model planner the gap is model error: both see the same measurements.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from furnace_env.cost import CostWeights
from furnace_env.physics import FurnaceParams, is_real
from furnace_env.ratio import DEFAULT_EXCESS_AIR
from planners.estimation import EstimatorConfig, FurnaceUKF
from planners.mpc import MPCController
from planners.objective import ObjectiveConfig
from planners.optim import Objective, TrajectoryOptimizer, make_optimizer
from planners.oracle import DEFAULT_ORACLE_OPTIMIZER
from planners.physics_objective import (
    COORDS,
    SimCache,
    decode_actions,
    encode_actions,
    physics_objective,
)

__all__ = ["PhysicsMPCConfig", "PhysicsPlanningModel", "make_physics_mpc", "PLANNER_BACKOFFS"]

#: The world-model planner's constraint back-offs (``ObjectiveConfig`` defaults), for a physics MPC
#: with the same objective tightening (the ``physics-mpc-backoff`` row of the comparison).
PLANNER_BACKOFFS: dict[str, float] = {"co_backoff": ObjectiveConfig.co_backoff,
                                      "o2_backoff": ObjectiveConfig.o2_backoff}


@dataclass(frozen=True)
class PhysicsMPCConfig:
    """Model, estimator and objective of the physics MPC."""

    params: FurnaceParams = field(default_factory=FurnaceParams)
    """Plant parameters of the model: the design (nominal) values, never read from the plant."""
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    """Noise model of the unscented Kalman filter."""
    smooth: float = 0.0
    """Weight of the squared change of each command between steps (0: the env's cost only, as the oracle)."""
    trip_penalty: float | None = None
    """Cost of a trip within the horizon (None: the env's own ``trip_penalty``)."""
    coords: str = "ratio"
    """Search coordinates: ``"ratio"`` (fuel command, excess air at the *estimated* fuel quality) or ``"raw"``."""
    excess_air: tuple[float, float] = DEFAULT_EXCESS_AIR
    """Excess-air range ``lambda - 1`` mapped onto [-1, 1] in ``"ratio"`` coordinates (the oracle's)."""
    co_backoff: float = 0.0
    """Constraint tightening: the plan pays for predicted CO above ``(1 - co_backoff)`` times the env's CO
    limit (0: the env's limit, the oracle's objective). A margin for the estimate's error, as the
    world-model planner keeps (:data:`PLANNER_BACKOFFS`)."""
    o2_backoff: float = 0.0
    """Percentage points added to the env's O2 minimum in the plan's cost (0: the oracle's objective): a
    margin for a rise in the fuel's air demand that the O2 analyser reports only after its dead time."""

    def __post_init__(self) -> None:
        if not isinstance(self.params, FurnaceParams):
            raise ValueError(f"PhysicsMPCConfig.params={self.params!r} must be a FurnaceParams")
        if not isinstance(self.estimator, EstimatorConfig):
            raise ValueError(f"PhysicsMPCConfig.estimator={self.estimator!r} must be an EstimatorConfig")
        if not (is_real(self.smooth) and math.isfinite(self.smooth) and self.smooth >= 0):
            raise ValueError(f"PhysicsMPCConfig.smooth={self.smooth!r} must be finite and >= 0")
        if self.trip_penalty is not None and not (is_real(self.trip_penalty) and math.isfinite(self.trip_penalty)
                                                  and self.trip_penalty >= 0):
            raise ValueError(f"PhysicsMPCConfig.trip_penalty={self.trip_penalty!r} must be finite and >= 0 or None")
        if self.coords not in COORDS:
            raise ValueError(f"PhysicsMPCConfig.coords={self.coords!r}; allowed: {', '.join(map(repr, COORDS))}")
        ea = self.excess_air
        if not (isinstance(ea, list | tuple) and len(ea) == 2 and all(is_real(v) and math.isfinite(v) for v in ea)
                and -1.0 < ea[0] < ea[1]):
            raise ValueError(f"PhysicsMPCConfig.excess_air={ea!r} must be two finite numbers, -1 < low < high")
        if not (is_real(self.co_backoff) and 0.0 <= self.co_backoff < 1.0):
            raise ValueError(f"PhysicsMPCConfig.co_backoff={self.co_backoff!r} must lie in [0, 1)")
        if not (is_real(self.o2_backoff) and math.isfinite(self.o2_backoff) and self.o2_backoff >= 0):
            raise ValueError(f"PhysicsMPCConfig.o2_backoff={self.o2_backoff!r} must be finite and >= 0")


class PhysicsPlanningModel:
    """A :class:`~planners.mpc.PlanningModel`: filter the observations, plan on nominal physics from the estimate.

    Args:
        config: model, estimator and objective.
        weights: the task's cost weights (the env's public ``weights``).
        trip_penalty: the task's trip penalty (used when ``config.trip_penalty`` is None).
    """

    def __init__(self, config: PhysicsMPCConfig | None = None, weights: CostWeights | None = None,
                 trip_penalty: float = 500.0) -> None:
        self.cfg = config if config is not None else PhysicsMPCConfig()
        self.weights = weights if weights is not None else CostWeights()
        self.trip_penalty = float(trip_penalty if self.cfg.trip_penalty is None else self.cfg.trip_penalty)
        self.estimator = FurnaceUKF(self.cfg.params, self.weights, self.cfg.estimator)
        # The planner's copy of the cost, tightened by the back-offs (the env's reward is untouched).
        self.plan_weights = dataclasses.replace(
            self.weights, co_limit=self.weights.co_limit * (1.0 - self.cfg.co_backoff),
            o2_min=self.weights.o2_min + self.cfg.o2_backoff)
        self._sims = SimCache(self.cfg.params, self.plan_weights)
        self.reset()

    def reset(self) -> None:
        """Forget the estimate (a new episode)."""
        self.estimator.reset()
        self._last_obs: np.ndarray | None = None

    def observe(self, obs: np.ndarray) -> None:
        """Filter one observation (the filter checks it)."""
        self.estimator.step(obs)
        self._last_obs = np.asarray(obs, dtype=np.float64).reshape(-1)

    def _quality(self) -> float:
        return self.estimator.disturbances().fuel_quality

    def decode(self, u: np.ndarray | torch.Tensor, quality: float | None = None) -> np.ndarray:
        """Search coordinates -> env actions, at the estimated fuel quality."""
        q = self._quality() if quality is None and self.cfg.coords == "ratio" else quality
        return decode_actions(u, self.cfg.params, self.cfg.coords, self.cfg.excess_air, q)

    def encode(self, action: np.ndarray, quality: float | None = None) -> np.ndarray:
        """Env actions -> search coordinates, at the estimated fuel quality."""
        q = self._quality() if quality is None and self.cfg.coords == "ratio" else quality
        return encode_actions(action, self.cfg.params, self.cfg.coords, self.cfg.excess_air, q)

    def nominal_action(self) -> np.ndarray | None:
        """The commands now applied (the observation's previous-command channels), in search coordinates."""
        if self._last_obs is None:
            return None
        return self.encode(self._last_obs[6:8])

    def make_objective(self, obs: np.ndarray | None = None) -> Objective:
        """The oracle's objective from the estimated state, setpoint (observed) and disturbances held."""
        if self._last_obs is None:
            raise RuntimeError("observe() an observation before planning")
        o = self._last_obs
        snap = self.estimator.snapshot(setpoint=o[1], cmd=o[6:8])
        q = float(snap.dist[2])
        return physics_objective(snap, self._sims, self.trip_penalty, self.cfg.smooth, lambda u: self.decode(u, q))


def make_physics_mpc(env, optimizer: str = "cem", horizon: int = 30, seed: int = 0,
                     config: PhysicsMPCConfig | None = None, keep_last: int = 4, n_fresh: int = 4,
                     selection: str = "best", temperature: float = 0.5, **kwargs: Any) -> MPCController:
    """The physics MPC for ``env`` (the comparison harness's factory).

    Planner settings default to the oracle's (``make_oracle``: CEM at its budget, 30-step horizon),
    so the two differ only in what they know. ``kwargs`` naming a :class:`PhysicsMPCConfig` field
    (``smooth``, ``coords``, ...) go to the config (when ``config`` is not given); the rest override
    the optimiser's options. From ``env`` only the task's public cost weights and trip penalty are read.
    """
    if optimizer not in ("cem", "mppi", "random"):
        raise ValueError(f"physics-mpc optimizer={optimizer!r}; allowed: 'cem', 'mppi', 'random' "
                         "(the numba physics has no gradients)")
    names = {f for f in PhysicsMPCConfig.__dataclass_fields__}
    cfg_kw = {k: v for k, v in kwargs.items() if k in names}
    opt_kw = {k: v for k, v in kwargs.items() if k not in names}
    if config is not None and cfg_kw:
        raise ValueError(f"physics-mpc: {sorted(cfg_kw)} given beside config=; set them in the config")
    cfg = config if config is not None else PhysicsMPCConfig(**cfg_kw)
    base = getattr(env, "unwrapped", env)
    weights = getattr(base, "weights", None)
    penalty = getattr(base, "trip_penalty", 500.0)
    opt = make_optimizer(optimizer, **{**(DEFAULT_ORACLE_OPTIMIZER if optimizer == "cem" else {}), **opt_kw})
    model = PhysicsPlanningModel(cfg, weights, penalty)
    traj = TrajectoryOptimizer(opt, horizon=horizon, action_dim=2, keep_last=keep_last, n_fresh=n_fresh,
                               selection=selection, temperature=temperature, dtype=torch.float64)
    return MPCController(model, traj, generator=torch.Generator().manual_seed(seed), name="physics-mpc")
