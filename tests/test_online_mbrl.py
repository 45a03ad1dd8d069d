"""``train/online_mbrl.py`` end to end on a tiny budget: iterations write checkpoints with growing env steps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "model": {"hidden_size": 8, "backbone_units": 8, "physics_hidden_dims": [8], "ebm_hidden_dims": [8]},
    "energy": {"n_steps": 2, "buffer_capacity": 64},
    "data": {"window": 8, "num_envs": 4},
    "train": {"batch_size": 8, "max_windows_per_epoch": 16, "progress": False, "threads": 1},
}


def test_online_loop_tiny(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "online"
    res = subprocess.run(
        [sys.executable, str(ROOT / "train" / "online_mbrl.py"), "--init_env_steps", "700", "--init_epochs", "1",
         "--epochs_per_iter", "1", "--iterations", "1", "--episodes_per_iter", "1", "--episode_steps", "6",
         "--world_model_config", str(cfg), "--no_wandb", "--device", "cpu", "--out_dir", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    from eblnn_agent.checkpoint import load_checkpoint

    steps = [load_checkpoint(out / f"iter_{k}" / "best.pt", device="cpu")[2]["env_steps"] for k in (0, 1)]
    assert steps[0] == 720  # ceil(700 / 240) = 3 exploratory episodes of 240 steps
    # Plus one planner episode of at most 6 steps (an untrained model's plan may trip earlier).
    assert steps[0] < steps[1] <= steps[0] + 6
    from eblnn_agent.data import TransitionData

    data = TransitionData.load(out / "data.npz")
    assert data.env_steps == steps[1] and data.n_episodes == 4 and data.behaviour[-1] == 2
    report = json.loads((out / "report.json").read_text())
    assert [h["env_steps"] for h in report["history"]] == steps
    # Logged steps never go back between iterations (W&B drops rows whose step decreases).
    logged = [int(line[1:line.index("]")]) for line in res.stdout.splitlines() if re.match(r"\[\d+\] ", line)]
    print(logged)
    assert len(logged) > 2 and logged == sorted(logged), logged


def test_bad_flag_is_named(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "train" / "online_mbrl.py"), "--episodes_per_iter", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--episodes_per_iter 0" in res.stderr
