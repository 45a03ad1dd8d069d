"""The physics MPC: its unscented Kalman filter finds disturbances it cannot see, and it plans from the estimate only."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from furnace_env.pi import PIController
from furnace_env.scenarios import LOAD_REF, Scenario, get_scenario
from planners.estimation import EstimatorConfig, FurnaceUKF
from planners.evaluation import make_scenario_env, run_episode
from planners.physics_mpc import PhysicsMPCConfig, make_physics_mpc

#: The estimator's documented convergence on a constant unmeasured step: within this many control
#: steps (100 s) of the step, the estimate stays within the tolerance below until the episode ends.
SETTLE_STEPS = 20
#: Tolerances: load 0.05 LOAD_REF (37 kW, 5 % of the nominal heat demand), leak 0.01 kg/s.
LOAD_TOL = 0.05
LEAK_TOL = 0.01


def _step_scenario(kind: str) -> Scenario:
    """A constant setpoint and one clean step of one hidden disturbance at 150 s (no wander, no jitter)."""
    events = {"load": {"load_events": ((150.0, 1.3),)}, "leak": {"leak_events": ((150.0, 0.07),)}}[kind]
    return Scenario(name=f"{kind}_step", n_steps=80, setpoint=920.0, load_wander=0.0, time_jitter=0.0,
                    size_jitter=0.0, **events)


@pytest.mark.parametrize("kind", ["load", "leak"])
def test_estimator_converges_on_an_unmeasured_step(kind):
    # PI drives the plant; the filter sees only the (noisy) observations.
    env = make_scenario_env(_step_scenario(kind))
    obs, info = env.reset(seed=0)
    ukf = FurnaceUKF(env.unwrapped.params)
    pi = PIController()
    ukf.step(obs)
    step_k = int(150.0 / env.unwrapped.params.dt)
    errors = []
    for _ in range(80):
        obs, _, term, trunc, info = env.step(pi.predict(obs)[0])
        ukf.step(obs)
        assert np.isfinite(ukf.x).all() and np.isfinite(ukf.P).all()
        d = ukf.disturbances()
        errors.append((abs(d.load - info["load"]) / LOAD_REF, abs(d.leak - info["leak"]),
                       abs(d.fuel_quality - info["fuel_quality"])))
        assert not term
    err = np.array(errors)
    after = err[step_k + SETTLE_STEPS:]
    col, tol = (0, LOAD_TOL) if kind == "load" else (1, LEAK_TOL)
    assert after[:, col].max() < tol, after[:, col].max()
    # Right after the step, before the filter has seen it settle, the error is large: the check can fail.
    assert err[step_k:step_k + 3, col].max() > tol / 2
    # The step is not misread as a change of the fuel (within 0.02 of the design fuel throughout).
    assert after[:, 2].max() < 0.02


def test_estimator_stays_finite_under_wild_actions():
    env = make_scenario_env(dataclasses.replace(get_scenario("nominal"), n_steps=40))
    obs, _ = env.reset(seed=1)
    ukf = FurnaceUKF(env.unwrapped.params)
    ukf.step(obs)
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, size=2).astype(np.float32))
        ukf.step(obs)
        assert np.isfinite(ukf.x).all() and np.isfinite(ukf.P).all()
        assert np.all(np.linalg.eigvalsh(ukf.P) > 0)
        if term:
            break


def test_physics_mpc_runs_an_episode_from_observations_only():
    env = make_scenario_env(dataclasses.replace(get_scenario("load_swing"), n_steps=6))
    # Built from the task's public definition alone: no hidden state to read.
    task = SimpleNamespace(weights=env.unwrapped.weights, trip_penalty=env.unwrapped.trip_penalty)
    ctl = make_physics_mpc(task, n_candidates=8, iterations=2, horizon=5)
    ep = run_episode(ctl, env, seed=0)
    assert ep.actions.shape == (6, 2)
    assert np.isfinite(ep.actions).all() and np.abs(ep.actions).max() <= 1.0
    assert ctl.stats()["planner/evals_per_step"] > 0
    # Deterministic per seed: the same episode again.
    assert np.array_equal(run_episode(ctl, env, seed=0).actions, ep.actions)
    # predict() on one observation, SB3-style.
    obs, _ = env.reset(seed=0)
    ctl.reset()
    action, state = ctl.predict(obs)
    assert action.shape == (2,) and state is None


def test_bad_config_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="EstimatorConfig.load_walk"):
        EstimatorConfig(load_walk=0.0)
    with pytest.raises(ValueError, match="EstimatorConfig.init_std"):
        EstimatorConfig(init_std=(1.0, 2.0))
    with pytest.raises(ValueError, match="EstimatorConfig.alpha"):
        EstimatorConfig(alpha=2.0)
    with pytest.raises(ValueError, match="PhysicsMPCConfig.smooth"):
        PhysicsMPCConfig(smooth=-1.0)
    with pytest.raises(ValueError, match="PhysicsMPCConfig.coords"):
        PhysicsMPCConfig(coords="polar")
    env = make_scenario_env("nominal")
    with pytest.raises(ValueError, match="allowed"):
        make_physics_mpc(env, optimizer="langevin")
    with pytest.raises(ValueError, match="config"):
        make_physics_mpc(env, config=PhysicsMPCConfig(), smooth=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        FurnaceUKF().step(np.full(8, np.nan))
    with pytest.raises(RuntimeError, match="step"):
        FurnaceUKF().disturbances()


def test_registry_builds_both_physics_rows():
    from planners.experiment import DEFAULT_CONTROLLERS, CompareConfig, controller_specs
    from planners.physics_mpc import PLANNER_BACKOFFS

    specs = {s.name: s for s in controller_specs(CompareConfig(controllers=["physics-mpc", "physics-mpc-backoff"]))}
    env = make_scenario_env("nominal")
    plain, margin = specs["physics-mpc"].build(env), specs["physics-mpc-backoff"].build(env)
    assert plain.model.plan_weights == env.unwrapped.weights
    w = env.unwrapped.weights
    assert margin.model.plan_weights.o2_min == pytest.approx(w.o2_min + PLANNER_BACKOFFS["o2_backoff"])
    assert margin.model.plan_weights.co_limit == pytest.approx(w.co_limit * (1 - PLANNER_BACKOFFS["co_backoff"]))
    assert "physics-mpc" not in DEFAULT_CONTROLLERS  # the oracle's budget twice over: an explicit choice
