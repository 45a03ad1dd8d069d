"""Measure whether a world model's energy knows where the model is wrong: ``python evaluate/energy_report.py``.

Wiring only (the measurements are in :mod:`evaluate.energy_diagnostics`): loads a checkpoint and
its data's held-out test split, then writes to ``--out``:

* ``energy_report.json``: the AUROC of nominal vs out-of-range-plant PI windows (energy and
  one-step innovation), the Spearman correlation of window energy with the 20-step open-loop
  error on the test split, and ``train/cd_gap`` over the run (from the checkpoint's
  ``report.json`` when it is beside it);
* ``energy_hist.png``: energies of real data, Langevin fantasies and out-of-distribution transitions;
* with a trust calibration beside the checkpoint (``evaluate/calibrate_trust.py``): the monitor's
  alarms on nominal and out-of-range-plant PI episodes (false-alarm share, episodes alarmed).

Example: ``python evaluate/energy_report.py --checkpoint runs/world_model/best.pt --out runs/energy``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from eblnn_agent.checkpoint import load_checkpoint
from eblnn_agent.data import TransitionData, split_episodes
from eblnn_agent.negatives import HELD_OUT_PLANTS, plant_params
from eblnn_agent.sampler import LangevinSampler
from evaluate.energy_diagnostics import (
    cd_gap_summary,
    energy_error_spearman,
    energy_samples,
    monitor_alarms,
    plant_auroc,
    plot_energy_histograms,
)
from planners.trust import TrustCalibration, default_calibration_path, pi_episodes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/world_model/best.pt", help="world-model checkpoint (best.pt)")
    p.add_argument("--data_path", default=None,
                   help="its dataset (.npz); default: the data_path in the checkpoint's config")
    p.add_argument("--out", default="runs/energy_report", help="output directory")
    p.add_argument("--episodes", type=int, default=16, help="PI episodes per plant for the AUROC")
    p.add_argument("--seed", type=int, default=20_000, help="first env seed of the PI episodes")
    p.add_argument("--window", type=int, default=20, help="window length, control steps")
    p.add_argument("--horizon", type=int, default=20, help="open-loop horizon of the Spearman measure")
    p.add_argument("--max_test_episodes", type=int, default=64, help="test-split episodes used (the first ones)")
    args = p.parse_args(argv)
    for name in ("episodes", "window", "horizon", "max_test_episodes"):
        if getattr(args, name) < 1:
            p.error(f"--{name}={getattr(args, name)} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    ckpt = Path(args.checkpoint)
    model, cfg, meta = load_checkpoint(ckpt)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    data = TransitionData.load(args.data_path or cfg.data.data_path)
    test = split_episodes(data, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data_seed).test
    test = test.subset(np.arange(min(test.n_episodes, args.max_test_episodes)))
    seeds = list(range(args.seed, args.seed + args.episodes))
    auroc = plant_auroc(model, seeds, window=args.window, burn_in=args.window)
    rho = energy_error_spearman(model, test, horizon=args.horizon, burn_in=args.window, stride=args.window)
    ec = cfg.energy
    sampler = LangevinSampler(ec.n_steps, ec.step_size, ec.noise_scale, ec.langevin_grad_clip, ec.sample_clamp)
    ood = pi_episodes(plant_params(HELD_OUT_PLANTS[0]), seeds[:4])
    nominal = pi_episodes(plant_params({}), seeds[:4])
    samples = energy_samples(model, test, nominal, ood, sampler, 2048, ec.next_obs_noise, torch.Generator().manual_seed(0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_energy_histograms(samples, out / "energy_hist.png", title=str(ckpt))
    report_path = ckpt.parent / "report.json"
    history = json.loads(report_path.read_text()).get("history", []) if report_path.is_file() else []
    cal_path = default_calibration_path(ckpt)
    trust = (monitor_alarms(model, TrustCalibration.load(cal_path), seeds) if cal_path.is_file()
             else {"available": False, "why": f"no {cal_path}; run evaluate/calibrate_trust.py"})
    result = {
        "checkpoint": str(ckpt),
        "plant_auroc": {"energy": auroc.energy, "innovation": auroc.innovation, "per_plant": auroc.per_plant,
                        "n_windows": list(auroc.n_windows), "goal_0.9": auroc.energy >= 0.9},
        "spearman_energy_vs_open_loop_error": {**rho, "goal_0.5": rho["during"] >= 0.5},
        "cd_gap": cd_gap_summary(history, ec.l2_reg),
        "trust_monitor": trust,
        "energy_means": {k: float(np.mean(v)) for k, v in samples._asdict().items()},
        "args": vars(args),
    }
    (out / "energy_report.json").write_text(json.dumps(result, indent=2))
    print(f"plant AUROC: energy {auroc.energy:.3f}, innovation {auroc.innovation:.3f} "
          f"({auroc.n_windows[0]} nominal / {auroc.n_windows[1]} out-of-range windows)")
    print(f"Spearman(energy, {args.horizon}-step open-loop error): during {rho['during']:.3f}, "
          f"before {rho['before']:.3f} ({rho['n_windows']} windows)")
    print("energy means: " + ", ".join(f"{k} {v:.1f}" for k, v in result["energy_means"].items()))
    print(f"cd_gap: {result['cd_gap']}")
    if "per_plant" in trust:
        print(f"trust monitor: {trust['nominal_false_alarm_share']:.2%} of nominal steps alarmed; out-of-range "
              f"episodes alarmed: " + ", ".join(f"{p['episodes_alarmed']:.0%}" for p in trust["per_plant"]))
    print(f"wrote {out / 'energy_report.json'} and {out / 'energy_hist.png'}")
    return result


if __name__ == "__main__":
    main()
