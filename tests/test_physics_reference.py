"""The fast physics kernel computes what the plain numpy reference says.

``furnace_env.physics.step_kernel`` (blocks of furnaces, scratch copies, a hand-written
``exp``) against ``furnace_env.physics_reference.step_reference`` (the docstring's
equations): every output of every step, over random commands and disturbances, for several
plants, and across the kernel's block boundary (64 furnaces) and thread split.
"""

import numpy as np
import pytest

from furnace_env.cost import CostWeights
from furnace_env.physics import BLOCK, PARALLEL_THRESHOLD, FurnaceParams, FurnaceSim, step_batch
from furnace_env.physics_reference import co_ppm, flue_o2, step_reference

PLANTS = {
    "default": FurnaceParams(),
    # No O2 dead time (a ring buffer of one slot), another CO dead time, other sub-steps.
    "no_o2_delay": FurnaceParams(o2_delay=0.0, co_delay=7.0, n_substeps=3),
    # A short control step, fast actuators, a low trip temperature and a quick flame safeguard:
    # both trips happen under random commands.
    "fast_trippy": FurnaceParams(dt=2.0, n_substeps=4, tau_fuel=0.5, tau_air=1.5, t_max=950.0,
                                 rich_trip_time=4.0, o2_delay=2.0, co_delay=5.0),
    # A small, badly mixed burner with a lossy wall.
    "small_lossy": FurnaceParams(fuel_max=0.02, air_max=0.5, ua=400.0, heat_capacity=8e4, knee_slope=4.0,
                                 co_width=0.2, fire_ref=0.4, n_substeps=7),
}
WEIGHTS = CostWeights(w_o2=2.0, co_limit=50.0)
N = BLOCK + 37  # a full block and a partial one


def _random_dist(rng, n, p):
    fire = p.fuel_max * p.lhv
    return np.column_stack([rng.uniform(700.0, 1000.0, n), rng.uniform(0.1, 0.35, n) * fire,
                            rng.uniform(0.9, 1.1, n), rng.uniform(0.0, 0.05, n) * p.air_max / 1.2])


def _sim(p, n, rng):
    sim = FurnaceSim(n, p, WEIGHTS)
    dist = _random_dist(rng, n, p)
    sim.reset_rows(np.arange(n), dist, rng.uniform(1.02, 1.4, n), np.zeros((n, 2)))
    return sim


def _kernel_outputs(sim):
    return sim.state, sim.o2_buf, sim.co_buf, sim.obs, sim.report, sim.cost, sim.tripped


def _assert_match(ref, sim, rtol):
    for name, want, got in zip(ref._fields, ref, _kernel_outputs(sim), strict=True):
        if name == "tripped":
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e3, err_msg=name)


@pytest.mark.parametrize("plant", PLANTS)
def test_kernel_matches_reference_step_by_step(plant):
    """From the kernel's own state, each step agrees to a few ulp (only ``exp`` differs)."""
    p = PLANTS[plant]
    rng = np.random.default_rng(sum(map(ord, plant)))
    sim = _sim(p, N, rng)
    for _ in range(80):
        # Commands beyond [-1, 1] too: the kernel takes them as given (the env clips first).
        cmd = rng.uniform(-1.05, 1.05, (N, 2))
        dist = _random_dist(rng, N, p)
        ref = step_reference(sim.state, sim.o2_buf, sim.co_buf, sim.k, cmd, dist, p, WEIGHTS)
        sim.step(cmd, dist)
        _assert_match(ref, sim, rtol=1e-12)


def test_both_trips_are_exercised():
    """The trippy plant reaches both trip causes, so the trip logic above is really compared."""
    p = PLANTS["fast_trippy"]
    rng = np.random.default_rng(1)
    sim = _sim(p, N, rng)
    seen = set()
    for _ in range(40):
        sim.step(rng.uniform(-1, 1, (N, 2)), _random_dist(rng, N, p))
        seen |= set(sim.tripped.tolist())
    assert {1, 2} <= seen


@pytest.mark.parametrize("plant", ["default", "small_lossy"])
def test_kernel_trajectory_follows_reference(plant):
    """Run apart for 120 steps, kernel and reference stay within 1e-9: the ulp differences do not grow."""
    p = PLANTS[plant]
    rng = np.random.default_rng(7)
    sim = _sim(p, N, rng)
    state, o2_buf, co_buf = sim.state.copy(), sim.o2_buf.copy(), sim.co_buf.copy()
    # A slow random walk of the commands, so that the furnaces stay in their operating range.
    cmd = np.column_stack([rng.uniform(-0.6, 0.2, N), rng.uniform(-0.4, 0.4, N)])
    dist = _random_dist(rng, N, p)
    for _ in range(120):
        cmd = np.clip(cmd + rng.normal(0.0, 0.05, cmd.shape), -1.0, 1.0)
        ref = step_reference(state, o2_buf, co_buf, sim.k, cmd, dist, p, WEIGHTS)
        state, o2_buf, co_buf = ref.state, ref.o2_buf, ref.co_buf
        sim.step(cmd, dist)
    _assert_match(ref, sim, rtol=1e-9)


def test_threaded_batch_matches_reference():
    """The thread-split path (``step_batch`` on a batch past ``PARALLEL_THRESHOLD``) agrees too."""
    p = PLANTS["default"]
    rng = np.random.default_rng(3)
    n = PARALLEL_THRESHOLD + 77
    sim = _sim(p, n, rng)
    for _ in range(3):
        cmd = rng.uniform(-1, 1, (n, 2))
        dist = _random_dist(rng, n, p)
        ref = step_reference(sim.state, sim.o2_buf, sim.co_buf, sim.k, cmd, dist, p, WEIGHTS)
        step_batch(sim.state, sim.o2_buf, sim.co_buf, sim.k, cmd, dist, sim.p, sim.w, sim.obs, sim.report,
                   sim.cost, sim.tripped)
        sim.k += p.n_substeps
        _assert_match(ref, sim, rtol=1e-12)


def test_reference_leaves_its_inputs_alone():
    p = PLANTS["default"]
    rng = np.random.default_rng(0)
    sim = _sim(p, 5, rng)
    before = [a.copy() for a in (sim.state, sim.o2_buf, sim.co_buf)]
    step_reference(sim.state, sim.o2_buf, sim.co_buf, 0, rng.uniform(-1, 1, (5, 2)), _random_dist(rng, 5, p), p,
                   WEIGHTS)
    for b, a in zip(before, (sim.state, sim.o2_buf, sim.co_buf), strict=True):
        np.testing.assert_array_equal(a, b)


def test_reference_curves_match_the_compiled_ones():
    from furnace_env import physics

    p = FurnaceParams()
    rng = np.random.default_rng(0)
    lam, fire = rng.uniform(0.8, 1.6, 500), rng.uniform(0.05, 1.0, 500)
    np.testing.assert_allclose(flue_o2(lam - 1.0), [physics.flue_o2(x - 1.0) for x in lam], rtol=1e-15)
    want = [physics.co_ppm(a, f, p.co_base, p.co_knee_amp, p.o2_knee, p.knee_slope, p.fire_ref, p.co_width,
                           p.co_rich, p.co_max) for a, f in zip(lam, fire, strict=True)]
    np.testing.assert_allclose(co_ppm(lam, fire, p), want, rtol=1e-14)
