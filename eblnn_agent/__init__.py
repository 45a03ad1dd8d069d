"""EB-LNN: an energy-based liquid-neural-network world model of Furnace-v0.

A CfC body (:mod:`ncps`) over (observation, action) sequences, a physics head that predicts
the next observation and an energy head trained by contrastive divergence with Langevin
fantasies (:mod:`eblnn_agent.sampler`). Train with ``python train/world_model.py``; load with
:func:`eblnn_agent.checkpoint.load_checkpoint`. Names load lazily (importing the package is cheap).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EBLNN",
    "RolloutOut",
    "ModelConfig",
    "EnergyConfig",
    "DataConfig",
    "TrainConfig",
    "WorldModelRunConfig",
    "LangevinSampler",
    "ReplayBuffer",
    "Trainer",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "collect_transitions",
    "load_or_collect",
    "energy_auroc",
    "make_logger",
    "resolve_device",
]

_WHERE = {
    "EBLNN": "model", "RolloutOut": "model",
    "ModelConfig": "config", "EnergyConfig": "config", "DataConfig": "config", "TrainConfig": "config",
    "WorldModelRunConfig": "config",
    "LangevinSampler": "sampler", "ReplayBuffer": "sampler",
    "Trainer": "trainer",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "CheckpointError": "checkpoint",
    "collect_transitions": "data", "load_or_collect": "data",
    "energy_auroc": "losses",
    "make_logger": "logger",
    "resolve_device": "utils",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"eblnn_agent.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'eblnn_agent' has no attribute {name!r}")
