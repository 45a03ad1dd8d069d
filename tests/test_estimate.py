"""The planner's state estimate (``ObjectiveConfig.state_gain``, :mod:`planners.estimate`)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import furnace_env  # noqa: F401
from eblnn_agent.config import ModelConfig
from eblnn_agent.model import EBLNN
from furnace_env.env import measurement_noise_std
from planners.estimate import (
    ESTIMATED_CHANNELS,
    corrected_estimate,
    estimate_gains,
    gain_vector,
    gains_from_errors,
    steady_state_gain,
)
from planners.objective import ObjectiveConfig, WorldModelPlanningModel

# A steady furnace reading: T, setpoint, O2, CO, fuel flow, air flow, previous commands.
TRUE_OBS = np.array([950.0, 950.0, 3.0, 20.0, 110.0, 2150.0, 0.2, 0.0])


def _tiny_model(seed: int = 0, persistent: bool = False) -> EBLNN:
    torch.manual_seed(seed)
    m = EBLNN(ModelConfig(hidden_size=16, backbone_units=16, physics_hidden_dims=[16], ebm_hidden_dims=[16, 8]))
    if persistent:  # predicts "no change": the right model of a steady plant
        last = [x for x in m.physics if isinstance(x, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def test_steady_state_gain_is_the_riccati_fixed_point():
    q, r = np.array([0.1, 1.0, 4.0]), np.array([1.0, 1.0, 0.5])
    k = steady_state_gain(q, r)
    p = np.ones(3)
    for _ in range(500):  # the Kalman recursion of a random walk seen through noise
        pm = p + q
        kk = pm / (pm + r)
        p = (1 - kk) * pm
    np.testing.assert_allclose(k, kk, rtol=1e-9)
    assert np.all(np.diff(steady_state_gain(np.array([0.01, 0.1, 1.0]), 1.0)) > 0)  # more process noise: trust the reading more
    assert steady_state_gain(1.0, 0.0) == 1.0
    with pytest.raises(ValueError, match="process_var"):
        steady_state_gain(0.0, 1.0)


def test_gains_from_errors_remove_the_noise_of_target_and_input():
    q, r = 0.5, 2.0
    np.testing.assert_allclose(gains_from_errors(q + 2 * r, r), steady_state_gain(q, r))
    # A model no worse than the noise floor still listens a little (q floored), a noiseless channel fully.
    assert 0 < gains_from_errors(0.1, 1.0) < 0.2
    assert gains_from_errors(5.0, 0.0) == 1.0


def test_corrected_estimate_mixes_only_the_estimated_channels():
    pred = torch.tensor([[940.0, 900.0, 2.0, 10.0, 100.0, 2000.0, 0.5, 0.5]])
    obs = torch.as_tensor(TRUE_OBS, dtype=torch.float32)[None]
    est = corrected_estimate(pred, obs, gain_vector((0.5,) * 5))
    for j in range(8):
        want = 0.5 * (pred[0, j] + obs[0, j]) if j in ESTIMATED_CHANNELS else obs[0, j]
        assert float(est[0, j]) == pytest.approx(float(want))


@pytest.mark.parametrize("bad", [(0.5,) * 4, (0.5, 0.5, 0.5, 0.5, 0.0), (0.5, 0.5, 0.5, 0.5, 1.5),
                                 (0.5, 0.5, float("nan"), 0.5, 0.5), "abc"])
def test_objective_config_rejects_bad_gains(bad):
    with pytest.raises(ValueError, match="state_gain"):
        ObjectiveConfig(state_gain=bad)


def _feed(pm: WorldModelPlanningModel, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy readings of a steady plant through ``pm``; returns the raw readings and the estimates."""
    rng = np.random.default_rng(seed)
    raw, est = [], []
    for _ in range(n):
        o = TRUE_OBS + rng.standard_normal(8) * measurement_noise_std(TRUE_OBS)
        pm.observe(o)
        pm.applied(TRUE_OBS[6:8])
        raw.append(o)
        est.append(pm.plan_start()[0][0].numpy().astype(np.float64))
    return np.array(raw), np.array(est)


def test_estimate_has_less_noise_than_the_reading():
    pm = WorldModelPlanningModel(_tiny_model(persistent=True),
                                 ObjectiveConfig(state_gain=(0.3,) * 5, bias_filter=0.0, track_integral=0.0))
    raw, est = _feed(pm, 400, seed=1)
    burn = 20
    for j in ESTIMATED_CHANNELS:
        v_raw, v_est = raw[burn:, j].var(), est[burn:, j].var()
        # A constant gain K leaves K / (2 - K) of the noise variance (0.18 at K = 0.3).
        assert v_est < 0.35 * v_raw, (j, v_est, v_raw)
        assert abs(est[burn:, j].mean() - TRUE_OBS[j]) < 3 * np.sqrt(v_raw / 50)
    np.testing.assert_array_equal(est[:, [1, 6, 7]], raw[:, [1, 6, 7]].astype(np.float32))


def test_without_a_gain_the_plan_starts_from_the_raw_reading_bit_for_bit():
    model = _tiny_model(seed=2)
    pm = WorldModelPlanningModel(model, ObjectiveConfig())  # state_gain None: the old path
    rng = np.random.default_rng(4)
    h = model.initial_state(1)
    last = None
    for _ in range(6):
        o = TRUE_OBS + rng.standard_normal(8) * measurement_noise_std(TRUE_OBS)
        pm.observe(o)
        ot = torch.as_tensor(o, dtype=torch.float32)[None]
        if last is not None:
            h = model.step(last, torch.as_tensor(TRUE_OBS[None, 6:8], dtype=torch.float32), h)
        last = ot
        pm.applied(TRUE_OBS[6:8])
    o0, h0 = pm.plan_start()
    assert torch.equal(o0, last) and torch.equal(h0, h)
    assert pm.estimate is None


def test_with_a_gain_the_plan_keeps_the_filtered_body_and_swaps_the_observations():
    model = _tiny_model(seed=3)
    off = WorldModelPlanningModel(model, ObjectiveConfig())
    on = WorldModelPlanningModel(model, ObjectiveConfig(state_gain=(0.4,) * 5))
    _feed(off, 8, seed=5)
    _feed(on, 8, seed=5)
    (o_off, h_off), (o_on, h_on) = off.plan_start(), on.plan_start()
    hs = model.hidden_size
    assert torch.equal(h_off[:, :hs], h_on[:, :hs])  # the CfC filters the raw readings either way
    assert not torch.equal(o_off, o_on) and not torch.equal(h_off[:, hs:], h_on[:, hs:])
    u = torch.zeros(3, 4, 2)
    assert torch.isfinite(on.make_objective()(u)).all()
    on.reset()
    assert on.estimate is None


def test_estimate_gains_from_held_out_episodes():
    from eblnn_agent.data import collect_transitions

    data = collect_transitions(60, seed=3, scenario={"name": "short", "n_steps": 30}, num_envs=2)
    est = estimate_gains(_tiny_model(seed=0), data)
    assert len(est.gains) == len(ESTIMATED_CHANNELS)
    assert all(0 < g <= 1 for g in est.gains)
    assert all(m > 0 for m in est.one_step_mse) and est.noise_var[0] == pytest.approx(1.0)


def test_factory_passes_the_gains_and_the_none_option(tmp_path):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig
    from planners.evaluation import run_episode
    from planners.factories import make_eblnn_planner, option_value

    model = _tiny_model()
    path = str(save_checkpoint(tmp_path / "m.pt", model, WorldModelRunConfig(model=model.cfg)))
    assert option_value("none") is None and option_value("0.5:0.5") == (0.5, 0.5)
    env = gym.make("Furnace-v0", scenario={"name": "short", "n_steps": 4})
    ctrl = make_eblnn_planner(env, checkpoint=path, state_gain=option_value("0.6:0.9:0.9:0.5:0.5"),
                              n_candidates=4, iterations=2, horizon=4)
    assert ctrl.model.cfg.state_gain == (0.6, 0.9, 0.9, 0.5, 0.5)
    ep = run_episode(ctrl, env, seed=0)
    assert np.isfinite(ep.actions).all()
