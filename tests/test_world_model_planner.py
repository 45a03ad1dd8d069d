"""The EB-LNN planning objective and MPC on Furnace-v0 with a tiny untrained world model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import furnace_env  # noqa: F401
from eblnn_agent.config import ModelConfig
from eblnn_agent.model import EBLNN
from planners.evaluation import run_episode
from planners.mpc import MPCController
from planners.objective import EnsemblePlanningModel, ObjectiveConfig, WorldModelPlanningModel
from planners.optim import TrajectoryOptimizer, make_optimizer


def _tiny_model(seed: int) -> EBLNN:
    torch.manual_seed(seed)
    m = EBLNN(ModelConfig(hidden_size=16, backbone_units=16, physics_hidden_dims=[16], ebm_hidden_dims=[16, 8]))
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def model():
    return _tiny_model(0)


def _planner(model, optimizer="langevin", fast=True, seed=0, **obj):
    pm = WorldModelPlanningModel(model, ObjectiveConfig(**obj), fast=fast)
    opt = make_optimizer(optimizer, n_candidates=8, iterations=2)
    return MPCController(pm, TrajectoryOptimizer(opt, horizon=5), seed=seed)


def test_predict_runs_a_short_episode_in_bounds(model):
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 6})
    ep = run_episode(_planner(model), env, seed=3)
    assert ep.actions.shape == (6, 2)
    assert np.isfinite(ep.actions).all() and np.abs(ep.actions).max() <= 1.0
    assert np.isfinite(ep.rewards).all()


@pytest.mark.parametrize("optimizer", ["langevin", "cem"])
def test_fast_and_stock_paths_give_the_same_plans(model, optimizer):
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 4})
    acts = []
    for fast in (True, False):
        ep = run_episode(_planner(model, optimizer, fast=fast), env, seed=5)
        acts.append(ep.actions)
    np.testing.assert_allclose(acts[0], acts[1], atol=1e-4)


def test_energy_term_enters_with_beta(model):
    env = gym.make("Furnace-v0")
    obs, _ = env.reset(seed=0)
    u = torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    costs = {}
    for beta in (0.0, 1.0):
        pm = WorldModelPlanningModel(model, ObjectiveConfig(beta=beta))
        pm.observe(obs)
        costs[beta] = pm.make_objective(obs)(u)
    pm.observe(obs)
    out = model.rollout(pm._last_obs.expand(4, -1), pm._h.expand(4, -1), pm.to_actions(u))
    torch.testing.assert_close(costs[1.0] - costs[0.0], model.sequence_energy(out.hidden), rtol=1e-4, atol=1e-4)


def test_objective_terms_sum_to_the_objective(model):
    env = gym.make("Furnace-v0")
    obs, _ = env.reset(seed=0)
    u = torch.rand(6, 5, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for cfg in (ObjectiveConfig(beta=1.0), ObjectiveConfig(beta=0.0, smooth=0.0, terminal_steps=0.0)):
        pm = WorldModelPlanningModel(model, cfg)
        pm.observe(obs)
        parts = pm.make_objective(obs, terms=True)(u)
        assert set(parts) == {"track", "fuel", "co", "o2", "terminal", "energy", "smooth"}
        assert all(v.shape == (6,) for v in parts.values())
        torch.testing.assert_close(sum(parts.values()), pm.make_objective(obs)(u), rtol=1e-5, atol=1e-3)
        assert (parts["fuel"] > 0).all()
        if cfg.beta == 0:
            assert not parts["energy"].any() and not parts["smooth"].any() and not parts["terminal"].any()
        else:
            assert parts["energy"].abs().sum() > 0 and (parts["smooth"] > 0).all()


def test_co_backoff_charges_predicted_co_below_the_env_limit(model):
    """Tightening charges exactly the CO between the tightened and the env's limit, nothing else."""
    import dataclasses

    from furnace_env.cost import obs_cost

    env = gym.make("Furnace-v0")
    obs, _ = env.reset(seed=0)
    u = torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    costs = {}
    for backoff in (0.0, 0.5):
        pm = WorldModelPlanningModel(model, ObjectiveConfig(beta=0.0, co_backoff=backoff))
        pm.observe(obs)
        costs[backoff] = pm.make_objective(obs)(u)
    assert pm.plan_weights.co_limit == pytest.approx(0.5 * pm.weights.co_limit)
    out = model.rollout(pm._last_obs.expand(4, -1), pm._h.expand(4, -1), pm.to_actions(u))
    w = pm.weights
    # Force the predicted CO into the band between the two limits: only the tightened cost sees it.
    pred = out.obs.clone()
    pred[..., 3] = 0.75 * w.co_limit
    assert float(obs_cost(pred, w).sum()) == pytest.approx(float(obs_cost(pred, dataclasses.replace(
        w, w_co=0.0)).sum()))
    assert (obs_cost(pred, pm.plan_weights) > obs_cost(pred, w)).all()
    expected = (obs_cost(out.obs, pm.plan_weights) - obs_cost(out.obs, w)).sum(dim=1)
    torch.testing.assert_close(costs[0.5] - costs[0.0], expected, rtol=1e-4, atol=1e-4)
    # The env's own reward is untouched.
    assert env.unwrapped.weights.co_limit == w.co_limit


def test_bias_filter_estimates_and_applies_the_output_disturbance(model):
    env = gym.make("Furnace-v0")
    obs0, _ = env.reset(seed=0)
    a = np.array([0.1, 0.2])
    obs1, *_ = env.step(a.astype(np.float32))
    pm = WorldModelPlanningModel(model, ObjectiveConfig(bias_filter=0.5, co_floor=10.0, track_integral=0.0))
    pm.observe(obs0)
    assert torch.count_nonzero(pm.bias) == 0
    pm.applied(a)
    pm.observe(obs1)
    with torch.no_grad():
        h = model.step(pm._tensor(obs0), pm._tensor(a), model.initial_state(1))
        pred = model.predict_next(pm._tensor(obs0), h, pm._tensor(a))[0].double().numpy()
    err = [obs1[0] - pred[0], obs1[2] - pred[2], np.log((max(obs1[3], 0) + 10) / (max(pred[3], 0) + 10))]
    np.testing.assert_allclose(pm.bias.double().numpy(), 0.5 * np.array(err), rtol=1e-4, atol=1e-4)
    # The correction: additive on temperature and O2, multiplicative on CO + floor; others untouched.
    x = torch.tensor([[900.0, 950.0, 3.0, 40.0, 100.0, 1800.0, 0.1, 0.2]])
    y = pm.correct(x)[0].double().numpy()
    b = pm.bias.double().numpy()
    np.testing.assert_allclose(y[[0, 2]], [900.0 + b[0], 3.0 + b[1]], rtol=1e-5)
    np.testing.assert_allclose(y[3], 50.0 * np.exp(b[2]) - 10.0, rtol=1e-4)
    np.testing.assert_array_equal(y[[1, 4, 5, 6, 7]], x[0, [1, 4, 5, 6, 7]].numpy())
    # Off at 0, and reset clears the estimate.
    assert WorldModelPlanningModel(model, ObjectiveConfig(bias_filter=0.0, track_integral=0.0)).correct(x) is x
    pm.reset()
    assert torch.count_nonzero(pm.bias) == 0


def test_integral_action_shifts_the_target_and_resets(model):
    pm = WorldModelPlanningModel(model, ObjectiveConfig(track_integral=0.1, track_integral_max=1.5,
                                                        track_integral_band=15.0))
    obs = np.array([890.0, 900.0, 3.0, 40.0, 100.0, 1800.0, 0.1, 0.2])
    pm.observe(obs)  # 10 K below the setpoint: the target moves up by 0.1 * 10
    assert pm.target_shift == pytest.approx(1.0)
    pm.applied(np.array([0.1, 0.2]))
    pm.observe(obs)
    assert pm.target_shift == pytest.approx(1.5)  # clipped at track_integral_max
    x = torch.tensor([[890.0, 900.0, 3.0, 40.0, 100.0, 1800.0, 0.1, 0.2]])
    assert pm.correct(x)[0, 1].item() == pytest.approx(901.5)  # the planner's target, not the env's
    far = obs.copy()
    far[0] = 850.0  # a transient (50 K off) is not integrated
    pm.applied(np.array([0.1, 0.2]))
    pm.observe(far)
    assert pm.target_shift == pytest.approx(1.5)
    moved = obs.copy()
    moved[1] = 880.0  # a new setpoint resets the shift (and 880 - 890 = -10 K starts it again)
    pm.applied(np.array([0.1, 0.2]))
    pm.observe(moved)
    assert pm.target_shift == pytest.approx(-1.0)
    pm.reset()
    assert pm.target_shift == 0.0
    # 0 switches it off.
    pm0 = WorldModelPlanningModel(model, ObjectiveConfig(track_integral=0.0))
    pm0.observe(obs)
    assert pm0.target_shift == 0.0


def test_unfrozen_model_gets_a_warning_not_a_silent_slow_path(model):
    import copy
    import warnings

    live = copy.deepcopy(model).requires_grad_(True)
    with pytest.warns(UserWarning, match="requires_grad_"):
        WorldModelPlanningModel(live)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WorldModelPlanningModel(model)  # frozen: no warning
        WorldModelPlanningModel(live, fast=False)  # the stock path was asked for


def test_search_coordinates_round_trip(model):
    pm = WorldModelPlanningModel(model)
    a = np.array([[0.2, 0.1], [-0.5, -0.6], [0.8, 0.9]])
    u = pm.encode(a)
    np.testing.assert_allclose(pm.decode(u), a, atol=1e-9)
    # Every search point maps into the action box.
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 7)), -1).reshape(-1, 2)
    assert np.abs(pm.decode(grid)).max() <= 1.0


def test_planning_before_observing_is_an_error(model):
    with pytest.raises(RuntimeError, match="observe"):
        WorldModelPlanningModel(model).make_objective()


@pytest.mark.parametrize("bad", [{"beta": -1.0}, {"smooth": float("nan")}, {"coords": "polar"},
                                 {"terminal_steps": -2.0}, {"energy_reduce": "max"},
                                 {"co_backoff": 1.0}, {"o2_backoff": -0.5}, {"bias_filter": 1.5}, {"track_integral": -0.1}, {"track_integral_max": float("nan")},
                                 {"co_floor": 0.0}])
def test_objective_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ObjectiveConfig(**bad)


@pytest.fixture(scope="module")
def second_model():
    return _tiny_model(1)


def test_ensemble_objective_is_the_members_mean_plus_kappa_spread(model, second_model):
    env = gym.make("Furnace-v0")
    obs, _ = env.reset(seed=0)
    u = torch.rand(6, 5, 2, generator=torch.Generator().manual_seed(4)) * 2 - 1
    members = [WorldModelPlanningModel(m, ObjectiveConfig()) for m in (model, second_model)]
    for kappa in (0.0, 0.5):
        ens = EnsemblePlanningModel(members, kappa=kappa)
        ens.reset()
        ens.observe(obs)
        each = torch.stack([m.make_objective(obs)(u) for m in members])
        assert not torch.allclose(each[0], each[1])  # two different models: a real average
        want = each.mean(0) + kappa * each.std(0, unbiased=False)
        torch.testing.assert_close(ens.make_objective(obs)(u), want)
        parts = ens.make_objective(obs, terms=True)(u)
        assert "spread" in parts and bool(parts["spread"].any()) == (kappa > 0)
        torch.testing.assert_close(sum(parts.values()), want, rtol=1e-5, atol=1e-3)


def test_ensemble_of_one_model_plans_as_the_model(model):
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 4})
    acts = []
    for ensemble in (False, True):
        pm = WorldModelPlanningModel(model, ObjectiveConfig())
        pm = EnsemblePlanningModel([pm]) if ensemble else pm
        ctrl = MPCController(pm, TrajectoryOptimizer(make_optimizer("langevin", n_candidates=8, iterations=2),
                                                     horizon=5), seed=0)
        acts.append(run_episode(ctrl, env, seed=5).actions)
    np.testing.assert_array_equal(acts[0], acts[1])


def test_ensemble_rejects_bad_members(model):
    with pytest.raises(ValueError, match="at least one"):
        EnsemblePlanningModel([])
    with pytest.raises(ValueError, match="kappa"):
        EnsemblePlanningModel([WorldModelPlanningModel(model)], kappa=-1.0)
    with pytest.raises(ValueError, match="share one ObjectiveConfig"):
        EnsemblePlanningModel([WorldModelPlanningModel(model), WorldModelPlanningModel(model, ObjectiveConfig(beta=1))])


def test_factory_builds_an_ensemble_from_several_checkpoints(tmp_path, model, second_model):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig
    from planners.factories import make_eblnn_planner

    cfg = WorldModelRunConfig(model=model.cfg)
    paths = [str(save_checkpoint(tmp_path / f"m{i}.pt", m, cfg)) for i, m in enumerate((model, second_model))]
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 3})
    single = make_eblnn_planner(env, checkpoint=paths[0], n_candidates=8, iterations=2, horizon=5)
    assert isinstance(single.model, WorldModelPlanningModel)
    ens = make_eblnn_planner(env, checkpoint=tuple(paths), kappa=0.5, beta=1.0, n_candidates=8, iterations=2,
                             horizon=5)
    assert isinstance(ens.model, EnsemblePlanningModel)
    assert len(ens.model.members) == 2 and ens.model.kappa == 0.5 and ens.model.cfg.beta == 1.0
    ep = run_episode(ens, env, seed=1)
    assert np.isfinite(ep.actions).all() and np.abs(ep.actions).max() <= 1.0
    with pytest.raises(ValueError, match="non-empty"):
        make_eblnn_planner(env, checkpoint=[])


def test_factory_routes_optimizer_options_to_the_optimiser(tmp_path, model):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig
    from planners.factories import make_eblnn_planner

    path = str(save_checkpoint(tmp_path / "m.pt", model, WorldModelRunConfig(model=model.cfg)))
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 3})
    ctrl = make_eblnn_planner(env, checkpoint=path, optimizer="cem", beta=0.5, init_std=0.2,
                              **{"optimizer.beta": 2.0})
    assert ctrl.model.cfg.beta == 0.5  # the energy weight
    assert ctrl.trajopt.optimizer.config.beta == 2.0 and ctrl.trajopt.optimizer.config.init_std == 0.2  # noise colour
    with pytest.raises(ValueError, match="optimizer.init_std"):
        make_eblnn_planner(env, checkpoint=path, optimizer="cem", init_std=0.2, **{"optimizer.init_std": 0.3})
    # The plan selection reaches the trajectory optimiser, and a softmax average plans an episode.
    soft = make_eblnn_planner(env, checkpoint=path, selection="softmax", selection_temperature=0.2,
                              n_candidates=4, iterations=2, horizon=4)
    assert soft.trajopt.selection == "softmax" and soft.trajopt.temperature == 0.2
    ep = run_episode(soft, env, seed=0)
    assert np.isfinite(ep.actions).all() and np.abs(ep.actions).max() <= 1.0
    with pytest.raises(ValueError, match="selection='median'"):
        make_eblnn_planner(env, checkpoint=path, selection="median")
