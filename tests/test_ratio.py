"""Air/fuel-ratio action coordinates (``furnace_env.ratio``) and their wrapper."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import furnace_env  # noqa: F401
from furnace_env import FurnaceParams
from furnace_env.ratio import DEFAULT_EXCESS_AIR, RatioActions, RatioActionWrapper


def test_round_trip_and_box():
    r = RatioActions()
    a = np.array([[0.2, 0.1], [-0.5, -0.6], [0.8, 0.9]])
    np.testing.assert_allclose(r.to_env(r.from_env(a)), a, atol=1e-9)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9)), -1).reshape(-1, 2)
    assert np.abs(r.to_env(grid)).max() <= 1.0
    assert np.abs(r.to_env(grid * 5.0)).max() <= 1.0  # out-of-range coordinates are clipped


def test_excess_air_command_sets_the_burner_air_ratio():
    p = FurnaceParams()
    r = RatioActions(p)
    lo, hi = DEFAULT_EXCESS_AIR
    for cmd, lam in ((-1.0, 1.0 + lo), (1.0, 1.0 + hi), (0.0, 1.0 + 0.5 * (lo + hi))):
        fuel, damper = r.to_env(np.array([0.0, cmd]))
        air_frac, fuel_frac = 0.5 * (damper + 1.0), 0.5 * (fuel + 1.0)
        # air mass / fuel mass over the stoichiometric ratio
        assert air_frac * p.air_max / (fuel_frac * p.fuel_max) / p.afr == pytest.approx(lam)


def test_torch_path_matches_numpy_and_has_gradients():
    r = RatioActions()
    u = torch.tensor([[0.3, -0.2], [-0.4, 0.5]], dtype=torch.float64, requires_grad=True)
    a = r.to_env(u)
    np.testing.assert_allclose(a.detach().numpy(), r.to_env(u.detach().numpy()), atol=1e-12)
    a.sum().backward()
    assert torch.isfinite(u.grad).all() and (u.grad != 0).any()


def test_bad_excess_air_range():
    with pytest.raises(ValueError, match="excess_air"):
        RatioActions(excess_air=(0.5, 0.2))


def test_wrapper_steps_the_env_with_the_mapped_action():
    wrapped = RatioActionWrapper(gym.make("Furnace-v0", scenario="nominal"))
    plain = gym.make("Furnace-v0", scenario="nominal")
    wrapped.reset(seed=1)
    plain.reset(seed=1)
    u = np.array([0.3, -0.4], dtype=np.float32)
    o1 = wrapped.step(u)[0]
    o2 = plain.step(wrapped.ratio.to_env(u.astype(np.float64)).astype(np.float32))[0]
    np.testing.assert_array_equal(o1, o2)
    assert wrapped.action_space.shape == (2,)


@pytest.mark.parametrize("bad", [np.array([0.0, np.nan]), np.zeros(3), "fuel"])
def test_wrapper_rejects_bad_actions_and_keeps_state(bad):
    env = RatioActionWrapper(gym.make("Furnace-v0", scenario="nominal"))
    env.reset(seed=0)
    k = env.unwrapped.step_index
    with pytest.raises(ValueError, match="action="):
        env.step(bad)
    assert env.unwrapped.step_index == k
