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
    Detector,
    Hysteresis,
    TrustCalibration,
    TrustConfig,
    TrustMonitor,
    TrustSupervisedController,
    alarm_history,
    calibrate,
    channel_errors,
    detection_delays,
    episodes_data,
    pi_episodes,
    raw_stats,
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


def test_hysteresis_release_grows_with_each_further_alarm():
    h = Hysteresis(1, threshold=1.0, release=0.0, raise_steps=1, release_steps=2, burn_in=0, release_growth=2.0)
    seq = [5, -1, -1, 5, -1, -1, -1, -1, 5]
    on = [bool(h.step(np.array([float(s)]))[0]) for s in seq]
    # First alarm clears after 2 steps below; the second needs 4.
    assert on == [True, True, False, True, True, True, True, False, True]


def test_detectors_window_mean_and_cusum():
    z = np.array([0.0, 2.0, 2.0, -3.0, 1.0])
    win = Detector(1, TrustConfig(detector="window", window=2))
    assert [float(win.step(np.array([v]))[0]) for v in z] == [0.0, 1.0, 2.0, -0.5, -1.0]
    cus = Detector(1, TrustConfig(detector="cusum", cusum_drift=0.5))
    # S_t = max(0, S_{t-1} + z_t - 0.5)
    assert [float(cus.step(np.array([v]))[0]) for v in z] == [0.0, 1.5, 3.0, 0.0, 0.5]
    for bad in ({"detector": "ewma"}, {"cusum_drift": -1.0}, {"clip": float("nan")}, {"release_growth": 0.5},
                {"calibrate_on": "oracle"}, {"window": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrustConfig(**bad)


def test_scores_before_the_first_energy_and_innovation_are_neutral(calibration):
    """The first step has no energy and the first k steps no innovation: their score is 0, so a CUSUM
    starts clean instead of carrying a NaN through the episode."""
    import dataclasses

    e = np.array([[np.nan, 1.0, 2.0]])
    i = np.full((1, 3, 5), np.nan)
    for score in ("energy", "innovation", "combined"):
        cal = dataclasses.replace(calibration, config=dataclasses.replace(calibration.config, score=score,
                                                                          detector="cusum"))
        stat = cal.statistic(e, i)
        assert np.isfinite(stat).all() and cal.score(e, i)[0, 0] == 0.0


def test_streaming_monitor_matches_the_batched_stats_and_the_hand_computed_innovation(model):
    import copy

    model = copy.deepcopy(model).double()  # float32 batches of 1 and 2 round apart by ~1 % in the innovation
    data = pi_episodes(FurnaceParams(), [7, 8], {"name": "short", "n_steps": 30})
    e_b, i_b, _ = raw_stats(model, data, CFG)
    mon = TrustMonitor(model, CFG)
    for t in range(30):
        e, i = mon.update(data.obs[1:2, t], data.actions[1:2, t - 1] if t else None)
        assert np.isnan(e[0]) == (t == 0) and np.isnan(i[0]).all() == (t < CFG.kstep)
        np.testing.assert_allclose(e, e_b[1:2, t], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(i, i_b[1:2, t], rtol=1e-7, atol=1e-9)
    # The innovation is the k-step open-loop error computed by hand at the last step.
    obs, act = torch.as_tensor(data.obs[1:2], dtype=torch.float64), torch.as_tensor(data.actions[1:2], dtype=torch.float64)
    hidden = model.filter(obs[:, :-1], act)
    t = 29
    pred = model.rollout(obs[:, t - 3], hidden[:, t - 4], act[:, t - 3:t]).obs[:, -1]
    np.testing.assert_allclose(channel_errors(model, pred, obs[:, t]).pow(2).numpy(), i, rtol=1e-7, atol=1e-9)


def test_calibration_keeps_false_alarms_within_target_and_round_trips(model, calibration, tmp_path):
    assert calibration.false_alarm_share <= CFG.false_alarm_target
    assert calibration.release <= calibration.threshold and calibration.n_steps == 12 * (60 - CFG.burn_in)
    path = calibration.save(tmp_path / "trust.json")
    assert TrustCalibration.load(path) == calibration
    assert len(calibration.channel_scale) == 5 and min(calibration.channel_scale) > 0
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a trust calibration"):
        TrustCalibration.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"format": "eblnn-trust-calibration"}')
    with pytest.raises(ValueError, match="older format"):
        TrustCalibration.load(tmp_path / "old.json")
    import json

    d = json.loads(path.read_text())
    d["channel_scale"] = [1.0, -1.0, 1.0, 1.0, 1.0]
    (tmp_path / "neg.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="channel_scale"):
        TrustCalibration.load(tmp_path / "neg.json")
    for field_, value in (("threshold", float("nan")), ("release", 1e9), ("energy_std", 0.0),
                          ("false_alarm_share", 2.0), ("n_steps", "bad fields")):
        d = json.loads(path.read_text())
        d[field_] = value
        (tmp_path / "edit.json").write_text(json.dumps(d))
        with pytest.raises(ValueError, match=field_):
            TrustCalibration.load(tmp_path / "edit.json")
    d = json.loads(path.read_text())
    d["config"]["vibes"] = 1
    (tmp_path / "edit.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="vibes"):
        TrustCalibration.load(tmp_path / "edit.json")
    with pytest.raises(ValueError, match="score"):
        TrustConfig(score="vibes")


def _alarms(model, calibration, data) -> np.ndarray:
    return alarm_history(model, calibration, data)


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
    import dataclasses

    low = dataclasses.replace(calibration, threshold=-1e9, release=-1e9)
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


def test_detection_delays_and_episode_records():
    alarm = np.zeros((3, 10), dtype=bool)
    alarm[0, 2] = True  # before the change: a false alarm, not a detection
    alarm[0, 7:] = True
    alarm[1, 5] = True
    assert detection_delays(alarm, 5) == [2, 0, None]
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 8})
    eps = [run_episode(PIController(), env, seed=s) for s in (0, 1)]
    data = episodes_data(eps)
    assert data.obs.shape == (2, 9, 8) and data.actions.shape == (2, 8, 2) and list(data.lengths) == [8, 8]
    np.testing.assert_array_equal(data.obs[1], eps[1].obs.astype(np.float32))
    with pytest.raises(ValueError, match="no episodes"):
        episodes_data([])


def test_monitor_detects_a_plant_change_out_of_the_training_range(model):
    """The innovation monitor calibrated on in-range plants alarms after the plant steps far out of range."""
    from furnace_env.scenarios import out_of_range_step

    cfg = TrustConfig(score="innovation", detector="cusum", kstep=3, burn_in=5, raise_steps=2, release_steps=4)
    cal = calibrate(model, pi_episodes(FurnaceParams(), range(300, 312), {"name": "short", "n_steps": 60}), cfg)
    change = {"name": "change", "n_steps": 60, "plant_events": [[150.0, "tau_air", 30.0], [150.0, "heat_capacity", 5e4]]}
    assert out_of_range_step(change) == 30
    on = alarm_history(model, cal, pi_episodes(FurnaceParams(), range(400, 408), change))
    assert on[:, :30].mean() <= 0.05 and on[:, 30:].any(axis=1).mean() >= 0.75


def test_calibration_on_the_planner_closed_loop(model, tmp_path):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig
    from planners.trust import TrustCalibration, calibrate_checkpoint, default_calibration_path

    cfg = WorldModelRunConfig().with_overrides(hidden_size=16, backbone_units=16, physics_hidden_dims=[16],
                                               ebm_hidden_dims=[16, 8])
    ckpt = save_checkpoint(tmp_path / "best.pt", model, cfg, {"env_steps": 1})
    tc = TrustConfig(score="innovation", kstep=3, burn_in=5, calibrate_on="planner")
    cal = calibrate_checkpoint(ckpt, tc, episodes=2, scenarios=[{"name": "short", "n_steps": 20}], log=None,
                               planner_options={"horizon": 3, "n_candidates": 4, "iterations": 1}, workers=0)
    assert cal.n_steps == 2 * (20 - 5) and "planner" in cal.source
    assert TrustCalibration.load(default_calibration_path(ckpt)) == cal
