"""Langevin sampler and replay buffer."""

from __future__ import annotations

import pytest
import torch

from eblnn_agent.sampler import LangevinSampler, ReplayBuffer


def test_langevin_lowers_quadratic_energy():
    energy = lambda x: 0.5 * (x - 0.3).pow(2).sum(-1)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(256, 4, generator=g) * 2 - 1
    s = LangevinSampler(n_steps=200, step_size=0.2, noise_scale=0.01, grad_clip=0.0, clamp=0.0)
    x, stats = s.run(energy, x0, g)
    assert energy(x).mean() < 0.05 * energy(x0).mean()
    torch.testing.assert_close(x.mean(0), torch.full((4,), 0.3), atol=0.02, rtol=0)
    assert stats.nonfinite == 0 and stats.grad_norm > 0


def test_langevin_stays_finite_on_steep_energy_with_clipping():
    steep = lambda x: 1e6 * x.pow(4).sum(-1)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 3, generator=g) * 2 - 1
    x, stats = LangevinSampler(n_steps=50, step_size=0.5, grad_clip=1.0, clamp=1.0).run(steep, x0, g)
    assert torch.isfinite(x).all() and (x.abs() <= 1.0).all()
    assert stats.grad_norm > 1e3  # the raw gradient is huge; the clipped step is not


def test_langevin_replaces_and_counts_nonfinite_samples():
    def energy(x):  # NaN gradient for the first half of the batch
        bad = torch.zeros_like(x)
        bad[: x.shape[0] // 2] = float("nan")
        return (x * bad).sum(-1) + x.pow(2).sum(-1)

    g = torch.Generator().manual_seed(0)
    s = LangevinSampler(n_steps=3, step_size=0.1, grad_clip=0.0, clamp=0.0, noise_scale=float("inf"))
    x, stats = s.run(energy, torch.zeros(8, 2), g)
    assert torch.isfinite(x).all()
    assert stats.nonfinite == 3 * 8  # infinite noise: every sample, every step


def test_langevin_no_steps_is_identity_and_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    energy = lambda x: x.pow(2).sum(-1)  # noqa: E731
    x0 = torch.randn(5, 2)
    x, _ = LangevinSampler(n_steps=0).run(energy, x0, g1)
    assert torch.equal(x, x0)
    a, _ = LangevinSampler(n_steps=5).run(energy, x0, g1)
    b, _ = LangevinSampler(n_steps=5).run(energy, x0, torch.Generator().manual_seed(3))
    assert not torch.equal(a, x0)
    c, _ = LangevinSampler(n_steps=5).run(energy, x0, g2)
    torch.testing.assert_close(b, c)


def test_replay_buffer_capacity_and_ring():
    buf = ReplayBuffer(capacity=10, dim=2)
    assert len(buf) == 0 and buf.data.shape == (10, 2)
    buf.push(torch.arange(14.0).repeat(2, 1).t())  # more than the capacity: newest 10 kept
    assert len(buf) == 10
    assert set(buf.data[:, 0].tolist()) == set(range(4, 14))
    buf.push(torch.full((3, 2), -1.0))
    assert len(buf) == 10 and (buf.data[:, 0] == -1).sum() == 3
    data_ptr = buf.data.data_ptr()
    buf.push(torch.zeros(5, 2))
    assert buf.data.data_ptr() == data_ptr  # preallocated: no reallocation


@pytest.mark.parametrize("prob", [0.0, 0.95, 1.0])
def test_replay_buffer_reinit_probability(prob):
    buf = ReplayBuffer(capacity=100, dim=3, buffer_prob=prob, init_scale=1.0)
    g = torch.Generator().manual_seed(0)
    x, fresh = buf.sample(50, g)  # empty buffer: everything is fresh noise
    assert fresh.all() and (x.abs() <= 1).all()
    buf.push(torch.full((100, 3), 5.0))
    x, fresh = buf.sample(20000, g)
    assert float(fresh.float().mean()) == pytest.approx(1.0 - prob, abs=0.01)
    assert (x[~fresh] == 5.0).all() and (x[fresh].abs() <= 1).all()


def test_sampler_writes_back_to_buffer():
    buf = ReplayBuffer(capacity=8, dim=2)
    g = torch.Generator().manual_seed(0)
    x, stats = LangevinSampler(n_steps=2).sample(lambda x: x.pow(2).sum(-1), buf, 8, g)
    assert len(buf) == 8 and torch.equal(buf.data, x) and stats.fresh_fraction == 1.0


def test_bad_settings_rejected():
    with pytest.raises(ValueError):
        ReplayBuffer(capacity=0, dim=2)
    with pytest.raises(ValueError):
        ReplayBuffer(capacity=5, dim=2, buffer_prob=1.5)
    with pytest.raises(ValueError):
        LangevinSampler(step_size=0.0)
