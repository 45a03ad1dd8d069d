"""Quality bars of a trained EB-LNN world model on held-out test episodes.

``python evaluate/world_model_quality.py --checkpoint runs/world_model/best.pt``

Reloads (or re-collects, deterministically) the checkpoint's dataset, takes its test split
(episodes never used for training or early stopping) and reports:

* one-step prediction MSE per channel vs the persistence baseline (next = current), with
  the sensor-noise floor (the MSE a perfect model would still have on noisy targets);
* a 20-step open-loop rollout of the real actions from filtered states: RMSE vs horizon and
  one example trajectory (plot);
* the energy's AUROC: real transitions vs the same transitions with random bang-bang
  actions (per step), and imagined rollouts of real vs bang-bang action sequences;
* the training curves of ``train/cd_gap`` and the physics losses from the run's report (plot).

Writes ``quality.json`` and PNG figures to ``--out_dir`` (default: next to the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from eblnn_agent.checkpoint import CheckpointError, load_checkpoint
from eblnn_agent.data import load_or_collect, split_episodes, tile_windows
from eblnn_agent.losses import energy_auroc
from eblnn_agent.metrics import (
    bang_bang_actions,
    one_step_predictions,
    open_loop_errors,
    rollout_energies,
    setpoint_sensitivity,
    transition_energies,
)
from eblnn_agent.transforms import CO_CHANNEL  # noqa: E402
from furnace_env.env import NOISE_ABS, NOISE_REL
from furnace_env.physics import OBS_NAMES

DYNAMIC = ("temperature", "o2", "co", "fuel_flow", "air_flow")
#: Bands of true CO (ppm) in which the one-step CO error is reported.
CO_BANDS = ((0, 30), (30, 300), (300, 1000), (1000, float("inf")))


def _short(name: str) -> str:
    for key in DYNAMIC + ("setpoint", "prev_fuel_cmd", "prev_air_cmd"):
        if key in name:
            return key
    return name


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/world_model/best.pt", help="world-model checkpoint (best.pt)")
    ap.add_argument("--out_dir", default=None, help="where to write quality.json and plots (default: its folder)")
    ap.add_argument("--horizon", type=int, default=20, help="open-loop rollout length, steps")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bang-bang actions")
    ap.add_argument("--device", default="cpu", help="torch device")
    ap.add_argument("--no_plots", action="store_true", help="skip the figures")
    args = ap.parse_args(argv)
    model, cfg, meta = load_checkpoint(args.checkpoint, device=args.device)
    out = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    dc = cfg.data
    data = load_or_collect(dc.data_path, dc.n_env_steps, cfg.data_seed, dc.scenario, dc.num_envs, dc.pi_fraction)
    test = split_episodes(data, dc.val_fraction, dc.test_fraction, cfg.data_seed).test
    names = [_short(n) for n in OBS_NAMES]

    # One-step prediction vs persistence, per channel.
    one = one_step_predictions(model, test, args.device)
    mse = ((one.pred - one.target) ** 2).mean(0)
    mse_p = ((one.persist - one.target) ** 2).mean(0)
    floor = ((NOISE_ABS + NOISE_REL * np.abs(one.target)) ** 2).mean(0)
    one_step = {n: {"mse": float(mse[i]), "persistence_mse": float(mse_p[i]),
                    "ratio": float(mse[i] / mse_p[i]) if mse_p[i] > 0 else float("nan"),
                    "noise_floor_mse": float(floor[i])} for i, n in enumerate(names)}

    # CO error by band of the true CO: the knee (30-1000 ppm) is where an optimising controller
    # operates; the whole-channel MSE above is dominated by the fuel-rich tail (thousands of ppm).
    co_t, co_p = one.target[:, CO_CHANNEL], one.pred[:, CO_CHANNEL]
    co_bands = {}
    for lo, hi in CO_BANDS:
        k = (co_t >= lo) & (co_t < hi)
        co_bands[f"{lo:g}-{hi:g}"] = {"n": int(k.sum()),
                                      "rmse": float(np.sqrt(np.mean((co_p[k] - co_t[k]) ** 2))) if k.any() else None,
                                      "bias": float(np.mean(co_p[k] - co_t[k])) if k.any() else None}

    # Open-loop rollouts of the real actions.
    pred, truth, pers = open_loop_errors(model, test, horizon=args.horizon, device=args.device)
    rmse_h = np.sqrt(((pred - truth) ** 2).mean(0))  # [H, 8]
    rmse_p = np.sqrt(((pers - truth) ** 2).mean(0))
    open_loop = {n: {"rmse_by_step": rmse_h[:, i].tolist(), "persistence_rmse_by_step": rmse_p[:, i].tolist()}
                 for i, n in enumerate(names) if n in DYNAMIC}

    # Energy AUROCs against random bang-bang actions.
    g = torch.Generator().manual_seed(args.seed)
    w = tile_windows(test, dc.window, args.device)
    ood = bang_bang_actions(tuple(w.actions.shape), g)
    e_r, e_o = transition_energies(model, w, ood)
    burn = min(8, dc.window // 2)
    s_r, s_o = rollout_energies(model, w, burn, ood[:, burn:])
    energy = {"transition_auroc": energy_auroc(e_r, e_o), "rollout_auroc": energy_auroc(s_r, s_o),
              "e_real_mean": float(e_r.mean()), "e_ood_mean": float(e_o.mean()),
              "n_real": int(e_r.numel()), "n_ood": int(e_o.numel()), "n_rollouts": int(s_r.numel())}

    # Dependence of the imagined temperature on the setpoint (the plant has none).
    sp_sens = setpoint_sensitivity(model, w, burn)

    report_path = Path(args.checkpoint).parent / "report.json"
    train_report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    hist = train_report.get("history", [])
    gaps = [h["train/cd_gap"] for h in hist if "train/cd_gap" in h]
    result = {
        "checkpoint": str(args.checkpoint), "env_steps": meta.get("env_steps"),
        "test_episodes": test.n_episodes, "test_transitions": test.env_steps,
        "one_step": one_step, "one_step_co_by_band_ppm": co_bands, "open_loop": open_loop, "energy": energy,
        "setpoint_sensitivity_k_per_k": sp_sens,
        "bars": {
            "one_step_ratio_le_0.1": {n: one_step[n]["ratio"] <= 0.1 for n in DYNAMIC},
            "energy_auroc_ge_0.9": energy["transition_auroc"] >= 0.9,
            "cd_gap_positive": bool(gaps) and min(gaps) > 0, "cd_gap_range": [min(gaps), max(gaps)] if gaps else None,
        },
        "training": {k: train_report.get(k) for k in ("total_seconds", "train_seconds", "sequences_per_s",
                                                       "epochs_run", "best_epoch")},
    }
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    if not args.no_plots:
        _plots(out, names, pred, truth, rmse_h, rmse_p, hist, e_r, e_o)
    _print(result)
    return result


def _print(r: dict) -> None:
    print(f"{'channel':14s} {'MSE':>12s} {'persistence':>12s} {'ratio':>8s} {'noise floor':>12s}")
    for n, v in r["one_step"].items():
        print(f"{n:14s} {v['mse']:12.4g} {v['persistence_mse']:12.4g} {v['ratio']:8.3f} {v['noise_floor_mse']:12.4g}")
    print("one-step CO by band of true CO: " + ", ".join(
        f"{b} ppm (n={v['n']}): RMSE {v['rmse']:.1f}" for b, v in r["one_step_co_by_band_ppm"].items() if v["n"]))
    e = r["energy"]
    print(f"energy AUROC: transitions {e['transition_auroc']:.3f}, rollouts {e['rollout_auroc']:.3f}")
    print(f"setpoint sensitivity of the imagined temperature: {r['setpoint_sensitivity_k_per_k']:.3f} K per K "
          "(the furnace: 0)")
    print(f"bars: {json.dumps(r['bars'])}")


def _plots(out: Path, names, pred, truth, rmse_h, rmse_p, hist, e_r, e_o) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dyn = [i for i, n in enumerate(names) if n in DYNAMIC]
    steps = np.arange(1, pred.shape[1] + 1)
    fig, axes = plt.subplots(2, len(dyn), figsize=(3.2 * len(dyn), 5.5))
    move = np.ptp(truth[:, :, 0], axis=1)
    k = int(np.argsort(move)[int(0.9 * (len(move) - 1))])  # a large but typical temperature move (90th pct)
    for j, i in enumerate(dyn):
        ax = axes[0, j]
        ax.plot(steps, truth[k, :, i], "k-", label="truth")
        ax.plot(steps, pred[k, :, i], "C1--", label="model (open loop)")
        ax.set_title(names[i])
        ax = axes[1, j]
        ax.plot(steps, rmse_h[:, i], "C1", label="model")
        ax.plot(steps, rmse_p[:, i], "C7:", label="persistence")
        ax.set_xlabel("steps ahead (5 s)")
        if j == 0:
            axes[0, j].legend(fontsize=7)
            ax.legend(fontsize=7)
            ax.set_ylabel("RMSE")
    fig.suptitle("20-step open-loop rollout on test episodes: example (top), RMSE vs horizon (bottom)")
    fig.tight_layout()
    fig.savefig(out / "open_loop.png", dpi=110)
    plt.close(fig)
    if hist:
        ep = [h["train/epoch"] for h in hist]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        axes[0].plot(ep, [h["train/cd_gap"] for h in hist], "o-", label="train/cd_gap")
        axes[0].plot(ep, [h["val/cd_gap"] for h in hist], "s--", label="val/cd_gap")
        axes[0].axhline(0, color="k", lw=0.5)
        axes[0].set_title("CD gap E(fantasy) - E(real)")
        axes[1].plot(ep, [h["train/e_pos"] for h in hist], label="train/e_pos")
        axes[1].plot(ep, [h["train/e_neg"] for h in hist], label="train/e_neg")
        axes[1].set_title("energies")
        axes[2].semilogy(ep, [h["train/physics"] for h in hist], label="train/physics")
        axes[2].semilogy(ep, [h["val/physics"] for h in hist], label="val/physics")
        axes[2].set_title("physics loss (normalised MSE)")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "training_curves.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    bins = np.linspace(min(float(e_r.min()), float(e_o.min())), max(float(e_r.max()), float(e_o.max())), 60)
    ax.hist(e_r.numpy(), bins=bins, alpha=0.6, density=True, label="real transitions")
    ax.hist(e_o.numpy(), bins=bins, alpha=0.6, density=True, label="bang-bang actions")
    ax.set_xlabel("energy E(h)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "energy_hist.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    try:
        main()
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
