"""Loss functions of the EB-LNN (pure tensor maths) and the energy's ranking metric."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["CDTerms", "cd_loss", "hard_negative_loss", "pair_hinge", "masked_mse", "energy_auroc"]


class CDTerms(NamedTuple):
    """Contrastive-divergence loss and its parts (for logging)."""

    loss: Tensor
    """``mean E_real - mean E_fantasy + l2_reg (mean E_real^2 + mean E_fantasy^2)``."""
    e_pos: Tensor
    """Mean energy of real states."""
    e_neg: Tensor
    """Mean energy of fantasy states."""
    gap: Tensor
    """``e_neg - e_pos`` (positive when real states have lower energy)."""


def cd_loss(e_real: Tensor, e_fantasy: Tensor, l2_reg: float) -> CDTerms:
    """L_CD = E(real) - E(fantasy) + l2_reg (E_real^2 + E_fantasy^2) (energies of any shape, averaged)."""
    e_pos, e_neg = e_real.mean(), e_fantasy.mean()
    reg = l2_reg * (e_real.pow(2).mean() + e_fantasy.pow(2).mean())
    return CDTerms(e_pos - e_neg + reg, e_pos.detach(), e_neg.detach(), (e_neg - e_pos).detach())


def hard_negative_loss(e_real: Tensor, e_perturbed: Tensor, margin: float) -> Tensor:
    """Hinge ``mean relu(margin + E(real) - E(perturbed real))``: perturbed states must sit ``margin`` higher."""
    return torch.relu(margin + e_real - e_perturbed).mean()


def pair_hinge(e_pos: Tensor, e_neg: Tensor, margin: float, scale: Tensor | None = None) -> Tensor:
    """Hinge over pairs ``mean relu(margin * scale + E(pos) - E(neg))`` (0 for no pairs).

    ``scale [N]`` grades each pair's margin (a negative further from the truth must sit higher).
    """
    if e_pos.numel() == 0:
        return e_pos.new_zeros(())
    m = margin if scale is None else margin * scale
    return torch.relu(m + e_pos - e_neg).mean()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared error over the valid steps ``mask [B, T]`` of ``[B, T, C]`` tensors.

    ``weights [C]`` scale each channel's squared error (the mean still divides by ``C``).
    """
    m = mask.to(pred.dtype).unsqueeze(-1)
    n = m.sum() * pred.shape[-1]
    err = (pred - target).pow(2) * m
    if weights is not None:
        err = err * weights
    return err.sum() / n.clamp_min(1.0)


def energy_auroc(e_real, e_ood) -> float:
    """AUROC of separating real (low energy) from out-of-distribution (high energy) samples.

    The probability that a random OOD sample has a higher energy than a random real one
    (ties count one half): 1 is perfect ranking, 0.5 chance. Mann-Whitney U via ranks.
    """
    r = np.asarray(torch.as_tensor(e_real).detach().cpu(), dtype=np.float64).ravel()
    o = np.asarray(torch.as_tensor(e_ood).detach().cpu(), dtype=np.float64).ravel()
    if r.size == 0 or o.size == 0:
        raise ValueError("energy_auroc needs at least one real and one OOD energy")
    if not (np.isfinite(r).all() and np.isfinite(o).all()):
        raise ValueError("energy_auroc got non-finite energies")
    allv = np.concatenate([r, o])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size)
    sorted_v = allv[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[r.size:].sum() - o.size * (o.size + 1) / 2.0
    return float(u / (r.size * o.size))
