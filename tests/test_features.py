"""The integrated-temperature-error feature (``furnace_env.features``) and its evaluation twin."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import furnace_env  # noqa: F401
from furnace_env.features import TrackingIntegral, TrackingIntegralWrapper
from planners.sb3_policy import SB3Policy


def test_integral_sums_clips_and_resets():
    ti = TrackingIntegral(dt=5.0, limit=100.0)
    obs = np.zeros(8)
    obs[0], obs[1] = 895.0, 900.0  # 5 K below the setpoint
    assert ti.update(obs) == 25.0
    assert ti.update(obs) == 50.0
    for _ in range(10):
        ti.update(obs)
    assert ti.value == 100.0  # anti-windup
    obs[0] = 1000.0
    assert ti.update(obs) == -100.0  # 100 - 100 K x 5 s, clipped
    assert ti.reset() == 0.0
    np.testing.assert_array_equal(ti.augment(obs)[:8], obs.astype(np.float32))
    assert ti.augment(obs).shape == (9,)


@pytest.mark.parametrize("dt, limit", [(0.0, 1.0), (5.0, -1.0), (np.nan, 1.0)])
def test_bad_settings(dt, limit):
    with pytest.raises(ValueError, match="TrackingIntegral"):
        TrackingIntegral(dt, limit)


def test_wrapper_appends_the_integral_and_the_policy_side_matches_it():
    wrapped = TrackingIntegralWrapper(gym.make("Furnace-v0", scenario="load_swing"))
    plain = gym.make("Furnace-v0", scenario="load_swing")
    policy = SB3Policy(model=None, obs_norm=None, algo="ppo", env_steps=0, path=Path("x"),
                       integral=TrackingIntegral(plain.unwrapped.params.dt))
    assert wrapped.observation_space.shape == (9,)
    rng = np.random.default_rng(0)
    for episode in range(2):  # the second episode checks that both sides reset
        x, _ = wrapped.reset(seed=episode)
        obs, _ = plain.reset(seed=episode)
        start = np.ones(1, dtype=bool)
        expected = 0.0
        for _ in range(30):
            np.testing.assert_array_equal(policy.features(obs, episode_start=start), x)
            assert x[8] == pytest.approx(expected)
            assert wrapped.observation_space.contains(x)
            start = np.zeros(1, dtype=bool)
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            x, *_ = wrapped.step(a)
            obs, *_ = plain.step(a)
            expected = float(np.clip(expected + (obs[1] - obs[0]) * 5.0, -6000.0, 6000.0))
    policy.reset()
    np.testing.assert_array_equal(policy.features(obs)[8], 0.0)  # reset() starts a new episode too
    with pytest.raises(ValueError, match="one observation"):
        policy.features(np.zeros((2, 8)))
