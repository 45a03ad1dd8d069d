"""``train/online_mbrl.py`` end to end on a tiny budget: iterations write checkpoints with growing env steps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "model": {"hidden_size": 8, "backbone_units": 8, "physics_hidden_dims": [8], "ebm_hidden_dims": [8]},
    "energy": {"n_steps": 2, "buffer_capacity": 64},
    "data": {"window": 8, "num_envs": 4},
    "train": {"batch_size": 8, "max_windows_per_epoch": 16, "progress": False, "threads": 1},
}


def _run_loop(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train" / "online_mbrl.py"), "--epochs_per_iter", "1", "--iterations", "1",
         "--episodes_per_iter", "1", "--episode_steps", "6", "--no_wandb", "--device", "cpu", "--out_dir", str(out),
         *args], cwd=out.parent, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_loop(tmp_path_factory):
    """One tiny loop from scratch: (its output folder, the finished process)."""
    tmp_path = tmp_path_factory.mktemp("online")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "online"
    res = _run_loop(out, "--init_env_steps", "700", "--init_epochs", "1", "--world_model_config", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_online_loop_tiny(tiny_loop):
    out, res = tiny_loop
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


@pytest.mark.slow  # a second online loop
def test_loop_from_a_trained_model(tiny_loop):
    """``--init_checkpoint``: iteration 0 is that model (copied), its dataset is reloaded, planner data follow."""
    from eblnn_agent.checkpoint import load_checkpoint
    from eblnn_agent.data import TransitionData

    init = tiny_loop[0] / "iter_0" / "best.pt"
    out = tiny_loop[0].parent / "from_trained"
    res = _run_loop(out, "--init_checkpoint", str(init), "--planner_weight", "5")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "iter_0" / "best.pt").read_bytes() == init.read_bytes()
    assert not (out / "init_data.npz").exists()  # the checkpoint's own dataset was reused
    steps = [load_checkpoint(out / f"iter_{k}" / "best.pt", device="cpu")[2]["env_steps"] for k in (0, 1)]
    assert steps[0] == 720 and 720 < steps[1] <= 726
    report = json.loads((out / "report.json").read_text())
    assert report["history"][0]["init_checkpoint"] == str(init)
    assert TransitionData.load(out / "data.npz").env_steps == steps[1]


def test_init_checkpoint_whose_dataset_differs_is_refused(tiny_loop):
    # iter_1 was trained on the initial data plus planner episodes, which its recorded dataset lacks.
    from eblnn_agent.checkpoint import load_checkpoint

    init = tiny_loop[0] / "iter_1" / "best.pt"
    n = load_checkpoint(init, device="cpu")[2]["env_steps"]
    out = tiny_loop[0].parent / "refused"
    res = _run_loop(out, "--init_checkpoint", str(init))
    assert res.returncode == 2 and f"records {n} env steps" in res.stderr and "holds 720" in res.stderr, \
        res.stderr[-2000:]
    assert not (out / "iter_0").exists()


def test_planner_episodes_weighted():
    import importlib.util

    spec = importlib.util.spec_from_file_location("online_mbrl", ROOT / "train" / "online_mbrl.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    from eblnn_agent.data import TransitionData, sample_windows

    e, t = 4, 10
    data = TransitionData(np.zeros((e, t + 1, 8), np.float32), np.zeros((e, t, 2), np.float32), np.full(e, t),
                          np.array([0, 1, mod.PLANNER_BEHAVIOUR, mod.PLANNER_BEHAVIOUR], np.int8), {})
    assert mod.episode_weights(data, 1.0) is None
    p = mod.episode_weights(data, 3.0)
    np.testing.assert_allclose(p, [1 / 8, 1 / 8, 3 / 8, 3 / 8])
    data.obs[:, :, 0] = np.arange(e)[:, None]  # each episode's observations carry its index
    w = sample_windows(data, 4000, 4, np.random.default_rng(0), p=p)
    share = np.bincount(w.obs[:, 0, 0].numpy().astype(int), minlength=e) / 4000
    np.testing.assert_allclose(share, p, atol=0.03)
    only = sample_windows(data, 50, 4, np.random.default_rng(0), p=np.array([0, 0, 0, 1.0]))
    assert (only.obs[:, :, 0] == 3).all()
    with pytest.raises(ValueError, match="4 finite values >= 0 summing to 1"):
        sample_windows(data, 5, 4, np.random.default_rng(0), p=np.array([0.5, 0.5, 0.5, -0.5]))


@pytest.mark.slow  # spawns worker processes that each import torch
def test_parallel_collection_is_the_serial_one(tiny_loop, monkeypatch):
    """Planner episodes collected in 2 processes equal those collected in this one, bit for bit."""
    monkeypatch.syspath_prepend(str(ROOT))  # spawned workers import the module by name
    import importlib

    mod = importlib.import_module("train.online_mbrl")
    ckpt = tiny_loop[0] / "iter_0" / "best.pt"
    runs = [mod.collect_with_planner(ckpt, mod.OnlineConfig(episode_steps=5, workers=w), 3, 77, 240)
            for w in (1, 2)]
    (d1, r1), (d2, r2) = runs
    assert r1 == r2 and d1.n_episodes == 3
    for name in ("obs", "actions", "lengths", "behaviour"):
        np.testing.assert_array_equal(getattr(d1, name), getattr(d2, name))
    assert (d1.lengths > 0).all() and np.abs(d1.actions).sum() > 0
    assert not np.array_equal(d1.actions[0], d1.actions[1])  # each episode has its own seed


def test_bad_workers_is_named(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "train" / "online_mbrl.py"), "--workers", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--workers 0" in res.stderr
