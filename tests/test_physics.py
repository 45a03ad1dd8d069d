"""Pure physics and cost functions."""

import numpy as np
import pytest
import torch

from furnace_env.cost import CostWeights, cost_terms, obs_cost, step_cost
from furnace_env.physics import (
    N_OBS,
    FurnaceParams,
    FurnaceSim,
    co_ppm,
    flue_o2,
    steady_state_fuel,
)

P = FurnaceParams()


@pytest.mark.parametrize("excess_air, o2", [(0.095, 2.0), (0.15, 3.0), (0.28, 5.0)])
def test_o2_matches_doe_tip_sheet(excess_air, o2):
    assert flue_o2(excess_air) == pytest.approx(o2, abs=0.05)


def test_o2_zero_below_stoichiometric():
    assert flue_o2(-0.1) == 0.0


def _lam_at_o2(o2):
    # invert O2 = 2 EA / (8.52 + 9.52 EA)
    x = o2 / 100.0
    return 1.0 + 8.52 * x / (2.0 - 9.52 * x)


def test_co_knee_values():
    fire = P.fire_ref
    args = (P.co_base, P.co_knee_amp, P.o2_knee, P.knee_slope, P.fire_ref, P.co_width, P.co_rich, P.co_max)
    assert co_ppm(_lam_at_o2(2.0), fire, *args) == pytest.approx(10.0, rel=0.05)
    assert 70.0 < co_ppm(_lam_at_o2(1.0), fire, *args) < 130.0
    assert 200.0 < co_ppm(_lam_at_o2(0.5), fire, *args) < 900.0
    # knee moves to higher O2 at low fire
    assert co_ppm(_lam_at_o2(1.5), 0.3, *args) > co_ppm(_lam_at_o2(1.5), 0.8, *args)
    # fuel-rich: very high CO
    assert co_ppm(0.95, fire, *args) > 5000.0


def _sim(fuel_cmd, air_cmd, steps=300, leak=0.02, load=7.4e5, q=1.0):
    sim = FurnaceSim(1, P, CostWeights())
    dist = np.array([[900.0, load, q, leak]])
    cmd = np.zeros((1, 2))
    sim.reset_rows(np.array([0]), dist, np.array([1.15]), cmd)
    cmd[:] = [[fuel_cmd, air_cmd]]
    for _ in range(steps):
        sim.step(cmd, dist)
    return sim


def test_steady_state_energy_balance_holds():
    sim = FurnaceSim(1, P, CostWeights())
    dist = np.array([[950.0, 7.0e5, 1.0, 0.03]])
    cmd = np.zeros((1, 2))
    sim.reset_rows(np.array([0]), dist, np.array([1.2]), cmd)
    for _ in range(50):
        sim.step(cmd.copy(), dist)
    assert sim.info[0, 0] == pytest.approx(950.0, abs=0.05)
    # heat release = stack + wall + load at steady state
    heat, stack = sim.info[0, 6], sim.info[0, 7]
    wall = P.ua * (950.0 - P.t_amb)
    assert heat == pytest.approx(stack + wall + 7.0e5, rel=1e-4)
    f = steady_state_fuel(P, 950.0, 7.0e5, 1.0, 0.03, 1.2)
    assert sim.info[0, 1] == pytest.approx(f, rel=1e-6)


def test_more_fuel_is_hotter():
    assert _sim(0.25, 0.2).info[0, 0] > _sim(0.15, 0.2).info[0, 0] + 20.0


def test_more_air_more_o2_less_co():
    lean, rich = _sim(0.2, 0.2), _sim(0.2, 0.02, steps=3)
    assert lean.obs[0, 2] > rich.obs[0, 2]
    lean2, rich2 = _sim(0.2, 0.1, steps=40), _sim(0.2, 0.05, steps=40)
    assert lean2.info[0, 4] > rich2.info[0, 4]
    assert lean2.info[0, 5] < rich2.info[0, 5]


def test_rich_burner_trips_flame_safeguard():
    sim = _sim(0.2, -0.5, steps=10)
    assert sim.tripped[0] == 2


def test_batch_equals_single_rows():
    n = 5
    rng = np.random.default_rng(0)
    dist = np.column_stack([rng.uniform(850, 950, n), rng.uniform(5e5, 9e5, n), rng.uniform(0.95, 1.05, n),
                            rng.uniform(0, 0.05, n)])
    big = FurnaceSim(n, P, CostWeights())
    cmd = np.zeros((n, 2))
    big.reset_rows(np.arange(n), dist, np.full(n, 1.15), cmd)
    acts = rng.uniform(-1, 1, size=(10, n, 2))
    for a in acts:
        big.step(a, dist)
    for i in range(n):
        one = FurnaceSim(1, P, CostWeights())
        c = np.zeros((1, 2))
        one.reset_rows(np.array([0]), dist[i : i + 1], np.array([1.15]), c)
        for a in acts:
            one.step(a[i : i + 1].copy(), dist[i : i + 1])
        np.testing.assert_allclose(one.obs[0], big.obs[i], rtol=1e-12)
        assert one.cost[0] == pytest.approx(big.cost[i], rel=1e-12)


def test_cost_same_in_numpy_torch_and_kernel():
    w = CostWeights()
    obs = np.array([[905.0, 900.0, 0.5, 250.0, 110.0, 2000.0, 0.0, 0.0]])
    expected = 0.5 + 10 * 110 / 108 + 5 * 1.5 + 5 * 0.5
    assert obs_cost(obs, w)[0] == pytest.approx(expected)
    assert float(obs_cost(torch.tensor(obs), w)[0]) == pytest.approx(expected)
    assert step_cost(905.0, 900.0, 0.5, 250.0, 110.0, *w.to_array()) == pytest.approx(expected)
    assert sum(cost_terms(905.0, 900.0, 2.0, 50.0, 110.0, *w.to_array())) == pytest.approx(0.5 + 10 * 110 / 108)
    assert obs.shape[1] == N_OBS


@pytest.mark.parametrize("field, value", [("lhv", -1.0), ("n_substeps", 0), ("tau_air", float("nan"))])
def test_bad_params_raise(field, value):
    with pytest.raises(ValueError, match=field):
        FurnaceParams(**{field: value})


def test_bad_cost_weights_raise():
    with pytest.raises(ValueError, match="co_limit"):
        CostWeights(co_limit=0.0)


def test_kernel_exp_within_two_ulp_of_numpy():
    from furnace_env.fast_exp import exp as _exp

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-700, 700, 3000), rng.uniform(-0.05, 0.0, 3000), rng.uniform(-40, 50, 3000)])
    got = np.array([_exp(v) for v in x])
    want = np.exp(x)
    assert (np.abs(got - want) <= 2 * np.spacing(want)).all()
    assert _exp(0.0) == 1.0 and np.isnan(_exp(float("nan"))) and _exp(-1000.0) < 1e-320
