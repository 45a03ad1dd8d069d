"""Furnace-v0 as a Gymnasium environment: checkers, determinism, bad input, vector envs."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import furnace_env
from furnace_env import SCENARIOS, Scenario, get_scenario
from furnace_env.scenarios import load_scenario, save_scenario


def test_make_without_prior_import():
    env = gym.make("furnace_env:Furnace-v0")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_gymnasium_check_env_no_warnings():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(furnace_env.FurnaceEnv(), skip_render_check=True)


def test_sb3_check_env_no_warnings():
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(furnace_env.FurnaceEnv(), warn=True)


def _rollout(env, seed, n=60):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(1)
    out = [obs]
    for _ in range(n):
        obs, r, te, tr, info = env.step(rng.uniform(-0.6, 0.2, size=2).astype(np.float32))
        out.append((obs, r, te, tr, {k: v for k, v in info.items() if k != "obs_clean"}, info["obs_clean"]))
        if te or tr:
            break
    return out


def _same(a, b):
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("scenario", ["nominal", "train_mix"])
def test_same_seed_same_rollout(scenario):
    a = _rollout(gym.make("Furnace-v0", scenario=scenario), 7)
    b = _rollout(gym.make("Furnace-v0", scenario=scenario), 7)
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    c = _rollout(gym.make("Furnace-v0", scenario=scenario), 8)
    assert not np.array_equal(a[0], c[0])


def test_env_pickles_mid_episode():
    env = furnace_env.FurnaceEnv(scenario="load_swing")
    env.reset(seed=3)
    env.step(np.zeros(2, dtype=np.float32))
    clone = pickle.loads(pickle.dumps(env))
    a = env.step(np.full(2, 0.1, dtype=np.float32))
    b = clone.step(np.full(2, 0.1, dtype=np.float32))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


@pytest.mark.parametrize(
    "action, match",
    [
        (np.array([np.nan, 0.0]), "non-finite"),
        (np.array([0.0, np.inf]), "non-finite"),
        (np.zeros(3), "shape"),
        (np.zeros((1, 2)), "shape"),
        ("fuel", "not numeric|shape"),
    ],
)
def test_bad_action_raises_and_keeps_state(action, match):
    env = furnace_env.FurnaceEnv()
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.float32))
    before = (env._sim.state.copy(), env._sim.o2_buf.copy(), env._k, env.np_random.bit_generator.state)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    assert np.array_equal(before[0], env._sim.state)
    assert np.array_equal(before[1], env._sim.o2_buf)
    assert before[2] == env._k
    assert before[3] == env.np_random.bit_generator.state


def test_out_of_range_action_is_clipped():
    e1, e2 = furnace_env.FurnaceEnv(), furnace_env.FurnaceEnv()
    e1.reset(seed=0)
    e2.reset(seed=0)
    o1 = e1.step(np.array([5.0, -7.0], dtype=np.float32))[0]
    o2 = e2.step(np.array([1.0, -1.0], dtype=np.float32))[0]
    np.testing.assert_array_equal(o1, o2)


def test_unknown_scenario_and_bad_field():
    with pytest.raises(ValueError, match="unknown scenario 'nope'.*allowed"):
        gym.make("Furnace-v0", scenario="nope")
    with pytest.raises(ValueError, match="unknown scenario field.*'loda'"):
        get_scenario({"name": "x", "loda": 1.0})
    with pytest.raises(ValueError, match="setpoint=2000"):
        Scenario(setpoint=2000.0)
    with pytest.raises(ValueError, match="n_steps"):
        Scenario(n_steps=0)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_scenario_file_round_trip(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    save_scenario(SCENARIOS["air_leak"], path)
    assert load_scenario(path) == SCENARIOS["air_leak"]
    env = gym.make("Furnace-v0", scenario=str(path))
    assert env.unwrapped.scenario == SCENARIOS["air_leak"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=st.sampled_from(sorted(SCENARIOS)),
    seed=st.integers(0, 2**16),
    actions=st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=1, max_size=12),
)
def test_any_action_sequence_stays_finite_and_in_space(scenario, seed, actions):
    env = furnace_env.FurnaceEnv(scenario=scenario)
    obs, _ = env.reset(seed=seed)
    k = 0
    while True:
        a = np.asarray(actions[k % len(actions)], dtype=np.float32)
        obs, r, te, tr, info = env.step(a)
        assert np.isfinite(obs).all() and np.isfinite(r)
        assert env.observation_space.contains(obs), obs
        k += 1
        if te or tr:
            break


def test_render_modes():
    env = furnace_env.FurnaceEnv(render_mode="ansi")
    env.reset(seed=0)
    assert "O2=" in env.render()
    env = furnace_env.FurnaceEnv(render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(2, dtype=np.float32))
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    with pytest.raises(ValueError, match="render_mode"):
        furnace_env.FurnaceEnv(render_mode="human")


def _vec_rollout(venv, seed, steps, rng_seed=0):
    obs, _ = venv.reset(seed=seed)
    rng = np.random.default_rng(rng_seed)
    out = [obs]
    for _ in range(steps):
        a = rng.uniform(-0.5, 0.3, size=(venv.num_envs, 2)).astype(np.float32)
        obs, r, te, tr, _ = venv.step(a)
        out.append((obs, r, te, tr))
    return out


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_native_vector_env_equals_single_envs(mode):
    kw = dict(scenario=dict(name="short", n_steps=6, setpoint_events=[[10.0, 950.0]]))
    native = gym.make_vec("Furnace-v0", num_envs=3, vectorization_mode="vector_entry_point", **kw)
    assert isinstance(native.unwrapped, furnace_env.FurnaceVectorEnv)
    ref = gym.make_vec("Furnace-v0", num_envs=3, vectorization_mode=mode, **kw)
    a = _vec_rollout(native, 11, 15)  # crosses two autoresets
    b = _vec_rollout(ref, 11, 15)
    ref.close()
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    for x, y in zip(a[1:], b[1:], strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-4)


def test_ppo_learns_on_env_briefly():
    from stable_baselines3 import PPO

    env = gym.make("Furnace-v0", scenario="train_mix")
    model = PPO("MlpPolicy", env, n_steps=512, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(2048)
    assert model.num_timesteps >= 2048


def test_a_deliberate_trip_never_pays():
    """Holding fuel and starving air trips the flame safeguard within seconds: it must cost more
    than running a whole episode under the PI controller."""
    from furnace_env.pi import PIController
    from planners.evaluation import run_episode

    env = gym.make("Furnace-v0", sensor_noise=False)
    pi_return = run_episode(PIController(), env, seed=0).rewards.sum()
    env.reset(seed=0)
    total, terminated, info = 0.0, False, {}
    for _ in range(20):
        _, r, terminated, _, info = env.step(np.array([0.2, -0.9], dtype=np.float32))
        total += r
        if terminated:
            break
    assert terminated and info["trip"]
    assert total < pi_return


@pytest.mark.parametrize("steps_before", [0, 64])
def test_bad_action_when_noise_block_is_due_keeps_rng(steps_before):
    """The env draws sensor noise 64 steps at a time: a bad action at a refill must not draw."""
    env = furnace_env.FurnaceEnv()
    env.reset(seed=0)
    for _ in range(steps_before):
        env.step(np.zeros(2, dtype=np.float32))
    before = env.np_random.bit_generator.state
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0.0], dtype=np.float32))
    assert env.np_random.bit_generator.state == before


def test_noise_stream_same_as_one_draw_per_step():
    """Blocks of noise are handed back at reset: the generator ends where per-step draws leave it."""
    env = furnace_env.FurnaceEnv(scenario=dict(name="short", n_steps=70))
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(70):
        env.step(rng.uniform(-0.5, 0.3, size=2).astype(np.float32))
    obs_a = env.reset()[0]
    ref = np.random.Generator(np.random.PCG64(5))
    get_scenario(dict(name="short", n_steps=70)).sample_schedule(ref, env.params.dt)
    ref.standard_normal(8 * 71)  # reset observation, then one row per step
    get_scenario(dict(name="short", n_steps=70)).sample_schedule(ref, env.params.dt)
    ref.standard_normal(8)
    assert ref.bit_generator.state == env.np_random.bit_generator.state
    assert np.isfinite(obs_a).all()


def test_bench_env_runs_on_a_tiny_budget(capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))
    import bench_env

    bench_env.main(["--single_steps", "150", "--n", "3", "--steps", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "ratio Furnace-v0 / Pendulum-v1" in out and "CPU ns per furnace-step" in out
