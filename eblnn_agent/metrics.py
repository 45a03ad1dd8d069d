"""Held-out quality measures of a trained world model (used in training logs and the quality script)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from eblnn_agent.data import TransitionData, Windows
from eblnn_agent.losses import energy_auroc
from eblnn_agent.model import EBLNN, SETPOINT_CHANNEL

__all__ = ["bang_bang_actions", "transition_energies", "rollout_energies", "ood_aurocs", "setpoint_sensitivity", "one_step_predictions",
           "OneStep", "open_loop_errors"]


def bang_bang_actions(shape: tuple[int, ...], generator: torch.Generator, device="cpu") -> Tensor:
    """Random bang-bang commands: every entry -1 or +1 independently (never in the data)."""
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2.0 - 1.0


@torch.no_grad()
def transition_energies(model: EBLNN, w: Windows, ood_actions: Tensor) -> tuple[Tensor, Tensor]:
    """Energies of real transitions and of the same transitions with actions replaced.

    Real: ``E(h_{t+1})`` with ``h_{t+1} = cell(obs_t, a_t, h_t)`` filtered on the real window.
    OOD: ``E(cell(obs_t, a'_t, h_t))`` from the same real ``h_t``. Valid steps only.
    """
    obs, act = w.obs[:, :-1], w.actions
    hidden = model.filter(obs, act)
    h_prev = torch.cat([model.initial_state(obs.shape[0])[:, None], hidden[:, :-1]], dim=1)
    m = w.mask
    h_ood = model.step(obs[m], ood_actions[m], h_prev[m])
    return model.energy(hidden[m]), model.energy(h_ood)


@torch.no_grad()
def rollout_energies(model: EBLNN, w: Windows, burn_in: int, ood_actions: Tensor) -> tuple[Tensor, Tensor]:
    """Sequence energies of imagined rollouts after ``burn_in`` real steps: real actions vs ``ood_actions``.

    Only windows valid over their whole length are used. ``ood_actions [B, T - burn_in, 2]``.
    """
    full = w.mask.all(dim=1)
    obs, act = w.obs[full], w.actions[full]
    h = model.filter(obs[:, :burn_in], act[:, :burn_in])[:, -1]
    o0 = obs[:, burn_in]
    real = model.rollout(o0, h, act[:, burn_in:])
    ood = model.rollout(o0, h, ood_actions[full])
    return model.sequence_energy(real.hidden), model.sequence_energy(ood.hidden)


@torch.no_grad()
def setpoint_sensitivity(model: EBLNN, w: Windows, burn_in: int = 8, shift: float = 40.0) -> float:
    """How much the imagined temperature depends on the setpoint, K per K.

    After ``burn_in`` real steps each full window is rolled out open loop with its real actions,
    once as it is and once with the setpoint of the starting observation moved by ``+-shift``;
    returns the mean over windows of ``|T(+shift) - T(-shift)| / (2 shift)`` at the last step.
    The furnace does not know its setpoint, so a physical model scores 0; a model that learned
    from controller-driven data that the temperature follows the setpoint does not.
    """
    full = w.mask.all(dim=1)
    obs, act = w.obs[full], w.actions[full]
    h = model.filter(obs[:, :burn_in], act[:, :burn_in])[:, -1]
    temps = []
    for d in (-shift, shift):
        o0 = obs[:, burn_in].clone()
        o0[:, SETPOINT_CHANNEL] += d
        temps.append(model.rollout(o0, h, act[:, burn_in:]).obs[:, -1, 0])
    return float(((temps[1] - temps[0]).abs() / (2.0 * shift)).mean())


def ood_aurocs(model: EBLNN, w: Windows, generator: torch.Generator, burn_in: int = 8) -> dict[str, float]:
    """Transition and rollout AUROCs of the energy against random bang-bang actions."""
    ood = bang_bang_actions(tuple(w.actions.shape), generator, w.actions.device)
    e_r, e_o = transition_energies(model, w, ood)
    out = {"transition_auroc": energy_auroc(e_r, e_o)}
    if w.mask.all(dim=1).sum() >= 2 and w.actions.shape[1] > burn_in:
        s_r, s_o = rollout_energies(model, w, burn_in, ood[:, burn_in:])
        out["rollout_auroc"] = energy_auroc(s_r, s_o)
    return out


class OneStep(NamedTuple):
    """One-step predictions over whole episodes (physical units, valid steps flattened)."""

    pred: np.ndarray
    """Model prediction of ``obs_{t+1}`` ``[N, 8]``."""
    target: np.ndarray
    """Observed ``obs_{t+1}`` ``[N, 8]``."""
    persist: np.ndarray
    """Persistence baseline ``obs_t`` ``[N, 8]``."""


@torch.no_grad()
def one_step_predictions(model: EBLNN, data: TransitionData, device="cpu") -> OneStep:
    """Filter every episode from its start (as a controller does) and predict each next observation."""
    obs = torch.as_tensor(data.obs, device=device)
    act = torch.as_tensor(data.actions, device=device)
    hidden = model.filter(obs[:, :-1], act)
    pred = model.predict_next(obs[:, :-1], hidden, act)
    m = torch.as_tensor(np.arange(act.shape[1])[None] < data.lengths[:, None], device=device)
    return OneStep(pred[m].cpu().numpy(), obs[:, 1:][m].cpu().numpy(), obs[:, :-1][m].cpu().numpy())


@torch.no_grad()
def open_loop_errors(model: EBLNN, data: TransitionData, horizon: int = 20, burn_in: int = 20,
                     stride: int = 20, device="cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-loop rollouts of the real actions from filtered states, every ``stride`` steps.

    Returns ``(pred [N, horizon, 8], truth [N, horizon, 8], persist [N, horizon, 8])`` for the
    start points with ``horizon`` valid steps ahead.
    """
    obs = torch.as_tensor(data.obs, device=device)
    act = torch.as_tensor(data.actions, device=device)
    hidden = model.filter(obs[:, :-1], act)
    preds, truths, pers = [], [], []
    for t0 in range(burn_in, act.shape[1] - horizon + 1, stride):
        ok = torch.as_tensor(data.lengths >= t0 + horizon, device=device)
        if not ok.any():
            continue
        h0 = hidden[ok, t0 - 1]  # state after consuming step t0 - 1
        out = model.rollout(obs[ok, t0], h0, act[ok, t0:t0 + horizon])
        preds.append(out.obs)
        truths.append(obs[ok, t0 + 1:t0 + horizon + 1])
        pers.append(obs[ok, t0:t0 + 1].expand(-1, horizon, -1))
    return tuple(torch.cat(xs).cpu().numpy() for xs in (preds, truths, pers))
