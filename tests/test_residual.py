"""Residual RL on PI (``planners.residual``): the safety layer, the bound, the wrapper, and
``train/baselines.py --algo {sac,ppo}-residual`` end to end on tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import furnace_env  # noqa: F401
from furnace_env.pi import PIController, PIDemand, safety_layer
from furnace_env.scenarios import get_scenario
from planners.evaluation import episode_metrics, make_scenario_env, run_episode
from planners.residual import ResidualPI, ResidualPIWrapper, residual_from_record, residual_record
from planners.sb3_policy import load_sb3_policy

ROOT = Path(__file__).resolve().parents[1]


def _demand(co_high: bool = False) -> PIDemand:
    """One furnace whose fuel demand sits just under what the measured air burns."""
    return PIDemand(fuel=np.array([0.50]), air=np.array([0.60]), fuel_cap=np.array([0.52]),
                    air_floor=np.array([0.57]), co_high=np.array([co_high]))


# -- the safety layer, by hand ----------------------------------------------------------------------
def test_safety_layer_without_residual_is_the_demand_within_its_limits():
    np.testing.assert_allclose(safety_layer(_demand()), [[0.0, 0.2]], atol=1e-6)


def test_a_fuel_rich_residual_is_cut_back_to_the_cross_limits():
    # +0.2 action units on fuel asks 0.60 (cap 0.52); -0.2 on air asks 0.50 (floor 0.57).
    a = safety_layer(_demand(), np.array([[0.2, -0.2]]))
    np.testing.assert_allclose(a, [[2 * 0.52 - 1, 2 * 0.57 - 1]], atol=1e-6)
    # Within the limits the residual passes unchanged (a lean push: less fuel, more air).
    a = safety_layer(_demand(), np.array([[-0.1, 0.1]]))
    np.testing.assert_allclose(a, [[2 * 0.45 - 1, 2 * 0.65 - 1]], atol=1e-6)


def test_the_co_override_lets_the_residual_only_lean_the_burner():
    a = safety_layer(_demand(co_high=True), np.array([[0.02, -0.1]]))  # richer: refused
    np.testing.assert_allclose(a, safety_layer(_demand(co_high=True)), atol=1e-7)
    a = safety_layer(_demand(co_high=True), np.array([[-0.1, 0.1]]))  # leaner: allowed
    np.testing.assert_allclose(a, [[2 * 0.45 - 1, 2 * 0.65 - 1]], atol=1e-6)


@pytest.mark.parametrize("bound", [0.0, -0.1, 2.5, float("nan"), "0.1"])
def test_bad_bound_is_refused_with_its_value(bound):
    with pytest.raises(ValueError, match="bound"):
        ResidualPI(bound)


# -- on the furnace, with fake policies --------------------------------------------------------------
def _run(residual: ResidualPI, policy, scenario: str = "load_swing", seed: int = 0, steps: int = 120):
    """Drive Furnace-v0 with ``policy(pi_obs) -> u``; the per-step demand, applied and PI actions."""
    env = make_scenario_env(get_scenario(scenario))
    obs, _ = env.reset(seed=seed)
    residual.reset()
    log = []
    for _ in range(steps):
        x = residual.observe(obs[None])
        u = policy(x)
        a = residual.act(u)
        log.append((residual.demand, a[0], residual.pi_action[0].copy(), u[0]))
        obs, _, terminated, truncated, _ = env.step(a[0])
        if terminated or truncated:
            break
    return log


def test_zero_residual_is_exactly_pi():
    env = make_scenario_env("fuel_quality")
    ep = run_episode(PIController(params=env.unwrapped.params), env, seed=1)
    log = _run(ResidualPI(0.1), lambda x: np.zeros((1, 2)), "fuel_quality", seed=1, steps=len(ep.actions))
    np.testing.assert_array_equal(np.array([a for _, a, _, _ in log]), ep.actions.astype(np.float32))


def test_residual_is_bounded_and_reaches_its_bound():
    rng = np.random.default_rng(0)
    bound = 0.1
    log = _run(ResidualPI(bound), lambda x: rng.choice([-1.0, 1.0], size=(1, 2)))
    dev = np.array([np.abs(a - pi) for _, a, pi, _ in log])
    assert dev.max() <= bound + 1e-6
    assert dev.max() >= bound - 1e-6  # the bound is used, not a tighter one
    # Out-of-range agent actions are clipped to [-1, 1] before scaling.
    log = _run(ResidualPI(bound), lambda x: np.full((1, 2), 50.0), steps=20)
    assert max(np.abs(a - pi).max() for _, a, pi, _ in log) <= bound + 1e-6


def test_a_policy_pushing_fuel_rich_is_held_by_the_safety_layer():
    """More fuel, less air on every step: the layer keeps fuel under what the measured air burns
    and air over what the measured fuel needs, and it does cut the push (it binds)."""
    log = _run(ResidualPI(0.3), lambda x: np.array([[1.0, -1.0]]), "load_swing", steps=120)
    fuel = np.array([(a[0] + 1) / 2 for _, a, _, _ in log])
    air = np.array([(a[1] + 1) / 2 for _, a, _, _ in log])
    cap = np.array([d.fuel_cap[0] for d, *_ in log])
    floor = np.array([d.air_floor[0] for d, *_ in log])
    asked_fuel = np.array([d.fuel[0] + 0.15 for d, *_ in log])
    asked_air = np.array([d.air[0] - 0.15 for d, *_ in log])
    assert np.all(fuel <= np.minimum(cap, 1.0) + 1e-6) and np.all(air >= np.minimum(floor, 1.0) - 1e-6)
    # The air floor binds on nearly every step; the fuel cap where the temperature loop fires harder.
    assert np.mean(asked_fuel > cap + 1e-6) > 0.05 and np.mean(asked_air < floor - 1e-6) > 0.5


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_wrapper_passes_the_checkers_and_observes_pi_action():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = ResidualPIWrapper(gym.make("Furnace-v0").unwrapped, bound=0.1)
    check_env(env, skip_render_check=True)
    sb3_check_env(ResidualPIWrapper(gym.make("Furnace-v0"), bound=0.1))
    env = ResidualPIWrapper(gym.make("Furnace-v0", scenario="nominal"), bound=0.1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (10,) and env.observation_space.contains(obs)
    prev = obs
    for _ in range(5):
        obs, _, _, _, info = env.step(np.array([0.0, 0.0], dtype=np.float32))
        # The applied command is PI's when the residual is zero; PI's action is in the observation.
        np.testing.assert_array_equal(info["applied_action"], info["pi_action"])
        np.testing.assert_array_equal(prev[8:], info["pi_action"])
        prev = obs


def test_wrapper_refuses_an_augmented_observation():
    from furnace_env.features import TrackingIntegralWrapper

    with pytest.raises(ValueError, match="8 measurements"):
        ResidualPIWrapper(TrackingIntegralWrapper(gym.make("Furnace-v0")))


def test_record_round_trip_keeps_bound_and_gains():
    from furnace_env.pi import PIConfig

    cfg = PIConfig(kp=0.01, trim_limits=(0.9, 1.2))
    rec = json.loads(json.dumps(residual_record(0.05, cfg)))
    back = residual_from_record(rec)
    assert back.bound == 0.05 and back.pi.cfg == cfg


# -- the training script and the evaluation loader, end to end ----------------------------------------
TINY = {
    "sac-residual": ["--steps", "200", "--learning_starts", "50", "--batch_size", "32", "--net_arch", "32", "32"],
    "ppo-residual": ["--steps", "128", "--n_envs", "2", "--n_steps", "32", "--batch_size", "64", "--n_epochs", "1"],
}


@pytest.fixture(scope="module", params=sorted(TINY))
def residual_artefact(request, tmp_path_factory) -> tuple[str, Path]:
    algo = request.param
    out = tmp_path_factory.mktemp(algo) / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_API_KEY": ""}
    res = subprocess.run([sys.executable, str(ROOT / "train" / "baselines.py"), "--algo", algo, *TINY[algo],
                          "--residual_bound", "0.2", "--seed", "1", "--checkpoints", "2", "--no_progress",
                          "--no_wandb", "--out", str(out)], cwd=out.parent, capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return algo, out


def test_residual_script_records_the_residual_and_trains_as_asked(residual_artefact):
    algo, out = residual_artefact
    meta = json.loads((out / "meta.json").read_text())
    assert meta["algo"] == algo
    with zipfile.ZipFile(out / "model.zip") as zf:
        record = json.loads(zf.read("data"))["furnace_env_record"]
    assert record["residual"]["bound"] == 0.2 and record["action_coords"] == "raw"
    if algo == "sac-residual":  # one gradient update per env step
        assert meta["config"][algo]["train_freq"] == 1 and meta["config"][algo]["gradient_steps"] == 1
    assert len(list(out.glob(f"checkpoints/{algo}_*_steps.zip"))) == 2


def test_residual_policy_runs_an_episode_through_predict(residual_artefact):
    from stable_baselines3 import PPO, SAC

    algo, out = residual_artefact
    policy = load_sb3_policy(out)
    assert policy.name == algo and policy.residual is not None and policy.residual.bound == 0.2
    env = make_scenario_env(replace(get_scenario("low_fire"), n_steps=30))
    m1 = episode_metrics(run_episode(policy, env, seed=0))
    m2 = episode_metrics(run_episode(load_sb3_policy(out), env, seed=0))
    assert np.isfinite(m1["return"]) and m1["return"] == m2["return"] and m1["steps"] == 30
    # The wiring: PI advances, the network sees the normalised [obs, PI action], its action is the residual.
    model = {"ppo-residual": PPO, "sac-residual": SAC}[algo].load(out / "model.zip", device="cpu")
    ref = ResidualPI(0.2, params=env.unwrapped.params)
    policy.reset()
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        x = ref.observe(obs[None])
        u, _ = model.predict(policy.obs_norm.normalize_obs(x), deterministic=True)
        a, _ = policy.predict(obs, deterministic=True)
        np.testing.assert_allclose(a, ref.act(u)[0], atol=1e-6)
        assert np.all(np.abs(a - ref.pi_action[0]) <= 0.2 + 1e-6)
        obs, *_ = env.step(a)
    ckpt = sorted(out.glob(f"checkpoints/{algo}_*_steps.zip"))[0]
    assert load_sb3_policy(ckpt).residual is not None


def test_residual_algo_refuses_the_integral_feature(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "train" / "baselines.py"), "--algo", "sac-residual",
                          "--obs_integral", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "obs_integral" in res.stderr
    res = subprocess.run([sys.executable, str(ROOT / "train" / "baselines.py"), "--algo", "ppo-residual",
                          "--residual_bound", "3", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "residual_bound=3.0" in res.stderr
    assert not (tmp_path / "x").exists()


def test_comparison_registry_finds_residual_agents_and_their_checkpoints_per_training_seed(residual_artefact,
                                                                                            tmp_path):
    import shutil

    from planners.benchmark import run_task
    from planners.experiment import (
        CompareConfig,
        controller_specs,
        needed_artefacts,
        sample_efficiency_specs,
    )

    algo, out = residual_artefact
    art = tmp_path / "art"
    shutil.copytree(out, art / algo)
    shutil.copytree(out, art / algo / "seed_1")
    cfg = CompareConfig(controllers=["pi", algo], artifacts=str(art), train_seeds=2, no_train=True)
    assert needed_artefacts(cfg) == [algo, f"{algo}/seed_1"]
    specs = [s for s in controller_specs(cfg) if s.name == algo]
    assert [(s.train_seed, Path(s.kwargs["path"])) for s in specs] == [
        (0, art / algo / "model.zip"), (1, art / algo / "seed_1" / "model.zip")]
    points = sample_efficiency_specs(cfg)
    assert sorted((s.train_seed, s.env_steps) for s in points) == sorted(
        (k, int(c.stem.split("_")[-2])) for k in (0, 1) for c in out.glob(f"checkpoints/{algo}_*_steps.zip"))
    rec = run_task(specs[1], replace(get_scenario("nominal"), n_steps=10), seed=10_000)
    assert rec.controller == algo and rec.train_seed == 1 and np.isfinite(rec.metrics["return"])
