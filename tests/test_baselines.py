"""``train/baselines.py`` end to end on tiny budgets (subprocesses), and ``planners.sb3_policy``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import furnace_env  # noqa: F401
from eblnn_agent.cli import field_docs
from eblnn_agent.logger import wandb_mode
from furnace_env.features import TrackingIntegralWrapper
from furnace_env.ratio import RatioActions
from planners.evaluation import episode_metrics, run_episode
from planners.sb3_policy import SB3ArtefactError, load_sb3_policy, vecnormalize_path

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "ppo": ["--steps", "256", "--n_envs", "2", "--n_steps", "64", "--batch_size", "64", "--n_epochs", "1"],
    "sac": ["--steps", "200", "--learning_starts", "50", "--batch_size", "32", "--net_arch", "32", "32"],
}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_API_KEY": ""}
    return subprocess.run([sys.executable, str(ROOT / "train" / "baselines.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


def _script_module():
    """The module behind ``train/baselines.py`` (its config parsing, without a subprocess)."""
    import importlib

    return importlib.import_module("planners.sb3_training")  # the work behind train/baselines.py


@pytest.fixture(scope="module", params=["ppo", "sac"])
def artefact(request, tmp_path_factory) -> tuple[str, Path]:
    algo = request.param
    out = tmp_path_factory.mktemp(algo) / "run"
    res = _run("--algo", algo, *TINY[algo], "--seed", "3", "--checkpoints", "2", "--no_progress",
               "--no_wandb", "--out", str(out), cwd=out.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    return algo, out


def test_script_writes_model_stats_and_meta(artefact):
    algo, out = artefact
    assert (out / "model.zip").stat().st_size > 0
    assert (out / "vecnormalize.pkl").stat().st_size > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["algo"] == algo and meta["seed"] == 3
    # PPO rounds the budget up to whole rollouts (2 envs x 64 steps); SAC stops on the step.
    assert meta["env_steps"] == 256 if algo == "ppo" else meta["env_steps"] == 200
    assert meta["config"][algo]["steps"] == int(TINY[algo][1])
    assert {"torch", "stable_baselines3", "gymnasium"} <= set(meta["versions"])
    assert meta["wall_time_s"] > 0
    assert not list(out.glob(".*"))  # no temporary files left by the atomic writes
    ckpts = sorted(out.glob(f"checkpoints/{algo}_*_steps.zip"))
    assert len(ckpts) == 2
    assert all(vecnormalize_path(c).is_file() for c in ckpts)


def test_loaded_policy_matches_the_model(artefact):
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    algo, out = artefact
    policy = load_sb3_policy(out / "model.zip")
    assert policy.name == algo and policy.env_steps == json.loads((out / "meta.json").read_text())["env_steps"]
    # Trained in ratio coordinates (the default), recorded in the zip: the policy maps them; SAC's
    # default also observes the integrated temperature error (a wrapper in training).
    record = _zip_record(out / "model.zip")
    assert record["action_coords"] == "ratio"
    assert ("obs_integral" in record) == (algo == "sac")

    def make_env():
        env = gym.make("Furnace-v0", scenario="load_swing")
        return TrackingIntegralWrapper(env) if "obs_integral" in record else env

    # Reference: SB3's own loading path (VecNormalize.load on a venv, training off), stepping the
    # training-time wrapper; the policy sees the plain env's observations.
    venv = VecNormalize.load(str(out / "vecnormalize.pkl"), DummyVecEnv([make_env]))
    venv.training = False
    model = {"ppo": PPO, "sac": SAC}[algo].load(out / "model.zip", device="cpu")
    env = make_env()
    x, _ = env.reset(seed=0)
    mean_before = venv.obs_rms.mean.copy()
    ratio = RatioActions()
    for _ in range(5):
        u_ref, _ = model.predict(venv.normalize_obs(x[None]), deterministic=True)
        a, _ = policy.predict(x[:8], deterministic=True)
        assert a.shape == (2,)
        np.testing.assert_allclose(a, ratio.to_env(u_ref[0].astype(np.float64)), rtol=1e-5, atol=1e-6)
        x, *_ = env.step(a)
    np.testing.assert_array_equal(policy.obs_norm.obs_rms.mean, mean_before)  # statistics frozen


def test_policy_runs_in_run_episode_and_checkpoints_load(artefact):
    algo, out = artefact
    env = gym.make("Furnace-v0", scenario="nominal")
    m1 = episode_metrics(run_episode(load_sb3_policy(out), env, seed=0))
    m2 = episode_metrics(run_episode(load_sb3_policy(out), env, seed=0))
    assert m1["return"] == m2["return"] and np.isfinite(m1["return"])  # deterministic actions
    ckpt = sorted(out.glob(f"checkpoints/{algo}_*_steps.zip"))[0]
    pol = load_sb3_policy(ckpt)
    assert pol.env_steps == int(ckpt.stem.split("_")[-2])


def test_missing_artefact_names_path_and_command(tmp_path):
    missing = tmp_path / "sac" / "model.zip"
    with pytest.raises(SB3ArtefactError) as err:
        load_sb3_policy(missing)
    assert str(missing) in str(err.value) and "train/baselines.py --algo sac" in str(err.value)


def test_corrupt_artefact_is_reported(artefact, tmp_path):
    algo, out = artefact
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SB3ArtefactError, match="unreadable"):
        load_sb3_policy(bad)
    no_stats = tmp_path / "nostats"
    no_stats.mkdir()
    (no_stats / "model.zip").write_bytes((out / "model.zip").read_bytes())
    with pytest.raises(SB3ArtefactError, match="vecnormalize.pkl"):
        load_sb3_policy(no_stats / "model.zip")


def test_bad_algo_lists_the_allowed_values(tmp_path):
    res = _run("--algo", "dqn", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert res.returncode == 2
    assert "dqn" in res.stderr and "ppo" in res.stderr and "sac" in res.stderr


def test_raw_coordinates_are_recorded_and_used_as_is(tmp_path):
    from stable_baselines3 import PPO

    out = tmp_path / "ppo"
    res = _run("--algo", "ppo", *TINY["ppo"], "--action_coords", "raw", "--checkpoints", "1",
               "--no_progress", "--no_wandb", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for path in (out / "model.zip", *out.glob("checkpoints/ppo_*_steps.zip")):
        assert _zip_record(path)["action_coords"] == "raw"
        assert load_sb3_policy(path).ratio is None
    policy = load_sb3_policy(out)
    obs, _ = gym.make("Furnace-v0", scenario="nominal").reset(seed=0)
    a_ref, _ = PPO.load(out / "model.zip", device="cpu").predict(policy.normalize(obs[None]), deterministic=True)
    np.testing.assert_allclose(policy.predict(obs)[0], a_ref[0], rtol=1e-6)
    # A bad record is reported, naming the value; a zip without one (made before) acts raw.
    _rewrite_record(out / "model.zip", {"action_coords": "polar"})
    with pytest.raises(SB3ArtefactError, match="polar"):
        load_sb3_policy(out)
    _rewrite_record(out / "model.zip", None)
    assert load_sb3_policy(out).ratio is None


def test_integral_feature_is_recorded_and_integrated_at_evaluation(tmp_path):
    out = tmp_path / "ppo"  # off by default for PPO: the flag turns it on
    res = _run("--algo", "ppo", *TINY["ppo"], "--obs_integral", "--checkpoints", "1",
               "--no_progress", "--no_wandb", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _zip_record(out / "model.zip")["obs_integral"] == {"limit": 6000.0, "dt": 5.0}
    policy = load_sb3_policy(out)
    assert policy.integral is not None and policy.ratio is not None
    assert policy.model.observation_space.shape == (9,)
    env = gym.make("Furnace-v0", scenario="nominal")
    m1 = episode_metrics(run_episode(policy, env, seed=0))
    m2 = episode_metrics(run_episode(load_sb3_policy(out), env, seed=0))
    assert m1["return"] == m2["return"]  # the same policy state from a reused and a fresh policy
    assert policy.integral.value != 0.0


def _zip_record(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("data"))["furnace_env_record"]


def _rewrite_record(path: Path, record: dict | None) -> None:
    """Replace (or, for None, drop) the coordinates record in an SB3 zip's ``data``."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(members["data"])
    data.pop("furnace_env_record", None)
    if record is not None:
        data["furnace_env_record"] = record
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)


@pytest.mark.parametrize("bad", [["--wandb", "maybe"], ["--steps", "0"], ["--batch_size", "100"],
                                 ["--action_coords", "polar"]])
def test_bad_settings_fail_before_training(tmp_path, bad):
    res = _run("--algo", "ppo", *bad, "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert res.returncode == 2
    assert bad[0].lstrip("-") in res.stderr
    assert not (tmp_path / "x").exists()


def test_yaml_config_then_flags_override(tmp_path):
    baselines = _script_module()
    cfg_file = tmp_path / "sac.yaml"
    cfg_file.write_text("algo: sac\nsteps: 1234\ngamma: 0.97\nseed: 5\nnet_arch: [64, 64]\n")
    algo, run, cfg = baselines.parse_config(["--config", str(cfg_file), "--gamma", "0.95"])
    assert algo == "sac" and run.seed == 5 and run.out == "runs/artifacts/sac"
    assert cfg.steps == 1234 and cfg.gamma == 0.95 and cfg.net_arch == [64, 64]
    assert cfg.learning_starts == baselines.SACConfig().learning_starts  # untouched defaults
    cfg_file.write_text("algo: sac\nno_such_field: 1\n")
    with pytest.raises(baselines.ConfigError, match="no_such_field"):
        baselines.parse_config(["--config", str(cfg_file)])
    # Every field of every config has a documented flag.
    for cls in (baselines.RunConfig, baselines.PPOConfig, baselines.SACConfig):
        docs = field_docs(cls)
        assert all(docs.get(f) for f in cls.__dataclass_fields__), cls


def test_wandb_auto_never_goes_online_without_credentials(monkeypatch, tmp_path):
    _script_module()  # the script module imports (and resolves W&B) cleanly
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("online") == "offline"
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
