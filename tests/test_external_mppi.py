"""The pytorch-mppi package's MPPI on the world-model objective: it plans an episode at the in-house MPPI's compute."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import furnace_env  # noqa: F401
from eblnn_agent.config import ModelConfig
from eblnn_agent.model import EBLNN
from planners.evaluation import run_episode
from planners.external_mppi import PyTorchMPPIConfig, PyTorchMPPIController

pytest.importorskip("pytorch_mppi")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig

    torch.manual_seed(0)
    m = EBLNN(ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8, 4]))
    return str(save_checkpoint(tmp_path_factory.mktemp("wm") / "m.pt", m, WorldModelRunConfig(model=m.cfg)))


def _env(n_steps: int = 4):
    return gym.make("Furnace-v0", scenario={"name": "short", "n_steps": n_steps})


def test_runs_an_episode_at_the_in_house_mppi_compute(checkpoint):
    from planners.factories import make_eblnn_planner

    env = _env()
    ours = make_eblnn_planner(env, checkpoint=checkpoint, optimizer="mppi", horizon=4, compute=0.1)
    ext = make_eblnn_planner(env, checkpoint=checkpoint, optimizer="pytorch-mppi", horizon=4, compute=0.1)
    assert isinstance(ext, PyTorchMPPIController)
    ep_ours = run_episode(ours, env, seed=0)
    ep = run_episode(ext, env, seed=0)
    assert ep.actions.shape == (4, 2)
    assert np.isfinite(ep.actions).all() and np.abs(ep.actions).max() <= 1.0
    assert np.isfinite(ep.rewards).all()
    # Counted where the objective is called: every step spends what the in-house MPPI spends.
    assert ext.evals == [ours.total_evals // len(ep_ours.actions)] * 4
    assert ours.total_evals == 4 * ours.trajopt.optimizer.nominal_evals()
    assert ext.stats()["planner/evals_per_step"] == ours.stats()["planner/evals_per_step"]


def test_deterministic_per_seed_and_leaves_the_global_generator_alone(checkpoint):
    from planners.factories import make_eblnn_planner

    env = _env(3)
    ctls = [make_eblnn_planner(env, checkpoint=checkpoint, optimizer="pytorch-mppi", horizon=4, seed=s, compute=0.1)
            for s in (1, 1, 2)]
    state = torch.random.get_rng_state()  # after construction: building a model draws its initial weights
    a, b, c = (run_episode(ctl, env, seed=0).actions for ctl in ctls)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_options_are_refused_naming_them(checkpoint):
    from planners.factories import make_eblnn_planner

    with pytest.raises(ValueError, match="PyTorchMPPIConfig.num_samples"):
        PyTorchMPPIConfig(num_samples=0)
    with pytest.raises(ValueError, match="PyTorchMPPIConfig.temperature"):
        PyTorchMPPIConfig(temperature=float("nan"))
    with pytest.raises(ValueError, match="selection='softmax'"):
        make_eblnn_planner(_env(), checkpoint=checkpoint, optimizer="pytorch-mppi", selection="softmax")
    with pytest.raises(ValueError, match="PlanningModel"):
        PyTorchMPPIController(object())
    # Options of the library's config reach it; an unknown one is refused, named.
    ctl = make_eblnn_planner(_env(), checkpoint=checkpoint, optimizer="pytorch-mppi", temperature=0.5)
    assert ctl.config.temperature == 0.5
    with pytest.raises(ValueError, match="bogus"):
        make_eblnn_planner(_env(), checkpoint=checkpoint, optimizer="pytorch-mppi", bogus=1)
