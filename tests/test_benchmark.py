"""Metrics on hand-made episodes with known answers, summaries, and the comparison harness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from furnace_env.cost import CostWeights
from planners.benchmark import (
    ControllerSpec,
    EpisodeRecord,
    bootstrap_ci,
    hierarchical_bootstrap_ci,
    markdown_table,
    nested_bootstrap_means,
    paired_differences,
    paired_table,
    sign_flip_pvalue,
    summarise,
    train_seed_pairs,
    train_seed_scores,
)
from planners.evaluation import Episode, episode_metrics, normalised_score


def _episode(temps, setpoint, o2, co, fuel_kg_s, rewards, trip="", latency=1e-3) -> Episode:
    t = len(rewards)
    clean = np.zeros((t + 1, 8), dtype=np.float32)
    clean[:, 0] = temps
    clean[:, 1] = setpoint
    clean[:, 2] = o2
    clean[:, 3] = co
    return Episode(obs=clean.copy(), obs_clean=clean, actions=np.zeros((t, 2)), rewards=np.asarray(rewards, float),
                   fuel=np.full(t, fuel_kg_s), co_true=np.asarray(co[1:], float), trip=trip,
                   latency=np.full(t, latency), dt=5.0)


def test_metrics_known_answers():
    # Temperatures 950, 952, 947, 950 against a setpoint of 950: errors after each step 2, -3, 0.
    co = np.array([50.0, 150.0, 90.0, 300.0])
    o2 = np.array([3.0, 3.0, 0.5, 3.0])
    ep = _episode([950, 952, 947, 950], 950, o2, co, 0.02, [-1.0, -2.0, -3.0], latency=2e-3)
    m = episode_metrics(ep, CostWeights())
    assert m["return"] == pytest.approx(-6.0)
    assert m["iae"] == pytest.approx((2 + 3 + 0) * 5.0)
    # Steps 1..3: CO 150 (violates), O2 0.5 (violates), CO 300 (violates) -> 3/3.
    assert m["violation_share"] == pytest.approx(1.0)
    assert m["co_ppm_s"] == pytest.approx((50 + 200) * 5.0)
    assert m["fuel_kg"] == pytest.approx(0.02 * 3 * 5.0)
    assert m["trips"] == 0.0
    assert m["latency_ms"] == pytest.approx(2.0)
    assert m["travel_fuel"] == m["travel_air"] == 0.0  # commands held still


def test_actuator_travel_known_answers():
    # 3 steps of 5 s = 1/240 h. Fuel: -1 -> 1 -> 1 (one full stroke); air: 0 -> 0.5 -> 0 (half a stroke).
    ep = _episode([950] * 4, 950, np.full(4, 3.0), np.zeros(4), 0.02, [-1.0] * 3)
    ep.actions[:] = [[-1.0, 0.0], [1.0, 0.5], [1.0, 0.0]]
    m = episode_metrics(ep)
    assert m["travel_fuel"] == pytest.approx(1.0 * 240)
    assert m["travel_air"] == pytest.approx(0.5 * 240)


def test_violation_share_partial_and_trip():
    ep = _episode([950] * 5, 950, np.full(5, 3.0), np.array([0, 0, 120, 0, 0.0]), 0.02, [-1.0] * 4, trip="x")
    m = episode_metrics(ep)
    assert m["violation_share"] == pytest.approx(0.25)
    assert m["trips"] == 1.0


def test_normalised_score_scale():
    assert normalised_score(-100.0, -100.0, -50.0) == pytest.approx(0.0)
    assert normalised_score(-50.0, -100.0, -50.0) == pytest.approx(1.0)
    assert normalised_score(-75.0, -100.0, -50.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equals"):
        normalised_score(-1.0, -5.0, -5.0)


def _rec(ctrl, ret, fuel, seed=0):
    m = {"return": ret, "iae": 1.0, "fuel_kg": fuel, "violation_share": 0.0, "co_ppm_s": 0.0,
         "trips": 0.0, "latency_ms": 1.0, "steps": 10.0}
    return EpisodeRecord(ctrl, "nominal", seed, m, env_steps=123)


def test_summarise_scores_and_fuel():
    recs = [_rec("pi", -100, 10.0), _rec("pi", -100, 10.0, 1), _rec("oracle", -60, 9.0),
            _rec("x", -90, 9.8), _rec("x", -70, 9.6, 1)]
    rows = {r["controller"]: r for r in summarise(recs)}
    assert rows["pi"]["score"] == pytest.approx(0.0)
    assert rows["oracle"]["score"] == pytest.approx(1.0)
    assert rows["x"]["score"] == pytest.approx((-80 + 100) / 40)
    assert rows["x"]["fuel_vs_ref"] == pytest.approx(9.7 / 10.0 - 1)
    assert rows["x"]["return_ci_lo"] <= -80 <= rows["x"]["return_ci_hi"]
    assert rows["x"]["env_steps"] == 123
    table = markdown_table(list(rows.values()))
    assert table.count("\n") == 2 + 3 - 1 and "| x | nominal |" in table


def test_summarise_without_oracle_has_nan_score():
    rows = summarise([_rec("pi", -100, 10.0), _rec("x", -90, 9.0)])
    assert all(math.isnan(r["score"]) for r in rows)


def test_bootstrap_ci_is_seeded_and_brackets_mean():
    x = np.random.default_rng(0).normal(size=20)
    lo, hi = bootstrap_ci(x, seed=3)
    assert (lo, hi) == bootstrap_ci(x, seed=3)
    assert lo < x.mean() < hi
    assert bootstrap_ci([5.0]) == (5.0, 5.0)


def test_controller_spec_bad_factory():
    with pytest.raises(ValueError, match="module:function"):
        ControllerSpec("bad", "furnace_env.pi").build(None)


def test_sign_flip_pvalue_known_answers():
    # Three positive pairs: 2 of the 8 sign assignments reach |sum| = 6, whatever the size.
    assert sign_flip_pvalue([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    assert sign_flip_pvalue([100.0, 200.0, 300.0]) == pytest.approx(0.25)
    # Symmetric differences: every assignment is at least as extreme as 0.
    assert sign_flip_pvalue([1.0, -1.0]) == pytest.approx(1.0)
    # Five equal positive pairs: only all-plus and all-minus, 2 / 32.
    assert sign_flip_pvalue([1.0] * 5) == pytest.approx(2 / 32)
    # Weights: a heavy negative pair outweighs two light positive ones; exact vs sampled agree.
    assert sign_flip_pvalue([1.0, 1.0, -1.0], [1.0, 1.0, 3.0]) == pytest.approx(sign_flip_pvalue([-1.0], [1.0]))
    x = np.random.default_rng(1).normal(0.5, 1.0, size=17)
    assert sign_flip_pvalue(x, n_perm=40000) == pytest.approx(sign_flip_pvalue(x[:16]), abs=0.2)
    assert math.isnan(sign_flip_pvalue([]))


def test_paired_differences_known_answers():
    def rec(ctrl, sc, seed, ret):
        return EpisodeRecord(ctrl, sc, seed, {"return": ret}, env_steps=0)

    recs = []
    for sc, base in (("a", -100.0), ("b", -50.0)):
        for seed in range(3):
            recs += [rec("pi", sc, seed, base), rec("oracle", sc, seed, base + 10.0),
                     rec("x", sc, seed, base + 5.0 + seed), rec("y", sc, seed, base + 5.0)]
    recs.append(rec("y", "a", 99, -1.0))  # an episode the focus did not run: not paired
    rows = {(r["controller"], r["scenario"]): r for r in paired_differences(recs, focus="x")}
    a = rows[("y", "a")]
    assert (a["unit"], a["pairs"], a["diff"], a["wins"]) == ("return", 3, pytest.approx(1.0), 2)
    assert a["ci_lo"] <= 1.0 <= a["ci_hi"] and not a["significant"]
    assert a["p_value"] == pytest.approx(sign_flip_pvalue([0.0, 1.0, 2.0]))
    pooled = rows[("y", "all")]
    # Score differences (return difference / oracle gap of 10): 0, 0.1, 0.2 on both scenarios.
    assert (pooled["unit"], pooled["pairs"], pooled["diff"], pooled["wins"]) == ("score", 6, pytest.approx(0.1), 4)
    assert rows[("pi", "all")]["diff"] == pytest.approx(0.6) and rows[("pi", "all")]["significant"]
    assert rows[("pi", "all")]["p_value"] == pytest.approx(2 / 64)
    assert rows[("oracle", "b")]["diff"] == pytest.approx(-4.0)
    table = paired_table(list(rows.values()))
    assert "| pi | +0.60* (" in table and "| y | +0.10 (" in table and table.count("\n") == 3 + 3
    with pytest.raises(ValueError, match="'z' was not evaluated"):
        paired_differences(recs, focus="z")
    # Without the oracle there is no score scale: per-scenario rows only.
    no_oracle = paired_differences([r for r in recs if r.controller != "oracle"], focus="x")
    assert {r["unit"] for r in no_oracle} == {"return"}


def test_the_ray_backend_gives_the_local_pools_records_in_the_same_order():
    """A local Ray instance (two CPUs, started here): same episodes, same order, same metrics."""
    ray = pytest.importorskip("ray")
    import dataclasses

    from furnace_env.scenarios import get_scenario
    from planners.benchmark import ControllerSpec, evaluate_controllers

    scenarios = [dataclasses.replace(get_scenario(n), n_steps=4) for n in ("nominal", "air_leak")]
    specs = [ControllerSpec("pi", "furnace_env.pi:make_pi"),
             ControllerSpec("pi-fast", "furnace_env.pi:make_pi", {"kp": 0.02})]
    local = evaluate_controllers(specs, scenarios, [0, 1], workers=1, trajectory_seed=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = evaluate_controllers(specs, scenarios, [0, 1], backend="ray", trajectory_seed=1)
    finally:
        ray.shutdown()

    def rows(recs):  # wall-clock latency is the one measurement that may differ
        return [{k: v for k, v in r.row().items() if k != "latency_ms"} for r in recs]

    assert rows(remote) == rows(local)
    assert [r.episode is not None for r in remote] == [r.episode is not None for r in local]


def test_a_missing_ray_is_named_with_the_extra_to_install(monkeypatch):
    import importlib.util

    from planners.benchmark import check_backend

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"furnace-eblnn\[ray\]"):
        check_backend("ray")


# -- training seeds ------------------------------------------------------------------------------------
def _trec(ctrl, seed, ret, train_seed=0, sc="a"):
    m = {"return": ret, "iae": 0.0, "fuel_kg": 1.0, "violation_share": 0.0, "co_ppm_s": 0.0, "trips": 0.0,
         "latency_ms": 0.0}
    return EpisodeRecord(ctrl, sc, seed, m, env_steps=0, train_seed=train_seed)


def test_hierarchical_bootstrap_resamples_groups_then_values():
    # No spread within groups: the replicates are means of two drawn groups, 1, 2 or 3.
    means = nested_bootstrap_means({(0, "s0"): [1.0] * 3, (0, "s1"): [3.0] * 3}, n_boot=4000,
                                   rng=np.random.default_rng(0))
    assert set(np.round(means, 9)) == {1.0, 2.0, 3.0}
    assert np.mean(means == 2.0) == pytest.approx(0.5, abs=0.03)
    assert hierarchical_bootstrap_ci({0: [1.0] * 3, 1: [3.0] * 3}) == (1.0, 3.0)
    # Groups weigh the same whatever their size: the centre is the mean of group means (2), not 2.5.
    assert np.mean(nested_bootstrap_means({(0, 0): [1.0], (0, 1): [3.0] * 3}, 4000)) == pytest.approx(2.0, abs=0.05)
    # One group: the ordinary bootstrap of its values (same spread, up to resampling noise).
    x = np.random.default_rng(2).normal(size=12)
    lo, hi = hierarchical_bootstrap_ci({0: x})
    ref = bootstrap_ci(x)
    assert lo == pytest.approx(ref[0], abs=0.15) and hi == pytest.approx(ref[1], abs=0.15)
    # Strata are kept, each weighing the same: scenario a's 0s and b's 10s always average to 5.
    means = nested_bootstrap_means({("a", 0): [0.0], ("a", 1): [0.0, 0.0], ("b", 0): [10.0], ("b", 1): [10.0]}, 100)
    np.testing.assert_allclose(means, 5.0)
    assert all(math.isnan(v) for v in hierarchical_bootstrap_ci({}))
    with pytest.raises(ValueError, match="empty"):
        nested_bootstrap_means({(0, 0): []})
    with pytest.raises(ValueError, match="level"):
        hierarchical_bootstrap_ci({0: [1.0]}, level=1.5)


@pytest.mark.parametrize("a, b, expected", [
    ([0], [0, 1, 2], [(0, 0, 0), (1, 0, 1), (2, 0, 2)]),   # PI meets every training seed
    ([0, 1, 2], [0], [(0, 0, 0), (1, 1, 0), (2, 2, 0)]),
    ([0, 1, 2], [0, 1, 2], [(0, 0, 0), (1, 1, 1), (2, 2, 2)]),  # within each training seed
    ([0, 1], [1, 2], [(1, 1, 1)]),                          # a seed without a partner is left out
    ([], [0], []),
])
def test_train_seed_pairs(a, b, expected):
    assert train_seed_pairs(a, b) == expected


def test_summarise_means_over_training_seeds_with_an_interval_over_both():
    recs = [_trec("pi", s, -100.0) for s in range(4)] + [_trec("oracle", s, -80.0) for s in range(4)]
    recs += [_trec("rl", s, -100.0, train_seed=0) for s in range(2)]  # seed 0: two episodes
    recs += [_trec("rl", s, -80.0, train_seed=1) for s in range(4)]   # seed 1: four
    rows = {r["controller"]: r for r in summarise(recs)}
    rl = rows["rl"]
    # Every training seed weighs the same: -90, not the pooled episode mean -86.7.
    assert rl["return"] == pytest.approx(-90.0) and rl["score"] == pytest.approx(0.5)
    assert rl["train_seeds"] == 2 and rl["episodes"] == 6
    assert (rl["return_ci_lo"], rl["return_ci_hi"]) == (-100.0, -80.0)  # the training seeds' spread
    assert rows["pi"]["train_seeds"] == 1 and rows["pi"]["return_ci_lo"] == rows["pi"]["return_ci_hi"] == -100.0
    by_seed = {(r["controller"], r["train_seed"]): r for r in train_seed_scores(recs)}
    assert by_seed[("rl", 0)]["score"] == pytest.approx(0.0) and by_seed[("rl", 1)]["score"] == pytest.approx(1.0)
    assert by_seed[("rl", 0)]["episodes"] == 2


def test_paired_differences_pair_within_each_training_seed():
    recs = []
    for sd in range(2):
        recs += [_trec("pi", sd, -100.0), _trec("oracle", sd, 0.0)]
        # Focus with two training seeds (and a third its peer lacks), a peer with the same two.
        recs += [_trec("f", sd, 0.0, 0), _trec("f", sd, -20.0, 1), _trec("f", sd, -50.0, 2)]
        recs += [_trec("rl", sd, -10.0, 0), _trec("rl", sd, -10.0, 1), _trec("rl", sd, -5.0, 3)]
    rows = {(r["controller"], r["scenario"]): r for r in paired_differences(recs, focus="f")}
    rl = rows[("rl", "a")]
    # Within seed 0: +10 twice; within seed 1: -10 twice; seeds 2 and 3 have no partner.
    assert (rl["pairs"], rl["train_seeds"], rl["wins"]) == (4, 2, 2)
    assert rl["diff"] == pytest.approx(0.0) and (rl["ci_lo"], rl["ci_hi"]) == (-10.0, 10.0)
    assert rl["p_value"] == pytest.approx(1.0)
    # PI has one training seed: it meets all three of the focus's, each weighing the same.
    pi = rows[("pi", "a")]
    assert (pi["pairs"], pi["train_seeds"]) == (6, 3) and pi["diff"] == pytest.approx((100 + 80 + 50) / 3)
    assert pi["p_value"] == pytest.approx(2 / 2**6) and pi["significant"]
    assert (pi["ci_lo"], pi["ci_hi"]) == (50.0, 100.0)
    pooled = rows[("pi", "all")]  # score differences: return differences / the oracle gap of 100
    assert pooled["unit"] == "score" and pooled["diff"] == pytest.approx(2.3 / 3)
    assert rows[("rl", "all")]["diff"] == pytest.approx(0.0)
