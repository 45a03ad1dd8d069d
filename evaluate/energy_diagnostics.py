"""Does the energy know where the world model is wrong? The measurements behind ``evaluate/energy_report.py``.

* :func:`plant_auroc`: PI-driven episodes (a fixed controller) on the nominal plant and on
  out-of-range plants (:data:`~eblnn_agent.negatives.HELD_OUT_PLANTS`, never trained on), cut
  into windows; the AUROC of a window score separating the two (energy, and for comparison the
  one-step innovation).
* :func:`energy_error_spearman`: on held-out episodes, the Spearman correlation between a
  window's energy and the model's actual open-loop error over it (the real actions run on the
  model's own predictions from the filtered state at the window's start).
* :func:`energy_samples` and :func:`plot_energy_histograms`: the energies of real data, of
  Langevin fantasies and of out-of-distribution transitions (seed 004's histogram).
* :func:`cd_gap_summary`: ``train/cd_gap`` over a training run, against its bound ``1 / l2_reg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from eblnn_agent.data import TransitionData
from eblnn_agent.losses import energy_auroc
from eblnn_agent.model import EBLNN
from eblnn_agent.negatives import (
    HELD_OUT_PLANTS,
    perturbed_next_pairs,
    plant_params,
    prediction_error,
)
from eblnn_agent.sampler import LangevinSampler, uniform_init
from furnace_env.physics import FurnaceParams
from planners.trust import pi_episodes

__all__ = ["step_scores", "window_scores", "plant_auroc", "energy_error_spearman", "EnergySamples",
           "energy_samples", "plot_energy_histograms", "cd_gap_summary", "spearman"]


@torch.no_grad()
def step_scores(model: EBLNN, data: TransitionData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step of every episode, filtered from its start as a controller does: the fine energy
    ``E(h_{t+1})``, the one-step innovation (:func:`~eblnn_agent.negatives.prediction_error` of the
    prediction of ``obs_t`` from ``h_t``; 0 at ``t = 0``) and the valid mask, each ``[E, T]``."""
    obs = torch.as_tensor(data.obs)
    act = torch.as_tensor(data.actions)
    hidden = model.filter(obs[:, :-1], act)
    energy = model.energy(hidden)
    pred = model.predict_next(obs[:, :-2], hidden[:, :-1], act[:, :-1])  # predictions of obs_1 .. obs_{T-1}
    innov = torch.zeros_like(energy)
    innov[:, 1:] = prediction_error(model, pred, obs[:, 1:-1])
    mask = np.arange(act.shape[1])[None] < data.lengths[:, None]
    return energy.numpy(), innov.numpy(), mask


def window_scores(values: np.ndarray, mask: np.ndarray, window: int, burn_in: int) -> np.ndarray:
    """Mean of ``values [E, T]`` over consecutive windows of ``window`` valid steps after ``burn_in``."""
    out = []
    for e in range(values.shape[0]):
        n = int(mask[e].sum())
        for s in range(burn_in, n - window + 1, window):
            out.append(values[e, s:s + window].mean())
    return np.asarray(out)


class PlantAUROC(NamedTuple):
    """Result of :func:`plant_auroc`."""

    energy: float
    """AUROC of the window mean energy: nominal (low) vs out-of-range plants (high)."""
    innovation: float
    """The same for the window mean one-step innovation."""
    per_plant: list[dict]
    """Per out-of-range plant: its overrides and both AUROCs."""
    n_windows: tuple[int, int]
    """Windows (nominal, out of range)."""


def plant_auroc(model: EBLNN, seeds: Sequence[int], plants=HELD_OUT_PLANTS, window: int = 20, burn_in: int = 20,
                scenario: str = "train_mix") -> PlantAUROC:
    """Window AUROCs of nominal-plant vs out-of-range-plant PI episodes (same env seeds for every plant)."""
    e0, i0, m0 = step_scores(model, pi_episodes(FurnaceParams(), seeds, scenario))
    we0, wi0 = window_scores(e0, m0, window, burn_in), window_scores(i0, m0, window, burn_in)
    all_e, all_i, per = [], [], []
    for p in plants:
        e, i, m = step_scores(model, pi_episodes(plant_params(p), seeds, scenario))
        we, wi = window_scores(e, m, window, burn_in), window_scores(i, m, window, burn_in)
        all_e.append(we)
        all_i.append(wi)
        per.append({"plant": dict(p), "energy_auroc": energy_auroc(we0, we), "innovation_auroc": energy_auroc(wi0, wi)})
    ood_e, ood_i = np.concatenate(all_e), np.concatenate(all_i)
    return PlantAUROC(energy_auroc(we0, ood_e), energy_auroc(wi0, ood_i), per, (we0.size, ood_e.size))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)).statistic)


@torch.no_grad()
def energy_error_spearman(model: EBLNN, data: TransitionData, horizon: int = 20, burn_in: int = 20,
                          stride: int = 20) -> dict[str, float]:
    """Spearman correlation of window energies with the model's open-loop error over the window.

    Every ``stride`` steps after ``burn_in``, for episodes with ``horizon`` valid steps ahead: the
    model rolls the real actions out ``horizon`` steps on its own predictions from the filtered
    state; its error is the mean :func:`~eblnn_agent.negatives.prediction_error` over the horizon.
    ``during``: the mean energy of the filtered real states over the same steps (what a monitor
    sees while the prediction plays out); ``before``: over the ``horizon`` steps before the start
    (what it knows when the plan is made).
    """
    obs = torch.as_tensor(data.obs)
    act = torch.as_tensor(data.actions)
    hidden = model.filter(obs[:, :-1], act)
    energy = model.energy(hidden)
    errs, during, before = [], [], []
    for t0 in range(max(burn_in, horizon), act.shape[1] - horizon + 1, stride):
        ok = torch.as_tensor(data.lengths >= t0 + horizon)
        if not ok.any():
            continue
        out = model.rollout(obs[ok, t0], hidden[ok, t0 - 1], act[ok, t0:t0 + horizon])
        errs.append(prediction_error(model, out.obs, obs[ok, t0 + 1:t0 + horizon + 1]).mean(1))
        during.append(energy[ok, t0:t0 + horizon].mean(1))
        before.append(energy[ok, t0 - horizon:t0].mean(1))
    err, dur, bef = (torch.cat(x).numpy() for x in (errs, during, before))
    return {"during": spearman(dur, err), "before": spearman(bef, err), "n_windows": int(err.size),
            "error_median": float(np.median(err))}


class EnergySamples(NamedTuple):
    """Energies for the histogram (seed 004)."""

    real: np.ndarray
    """Filtered states of real held-out data (the dataset's mix of behaviours)."""
    nominal_pi: np.ndarray
    """Filtered states of nominal-plant PI episodes (the fixed controller of ``ood_plant``)."""
    fantasy: np.ndarray
    """Langevin fantasies (chains from uniform noise with the training sampler's settings)."""
    ood_plant: np.ndarray
    """Filtered states of out-of-range-plant PI episodes."""
    wrong_next: np.ndarray
    """Real histories followed by a perturbed next observation."""


@torch.no_grad()
def energy_samples(model: EBLNN, real: TransitionData, nominal: TransitionData, ood: TransitionData,
                   sampler: LangevinSampler, n_fantasy: int, next_obs_noise: float,
                   generator: torch.Generator) -> EnergySamples:
    """Energies of real states (held-out data; nominal-plant PI episodes), Langevin fantasies and
    out-of-distribution transitions (out-of-range-plant PI episodes; perturbed next observations)."""
    e_real, _, m_real = step_scores(model, real)
    e_nom, _, m_nom = step_scores(model, nominal)
    e_ood, _, m_ood = step_scores(model, ood)
    x0 = uniform_init(n_fantasy, model.hidden_size, sampler.clamp or 1.0, generator, "cpu", torch.float32)
    fant, _ = sampler.run(model.energy, x0, generator)
    obs = torch.as_tensor(real.obs)
    act = torch.as_tensor(real.actions)
    hidden = model.filter(obs[:, :-1], act)
    mask = torch.as_tensor(m_real)
    p = perturbed_next_pairs(model, obs[:, :-1], act, hidden, mask, 4096, next_obs_noise, generator)
    return EnergySamples(e_real[m_real], e_nom[m_nom], model.energy(fant).numpy(), e_ood[m_ood], model.energy(p.neg).numpy())


def plot_energy_histograms(s: EnergySamples, path: str | Path, title: str = "") -> Path:
    """Overlaid density histograms of :class:`EnergySamples`, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    parts = {"real (held-out data)": s.real, "nominal plant (PI)": s.nominal_pi, "Langevin fantasies": s.fantasy,
             "out-of-range plants (PI)": s.ood_plant, "perturbed next observation": s.wrong_next}
    lo = min(float(np.percentile(v, 0.5)) for v in parts.values())
    hi = max(float(np.percentile(v, 99.5)) for v in parts.values())
    bins = np.linspace(lo, hi, 80)
    for label, v in parts.items():
        ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step", linewidth=1.5, label=label)
    ax.set_xlabel("fine energy E(h)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cd_gap_summary(history: list[dict], l2_reg: float) -> dict:
    """``train/cd_gap`` per epoch of a run's report: its range, whether it stayed positive, and below
    its bound ``1 / l2_reg`` (the regulariser holds each energy mean near ``+-1 / (2 l2_reg)``)."""
    gaps = [float(h["train/cd_gap"]) for h in history if "train/cd_gap" in h]
    if not gaps:
        return {"available": False}
    bound = 1.0 / l2_reg if l2_reg > 0 else float("inf")
    return {"available": True, "min": min(gaps), "max": max(gaps), "last": gaps[-1], "bound": bound,
            "positive": min(gaps) > 0, "bounded": max(gaps) <= bound}


@torch.no_grad()
def kstep_innovation(model: EBLNN, data: TransitionData, k: int) -> np.ndarray:
    """Per step ``t >= k`` of every episode ``[E, T]``: the error (:func:`~eblnn_agent.negatives.prediction_error`)
    of the model's ``k``-step open-loop prediction of ``obs_t`` made from the filtered state at
    ``t - k`` with the actions applied since (0 for ``t < k``). A plant whose dynamics differ
    shows in it as a drift that one-step errors, dominated by sensor noise, do not resolve."""
    obs = torch.as_tensor(data.obs)
    act = torch.as_tensor(data.actions)
    e_n, t_n = act.shape[:2]
    hidden = model.filter(obs[:, :-1], act)
    out = np.zeros((e_n, t_n), dtype=np.float32)
    starts = torch.arange(1, t_n - k + 1)  # rollouts from obs_s, h_s (= hidden[:, s - 1]) predict obs_{s + k}
    if starts.numel() == 0:
        return out
    o0 = obs[:, starts].reshape(-1, obs.shape[-1])
    h0 = hidden[:, starts - 1].reshape(-1, hidden.shape[-1])
    idx = starts[:, None] + torch.arange(k)
    acts = act[:, idx].reshape(-1, k, act.shape[-1])
    pred = model.rollout(o0, h0, acts).obs[:, -1].reshape(e_n, -1, obs.shape[-1])
    err = prediction_error(model, pred, obs[:, starts + k])
    out[:, (starts + k - 1).numpy()] = err.numpy()  # aligned with step t = s + k - 1's energy index
    return out


def monitor_alarms(model: EBLNN, calibration, seeds: Sequence[int], plants=HELD_OUT_PLANTS,
                   scenario: str = "train_mix") -> dict:
    """The trust monitor's alarms on PI episodes: the share of steps alarmed on the nominal plant (false
    alarms) and on each out-of-range plant, and the share of out-of-range episodes alarmed at all.

    ``calibration``: a :class:`~planners.trust.TrustCalibration` (its settings and threshold).
    """
    from planners.trust import alarm_history, step_mask

    def shares(data: TransitionData) -> tuple[float, float]:
        on = alarm_history(model, calibration, data)
        mask = step_mask(data, calibration.config)
        return float(on[mask].mean()), float(on.any(axis=1).mean())

    nominal = shares(pi_episodes(FurnaceParams(), seeds, scenario))
    per = [{"plant": dict(p), "alarm_share": a, "episodes_alarmed": b}
           for p, (a, b) in ((p, shares(pi_episodes(plant_params(p), seeds, scenario))) for p in plants)]
    return {"nominal_false_alarm_share": nominal[0], "nominal_episodes_alarmed": nominal[1], "per_plant": per}
