"""The trust monitor, its calibration, the bumpless hand-over to PI and the supervised controller."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import furnace_env  # noqa: F401
from eblnn_agent.config import ModelConfig
from eblnn_agent.model import EBLNN
from furnace_env.physics import FurnaceParams
from furnace_env.pi import PIController
from planners.evaluation import episode_metrics, run_episode
from planners.mpc import MPCController
from planners.objective import ObjectiveConfig, WorldModelPlanningModel
from planners.optim import TrajectoryOptimizer, make_optimizer
from planners.trust import (
    Hysteresis,
    TrustCalibration,
    TrustConfig,
    TrustMonitor,
    TrustSupervisedController,
    calibrate,
    calibration_scores,
    pi_episodes,
)

CFG = TrustConfig(score="innovation", window=5, kstep=3, burn_in=5, raise_steps=2, release_steps=4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = EBLNN(ModelConfig(hidden_size=16, backbone_units=16, physics_hidden_dims=[16], ebm_hidden_dims=[16, 8]))
    data = pi_episodes(FurnaceParams(), range(4), {"name": "short", "n_steps": 60})
    from eblnn_agent.data import compute_norm_stats

    m.set_norm_stats(*compute_norm_stats(data, co_log_scale=m.cfg.co_log_scale))
    m.eval()
    return m.requires_grad_(False)


@pytest.fixture(scope="module")
def calibration(model):
    return calibrate(model, pi_episodes(FurnaceParams(), range(100, 112), {"name": "short", "n_steps": 60}), CFG)


def test_hysteresis_raises_after_its_steps_and_releases_below_the_lower_level():
    h = Hysteresis(1, threshold=1.0, release=0.0, raise_steps=2, release_steps=2, burn_in=1)
    seq = [5.0, 5.0, 5.0, 0.5, 0.5, -1.0, -1.0, 5.0]
    on = [bool(h.step(np.array([s]))[0]) for s in seq]
    # Step 0 is in the burn-in; raised on the second step above; 0.5 is not below the release level.
    assert on == [False, False, True, True, True, True, False, False]
    with pytest.raises(ValueError, match="release level"):
        Hysteresis(1, 0.0, 1.0, 1, 1, 0)


def test_streaming_monitor_matches_the_batched_calibration_scores(model):
    data = pi_episodes(FurnaceParams(), [7, 8], {"name": "short", "n_steps": 30})
    e_b, i_b, _ = calibration_scores(model, data, CFG)
    mon = TrustMonitor(model, CFG)
    for t in range(30):
        e, i = mon.update(data.obs[1:2, t], data.actions[1:2, t - 1] if t else None)
        # float32 rollouts of a batch of 1 and of 2 round differently (about 1e-3 relative here)
        assert e[0] == pytest.approx(e_b[1, t], rel=1e-4, abs=1e-4) and i[0] == pytest.approx(i_b[1, t], rel=3e-3, abs=1e-4)
    # The innovation is the k-step open-loop error computed by hand at the last step.
    from eblnn_agent.negatives import prediction_error

    obs, act = torch.as_tensor(data.obs[1:2]), torch.as_tensor(data.actions[1:2])
    hidden = model.filter(obs[:, :-1], act)
    t = 29
    pred = model.rollout(obs[:, t - 3], hidden[:, t - 4], act[:, t - 3:t]).obs[:, -1]
    assert float(prediction_error(model, pred, obs[:, t])) == pytest.approx(float(mon._innov[-1][0]), rel=3e-3)


def test_calibration_keeps_false_alarms_within_target_and_round_trips(model, calibration, tmp_path):
    assert calibration.false_alarm_share <= CFG.false_alarm_target
    assert calibration.release <= calibration.threshold and calibration.n_steps == 12 * (60 - CFG.burn_in)
    path = calibration.save(tmp_path / "trust.json")
    assert TrustCalibration.load(path) == calibration
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a trust calibration"):
        TrustCalibration.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="score"):
        TrustConfig(score="vibes")


def _alarms(model, calibration, data) -> np.ndarray:
    e, i, mask = calibration_scores(model, data, calibration.config)
    s = calibration.score(e, i)
    c = calibration.config
    h = Hysteresis(s.shape[0], calibration.threshold, calibration.release, c.raise_steps, c.release_steps, c.burn_in)
    return np.stack([h.step(s[:, t]) for t in range(s.shape[1])], axis=1) & mask


def test_monitor_stays_quiet_in_distribution_and_raises_on_a_drift(model, calibration):
    data = pi_episodes(FurnaceParams(), range(200, 208), {"name": "short", "n_steps": 60})
    quiet = _alarms(model, calibration, data)
    assert quiet.mean() <= 0.02
    # A synthetic drift from step 30: the measured temperature and O2 walk away from the plant's.
    drift = data.obs.copy()
    ramp = np.clip(np.arange(drift.shape[1]) - 30, 0, None)
    drift[:, :, 0] += 3.0 * ramp
    drift[:, :, 2] += 0.1 * ramp
    from eblnn_agent.data import TransitionData

    loud = _alarms(model, calibration, TransitionData(drift, data.actions, data.lengths, data.behaviour, {}))
    assert not loud[:, :30].any()
    assert loud[:, 30:].any(axis=1).all()


def _supervised(model, calibration, log=None):
    pm = WorldModelPlanningModel(model, ObjectiveConfig())
    inner = MPCController(pm, TrajectoryOptimizer(make_optimizer("langevin", n_candidates=4, iterations=1), horizon=4))
    return TrustSupervisedController(inner, TrustMonitor(model, calibration.config), calibration, PIController(),
                                     log=log)


def test_supervised_controller_predict_reset_and_shapes(model, calibration):
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 12})
    ctl = _supervised(model, calibration)
    ep = run_episode(ctl, env, seed=3)
    assert ep.actions.shape == (12, 2) and np.abs(ep.actions).max() <= 1.0 and np.isfinite(ep.rewards).all()
    assert ep.extras["trust_held"].shape == (12,)
    m = episode_metrics(ep)
    assert 0.0 <= m["trust_held_share"] <= 1.0 and "trust_alarms" in m
    again = run_episode(ctl, env, seed=3)  # run_episode resets: the same episode replays
    np.testing.assert_allclose(again.actions, ep.actions, atol=1e-6)
    obs, _ = env.reset(seed=0)
    a, state = ctl.predict(obs, episode_start=np.ones(1, dtype=bool))
    assert a.shape == (2,) and state is None
    with pytest.raises(ValueError, match="one plant"):
        ctl.predict(np.stack([obs, obs]))


def test_supervisor_hands_over_to_pi_and_back_and_logs(model, calibration):
    # A calibration whose threshold every score crosses, then one no score reaches.
    msgs: list[str] = []
    low = TrustCalibration(calibration.config, *[getattr(calibration, k) for k in
                                                 ("energy_mean", "energy_std", "innovation_mean", "innovation_std")],
                           threshold=-1e9, release=-1e9, false_alarm_share=0.0, n_steps=1)
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 14})
    ctl = _supervised(model, low, log=msgs.append)
    ep = run_episode(ctl, env, seed=1)
    held = ep.extras["trust_held"]
    b, r = CFG.burn_in, CFG.raise_steps
    assert not held[:b + r - 1].any() and held[b + r - 1:].all()
    assert ctl.alarms == 1 and any(m.startswith("planner/trust: alarm") for m in msgs)
    assert ctl.stats()["planner/trust_held_share"] == pytest.approx(held.mean())


def test_handover_is_bumpless():
    """After a hand-over the PI's first action moves no further than the PI moves on its own."""
    env = gym.make("Furnace-v0", scenario="nominal")
    obs, _ = env.reset(seed=4)
    pi = PIController()
    acts = []
    for _ in range(60):
        a = pi.act(obs[None])[0]
        acts.append(a)
        obs, *_ = env.step(a)
    own_rate = np.abs(np.diff(np.asarray(acts)[10:], axis=0)).max(axis=0)
    # Another controller has held the plant at its own action, richer in air than PI would be.
    other = np.clip(acts[-1] + np.array([0.03, 0.08]), -1, 1)
    for _ in range(5):
        obs, *_ = env.step(other)
    fresh, taken = PIController(), PIController()
    taken.handover(obs[None], other[None])
    jump_taken = np.abs(taken.act(obs[None])[0] - other)
    jump_fresh = np.abs(fresh.act(obs[None])[0] - other)
    assert (jump_taken <= own_rate + 1e-3).all()
    assert jump_fresh.max() > jump_taken.max()  # without the hand-over PI would jump
    with pytest.raises(ValueError, match="handover action"):
        taken.handover(obs[None], np.array([[np.nan, 0.0]]))


def test_factory_builds_from_a_checkpoint_and_its_calibration(model, calibration, tmp_path):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig
    from planners.experiment import CONTROLLERS, DEFAULT_CONTROLLERS, WORLD_MODEL_VARIANTS
    from planners.trust import default_calibration_path, make_supervised_planner

    cfg = WorldModelRunConfig().with_overrides(hidden_size=16, backbone_units=16, physics_hidden_dims=[16],
                                               ebm_hidden_dims=[16, 8])
    ckpt = save_checkpoint(tmp_path / "best.pt", model, cfg, {"env_steps": 1})
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 3})
    with pytest.raises(FileNotFoundError, match="calibrate_trust.py"):
        make_supervised_planner(env, str(ckpt))
    calibration.save(default_calibration_path(ckpt))
    ctl = make_supervised_planner(env, str(ckpt), horizon=4, n_candidates=4, iterations=1)
    ep = run_episode(ctl, env, seed=0)
    assert ep.actions.shape == (3, 2) and not ep.extras["trust_held"].any()  # inside the burn-in
    assert "eblnn-supervised" in CONTROLLERS and "eblnn-supervised" in WORLD_MODEL_VARIANTS
    assert "eblnn-supervised" not in DEFAULT_CONTROLLERS
