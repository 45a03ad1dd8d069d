"""train/world_model.py end to end on a tiny budget, configuration handling, data collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eblnn_agent.checkpoint import load_checkpoint
from eblnn_agent.config import ConfigError, WorldModelRunConfig, config_from_cli, field_docs
from eblnn_agent.data import (
    collect_transitions,
    compute_norm_stats,
    load_or_collect,
    sample_windows,
    split_episodes,
)
from eblnn_agent.logger import make_logger, wandb_mode

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n_env_steps", "1500", "--epochs", "2", "--max_windows_per_epoch", "32", "--batch_size", "16",
        "--window", "8", "--n_steps", "2", "--cd_batch", "32", "--hidden_size", "8", "--backbone_units", "8",
        "--physics_hidden_dims", "8", "--ebm_hidden_dims", "8", "--buffer_capacity", "64",
        "--no_progress", "--threads", "1"]


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_API_KEY": "", "WANDB_DIR": str(tmp)}
    return subprocess.run([sys.executable, str(ROOT / "train" / "world_model.py"), *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny ``train/world_model.py`` run: ``(args, tmp, result)``; shared by the tests below."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    args = [*TINY, "--out_dir", str(tmp / "run"), "--data_path", str(tmp / "d.npz"), "--no_wandb"]
    return args, tmp, _run(args, tmp)


def test_tiny_training_run_end_to_end(tiny_run):
    args, tmp_path, r = tiny_run
    out = tmp_path / "run"
    assert r.returncode == 0, r.stderr[-2000:]
    for key in ("train/cd_gap", "train/e_pos", "train/e_neg", "val/physics", "val/loss", "langevin/nonfinite",
                "langevin/grad_norm"):
        assert key in r.stdout
    model, cfg, meta = load_checkpoint(out / "best.pt", device="cpu")
    assert meta["env_steps"] > 0 and cfg.model.hidden_size == 8
    assert torch.isfinite(model.obs_std).all() and (model.obs_std != 1).any()  # stats travel inside
    report = json.loads((out / "report.json").read_text())
    assert report["epochs_run"] == 2 and report["sequences_per_s"] > 0


@pytest.mark.slow  # three more script runs after the tiny one
def test_tiny_run_resumes_reseeds_and_reports_quality(tiny_run):
    args, tmp_path, r = tiny_run
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "run"
    model, cfg, meta = load_checkpoint(out / "best.pt", device="cpu")
    # The dataset is reloaded, not collected again; --resume continues to a later epoch.
    r2 = _run([*args, "--resume", "--epochs", "3"], tmp_path)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "reloaded" in r2.stdout and "train/resumed_epoch=2" in r2.stdout
    assert json.loads((out / "report.json").read_text())["epochs_run"] == 3
    # Another initialisation on the same data (an ensemble member): --seed 1 --data_seed 0 reloads it.
    out1 = tmp_path / "run_s1"
    r3 = _run([*args, "--epochs", "1", "--seed", "1", "--data_seed", "0", "--out_dir", str(out1)], tmp_path)
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert "reloaded" in r3.stdout
    model1, cfg1, meta1 = load_checkpoint(out1 / "best.pt", device="cpu")
    assert cfg1.train.seed == 1 and cfg1.data_seed == 0 and meta1["env_steps"] == meta["env_steps"]
    torch.testing.assert_close(model1.obs_mean, model.obs_mean)  # same data, same split
    assert not torch.equal(model1.cfc.rnn_cell.ff1.weight, model.cfc.rnn_cell.ff1.weight)
    # evaluate/world_model_quality.py on the tiny checkpoint: every section of its report.
    q = subprocess.run([sys.executable, str(ROOT / "evaluate" / "world_model_quality.py"), "--checkpoint",
                        str(out / "best.pt"), "--out_dir", str(tmp_path / "q"), "--horizon", "4", "--no_plots"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr[-2000:]
    quality = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert len(quality["open_loop"]["temperature"]["rmse_by_step"]) == 4
    assert all(v["ratio"] >= 0 for k, v in quality["one_step"].items() if k in ("temperature", "o2", "co"))
    assert 0.0 <= quality["setpoint_sensitivity_k_per_k"] < 10.0
    assert 0.0 <= quality["energy"]["transition_auroc"] <= 1.0 and "setpoint sensitivity" in q.stdout


def test_same_seed_same_checkpoint(tmp_path):
    from eblnn_agent.logger import MetricLogger
    from eblnn_agent.model import EBLNN
    from eblnn_agent.trainer import Trainer  # in-process: two identical tiny runs

    cfg = config_from_cli([*TINY, "--epochs", "1", "--data_path", str(tmp_path / "d.npz")])
    data = load_or_collect(cfg.data.data_path, cfg.data.n_env_steps, 0, log=lambda *_: None)
    states = []
    for k in range(2):
        split = split_episodes(data, 0.1, 0.1, 0)
        torch.manual_seed(0)
        m = EBLNN(cfg.model)
        m.set_norm_stats(*compute_norm_stats(split.train, co_log_scale=m.cfg.co_log_scale))
        Trainer(m, cfg, split, MetricLogger(quiet=True), torch.device("cpu"), 1, tmp_path / f"o{k}").fit()
        states.append(load_checkpoint(tmp_path / f"o{k}" / "best.pt")[0].state_dict())
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key])


def test_bad_config_values_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"energy.alpha=-1.0 is invalid: must be a finite number >= 0"):
        config_from_cli(["--alpha", "-1"])
    with pytest.raises(ConfigError, match="buffer_prob"):
        config_from_cli(["--buffer_prob", "1.5"])
    with pytest.raises(ConfigError, match="backbone_activation"):
        config_from_cli(["--backbone_activation", "swish"])
    with pytest.raises(ConfigError, match="wandb"):
        config_from_cli(["--wandb", "sometimes"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("energy:\n  alpah: 1.0\n")
    with pytest.raises(ConfigError, match="alpah"):
        WorldModelRunConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        WorldModelRunConfig.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(SystemExit):
        config_from_cli(["--epochs", "many"])
    with pytest.raises(ConfigError, match=r"data.data_seed=-2 is invalid: must be null or an integer >= 0"):
        config_from_cli(["--data_seed", "-2"])


def test_data_seed_defaults_to_the_run_seed():
    assert config_from_cli([]).data_seed == 0
    assert config_from_cli(["--seed", "3"]).data_seed == 3
    cfg = config_from_cli(["--seed", "3", "--data_seed", "0"])
    assert cfg.train.seed == 3 and cfg.data_seed == 0
    assert WorldModelRunConfig.from_dict({"data": {"data_seed": None}}).data_seed == 0
    assert WorldModelRunConfig.from_dict({"data": {"data_seed": "null"}}).data.data_seed is None


def test_config_yaml_then_cli_overrides_and_docs(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("energy:\n  alpha: 2.5\n  n_steps: 5\nmodel:\n  ebm_hidden_dims: [32, 16]\n")
    cfg = config_from_cli(["--config", str(p), "--n_steps", "7", "--no_spectral_norm", "--multiscale=false",
                           "--no_wandb"])
    assert cfg.energy.alpha == 2.5 and cfg.energy.n_steps == 7 and cfg.model.ebm_hidden_dims == [32, 16]
    assert cfg.model.spectral_norm is False and cfg.model.multiscale is False and cfg.train.wandb == "disabled"
    assert WorldModelRunConfig.from_dict(cfg.to_dict()) == cfg
    # Every field is documented (the docstrings become the --help texts).
    from eblnn_agent.config import _SECTIONS

    for klass in _SECTIONS.values():
        assert set(field_docs(klass)) == {f for f in klass.__dataclass_fields__}
    shipped = WorldModelRunConfig.from_yaml(ROOT / "configs" / "world_model.yaml")
    assert shipped == WorldModelRunConfig().validate()
    # ... and lists every field (a missing one would silently take the default).
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "world_model.yaml").read_text())
    assert {k: set(v) for k, v in raw.items()} == {k: set(c.__dataclass_fields__) for k, c in _SECTIONS.items()}


def test_collection_is_deterministic_and_split_by_episode(tmp_path):
    a = collect_transitions(1200, seed=3, num_envs=4)
    b = collect_transitions(1200, seed=3, num_envs=4)
    assert np.array_equal(a.obs, b.obs) and np.array_equal(a.actions, b.actions)
    assert a.obs.shape[1:] == (241, 8) and a.actions.shape[1:] == (240, 2)
    assert a.provenance["scenario"] == "train_mix" and set(a.behaviour) <= {0, 1}
    assert (np.abs(a.actions) <= 1).all() and 0 < a.env_steps <= 1200
    split = split_episodes(a, 0.2, 0.2, 0)
    assert split.train.n_episodes + split.val.n_episodes + split.test.n_episodes == a.n_episodes
    w = sample_windows(split.train, 5, 16, np.random.default_rng(0))
    assert w.obs.shape == (5, 17, 8) and w.actions.shape == (5, 16, 2) and w.mask.shape == (5, 16)
    p = tmp_path / "d.npz"
    a.save(p)
    c = load_or_collect(p, 1200, 3, num_envs=4, log=lambda *_: None)
    assert np.array_equal(c.obs, a.obs) and c.provenance == a.provenance


def test_logger_never_prompts_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode("auto") == "offline" and wandb_mode("online") == "offline"
    assert wandb_mode(False) == "disabled" and wandb_mode("disabled") == "disabled"
    log = make_logger(False, quiet=True)
    log.log({"train/x": 1.0}, step=3)
    assert log.history == [{"step": 3, "train/x": 1.0}] and log.mode == "disabled"


def test_sweep_config_names_real_flags_in_wandb_agent_syntax():
    import yaml

    sweep = yaml.safe_load((ROOT / "configs" / "world_model_sweep.yaml").read_text())
    assert sweep["program"] == "train/world_model.py"
    args = ["--progress=false"]
    for name, spec in sweep["parameters"].items():
        value = spec["values"][0] if "values" in spec else spec["min"]
        args.append(f"--{name}={value}")  # as `wandb agent` writes them
    cfg = config_from_cli(args)
    flat = cfg.flat()
    for name, spec in sweep["parameters"].items():
        expected = spec["values"][0] if "values" in spec else spec["min"]
        assert flat[name] == expected
    assert flat["progress"] is False
