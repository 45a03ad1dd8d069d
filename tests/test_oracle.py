"""The oracle reads the true state, predicts the plant exactly, and beats the reference PI controller."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from furnace_env.pi import PIController
from furnace_env.scenarios import get_scenario
from planners.evaluation import episode_metrics, make_scenario_env, run_episode
from planners.mpc import MPCController
from planners.optim import TrajectoryOptimizer, make_optimizer
from planners.oracle import OracleConfig, OracleModel, make_oracle


def _env(n_steps: int = 240, scenario: str = "nominal", **kw):
    return make_scenario_env(dataclasses.replace(get_scenario(scenario), n_steps=n_steps), **kw)


@pytest.mark.parametrize("coords", ["ratio", "raw"])
def test_objective_predicts_the_plant(coords):
    # With disturbances held (load wander off), the oracle's cost of a sequence is what the env charges.
    sc = dataclasses.replace(get_scenario("nominal"), load_wander=0.0, n_steps=30)
    env = make_scenario_env(sc)
    env.reset(seed=0)
    model = OracleModel(env, OracleConfig(coords=coords))
    u = torch.as_tensor(model.encode(np.array([[0.3, 0.1]] * 12)))[None] + 0.05 * torch.randn(1, 12, 2, dtype=torch.float64)
    predicted = float(model.make_objective()(u)[0])
    actions = model.decode(u[0])
    charged = -sum(env.step(a)[1] for a in actions)
    assert predicted == pytest.approx(charged, rel=1e-9)


def test_coordinates_round_trip():
    env = _env()
    env.reset(seed=0)
    model = OracleModel(env)
    a = np.array([[0.2, -0.1], [-0.5, -0.6], [0.8, 0.6]])  # excess air 5 to 25 %
    assert np.allclose(model.decode(model.encode(a)), a, atol=1e-9)
    u = np.random.default_rng(0).uniform(-1, 1, size=(50, 2))
    assert (np.abs(model.decode(u)) <= 1.0).all()


def test_trip_is_penalised_and_never_cheap():
    env = _env()
    env.reset(seed=0)
    model = OracleModel(env, OracleConfig(coords="raw"))
    obj = model.make_objective()
    # Full fuel with no air: flame safeguard within the horizon. Holding the current commands: no trip.
    rich = torch.tensor([[1.0, -1.0]], dtype=torch.float64).expand(1, 12, 2)
    hold = torch.as_tensor(env.unwrapped.command).expand(1, 12, 2)
    c = obj(torch.cat([rich, hold]))
    assert c[0] > c[1] + env.unwrapped.trip_penalty


def test_oracle_does_not_touch_the_plant():
    env = _env()
    env.reset(seed=0)
    before = env.unwrapped.get_state()
    ctl = make_oracle(env, n_candidates=16, iterations=2, horizon=8)
    ctl.act(np.zeros((1, 8)))
    after = env.unwrapped.get_state()
    assert np.array_equal(before.physics, after.physics)
    assert np.array_equal(before.o2_buf, after.o2_buf) and before.substep == after.substep
    assert before.rng_state == after.rng_state


def test_oracle_is_deterministic_per_seed():
    def episode(seed):
        env = _env(6)
        ctl = make_oracle(env, seed=seed, n_candidates=16, iterations=2, horizon=10)
        return run_episode(ctl, env, seed=0).actions

    assert np.array_equal(episode(1), episode(1))
    assert not np.array_equal(episode(1), episode(2))


def test_make_oracle_errors():
    env = _env()
    with pytest.raises(ValueError, match="allowed"):
        make_oracle(env, optimizer="langevin")
    with pytest.raises(ValueError, match="allowed"):
        make_oracle(env, coords="polar")
    with pytest.raises(ValueError, match="FurnaceEnv"):
        OracleModel(object())


def test_mpc_rejects_a_batch_and_bad_parts():
    env = _env()
    env.reset(seed=0)
    ctl = make_oracle(env, n_candidates=8, iterations=1, horizon=4)
    with pytest.raises(ValueError, match="one plant"):
        ctl.act(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="PlanningModel"):
        MPCController(object(), TrajectoryOptimizer(make_optimizer("cem"), horizon=4))


def test_oracle_beats_pi_on_a_short_nominal_episode():
    # 60 steps (5 min) include the first setpoint step (+60 K at about 240 s).
    env = _env(60)
    ret_pi = episode_metrics(run_episode(PIController(), env, seed=0))["return"]
    ctl = make_oracle(env, n_candidates=64, iterations=6)
    m = episode_metrics(run_episode(ctl, env, seed=0))
    print(f"oracle {m['return']:.1f} vs PI {ret_pi:.1f}")
    assert m["trips"] == 0
    assert m["return"] > ret_pi + 0.02 * abs(ret_pi), (m["return"], ret_pi)
    assert ctl.stats()["planner/evals_per_step"] > 0
