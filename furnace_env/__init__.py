"""Furnace-v0: a gas-fired combustion furnace as a Gymnasium environment.

``import furnace_env`` registers ``Furnace-v0``; ``gym.make("furnace_env:Furnace-v0")``
works without a prior import. Entry points are strings, so importing stays cheap.
"""

from pathlib import Path

from gymnasium.envs.registration import register, registry

from furnace_env._numba_cache import configure_numba_cache

# Before the first ``cache=True`` kernel is compiled (on import of the modules below).
configure_numba_cache(Path(__file__).parent)

# ruff: noqa: E402 (the imports below must follow the cache set-up)

from furnace_env.cost import CostWeights, obs_cost, step_cost
from furnace_env.env import FurnaceEnv, validate_observation
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
    "validate_observation",
    "DEFAULT_EPISODE_STEPS",
]

#: The registered time limit: the length of every preset scenario, the ``Scenario`` default (see
#: ``FurnaceEnv``, "Time limit").
DEFAULT_EPISODE_STEPS = Scenario().n_steps

if "Furnace-v0" not in registry:
    register(
        id="Furnace-v0",
        entry_point="furnace_env.env:FurnaceEnv",
        vector_entry_point="furnace_env.vector:FurnaceVectorEnv",
        max_episode_steps=DEFAULT_EPISODE_STEPS,
    )
