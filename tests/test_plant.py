"""Plants in scenarios (values, ranges, events), the env's state snapshot, and the scenario families."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import furnace_env
from furnace_env import FurnaceParams, FurnaceState, Scenario, get_scenario
from furnace_env.scenarios import (
    EVAL_SCENARIOS,
    FAMILIES,
    PLANT_CHANGE_SCENARIOS,
    PLANT_FIELDS,
    SCENARIOS,
    TRAINING_PLANT,
    family_scenarios,
    load_scenario,
    refuse_test_family,
    save_scenario,
)
from planners.evaluation import make_scenario_env, run_episode
from planners.oracle import OracleModel, make_oracle

# A quiet programme: no events, no wander, no noise, so that only the plant differs between runs.
QUIET = dict(load_wander=0.0, time_jitter=0.0, size_jitter=0.0, sensor_noise=False)


def _hold(plant: dict, steps: int, action=(-0.1, -0.2), **kw) -> list[dict]:
    env = furnace_env.FurnaceEnv(scenario=Scenario(n_steps=steps, plant=plant, **QUIET, **kw))
    _, info = env.reset(seed=0)
    infos = [info]
    for _ in range(steps):
        infos.append(env.step(np.array(action))[4])
    return infos


# -- plant values reach the physics ----------------------------------------------------------------
def test_hotter_ambient_shifts_the_steady_state_by_the_same_amount():
    # Same commands, same flows: T - T_amb is set by the heat balance alone, so +20 K ambient
    # gives +20 K in the furnace once the lags have settled (the time constant is ~4 min).
    cold, hot = _hold({"t_amb": 20.0}, 400), _hold({"t_amb": 40.0}, 400)
    assert hot[-1]["temperature_true"] - cold[-1]["temperature_true"] == pytest.approx(20.0, abs=0.05)
    assert hot[0]["plant"] == {"t_amb": 40.0}


def test_larger_heat_capacity_slows_the_response_but_keeps_the_steady_state():
    # From the same steady state (it does not depend on C), a fuel step heats at dT/dt = dQ / C:
    # the early rise scales as 1 / C; the final temperature is the same.
    small, big = _hold({"heat_capacity": 1.6e5}, 400, (0.3, 0.15)), _hold({"heat_capacity": 2.4e5}, 400, (0.3, 0.15))
    assert small[0]["temperature_true"] == pytest.approx(big[0]["temperature_true"], abs=1e-9)
    rise = [r[2]["temperature_true"] - r[0]["temperature_true"] for r in (small, big)]
    assert rise[0] > 0 and rise[0] / rise[1] == pytest.approx(2.4 / 1.6, rel=0.03)
    assert small[-1]["temperature_true"] == pytest.approx(big[-1]["temperature_true"], abs=0.05)


def test_base_params_stay_and_the_scenario_overrides_only_its_fields():
    env = gym.make("Furnace-v0", params=FurnaceParams(ua=200.0),
                   scenario=Scenario(plant={"t_amb": 30.0}))
    _, info = env.reset(seed=0)
    assert env.unwrapped.plant == FurnaceParams(ua=200.0, t_amb=30.0)
    assert info["plant"] == {"t_amb": 30.0}
    env.reset(seed=0, options={"scenario": "nominal"})
    assert env.unwrapped.plant == FurnaceParams(ua=200.0)


def test_ranges_are_drawn_from_np_random():
    sc = Scenario(plant={"heat_capacity": [1.5e5, 2.5e5], "o2_knee": [1.8, 2.2], "ua": 140.0})

    def plant(seed):
        env = furnace_env.FurnaceEnv(scenario=sc)
        return env.reset(seed=seed)[1]["plant"], env.unwrapped.plant

    (a, pa), (b, _), (c, _) = plant(3), plant(3), plant(4)
    assert a == b and a != c and a["ua"] == 140.0
    assert 1.5e5 <= a["heat_capacity"] <= 2.5e5 and 1.8 <= a["o2_knee"] <= 2.2
    assert pa.heat_capacity == a["heat_capacity"]


def test_scenarios_without_plant_draw_nothing_extra():
    # A plant-free scenario consumes exactly the random numbers it always did.
    env = furnace_env.FurnaceEnv(scenario="nominal")
    env.reset(seed=5)
    before = env.np_random.bit_generator.state
    env2 = furnace_env.FurnaceEnv(scenario=Scenario(**dataclasses.asdict(SCENARIOS["nominal"])))
    env2.reset(seed=5)
    assert env2.np_random.bit_generator.state == before


def test_plant_events_step_and_ramp():
    sc = Scenario(n_steps=40, plant_events=[(50.0, "ua", 300.0), (100.0, "o2_knee", 3.0, 50.0)], **QUIET)
    env = furnace_env.FurnaceEnv(scenario=sc)
    _, info = env.reset(seed=0)
    assert info["plant"] == {"o2_knee": 2.0, "ua": 150.0}
    seen = {}
    for k in range(40):
        info = env.step(np.zeros(2))[4]
        if "plant" in info:
            seen[k] = info["plant"]
    # Step k runs from k * 5 s: the ua step at 50 s is in force from step 10, the ramp from
    # 100 s to 150 s changes the knee at steps 21..30 (step 20 starts it at its old value).
    assert sorted(seen) == [10, *range(21, 31)]
    assert seen[10]["ua"] == 300.0 and seen[25]["o2_knee"] == pytest.approx(2.5)
    assert seen[30]["o2_knee"] == 3.0 and env.unwrapped.plant.o2_knee == 3.0


def test_a_plant_event_changes_the_trajectory_only_after_it():
    base = Scenario(n_steps=30, **QUIET)
    fouled = dataclasses.replace(base, plant_events=((75.0, "ua", 400.0),))
    run = [[i["temperature_true"] for i in (lambda e: [e.reset(seed=0)[1]]
                                            + [e.step(np.zeros(2))[4] for _ in range(30)])(
        furnace_env.FurnaceEnv(scenario=sc))] for sc in (base, fouled)]
    assert run[0][:16] == run[1][:16]  # steps 0..14 and the reset: before 75 s
    assert run[1][-1] < run[0][-1] - 1.0  # more wall loss, colder furnace


def test_a_bad_action_at_a_plant_event_changes_nothing():
    env = furnace_env.FurnaceEnv(scenario=Scenario(plant_events=[(5.0, "ua", 300.0)]))
    env.reset(seed=0)
    env.step(np.zeros(2))
    before = env.get_state()
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0.0]))
    after = env.get_state()
    assert env.plant.ua == 150.0 and after.plant == before.plant and after.step == before.step
    assert np.array_equal(after.physics, before.physics) and after.rng_state == before.rng_state
    assert env.step(np.zeros(2))[4]["plant"] == {"ua": 300.0}


@pytest.mark.parametrize("kw, match", [
    (dict(plant={"heat_capacty": 2e5}), "unknown plant field 'heat_capacty'; allowed: .*heat_capacity"),
    (dict(plant={"dt": 2.0}), "plant field 'dt' cannot vary"),
    (dict(plant={"o2_delay": 3.0}), "'o2_delay' cannot vary"),
    (dict(plant={"ua": [200.0, 100.0]}), r"ua=\[200.0, 100.0\]: low > high"),
    (dict(plant={"ua": [1.0, 2.0, 3.0]}), "a range is"),
    (dict(plant={"tau_air": 0.0}), "tau_air=0.0 is not a valid plant value .*must be > 0"),
    (dict(plant={"heat_capacity": [-1.0, 2e5]}), "heat_capacity=-1.0 is not a valid"),
    (dict(plant={"ua": float("nan")}), "ua=nan must be a finite number"),
    (dict(plant={"ua": True}), "ua=True must be a finite number"),
    (dict(plant={"ua": "hot"}), "ua='hot' must be a finite number"),
    (dict(plant={"heat_capacity": "1.8e5"}), "YAML reads 1.8e5 as text"),
    (dict(plant_events=[(10.0, "wall", 1.0)]), "unknown plant_events field 'wall'"),
    (dict(plant_events=[(10.0, "ua")]), r"must be \(time_s, field, value\[, ramp_s\]\)"),
    (dict(plant_events=[(-1.0, "ua", 100.0)]), "time -1.0"),
    (dict(plant_events=[(1.0, "ua", 100.0, -5.0)]), "ramp -5.0"),
    (dict(plant_events=[(1.0, "co_width", -0.1)]), "co_width=-0.1 is not a valid"),
])
def test_bad_plants_name_the_field_and_what_is_allowed(kw, match):
    with pytest.raises(ValueError, match=match):
        Scenario(name="mine", **kw)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_plant_file_round_trip(tmp_path, suffix):
    sc = Scenario(name="mine", plant={"heat_capacity": [1.8e5, 2.2e5], "t_amb": 35.0},
                  plant_events=[(100.0, "ua", 180.0, 60.0), (300.0, "o2_knee", 2.4)])
    path = tmp_path / f"mine{suffix}"
    save_scenario(sc, path)
    assert load_scenario(path) == sc
    assert Scenario.from_dict(sc.to_dict()) == sc
    assert sc.to_dict()["plant"] == {"heat_capacity": [1.8e5, 2.2e5], "t_amb": 35.0}


def test_yaml_text_with_a_plant(tmp_path):
    path = tmp_path / "fouling.yaml"
    path.write_text("setpoint: 920.0\nplant: {heat_capacity: [1.8e+5, 2.2e+5], t_amb: 35.0}\n"
                    "plant_events: [[200.0, o2_knee, 2.9, 800.0], [600.0, ua, 190.0]]\n")
    sc = load_scenario(path)
    assert sc.name == "fouling" and dict(sc.plant) == {"heat_capacity": (1.8e5, 2.2e5), "t_amb": 35.0}
    assert sc.plant_events == ((200.0, "o2_knee", 2.9, 800.0), (600.0, "ua", 190.0, 0.0))


def test_training_range_is_valid_and_used_by_the_training_mix():
    assert set(TRAINING_PLANT) <= set(PLANT_FIELDS)
    assert dict(SCENARIOS["train_mix"].plant) == TRAINING_PLANT
    env = furnace_env.FurnaceEnv(scenario="train_mix")
    plants = [env.reset(seed=s)[1]["plant"] for s in range(4)]
    for p in plants:
        assert all(TRAINING_PLANT[k][0] <= v <= TRAINING_PLANT[k][1] for k, v in p.items())
    assert plants[0] != plants[1]


def test_vector_env_gives_each_sub_env_its_own_plant_as_single_envs_do():
    kw = dict(scenario=dict(name="short", n_steps=6, setpoint_events=[[10.0, 950.0]],
                            plant={"heat_capacity": [1.5e5, 2.5e5], "t_amb": 30.0},
                            plant_events=[[10.0, "ua", 300.0, 10.0]]))
    native = gym.make_vec("Furnace-v0", num_envs=3, vectorization_mode="vector_entry_point", **kw)
    ref = gym.make_vec("Furnace-v0", num_envs=3, vectorization_mode="sync", **kw)

    def roll(venv):
        obs, info = venv.reset(seed=11)
        rng = np.random.default_rng(0)
        out = [obs]
        for _ in range(15):  # crosses two autoresets
            obs, r, te, tr, _ = venv.step(rng.uniform(-0.5, 0.3, size=(3, 2)).astype(np.float32))
            out.append(np.concatenate([obs.ravel(), r, te, tr]))
        return out, info["plant"]["heat_capacity"]

    (a, ca), (b, cb) = roll(native), roll(ref)
    ref.close()
    np.testing.assert_array_equal(ca, cb)
    assert len(set(ca.tolist())) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-4)


# -- the state snapshot ------------------------------------------------------------------------------
def _steps(env, actions):
    out = []
    for a in actions:
        obs, r, te, tr, info = env.step(a)
        out.append((obs.copy(), r, te, tr, {k: v for k, v in info.items() if k != "obs_clean"}))
    return out


@pytest.mark.parametrize("scenario", ["nominal", "fouling_drift", "train_mix"])
def test_set_state_of_get_state_reproduces_the_next_steps_exactly(scenario):
    actions = np.random.default_rng(0).uniform(-0.4, 0.3, size=(80, 2))
    env = furnace_env.FurnaceEnv(scenario=scenario)
    env.reset(seed=7)
    _steps(env, actions[:37])  # mid-way through a block of pre-drawn sensor noise
    state = env.get_state()
    first = _steps(env, actions)  # 80 more steps cross the next noise block
    env.set_state(state)
    again = _steps(env, actions)
    other = furnace_env.FurnaceEnv(scenario="low_fire")  # another env, another episode
    other.reset(seed=99)
    other.set_state(state)
    there = _steps(other, actions)
    for run in (again, there):
        for x, y in zip(first, run, strict=True):
            assert np.array_equal(x[0], y[0]) and x[1:4] == y[1:4]
            assert x[4].keys() == y[4].keys() and all(np.all(x[4][k] == y[4][k]) for k in x[4])


def test_state_is_a_frozen_copy_and_bad_states_are_refused():
    env = furnace_env.FurnaceEnv(scenario="plant_out_of_range")
    env.reset(seed=0)
    state = env.get_state()
    assert isinstance(state, FurnaceState) and state.plant.heat_capacity == 2.5e5 and state.step == 0
    phys = state.physics.copy()
    env.step(np.zeros(2))
    assert np.array_equal(state.physics, phys) and state.step == 0
    with pytest.raises(ValueError, match="read-only"):
        state.physics[0] = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.step = 3
    with pytest.raises(ValueError, match="FurnaceState"):
        env.set_state({"step": 0})
    bad = dataclasses.replace(state, o2_buf=np.zeros(3))
    with pytest.raises(ValueError, match="o2_buf has shape"):
        env.set_state(bad)
    with pytest.raises(ValueError, match="co_delay"):
        furnace_env.FurnaceEnv(params=FurnaceParams(co_delay=30.0)).set_state(
            dataclasses.replace(state, co_buf=np.zeros(
                FurnaceParams().delay_len(30.0)), plant=FurnaceParams()))
    with pytest.raises(RuntimeError, match="reset"):
        furnace_env.FurnaceEnv().get_state()


def test_oracle_predicts_a_drifting_plant_exactly():
    # The oracle's cost of a sequence is what the env charges, across plant events in the horizon.
    sc = dataclasses.replace(get_scenario("fouling_drift"), load_wander=0.0, time_jitter=0.0,
                             plant_events=((10.0, "ua", 400.0, 20.0), (30.0, "o2_knee", 3.0)),
                             plant={"heat_capacity": 1.8e5})
    env = furnace_env.FurnaceEnv(scenario=sc)
    env.reset(seed=0)
    model = OracleModel(env)
    u = torch.as_tensor(model.encode(np.array([[0.3, 0.1]] * 12)))[None]
    predicted = float(model.make_objective()(u)[0])
    charged = -sum(env.step(a)[1] for a in model.decode(u[0]))
    assert predicted == pytest.approx(charged, rel=1e-9)


def test_oracle_runs_on_a_test_family_plant():
    env = make_scenario_env(dataclasses.replace(get_scenario("fouled"), n_steps=4))
    ep = run_episode(make_oracle(env, n_candidates=8, iterations=2, horizon=6), env, seed=0)
    assert len(ep.actions) == 4 and np.isfinite(ep.actions).all()


# -- families ----------------------------------------------------------------------------------------
def test_families_are_disjoint_resolve_and_describe_themselves():
    assert set(FAMILIES) == {"tune", "test"}
    assert not set(FAMILIES["tune"]) & set(FAMILIES["test"])
    assert FAMILIES["tune"] == EVAL_SCENARIOS + PLANT_CHANGE_SCENARIOS and 6 <= len(FAMILIES["test"]) <= 8
    for fam in FAMILIES:
        for sc in family_scenarios(fam):
            assert get_scenario(sc.name) is sc and sc.description and not sc.randomize
    progs = {dataclasses.replace(sc, name="", description="") for sc in SCENARIOS.values()}
    assert len(progs) == len(SCENARIOS)  # no test scenario is a renamed preset
    with pytest.raises(ValueError, match="unknown scenario family 'eval'; allowed"):
        family_scenarios("eval")


def test_test_family_covers_plants_inside_and_outside_the_training_range():
    def inside(sc):
        return all(k in TRAINING_PLANT and TRAINING_PLANT[k][0] <= v <= TRAINING_PLANT[k][1] for k, v in sc.plant)

    test = family_scenarios("test")
    assert any(sc.plant and inside(sc) for sc in test)
    assert any(sc.plant and not inside(sc) for sc in test)
    assert any(ev[2] > TRAINING_PLANT[ev[1]][1] or ev[2] < TRAINING_PLANT[ev[1]][0]
               for sc in test for ev in sc.plant_events)


def test_refuse_test_family_names_the_family():
    refuse_test_family(family_scenarios("tune") + (SCENARIOS["train_mix"],))
    copy = dataclasses.replace(SCENARIOS["fast_down"], name="my_copy", n_steps=10)
    for sc in (SCENARIOS["fast_down"], copy):
        with pytest.raises(ValueError, match="test-family scenario 'fast_down'; the 'test' family"):
            refuse_test_family([sc], "tuning")


def test_tune_planner_refuses_test_scenarios(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))
    import tune_planner

    with pytest.raises(SystemExit):
        tune_planner.main(["--checkpoint", "missing.pt", "--scenario", "nominal", "fouled", "--episodes", "1"])
    assert "test-family scenario 'fouled'" in capsys.readouterr().err


def test_out_of_range_step_finds_when_the_plant_leaves_the_training_range():
    from furnace_env.scenarios import out_of_range_step

    for name in (*EVAL_SCENARIOS, "plant_in_range", "long_climb"):
        assert out_of_range_step(name) is None
    for name in PLANT_CHANGE_SCENARIOS:
        assert out_of_range_step(name) == 80  # the step at 400 s
    assert out_of_range_step("fouled") == 0 and out_of_range_step("plant_out_of_range") == 0
    # fouling_drift: the CO knee ramps 2.0 -> 2.9 from 200 s over 800 s and passes 2.25 at 422 s (step 85).
    assert out_of_range_step("fouling_drift") == 85
    # A field training never varied is out of range as soon as it moves; a ranged plant has no fixed answer.
    assert out_of_range_step({"name": "amp", "plant_events": [[50.0, "co_knee_amp", 900.0]]}) == 10
    assert out_of_range_step("plant_out_of_range", ranges={"heat_capacity": (1e5, 3e5), "ua": (100.0, 200.0),
                                                            "o2_knee": (1.0, 3.0)}) is None
    with pytest.raises(ValueError, match="draws its plant per episode"):
        out_of_range_step("train_mix")
