"""Hostile but fair inputs (issue 19): each class of bad outcome a probe found, so that none comes back.

One section per class: (1) stepping past an episode's end and the registered time limit;
(2) controllers fed non-finite or wrong-shape observations; (3) code in a VecNormalize pickle;
(4) damaged checkpoints; (5) ``--resume``; (6) scenario, parameter and file values;
(7) command-line values refused before any work; (8) torch threads of an in-process evaluation;
(9) bad action batches in vector envs; (10) file modes, numba's cache, the W&B mode line, and
one-line script errors; (11) surfaces added since: scenario plants, names and numpy values, the env's
``params`` and ``weights``, ``--reuse`` episode files and their atomic writing, what a comparison would
count twice, the trust-supervised controller, its monitor, calibration files (and the world model they
belong to), the trust report's and calibration's flags and cache, the physics MPC's filter, PI gains and
the planners' options. Every test is fast (tiny models, a few env steps).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import furnace_env
from eblnn_agent.checkpoint import CheckpointError, content_digest, load_checkpoint, save_checkpoint
from eblnn_agent.config import ConfigError, ModelConfig, WorldModelRunConfig, config_from_cli
from eblnn_agent.model import EBLNN
from furnace_env import FurnaceEnv, FurnaceParams, Scenario, get_scenario, load_scenario
from furnace_env.vector import FurnaceVectorEnv, make_furnace_vec

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"name": "short", "n_steps": 3}


# -- 1. past the end of an episode ---------------------------------------------------------------
def _run_to_end(env, how: str):
    """Step until the episode ends: ``truncated`` with a steady action, ``terminated`` by starving the air."""
    action = np.array([0.0, 0.0], dtype=np.float32) if how == "truncated" else np.array([1.0, -1.0], np.float32)
    for _ in range(300):
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            return term, trunc
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("how", ["truncated", "terminated"])
def test_step_after_the_end_raises_and_changes_nothing(how):
    env = FurnaceEnv(scenario={"name": "end", "n_steps": 3 if how == "truncated" else 60}, sensor_noise=False)
    env.reset(seed=0)
    term, trunc = _run_to_end(env, how)
    assert (term, trunc) == ((False, True) if how == "truncated" else (True, False))
    state = env.np_random.bit_generator.state
    sched = env.schedule.copy()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(2, dtype=np.float32))
    assert env.np_random.bit_generator.state == state and np.array_equal(env.schedule, sched)
    obs, _ = env.reset(seed=0)
    assert np.isfinite(obs).all()
    env.step(np.zeros(2, dtype=np.float32))  # a new episode steps again


def test_the_spec_registers_the_time_limit_and_it_agrees_with_the_env():
    assert gym.spec("Furnace-v0").max_episode_steps == furnace_env.DEFAULT_EPISODE_STEPS == 240
    assert all(s.n_steps == 240 for s in furnace_env.SCENARIOS.values())
    env = gym.make("Furnace-v0", scenario=SHORT)  # a shorter scenario: the env truncates first
    env.reset(seed=0)
    assert [env.step(np.zeros(2, np.float32))[3] for _ in range(3)] == [False, False, True]
    from planners.evaluation import make_scenario_env

    long = make_scenario_env(dataclasses.replace(get_scenario("nominal"), n_steps=250))
    assert long.spec.max_episode_steps == 250
    vec = gym.make_vec("Furnace-v0", num_envs=2, vectorization_mode="vector_entry_point",
                       scenario=dataclasses.replace(get_scenario("nominal"), n_steps=250))
    assert vec.unwrapped.episode_steps == 240  # min(n_steps, registered limit), as TimeLimit gives


# -- 2. controllers validate observations -----------------------------------------------------------
BAD_OBS = {
    "nan": np.array([np.nan, 900, 3, 50, 100, 2000, 0, 0]),
    "inf": np.array([900, 900, 3, np.inf, 100, 2000, 0, 0]),
    "short": np.zeros(7),
    "3d": np.zeros((1, 1, 8)),
    "text": "hot",
}
GOOD_OBS = np.array([890.0, 900, 3, 20, 100, 2000, 0, 0], dtype=np.float32)


def _world_model_controller():
    from planners.mpc import MPCController
    from planners.objective import WorldModelPlanningModel
    from planners.optim import TrajectoryOptimizer, make_optimizer

    torch.manual_seed(0)
    m = EBLNN(ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8]))
    m.eval().requires_grad_(False)
    pm = WorldModelPlanningModel(m)
    return MPCController(pm, TrajectoryOptimizer(make_optimizer("cem", n_candidates=4, iterations=1), horizon=3),
                         seed=0), lambda c: (c.model._h.clone(), c.model.bias.clone(), c.model.target_shift)


def _pi_controller():
    from furnace_env.pi import PIController

    return PIController(), lambda c: (c._fire.copy(), c._trim.copy(), c._prev_e.copy())


def _oracle_controller():
    from planners.oracle import make_oracle

    env = gym.make("Furnace-v0", scenario=SHORT)
    env.reset(seed=0)
    c = make_oracle(env, horizon=3, n_candidates=4, iterations=1)
    return c, lambda c: (c.generator.get_state().clone(), len(c.latencies))


def _sb3_controller():
    from furnace_env.features import TrackingIntegral
    from planners.sb3_policy import SB3Policy

    class Fixed:
        def predict(self, x, state=None, episode_start=None, deterministic=True):
            return np.zeros((*np.shape(x)[:-1], 2), np.float32), state

    integral = TrackingIntegral(5.0)
    return (SB3Policy(Fixed(), None, "ppo", 0, Path("model.zip"), integral=integral),
            lambda c: (c.integral.value, c._fresh))


CONTROLLERS = {"pi": _pi_controller, "eblnn": _world_model_controller, "oracle": _oracle_controller,
               "sb3": _sb3_controller}


def _refused_without_change(make, bad):
    """``make()``'s controller refuses ``bad`` with a ValueError and is left as it was, still usable."""
    ctrl, state_of = make()
    ctrl.predict(GOOD_OBS)
    ctrl.predict(GOOD_OBS + 1)
    before = state_of(ctrl)
    with pytest.raises(ValueError, match="observation"):
        ctrl.predict(bad)
    for a, b in zip(before, state_of(ctrl), strict=True):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b)
    action, _ = ctrl.predict(GOOD_OBS)  # still usable
    assert np.isfinite(action).all()


@pytest.mark.parametrize("bad", list(BAD_OBS))
@pytest.mark.parametrize("name", list(CONTROLLERS))
def test_controllers_refuse_bad_observations_before_any_state_changes(name, bad):
    _refused_without_change(CONTROLLERS[name], BAD_OBS[bad])


def test_the_planner_state_never_turns_nan_silently():
    ctrl, _ = _world_model_controller()
    ctrl.predict(GOOD_OBS)
    huge = GOOD_OBS.astype(np.float64) * 1e300  # finite, but overflows inside the model
    h = ctrl.model._h.clone()
    try:
        ctrl.predict(huge)
    except ValueError:
        pass
    assert torch.isfinite(ctrl.model._h).all() and torch.isfinite(ctrl.model.bias).all()
    assert ctrl.model._h.shape == h.shape


# -- 3. no code from a VecNormalize pickle -------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_vecnormalize_pickle_does_not_run(tmp_path):
    from stable_baselines3 import PPO

    from planners.sb3_policy import SB3ArtefactError, load_sb3_policy

    (tmp_path / "ppo").mkdir()
    PPO("MlpPolicy", gym.make("Furnace-v0", scenario=SHORT), n_steps=8, batch_size=8, device="cpu").save(
        tmp_path / "ppo" / "model.zip")
    marker = tmp_path / "ran"
    (tmp_path / "ppo" / "vecnormalize.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(SB3ArtefactError, match="not allowed"):
        load_sb3_policy(tmp_path / "ppo")
    assert not marker.exists()


def test_genuine_vecnormalize_statistics_still_load(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from planners.sb3_policy import load_vecnormalize

    venv = VecNormalize(make_vec_env(lambda: gym.make("Furnace-v0", scenario=SHORT), n_envs=1, seed=0))
    venv.reset()
    venv.step(np.zeros((1, 2), np.float32))
    venv.save(tmp_path / "vn.pkl")
    loaded = load_vecnormalize(tmp_path / "vn.pkl")
    assert not loaded.training and np.array_equal(loaded.obs_rms.mean, venv.obs_rms.mean)


# -- 4. damaged checkpoints ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = WorldModelRunConfig(model=ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8],
                                                ebm_hidden_dims=[8]))
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, EBLNN(cfg.model), cfg, {"env_steps": 1})
    return path


@pytest.mark.parametrize("seed", range(12))
def test_flipped_bytes_never_load_changed_weights(checkpoint, tmp_path, seed):
    model, _, _ = load_checkpoint(checkpoint, device="cpu")
    rng = np.random.default_rng(seed)
    data = bytearray(checkpoint.read_bytes())
    # Flips inside the tensors' bytes: the zip and pickle structure stay intact, so only a
    # content check can notice (flips elsewhere mostly fail to unzip anyway).
    where = []
    for info in zipfile.ZipFile(checkpoint).infolist():
        if "/data/" in info.filename:
            n, m = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + n + m
            where.extend(range(start, start + info.file_size))
    for i in rng.choice(where, size=int(rng.integers(1, 65)), replace=False):
        data[i] ^= int(rng.integers(1, 256))
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    try:
        loaded, _, _ = load_checkpoint(bad, device="cpu")
    except CheckpointError as err:
        assert str(bad) in str(err)
        return
    for (k, v), w in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(v, w), k  # loaded only if the flips missed the content


def _edited(checkpoint, tmp_path, edit, redigest=True):
    payload = torch.load(checkpoint, weights_only=True)
    edit(payload)
    if redigest:
        payload["sha256"] = content_digest(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("case", ["text", "truncated", "string_config", "list_state", "edited_weights"])
def test_malformed_checkpoints_name_the_file_and_the_remedy(checkpoint, tmp_path, case):
    if case == "text":
        path = tmp_path / "notes.pt"
        path.write_text("these are not weights\n")
    elif case == "truncated":
        path = tmp_path / "cut.pt"
        path.write_bytes(checkpoint.read_bytes()[:-100])
    elif case == "string_config":
        path = _edited(checkpoint, tmp_path, lambda p: p.__setitem__("config", "hidden_size=8"))
    elif case == "list_state":
        path = _edited(checkpoint, tmp_path, lambda p: p.__setitem__("model_state", [1, 2]), redigest=False)
    else:
        path = _edited(checkpoint, tmp_path, lambda p: p["model_state"]["energy_head.net.0.bias"].add_(1.0),
                       redigest=False)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, device="cpu")
    msg = str(err.value)
    assert str(path) in msg and ("train" in msg or "re-train" in msg)


# -- 5. --resume ------------------------------------------------------------------------------------
def test_resume_mismatch_names_the_field_and_both_values():
    from eblnn_agent.trainer import config_differences

    a = WorldModelRunConfig().to_dict()
    b = WorldModelRunConfig().with_overrides(alpha=2.0, hidden_size=32).to_dict()
    diffs = config_differences(a, b)
    assert diffs == ["energy.alpha: saved 1.0, now 2.0", "model.hidden_size: saved 64, now 32"]


@pytest.mark.parametrize("spelling", ["absolute", "trailing_slash", "dot_segment"])
def test_resume_compares_paths_resolved(spelling):
    from eblnn_agent.trainer import config_differences

    rel = "runs/world_model"
    other = {"absolute": str(Path(rel).resolve()), "trailing_slash": rel + "/", "dot_segment": "./runs/../runs/world_model"}
    a = WorldModelRunConfig().with_overrides(out_dir=rel).to_dict()
    b = WorldModelRunConfig().with_overrides(out_dir=other[spelling]).to_dict()
    assert config_differences(a, b) == []


def _tiny_trainer(out: Path, **overrides):
    from eblnn_agent.data import TransitionData, compute_norm_stats, split_episodes
    from eblnn_agent.logger import MetricLogger
    from eblnn_agent.trainer import Trainer

    rng = np.random.default_rng(0)
    obs = (np.array([900.0, 900, 3, 50, 100, 2000, 0, 0]) + rng.normal(size=(9, 25, 8)) * 10).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(9, 24, 2)).astype(np.float32)
    split = split_episodes(TransitionData(obs, acts, np.full(9, 24), np.zeros(9, dtype=np.int8), {}), 0.2, 0.2, 0)
    base = dict(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8], window=8,
                batch_size=4, max_windows_per_epoch=4, n_steps=1, cd_batch=8, buffer_capacity=16, epochs=3,
                progress=False, out_dir=str(out), other_plant_weight=0.0)  # no other-plant data here
    cfg = WorldModelRunConfig().with_overrides(**{**base, **overrides})
    torch.manual_seed(0)
    m = EBLNN(cfg.model)
    m.set_norm_stats(*compute_norm_stats(split.train, co_log_scale=m.cfg.co_log_scale))
    return Trainer(m, cfg, split, MetricLogger(quiet=True), torch.device("cpu"), 1, out)


def test_resuming_an_early_stopped_run_trains_no_more_and_keeps_best(tmp_path):
    tr = _tiny_trainer(tmp_path, epochs=3)
    tr.fit()
    tr.bad_epochs = tr.cfg.train.patience  # as an early stop leaves it
    tr.save_last()
    best = (tmp_path / "best.pt").read_bytes()
    again = _tiny_trainer(tmp_path, epochs=10)
    again.resume()
    result = again.fit()
    assert result.stopped_early and again.epoch == 3 and again.step == tr.step
    assert (tmp_path / "best.pt").read_bytes() == best


def test_stale_temporary_files_go_at_the_next_start(tmp_path):
    stale = [tmp_path / ".best.pt.abc123.tmp", tmp_path / ".last.pt.xyz.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = tmp_path / ".other.tmp"
    keep.write_bytes(b"not ours")
    _tiny_trainer(tmp_path, epochs=1).fit()
    assert not any(p.exists() for p in stale) and keep.exists()


# -- 6. scenario, parameter and file values ------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("sensor_noise", "false"), ("randomize", "no"), ("sensor_noise", 0), ("n_steps", float("nan")),
    ("n_steps", float("inf")), ("n_steps", None), ("n_steps", "240"), ("n_steps", 10**12), ("n_steps", 240.5),
    ("lambda0", "1.1"), ("setpoint", float("nan")), ("load", True), ("load_events", 5), ("load_events", "[]"),
    ("load_events", [[1.0]]), ("load_events", [[1.0, "x"]]), ("leak_events", {"a": 1}), ("time_jitter", float("inf")),
    ("name", 5),
])
def test_bad_scenario_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}[= ]"):
        Scenario.from_dict({field: value})


def test_integral_float_n_steps_is_coerced_at_construction():
    sc = Scenario.from_dict({"n_steps": 240.0})
    assert sc.n_steps == 240 and type(sc.n_steps) is int
    env = FurnaceEnv(scenario=sc)
    env.reset(seed=0)


@pytest.mark.parametrize("kw", [{"lhv": "5e7"}, {"t_amb": 5000.0}, {"t_amb": -300.0}, {"co_base": -5.0},
                                {"t_max": 1e6}, {"n_substeps": 1e9}, {"afr": True}])
def test_impossible_furnace_parameters_are_refused_with_their_range(kw):
    (name,) = kw
    with pytest.raises(ValueError, match=f"FurnaceParams.{name}"):
        FurnaceParams(**kw)


@pytest.mark.parametrize("kw", [{"sensor_noise": "false"}, {"sensor_noise": 1}, {"trip_penalty": "500"}])
def test_env_arguments_are_checked_strictly(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        FurnaceEnv(**kw)
    with pytest.raises(ValueError, match=next(iter(kw))):
        FurnaceVectorEnv(2, **kw)


@pytest.mark.parametrize("name,content", [
    ("bad.yaml", "n_steps: [1, 2\n"), ("bad.json", '{"n_steps": '), ("bin.yaml", b"\x00\xff\xfe\x80"),
    ("list.yaml", "- 1\n- 2\n"), ("field.json", '{"n_steps": "many"}'),
])
def test_malformed_scenario_files_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=name):
        load_scenario(path)
    with pytest.raises(ValueError, match=name):
        get_scenario(str(path))


def test_a_directory_named_like_a_scenario_file_is_called_a_directory(tmp_path):
    (tmp_path / "x.yaml").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        get_scenario(str(tmp_path / "x.yaml"))


@pytest.mark.parametrize("options", [{"scenario": "bogus"}, {"scenrio": "nominal"}, {"scenario": "nominal", "x": 1}])
def test_reset_options_are_checked_before_reseeding(options):
    env = FurnaceEnv()
    env.reset(seed=1)
    env.step(np.zeros(2, np.float32))
    state = env.np_random.bit_generator.state
    with pytest.raises(ValueError, match="scenario|unknown key"):
        env.reset(seed=2, options=options)
    assert env.np_random.bit_generator.state == state and env.scenario.name == "nominal"
    vec = FurnaceVectorEnv(2)
    vec.reset(seed=1)
    with pytest.raises(ValueError, match="scenario|unknown key"):
        vec.reset(seed=2, options=options)


# -- 7. command-line values refused before any work -------------------------------------------------------
@pytest.mark.parametrize("argv,flag", [
    (["--threads", "-3"], "threads"), (["--step_size", "1e300"], "step_size"), (["--seed", "-1"], "seed"),
    (["--scenario", "nope"], "scenario"),
])
def test_world_model_flags_are_refused_at_parse_time(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        config_from_cli(argv)


@pytest.mark.parametrize("case", ["out_dir_is_a_file", "data_path_is_a_directory"])
def test_world_model_paths_are_checked_before_data_collection(tmp_path, monkeypatch, case):
    sys.path.insert(0, str(ROOT / "train"))
    import world_model

    def no_work(*a, **k):
        raise AssertionError("collected data before checking the paths")

    monkeypatch.setattr(world_model, "load_or_collect", no_work)
    f = tmp_path / "file"
    f.write_text("x")
    argv = (["--out_dir", str(f)] if case == "out_dir_is_a_file"
            else ["--out_dir", str(tmp_path / "out"), "--data_path", str(tmp_path)])
    with pytest.raises(ConfigError, match="--out_dir" if case == "out_dir_is_a_file" else "--data_path"):
        world_model.main([*argv, "--no_wandb"])


def _baselines():
    import importlib

    return importlib.import_module("planners.sb3_training")  # the work behind train/baselines.py


@pytest.mark.parametrize("argv,flag", [
    (["--algo", "ppo", "--net_arch", "0"], "net_arch"), (["--algo", "ppo", "--seed", "-1"], "seed"),
    (["--algo", "sac", "--learning_rate", "-1"], "learning_rate"), (["--algo", "ppo", "--threads", "-3"], "threads"),
    (["--algo", "sac", "--scenario", "nope"], "scenario"),
])
def test_baselines_flags_are_refused_at_parse_time(argv, flag):
    b = _baselines()
    with pytest.raises(b.ConfigError, match=flag):
        b.parse_config(argv)


def _compare_parse(argv):
    sys.path.insert(0, str(ROOT / "evaluate"))
    import compare_planners

    return compare_planners.parse_args(argv)


@pytest.mark.parametrize("argv,named", [
    (["--controllers", "ppo", "bogus"], "bogus"), (["--planner_set", "bogus_key=3"], "bogus_key"),
    (["--workers", "-2"], "--workers"), (["--steps", "-1"], "--steps"), (["--scenario", "nope"], "nope"),
    (["--backend", "dask"], "dask"), (["--address", "auto"], "ray"),
])
def test_compare_flags_are_refused_before_any_training(monkeypatch, argv, named):
    import planners.experiment as experiment

    def no_work(*a, **k):
        raise AssertionError("trained an artefact before checking the flags")

    monkeypatch.setattr(experiment, "train_missing", no_work)
    with pytest.raises(SystemExit) as err:
        _compare_parse(["--controllers", "pi", *argv] if argv[0] != "--controllers" else argv)
    assert named in str(err.value)


@pytest.mark.parametrize("kw,named", [({"workers": -2}, "--workers"), ({"backend": "dask"}, "dask"),
                                      ({"address": "auto"}, "ray")])
def test_tuning_settings_are_refused_before_any_episode(monkeypatch, kw, named):
    import planners.tuning as tuning

    monkeypatch.setattr(tuning, "evaluate_controllers", lambda *a, **k: pytest.fail("ran episodes first"))
    with pytest.raises(ValueError, match=named):
        tuning.tune(tuning.TuneConfig(**kw))


# -- 8. torch threads of an in-process evaluation ------------------------------------------------------------
def test_in_process_evaluation_sets_torch_threads_and_restores_them():
    from planners.benchmark import ControllerSpec, evaluate_controllers

    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evaluate_controllers([ControllerSpec("pi", "furnace_env.pi:make_pi")], [Scenario(name="s", n_steps=2)], [0],
                             workers=1, progress=lambda rec: seen.append(torch.get_num_threads()))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# -- 9. action batches of vector envs ------------------------------------------------------------------------
BAD_BATCHES = {
    "nan_in_row_2": lambda: np.array([[0.0, 0.0], [0.0, 0.0], [np.nan, 0.0]]),
    "one_row_short": lambda: np.zeros((2, 2)),
    "flat": lambda: np.zeros(6),
}


@pytest.mark.parametrize("bad", list(BAD_BATCHES))
@pytest.mark.parametrize("mode", ["vector_entry_point", "sync"])
def test_vector_envs_check_the_whole_batch_before_any_sub_env_steps(mode, bad):
    kw = dict(scenario={"name": "v", "n_steps": 5}, sensor_noise=False)
    env, ref = make_furnace_vec(3, mode, **kw), make_furnace_vec(3, mode, **kw)
    env.reset(seed=4)
    ref.reset(seed=4)
    with pytest.raises(ValueError, match="action"):
        env.step(BAD_BATCHES[bad]())
    good = np.full((3, 2), 0.1)
    np.testing.assert_array_equal(env.step(good)[0], ref.step(good)[0])  # nobody moved at the bad step
    env.close()
    ref.close()


# -- 10. files, caches, logging lines, script errors -----------------------------------------------------------
def test_atomic_write_fsyncs_and_keeps_the_usual_mode(tmp_path, monkeypatch):
    from eblnn_agent import utils

    synced = []
    real = os.fsync
    monkeypatch.setattr(utils.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    old = os.umask(0o022)
    try:
        path = utils.atomic_write(tmp_path / "f.json", lambda tmp: Path(tmp).write_text("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert synced  # the data reached the disk before the rename


def test_import_works_when_neither_the_package_nor_home_is_writable(tmp_path):
    import shutil

    pkg = tmp_path / "site"
    shutil.copytree(ROOT / "furnace_env", pkg / "furnace_env", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "furnace_env" / "__pycache__").write_text("a file where numba wants its folder")
    (tmp_path / "homefile").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path / "homefile" / "home"), PYTHONPATH=str(pkg))
    code = "import furnace_env, numba; print(bool(numba.config.CACHE_DIR))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)  # not the repo root, whose furnace_env is writable
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("requested,expect", [("online", "online was requested"), ("auto", "W&B: offline"),
                                              ("disabled", "W&B: disabled")])
def test_the_console_says_which_wandb_mode_a_run_uses(monkeypatch, tmp_path, capsys, requested, expect):
    from eblnn_agent.logger import announce_wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    mode = announce_wandb_mode(requested)
    assert mode == ("disabled" if requested == "disabled" else "offline")
    assert expect in capsys.readouterr().err


def test_an_unknown_scenario_on_the_command_line_is_one_line():
    out = subprocess.run([sys.executable, str(ROOT / "train" / "world_model.py"), "--scenario", "nope", "--no_wandb"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "nope" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# -- 11. surfaces since issue 19: scenario plants, trust monitor, --reuse, physics MPC ------------------------
@pytest.mark.parametrize("suffix", ["yaml", "json"])
@pytest.mark.parametrize("field,value", [
    ("setpoint", np.float32(900.0)), ("load_wander_tau", np.int64(60)), ("sensor_noise", np.bool_(False)),
    ("plant", {"ua": np.float32(140.0)}), ("plant", {"ua": np.array([140.0, 160.0])}),
])
def test_numpy_scenario_values_are_stored_as_python_numbers_and_round_trip(tmp_path, suffix, field, value):
    from furnace_env.scenarios import save_scenario

    sc = Scenario.from_dict({"name": "np", field: value})
    path = tmp_path / f"np.{suffix}"
    save_scenario(sc, path)  # a numpy scalar kept in the scenario made yaml and json fail here
    assert load_scenario(path) == sc


@pytest.mark.parametrize("kw", [{"params": {"ua": 100.0}}, {"params": "nominal"}, {"weights": {"co_limit": 100.0}}])
@pytest.mark.parametrize("kind", ["make", "vector"])
def test_env_params_and_weights_must_be_their_dataclasses(kw, kind):
    (name,) = kw
    with pytest.raises(ValueError, match=f"{name}=.*must be None .* or a"):
        if kind == "make":
            gym.make("Furnace-v0", scenario={"name": "p", "plant": {"t_amb": [10.0, 40.0]}}, **kw)
        else:
            FurnaceVectorEnv(2, **kw)


_HEADER = "controller,train_seed,scenario,seed,env_steps,return,steps,trips\n"
_ROW = "pi,0,nominal,10000,0,-123.5,6,0\n"
BAD_EPISODES = {
    "nan_return": (_HEADER + "pi,0,nominal,10000,0,nan,6,0\n", "return='nan'"),
    "inf_return": (_HEADER + "pi,0,nominal,10000,0,inf,6,0\n", "return='inf'"),
    "inf_env_steps": (_HEADER + "pi,0,nominal,10000,inf,-1,6,0\n", "env_steps='inf'"),
    "fractional_seed": (_HEADER + "pi,0,nominal,10000.5,0,-1,6,0\n", "seed='10000.5'"),
    "cut_off": (_HEADER + _ROW + "pi,0,nominal,10001,0,-12", "cut off"),
    "two_returns": (_HEADER + _ROW + "pi,0,nominal,10000,0,-99.0,6,0\n", "two different records"),
    "header_only": (_HEADER, "no records"),
    "repeated_column": (_HEADER.replace("trips", "return") + _ROW, "more than once"),
    "not_utf8": (b"\xff\xfe" + _HEADER.encode(), "not a readable CSV"),
    "other_steps": (_HEADER + "pi,0,nominal,10000,0,-1,240,0\n", "another --steps"),
}


@pytest.mark.parametrize("case", list(BAD_EPISODES))
def test_reuse_refuses_damaged_or_mismatched_episodes_before_any_work(monkeypatch, tmp_path, case):
    import planners.experiment as experiment

    monkeypatch.setattr(experiment, "train_missing", lambda *a, **k: pytest.fail("trained before checking --reuse"))
    content, problem = BAD_EPISODES[case]
    path = tmp_path / "episodes.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SystemExit) as err:
        _compare_parse(["--controllers", "pi", "--scenario", "nominal", "--steps", "6", "--reuse", str(path)])
    assert str(path) in str(err.value) and problem in str(err.value)


def test_reuse_reads_an_episode_repeated_across_files_once(tmp_path):
    from planners.report import read_records

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(_HEADER + _ROW)
    b.write_text(_HEADER + _ROW + "oracle,0,nominal,10000,0,-100,6,0\n")
    recs = read_records([a, b], n_steps={"nominal": 6})
    assert [(r.controller, r.metrics["return"]) for r in recs] == [("pi", -123.5), ("oracle", -100.0)]
    with pytest.raises(ValueError, match="is a directory"):
        read_records([tmp_path])


def test_an_interrupted_csv_write_keeps_the_previous_file(tmp_path):
    from planners.report import write_csv

    path = tmp_path / "episodes.csv"
    write_csv([{"controller": "pi", "return": 1.0}], path)
    before = path.read_bytes()

    class Unprintable:
        def __str__(self):
            raise KeyboardInterrupt  # as a comparison killed while it writes

    with pytest.raises(KeyboardInterrupt):
        write_csv([{"controller": "pi", "return": 2.0}, {"controller": "oracle", "return": Unprintable()}], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["episodes.csv"]  # no temporary file left behind


def _supervised_controller(threshold: float = 1.0):
    from furnace_env.pi import PIController
    from planners.trust import (
        TrustCalibration,
        TrustConfig,
        TrustMonitor,
        TrustSupervisedController,
    )

    ctrl, inner_state = _world_model_controller()
    cfg = TrustConfig(window=2, kstep=2, burn_in=1, raise_steps=1, release_steps=1)
    cal = TrustCalibration(cfg, energy_mean=0.0, energy_std=1.0, channel_scale=(1.0,) * 5, innovation_mean=0.0,
                           innovation_std=1.0, threshold=threshold, release=threshold - 1.0, false_alarm_share=0.0,
                           n_steps=0)
    sup = TrustSupervisedController(ctrl, TrustMonitor(ctrl.model.model, cfg), cal, PIController(), log=None)

    def state_of(c):
        m = c.monitor
        return (*inner_state(c.inner), m._h.clone(), torch.tensor(m.t), torch.tensor(len(m._hist)),
                np.asarray(c.scores), c.alarm.on.copy(), np.asarray(c.detector._window))
    return sup, state_of


def _physics_mpc_controller():
    from planners.physics_mpc import make_physics_mpc

    env = gym.make("Furnace-v0", scenario=SHORT)
    c = make_physics_mpc(env, horizon=3, n_candidates=4, iterations=1)
    return c, lambda c: (c.model.estimator.ukf.x.copy(), c.model.estimator.ukf.P.copy(),
                         np.array(c.model.estimator.n_updates), c.generator.get_state().clone())


SINCE_CONTROLLERS = {"supervised": _supervised_controller, "physics-mpc": _physics_mpc_controller}
SINCE_BAD_OBS = {**BAD_OBS, "long": np.zeros(9), "two_plants": np.stack([GOOD_OBS, GOOD_OBS])}


@pytest.mark.parametrize("bad", list(SINCE_BAD_OBS))
@pytest.mark.parametrize("name", list(SINCE_CONTROLLERS))
def test_controllers_since_issue_19_refuse_bad_observations_before_any_state_changes(name, bad):
    _refused_without_change(SINCE_CONTROLLERS[name], SINCE_BAD_OBS[bad])


@pytest.mark.parametrize("obs,prev,match", [
    (np.full((1, 8), np.nan), np.zeros((1, 2)), "non-finite"), (np.zeros((1, 7)), np.zeros((1, 2)), "shape"),
    (GOOD_OBS[None], np.full((1, 2), np.nan), "action"), (np.stack([GOOD_OBS, GOOD_OBS]), np.zeros((2, 2)), "2 observations"),
])
def test_the_trust_monitor_checks_its_inputs_before_its_filter_moves(obs, prev, match):
    sup, _ = _supervised_controller()
    mon = sup.monitor
    mon.update(GOOD_OBS[None], None)
    mon.update(GOOD_OBS[None] + 1, np.zeros((1, 2)))
    h, t, n = mon._h.clone(), mon.t, len(mon._hist)
    with pytest.raises(ValueError, match=match):
        mon.update(obs, prev)
    assert torch.equal(mon._h, h) and (mon.t, len(mon._hist)) == (t, n)
    mon.update(GOOD_OBS[None], np.zeros((1, 2)))  # still usable


@pytest.mark.parametrize("where,key,value", [
    ("top", "channel_scale", [True] * 5), ("top", "source", 5), ("config", "false_alarm_target", "0.01"),
    ("config", "release_quantile", "0.9"),
])
def test_hand_edited_trust_calibrations_are_refused_naming_the_field(tmp_path, where, key, value):
    import json

    from planners.trust import TrustCalibration, TrustConfig

    cal = TrustCalibration(TrustConfig(), energy_mean=0.0, energy_std=1.0, channel_scale=(1.0,) * 5,
                           innovation_mean=0.0, innovation_std=1.0, threshold=1.0, release=0.0,
                           false_alarm_share=0.0, n_steps=0)
    path = cal.save(tmp_path / "trust_calibration.json")
    d = json.loads(path.read_text())
    (d if where == "top" else d["config"])[key] = value
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"{path}.*{key}"):
        TrustCalibration.load(path)


@pytest.mark.parametrize("where,kw", [
    ("estimation:EstimatorConfig", {"load_walk": True}), ("estimation:EstimatorConfig", {"quality0": "1"}),
    ("estimation:EstimatorConfig", {"state_walk": 5}), ("physics_mpc:PhysicsMPCConfig", {"smooth": True}),
    ("physics_mpc:PhysicsMPCConfig", {"trip_penalty": "5"}), ("physics_mpc:PhysicsMPCConfig", {"excess_air": (0.1, np.inf)}),
    ("physics_mpc:PhysicsMPCConfig", {"excess_air": (0.1,)}), ("external_mppi:PyTorchMPPIConfig", {"sigma": True}),
])
def test_planner_options_are_refused_at_construction_naming_the_value(where, kw):
    import importlib

    module, cls = where.split(":")
    (name,) = kw
    with pytest.raises(ValueError, match=rf"{cls}\.{name}="):
        getattr(importlib.import_module(f"planners.{module}"), cls)(**kw)


@pytest.mark.parametrize("bad", [np.zeros(9), np.stack([GOOD_OBS, GOOD_OBS]), "hot"])
def test_the_ukf_reads_exactly_one_observation_of_eight_channels(bad):
    from planners.estimation import FurnaceUKF

    ukf = FurnaceUKF()
    ukf.step(GOOD_OBS)
    x, n = ukf.ukf.x.copy(), ukf.n_updates
    with pytest.raises(ValueError, match=r"observation.*\(8,\)|one plant"):
        ukf.step(bad)
    assert np.array_equal(ukf.ukf.x, x) and ukf.n_updates == n


def _fail(*a, **k):
    raise AssertionError("started work before checking the settings")


@pytest.mark.parametrize("kw,named", [
    ({"grid": ["vibes=1,2"]}, "vibes"), ({"grid": ["score=energy", "score=innovation"], "family": "test"}, "twice"),
    ({"planner_set": ["bogus=1"]}, "bogus"), ({"planner_set": ["checkpoint=other.pt"]}, "checkpoint"),
    ({"out": "a_file"}, "--out"), ({"checkpoints": ["missing.pt", "./missing.pt"]}, "more than once"),
])
def test_trust_report_settings_are_refused_before_any_episode(monkeypatch, tmp_path, kw, named):
    import eblnn_agent.checkpoint
    import planners.trust as trust
    from planners.trust_eval import TrustReportConfig, run_trust_report

    monkeypatch.setattr(trust, "planner_runs", _fail)
    monkeypatch.setattr(eblnn_agent.checkpoint, "load_checkpoint", _fail)
    (tmp_path / "a_file").write_text("x")
    ckpts = [str(tmp_path / c) for c in kw.pop("checkpoints", ["missing.pt"])]
    kw = {**kw, "out": str(tmp_path / kw.get("out", "report"))}
    with pytest.raises(ValueError, match=named):
        run_trust_report(TrustReportConfig(checkpoints=ckpts, **kw), log=None)


def test_trust_report_steps_only_truncate():
    from planners.trust_eval import _truncated

    assert [sc.n_steps for sc in _truncated([get_scenario("nominal"), Scenario(n_steps=5)], 50)] == [50, 5]


@pytest.mark.parametrize("argv,named", [
    (["--workers", "-3"], "--workers"), (["--planner_set", "bogus=1"], "bogus"),
    (["--planner_set", "checkpoint=other.pt"], "checkpoint"),
    (["--planner_set", "horizon=5", "--calibrate_on", "pi"], "--calibrate_on planner only"),
    (["--episodes", "1"], "is a directory"),
])
def test_calibrate_trust_flags_are_refused_before_any_episode(monkeypatch, capsys, tmp_path, argv, named):
    sys.path.insert(0, str(ROOT / "evaluate"))
    import calibrate_trust

    monkeypatch.setattr(calibrate_trust, "calibrate_checkpoint", _fail)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"only its existence is checked first")
    if named == "is a directory":
        (tmp_path / "trust_calibration.json").mkdir()  # where the calibration would be written
    with pytest.raises(SystemExit):
        calibrate_trust.main(["--checkpoint", str(ckpt), *argv])
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("row,problem", [
    ("eblnn-supervised,0,fouled,10000,0,-5.0,30,nan\n", "trust_held_share='nan'"),
    ("eblnn-supervised,0,fouled,10000,0,-5.0,30", "cut off"),
    ("eblnn-supervised,0,fouled,10000,0,-5.0,,\n", "without"),
], ids=["nan_share", "cut_off", "no_trust_columns"])
def test_the_supervised_report_reads_episodes_strictly(tmp_path, row, problem):
    from planners.trust_eval import TrustReportConfig, run_trust_report

    path = tmp_path / "episodes.csv"
    path.write_text("controller,train_seed,scenario,seed,env_steps,return,trust_first_alarm,trust_held_share\n" + row)
    with pytest.raises(ValueError, match=problem) as err:
        run_trust_report(TrustReportConfig(episodes_csv=str(path), out=str(tmp_path / "o")), log=None)
    assert str(path) in str(err.value) and not (tmp_path / "o").exists()


@pytest.mark.parametrize("channel,value", [(0, 1e30), (2, 1e6), (3, -20.0), (6, 50.0)])
def test_the_ukf_refuses_readings_outside_the_instrument_ranges_and_stays_usable(channel, value):
    from planners.estimation import FurnaceUKF

    ukf = FurnaceUKF()
    ukf.step(GOOD_OBS)
    ukf.step(GOOD_OBS)
    x, p = ukf.ukf.x.copy(), ukf.ukf.P.copy()
    bad = GOOD_OBS.astype(np.float64).copy()
    bad[channel] = value
    with pytest.raises(ValueError, match="instrument ranges"):
        ukf.step(bad)  # 1e30 degC used to pass, and the next, good, step failed inside scipy
    assert np.array_equal(ukf.ukf.x, x) and np.array_equal(ukf.ukf.P, p)
    ukf.step(GOOD_OBS)
    assert np.isfinite(ukf.ukf.x).all()


def test_a_failed_ukf_update_leaves_no_half_step(monkeypatch):
    from planners.estimation import FurnaceUKF

    ukf = FurnaceUKF()
    ukf.step(GOOD_OBS)
    x, p, k = ukf.ukf.x.copy(), ukf.ukf.P.copy(), ukf.k
    monkeypatch.setattr(ukf.ukf, "update", lambda *a, **kw: (_ for _ in ()).throw(np.linalg.LinAlgError("not PD")))
    with pytest.raises(ValueError, match="update failed"):
        ukf.step(GOOD_OBS)  # the predict had moved x, P and k
    assert np.array_equal(ukf.ukf.x, x) and np.array_equal(ukf.ukf.P, p) and ukf.k == k


@pytest.mark.parametrize("path", ["planner_acts", "pi_holds"])
def test_a_step_the_inner_planner_refuses_leaves_the_supervisor_as_it_was(monkeypatch, path):
    threshold = 1e6 if path == "planner_acts" else -10.0  # -10: the alarm is on from the second step
    ref, _ = _supervised_controller(threshold)
    sup, _ = _supervised_controller(threshold)
    seq = [GOOD_OBS, GOOD_OBS + 1, GOOD_OBS + 2, GOOD_OBS + 3]
    want = [ref.predict(o)[0] for o in seq]
    got = [sup.predict(o)[0] for o in seq[:2]]
    method = "act" if path == "planner_acts" else "track"
    real = getattr(sup.inner, method)

    def refuse(*a, **k):
        raise ValueError("the planner refuses this observation (its state left as it was)")

    monkeypatch.setattr(sup.inner, method, refuse)
    with pytest.raises(ValueError, match="refuses"):
        sup.predict(GOOD_OBS + 50)
    monkeypatch.setattr(sup.inner, method, real)
    got += [sup.predict(o)[0] for o in seq[2:]]
    np.testing.assert_array_equal(np.array(got), np.array(want))  # as if the refused step never happened
    assert sup.scores == ref.scores and sup.held == ref.held and sup.alarms == ref.alarms
    assert any(sup.held) == (path == "pi_holds")


@pytest.mark.parametrize("kw,name", [
    ({"kp": True}, "kp"), ({"excess_air": float("nan")}, "excess_air"), ({"co_gain": "0.02"}, "co_gain"),
    ({"o2_sp_slope": float("inf")}, "o2_sp_slope"), ({"trim_limits": (0.9,)}, "trim_limits"),
])
def test_pi_gains_are_checked_at_construction(kw, name):
    from furnace_env.pi import PIConfig
    from planners.residual import residual_from_record

    with pytest.raises(ValueError, match=f"PIConfig.{name}="):
        PIConfig(**kw)
    with pytest.raises(ValueError, match=f"PIConfig.{name}="):  # as a residual agent's zip carries them
        residual_from_record({"bound": 0.1, "pi": kw})


def test_a_boolean_residual_bound_is_refused():
    from planners.residual import ResidualPI

    with pytest.raises(ValueError, match="bound=True"):
        ResidualPI(bound=True)


@pytest.mark.parametrize("events", [
    [[100.0, "ua", 120.0], [100.0, "ua", 180.0]], [[100.0, "ua", 180.0, 50.0], [100.0, "ua", 120.0]],
])
def test_two_changes_of_one_plant_field_at_one_time_are_refused(events):
    with pytest.raises(ValueError, match="'ua' at the same time 100 s"):
        Scenario.from_dict({"name": "twice", "plant_events": events})
    Scenario.from_dict({"name": "apart", "plant_events": [[100.0, "ua", 120.0], [100.0, "o2_knee", 2.5]]})


def test_the_trust_monitor_never_turns_nan_silently():
    sup, _ = _supervised_controller()
    mon = sup.monitor
    for k in range(4):
        mon.update(GOOD_OBS[None] + k, None if k == 0 else np.zeros((1, 2)))
    h, t = mon._h.clone(), mon.t
    huge = GOOD_OBS.astype(np.float64) * 1e300  # finite, but beyond the model's float32
    with pytest.raises(ValueError, match="non-finite"):
        mon.update(huge[None], np.zeros((1, 2)))  # its NaN scores used to count as neutral, i.e. as trust
    assert torch.equal(mon._h, h) and mon.t == t
    energy, _ = mon.update(GOOD_OBS[None], np.zeros((1, 2)))
    assert np.isfinite(energy).all()


def test_a_calibration_of_another_world_model_is_refused(checkpoint, tmp_path):
    import shutil

    from planners.trust import (
        TrustCalibration,
        TrustConfig,
        calibrate_checkpoint,
        make_supervised_planner,
    )

    ckpt = tmp_path / "best.pt"
    shutil.copy(checkpoint, ckpt)
    cal = calibrate_checkpoint(ckpt, TrustConfig(calibrate_on="pi", burn_in=2, kstep=2), episodes=1,
                               scenarios=[{"name": "cal", "n_steps": 30}], log=None)
    assert len(cal.checkpoint_sha256) == 64 and TrustCalibration.load(tmp_path / "trust_calibration.json") == cal
    env = gym.make("Furnace-v0", scenario=SHORT)
    make_supervised_planner(env, str(ckpt), log=False)  # its own calibration
    # The world model retrained (here: other weights), its old calibration still beside it.
    torch.manual_seed(1)
    cfg = WorldModelRunConfig(model=ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8],
                                                ebm_hidden_dims=[8]))
    save_checkpoint(ckpt, EBLNN(cfg.model), cfg, {"env_steps": 1})
    with pytest.raises(ValueError, match="another world model"):
        make_supervised_planner(env, str(ckpt), log=False)


@pytest.mark.parametrize("recorded", ["another", "same"])
def test_the_comparison_recalibrates_a_calibration_of_another_world_model(checkpoint, tmp_path, monkeypatch, recorded):
    import shutil

    import planners.trust as trust
    from eblnn_agent.checkpoint import read_checkpoint
    from planners.experiment import CompareConfig, controller_specs

    ckpt = tmp_path / "art" / "world_model" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(checkpoint, ckpt)
    digest = "0" * 64 if recorded == "another" else read_checkpoint(ckpt)["sha256"]
    trust.TrustCalibration(trust.TrustConfig(), energy_mean=0.0, energy_std=1.0, channel_scale=(1.0,) * 5,
                           innovation_mean=0.0, innovation_std=1.0, threshold=1.0, release=0.0,
                           false_alarm_share=0.0, n_steps=0, checkpoint_sha256=digest).save(
        trust.default_calibration_path(ckpt))
    calls = []
    monkeypatch.setattr(trust, "calibrate_checkpoint", lambda path, **kw: calls.append(Path(path)))
    specs = controller_specs(CompareConfig(controllers=["eblnn-supervised"], artifacts=str(tmp_path / "art"),
                                           no_train=True))
    assert [s.name for s in specs] == ["eblnn-supervised"]
    assert calls == ([ckpt] if recorded == "another" else [])  # a stale calibration used to be kept


def test_trust_report_does_not_reuse_episodes_of_a_checkpoint_retrained_in_place(checkpoint, tmp_path, monkeypatch):
    import shutil

    import planners.trust as trust
    from eblnn_agent.data import TransitionData
    from planners.trust_eval import TrustReportConfig, run_trust_report

    def episodes(n: int, t: int = 40) -> TransitionData:
        rng = np.random.default_rng(0)
        obs = (GOOD_OBS + rng.normal(size=(n, t + 1, 8)) * [2, 0, 0.05, 1, 1, 5, 0, 0]).astype(np.float32)
        return TransitionData(obs, np.zeros((n, t, 2), np.float32), np.full(n, t), np.zeros(n, np.int8), {})

    runs = []
    monkeypatch.setattr(trust, "planner_runs", lambda ck, scs, seeds, *a, **k: (
        runs.append(Path(ck)), {sc.name: episodes(len(seeds)) for sc in scs})[1])
    monkeypatch.setattr(trust, "calibration_data", lambda *a, **k: episodes(4))
    ckpt = tmp_path / "best.pt"
    shutil.copy(checkpoint, ckpt)
    cfg = TrustReportConfig(checkpoints=[str(ckpt)], seeds=1, steps=40, calibration_episodes=1,
                            out=str(tmp_path / "report"))
    run_trust_report(cfg, log=lambda msg: None)
    run_trust_report(cfg, log=lambda msg: None)
    assert len(runs) == 1  # the same model: its cached episodes are reused
    torch.manual_seed(1)
    wm = WorldModelRunConfig(model=ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8],
                                               ebm_hidden_dims=[8]))
    save_checkpoint(ckpt, EBLNN(wm.model), wm, {"env_steps": 1})  # retrained in place
    run_trust_report(cfg, log=lambda msg: None)
    assert len(runs) == 2  # the cache was keyed by the path, and served the old model's episodes


@pytest.mark.parametrize("argv,named", [
    (["--controllers", "pi", "oracle", "pi"], "['pi'] given more than once"),
    (["--controllers", "pi", "--scenario", "nominal", "nominal"], "more than one scenario named ['nominal']"),
    (["--controllers", "pi", "--scenario", "a/x.yaml", "b/x.yaml"], "more than one scenario named ['x']"),
])
def test_a_comparison_refuses_what_it_would_count_twice(monkeypatch, tmp_path, argv, named):
    import planners.experiment as experiment
    from furnace_env.scenarios import save_scenario

    monkeypatch.setattr(experiment, "train_missing", _fail)
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):  # two files, one name: their records would merge under "x"
        (tmp_path / folder).mkdir()
        save_scenario(dataclasses.replace(get_scenario("nominal"), name="x"), tmp_path / folder / "x.yaml")
    with pytest.raises(SystemExit) as err:
        _compare_parse(argv)
    assert named in str(err.value)


@pytest.mark.parametrize("name", ["plots/../../x", "a\\b", "nul\x00"])
def test_a_scenario_name_cannot_reach_outside_the_output_folder(tmp_path, name):
    import json

    with pytest.raises(ValueError, match="file names"):
        Scenario.from_dict({"name": name})
    path = tmp_path / "s.json"  # a file's name field: the comparison wrote its plot only after every episode
    path.write_text(json.dumps({"name": name}))
    with pytest.raises(ValueError, match="s.json.*file names"):
        load_scenario(path)
