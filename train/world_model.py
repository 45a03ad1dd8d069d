"""Train the EB-LNN world model on Furnace-v0 data: ``python train/world_model.py`` (good defaults).

Wiring only: parse the config (dataclasses in :mod:`eblnn_agent.config`, optionally a YAML
file, then flags such as ``--alpha 2 --hidden_size 64 --n_steps 30 --no_wandb``), collect or
reload the data, build the model and the logger, ``Trainer(...).fit()``, write a report.
Outputs in ``--out_dir`` (default ``runs/world_model``): ``best.pt`` (the checkpoint the
planners load), ``last.pt`` (for ``--resume``), ``report.json``.

Runs under ``wandb agent`` too (the sweep in ``configs/world_model_sweep.yaml``).
"""

from __future__ import annotations

import json
import sys
import time

import torch

from eblnn_agent.checkpoint import CheckpointError
from eblnn_agent.config import ConfigError, config_from_cli
from eblnn_agent.data import compute_norm_stats, load_or_collect, split_episodes
from eblnn_agent.logger import make_logger
from eblnn_agent.model import EBLNN
from eblnn_agent.trainer import Trainer
from eblnn_agent.utils import check_file_target, check_writable_dir, resolve_device


def main(argv: list[str] | None = None) -> dict:
    cfg = config_from_cli(argv, description=__doc__.splitlines()[0])
    tc, dc = cfg.train, cfg.data
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    try:  # before any data are collected: a run must not fail only when it first saves
        out = check_writable_dir(tc.out_dir, "--out_dir")
        check_file_target(dc.data_path, "--data_path")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    t0 = time.perf_counter()
    data = load_or_collect(dc.data_path, dc.n_env_steps, cfg.data_seed, dc.scenario, dc.num_envs, dc.pi_fraction,
                           progress=tc.progress)
    t_data = time.perf_counter() - t0
    split = split_episodes(data, dc.val_fraction, dc.test_fraction, cfg.data_seed)
    torch.manual_seed(tc.seed)  # initialisation of the network weights (the only global draw)
    model = EBLNN(cfg.model)
    model.set_norm_stats(*compute_norm_stats(split.train, co_log_scale=cfg.model.co_log_scale))
    logger = make_logger(tc.wandb, tc.wandb_project, cfg.to_dict(), dir=str(out))
    logger.log({"data/env_steps": data.env_steps, "data/episodes": data.n_episodes,
                "data/train_episodes": split.train.n_episodes, "data/seconds": t_data}, step=0)
    trainer = Trainer(model, cfg, split, logger, device, env_steps=data.env_steps, out_dir=out)
    if tc.resume:
        trainer.resume()
    result = trainer.fit()
    report = {
        "best_checkpoint": str(out / "best.pt"),
        "env_steps": data.env_steps,
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_seconds": result.train_seconds,
        "data_seconds": t_data,
        "total_seconds": time.perf_counter() - t0,
        "sequences_per_s": result.sequences_per_s,
        "device": str(device),
        "final_val": {k: v for k, v in (result.history[-1] if result.history else {}).items()
                      if k.startswith("val/")},
        "config": cfg.to_dict(),
        "history": result.history,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    logger.summary({"summary/best_val_loss": result.best_val_loss,
                    "summary/sequences_per_s": result.sequences_per_s,
                    "summary/total_seconds": report["total_seconds"]})
    logger.finish()
    print(f"best checkpoint: {out / 'best.pt'} (epoch {result.best_epoch}, val/loss {result.best_val_loss:.4g}); "
          f"{result.sequences_per_s:.0f} sequences/s; total {report['total_seconds']:.0f} s")
    return report


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
