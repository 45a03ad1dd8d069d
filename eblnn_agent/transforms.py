"""The observation space the world model works in: physical units, with CO on a log scale.

CO spans three decades in the furnace's data (5 ppm at good combustion, ~100 ppm at the knee of
the CO curve, thousands when fuel-rich): on a linear scale the rich-burn tail sets the
normalisation (std ~1500 ppm) and the knee, where an optimising controller operates, is lost in
it (the linear model predicted about half the true CO there). ``z = s * log1p(CO / s)`` is linear
below ``s`` ppm and logarithmic above, so the physics head resolves the knee and the tail alike.
Every other channel is unchanged. Pure functions on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["CO_CHANNEL", "obs_to_model", "obs_from_model"]

#: Channel of the measured CO in Furnace-v0's observation.
CO_CHANNEL = 3
#: Largest CO the inverse returns, ppm (keeps ``expm1`` finite for wild imagined states).
_CO_MAX = 1.0e5


def obs_to_model(obs, co_log_scale: float):
    """Physical observations ``[..., 8]`` -> model space (``co_log_scale`` 0: identity)."""
    if co_log_scale == 0:
        return obs
    c = CO_CHANNEL
    if isinstance(obs, torch.Tensor):
        z = co_log_scale * torch.log1p(obs[..., c:c + 1].clamp_min(0.0) / co_log_scale)
        return torch.cat([obs[..., :c], z, obs[..., c + 1:]], dim=-1)
    out = np.array(obs, copy=True)
    out[..., c] = co_log_scale * np.log1p(np.maximum(out[..., c], 0.0) / co_log_scale)
    return out


def obs_from_model(z, co_log_scale: float):
    """Inverse of :func:`obs_to_model` (CO capped at 1e5 ppm)."""
    if co_log_scale == 0:
        return z
    c = CO_CHANNEL
    z_max = co_log_scale * math.log1p(_CO_MAX / co_log_scale)
    if isinstance(z, torch.Tensor):
        co = co_log_scale * torch.expm1(z[..., c:c + 1].clamp(max=z_max) / co_log_scale)
        return torch.cat([z[..., :c], co, z[..., c + 1:]], dim=-1)
    out = np.array(z, copy=True)
    out[..., c] = co_log_scale * np.expm1(np.minimum(out[..., c], z_max) / co_log_scale)
    return out
