"""Langevin MCMC over hidden states, with a persistent replay buffer (Du & Mordatch, NeurIPS 2019).

``x_{i+1} = clamp(x_i - (step_size / 2) * clip(grad E(x_i)) + noise_scale * eps)``, ``eps ~ N(0, I)``.
Chains start from a replay buffer of earlier fantasies (probability ``buffer_prob``) or
from uniform noise in the hidden-state box, and their end points are written back. All
randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ReplayBuffer", "LangevinSampler", "LangevinStats", "uniform_init"]


def uniform_init(n: int, dim: int, scale: float, generator: torch.Generator, device, dtype) -> Tensor:
    """Fresh chain starts: uniform in ``[-scale, scale]^dim`` (the CfC state box for scale 1)."""
    u = torch.rand(n, dim, generator=generator, device=device, dtype=dtype)
    return (2.0 * u - 1.0) * scale


class ReplayBuffer:
    """A preallocated ring of fantasy states ``[capacity, dim]``.

    :meth:`sample` returns ``n`` chain starts: each is a stored state with probability
    ``buffer_prob`` (when the buffer is not empty), else fresh uniform noise. :meth:`push`
    writes states into the ring, overwriting the oldest once full.
    """

    def __init__(self, capacity: int, dim: int, buffer_prob: float = 0.95, init_scale: float = 1.0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r} must be >= 1")
        if not 0.0 <= buffer_prob <= 1.0:
            raise ValueError(f"buffer_prob={buffer_prob!r} must be a probability in [0, 1]")
        self.capacity, self.dim = int(capacity), int(dim)
        self.buffer_prob = float(buffer_prob)
        self.init_scale = float(init_scale)
        self.data = torch.zeros(self.capacity, self.dim, device=device, dtype=dtype)
        self.size = 0
        self.ptr = 0

    def __len__(self) -> int:
        return self.size

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` chain starts and a bool mask of those that are fresh noise (not from the buffer)."""
        d = self.data
        x = uniform_init(n, self.dim, self.init_scale, generator, d.device, d.dtype)
        fresh = torch.ones(n, dtype=torch.bool, device=d.device)
        if self.size > 0:
            fresh = torch.rand(n, generator=generator, device=d.device) >= self.buffer_prob
            idx = torch.randint(0, self.size, (n,), generator=generator, device=d.device)
            x = torch.where(fresh[:, None], x, d[idx])
        return x, fresh

    def push(self, x: Tensor) -> None:
        """Write states ``[n, dim]`` into the ring (the newest ``capacity`` when ``n`` is larger)."""
        x = x.detach().to(self.data.dtype)[-self.capacity:]
        n = x.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.data.device)) % self.capacity
        self.data[idx] = x
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def state_dict(self) -> dict:
        return {"data": self.data.clone(), "size": self.size, "ptr": self.ptr}

    def load_state_dict(self, state: dict) -> None:
        if state["data"].shape != self.data.shape:
            raise ValueError(f"replay buffer shape {tuple(state['data'].shape)} != {tuple(self.data.shape)}")
        self.data.copy_(state["data"])
        self.size, self.ptr = int(state["size"]), int(state["ptr"])


class LangevinStats(NamedTuple):
    """Sampler health for the logs."""

    nonfinite: int
    """Samples that became NaN/inf and were replaced by fresh noise."""
    grad_norm: float
    """Mean per-sample norm of the energy gradient (before clipping), over all steps."""
    fresh_fraction: float
    """Fraction of chains started from noise rather than the buffer."""


class LangevinSampler:
    """Short-run Langevin dynamics on an energy ``E: [n, dim] -> [n]`` (any callable)."""

    def __init__(self, n_steps: int = 20, step_size: float = 0.01, noise_scale: float = 0.005,
                 grad_clip: float = 1.0, clamp: float = 1.0) -> None:
        if n_steps < 0 or step_size <= 0 or noise_scale < 0 or grad_clip < 0 or clamp < 0:
            raise ValueError(f"bad Langevin settings: n_steps={n_steps}, step_size={step_size}, "
                             f"noise_scale={noise_scale}, grad_clip={grad_clip}, clamp={clamp}")
        self.n_steps, self.step_size, self.noise_scale = int(n_steps), float(step_size), float(noise_scale)
        self.grad_clip, self.clamp = float(grad_clip), float(clamp)

    def run(self, energy: Callable[[Tensor], Tensor], x0: Tensor,
            generator: torch.Generator) -> tuple[Tensor, LangevinStats]:
        """Run the chains from ``x0``; returns detached samples and health statistics.

        The energy's parameters receive no gradient (only ``x`` is differentiated). Non-finite
        samples are replaced by fresh uniform noise and counted.
        """
        x = x0.detach().clone()
        nonfinite = 0
        gnorm_sum = 0.0
        for _ in range(self.n_steps):
            x.requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(energy(x).sum(), x)
            x = x.detach()
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            gnorm = grad.norm(dim=-1, keepdim=True)
            gnorm_sum += float(gnorm.mean())
            if self.grad_clip > 0:
                grad = grad * torch.clamp(self.grad_clip / (gnorm + 1e-12), max=1.0)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x - 0.5 * self.step_size * grad + self.noise_scale * noise
            if self.clamp > 0:
                x = x.clamp(-self.clamp, self.clamp)  # clamp maps NaN to NaN, caught below
            bad = ~torch.isfinite(x).all(dim=-1)
            if bad.any():
                n_bad = int(bad.sum())
                nonfinite += n_bad
                fresh = uniform_init(n_bad, x.shape[-1], self.clamp or 1.0, generator, x.device, x.dtype)
                x[bad] = fresh
        steps = max(self.n_steps, 1)
        return x.detach(), LangevinStats(nonfinite, gnorm_sum / steps, 0.0)

    def sample(self, energy: Callable[[Tensor], Tensor], buffer: ReplayBuffer, n: int,
               generator: torch.Generator) -> tuple[Tensor, LangevinStats]:
        """Draw ``n`` chain starts from ``buffer``, run them, write the results back."""
        x0, fresh = buffer.sample(n, generator)
        x, stats = self.run(energy, x0, generator)
        buffer.push(x)
        return x, stats._replace(fresh_fraction=float(fresh.float().mean()))
