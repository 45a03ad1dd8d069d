"""Planners for Furnace-v0: model-agnostic optimisers, MPC, the oracle, residual RL on PI, and the evaluation harness.

The controller interface and the reference PI controller live with the plant
(:mod:`furnace_env.control`, :mod:`furnace_env.pi`).

Imports are light: torch-based modules (``planners.optim``, ``planners.mpc``, ``planners.oracle``)
load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    # planners.optim
    "Optimizer",
    "OptimResult",
    "PlanResult",
    "TrajectoryOptimizer",
    "LangevinConfig",
    "LangevinOptimizer",
    "CEMConfig",
    "CEMOptimizer",
    "MPPIConfig",
    "MPPIOptimizer",
    "RandomShootingConfig",
    "RandomShootingOptimizer",
    "make_optimizer",
    "make_matched_optimizer",
    # planners.mpc
    "PlanningModel",
    "MPCController",
    # planners.oracle
    "OracleConfig",
    "OracleModel",
    "make_oracle",
    # planners.estimation, planners.physics_mpc (the information-limited reference)
    "EstimatorConfig",
    "FurnaceUKF",
    "PhysicsMPCConfig",
    "make_physics_mpc",
    # planners.external_mppi (the pytorch-mppi package as a peer)
    "PyTorchMPPIConfig",
    "PyTorchMPPIController",
    # planners.trust
    "TrustConfig",
    "TrustCalibration",
    "TrustMonitor",
    "TrustSupervisedController",
    "calibrate",
    "make_supervised_planner",
    # planners.residual
    "ResidualPI",
    "ResidualPIWrapper",
]

_OPTIM = ("Optimizer", "OptimResult", "PlanResult", "TrajectoryOptimizer", "LangevinConfig",
          "LangevinOptimizer", "CEMConfig", "CEMOptimizer", "MPPIConfig", "MPPIOptimizer",
          "RandomShootingConfig", "RandomShootingOptimizer", "make_optimizer", "make_matched_optimizer")
_LAZY = {
    **{name: "planners.optim" for name in _OPTIM},
    "PlanningModel": "planners.mpc",
    "MPCController": "planners.mpc",
    "OracleConfig": "planners.oracle",
    "OracleModel": "planners.oracle",
    "make_oracle": "planners.oracle",
    "EstimatorConfig": "planners.estimation",
    "FurnaceUKF": "planners.estimation",
    "PhysicsMPCConfig": "planners.physics_mpc",
    "make_physics_mpc": "planners.physics_mpc",
    "PyTorchMPPIConfig": "planners.external_mppi",
    "PyTorchMPPIController": "planners.external_mppi",
    **{name: "planners.trust" for name in ("TrustConfig", "TrustCalibration", "TrustMonitor",
                                           "TrustSupervisedController", "calibrate", "make_supervised_planner")},
    "ResidualPI": "planners.residual",
    "ResidualPIWrapper": "planners.residual",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'planners' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
