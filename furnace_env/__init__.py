"""Furnace-v0: a gas-fired combustion furnace as a Gymnasium environment.

``import furnace_env`` registers ``Furnace-v0``; ``gym.make("furnace_env:Furnace-v0")``
works without a prior import. Entry points are strings, so importing stays cheap.
"""

from gymnasium.envs.registration import register, registry

from furnace_env.cost import CostWeights, obs_cost, step_cost
from furnace_env.env import FurnaceEnv
from furnace_env.physics import N_OBS, OBS_NAMES, FurnaceParams
from furnace_env.scenarios import (
    EVAL_SCENARIOS,
    FAMILIES,
    SCENARIOS,
    Scenario,
    family_scenarios,
    get_scenario,
    load_scenario,
)
from furnace_env.state import FurnaceState
from furnace_env.vector import FurnaceVectorEnv

__all__ = [
    "CostWeights",
    "EVAL_SCENARIOS",
    "FAMILIES",
    "FurnaceEnv",
    "FurnaceParams",
    "FurnaceState",
    "FurnaceVectorEnv",
    "N_OBS",
    "OBS_NAMES",
    "SCENARIOS",
    "Scenario",
    "family_scenarios",
    "get_scenario",
    "load_scenario",
    "obs_cost",
    "step_cost",
]

if "Furnace-v0" not in registry:
    register(
        id="Furnace-v0",
        entry_point="furnace_env.env:FurnaceEnv",
        vector_entry_point="furnace_env.vector:FurnaceVectorEnv",
    )
