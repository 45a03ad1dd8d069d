"""The comparison harness: run controllers over scenarios and seeds, in parallel, and summarise.

A controller is named by a :class:`ControllerSpec`: a picklable recipe (an importable factory
and its keyword arguments) so that worker processes can build their own copy. Episodes are
independent ``(controller, scenario, seed)`` tasks spread over a process pool on this machine,
or over a Ray cluster (``backend="ray"``; ``docs/multi_machine.md``), with the same records in
the same order either way.

A trained controller may come in several *training seeds* (``ControllerSpec.train_seed``: the
artefact trained from that seed, under one controller name). Its results then vary with two
sources, the training run and the evaluation episode, and the statistics here cover both:
:func:`summarise` reports the mean over training seeds (each weighs the same) with a two-stage
bootstrap interval (:func:`hierarchical_bootstrap_ci`: resample training seeds, then episodes
within each), and :func:`paired_differences` pairs episodes on (scenario, seed) within each
training seed. A controller with one training seed (PI, the oracle, a single artefact) gets the
plain statistics, so its rows are what they were before training seeds existed.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eblnn_agent.utils import process_pool, set_torch_threads
from furnace_env.scenarios import Scenario, get_scenario
from planners.evaluation import (
    Episode,
    episode_metrics,
    make_scenario_env,
    normalised_score,
    run_episode,
)

__all__ = [
    "ControllerSpec",
    "EpisodeRecord",
    "run_task",
    "evaluate_controllers",
    "BACKENDS",
    "check_backend",
    "bootstrap_ci",
    "hierarchical_bootstrap_ci",
    "nested_bootstrap_means",
    "train_seed_pairs",
    "train_seed_scores",
    "train_seed_table",
    "summarise",
    "markdown_table",
    "paired_differences",
    "paired_table",
    "sign_flip_pvalue",
]


@dataclass(frozen=True)
class ControllerSpec:
    """How to build a controller in any process: ``import_module(module).<factory>(env, **kwargs)``.

    ``env`` is the evaluation env (the oracle reads the true state through it; others ignore it).
    ``env_steps`` is the number of real environment steps the controller's training consumed.
    """

    name: str
    factory: str
    """``"package.module:function"``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    env_steps: int = 0
    train_seed: int = 0
    """Seed of the training run that made the controller's artefact (0 for an untrained controller);
    several specs of one name and different training seeds are one controller's training seeds."""

    def build(self, env):
        module, _, attr = self.factory.partition(":")
        if not attr:
            raise ValueError(f"ControllerSpec {self.name!r}: factory {self.factory!r} must be 'module:function'")
        return getattr(importlib.import_module(module), attr)(env, **self.kwargs)


@dataclass
class EpisodeRecord:
    """One evaluated episode: identifiers, metrics, and (optionally) the trajectory."""

    controller: str
    scenario: str
    seed: int
    metrics: dict[str, float]
    env_steps: int
    episode: Episode | None = None
    train_seed: int = 0
    """Training seed of the controller's artefact (see :class:`ControllerSpec`)."""

    def row(self) -> dict[str, Any]:
        return {"controller": self.controller, "train_seed": self.train_seed, "scenario": self.scenario,
                "seed": self.seed, "env_steps": self.env_steps, **self.metrics}


#: Where :func:`evaluate_controllers` runs its episodes.
BACKENDS = ("process", "ray")


def check_backend(backend: str, address: str | None = None) -> None:
    """``ValueError`` for an unknown backend or an address without Ray; ``ImportError`` naming the
    extra to install when ``backend="ray"`` and the ``ray`` package is missing. Cheap: imports nothing."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError(f"address={address!r} is for backend='ray' only")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ImportError(_NO_RAY)


_NO_RAY = "backend='ray' needs the ray package: pip install 'furnace-eblnn[ray]' (or pip install 'ray[default]')"


def _ray_task(threads: int, spec: ControllerSpec, scenario: Scenario, seed: int, keep: bool) -> EpisodeRecord:
    set_torch_threads(threads)
    return run_task(spec, scenario, seed, keep)


def run_task(spec: ControllerSpec, scenario: Scenario | str, seed: int,
             keep_trajectory: bool = False) -> EpisodeRecord:
    """Build ``spec``'s controller and run one episode of ``scenario`` from ``seed``."""
    sc = get_scenario(scenario)
    env = make_scenario_env(sc)
    try:
        controller = spec.build(env)
        ep = run_episode(controller, env, seed=seed)
    finally:
        env.close()
    return EpisodeRecord(spec.name, sc.name, int(seed), episode_metrics(ep), spec.env_steps,
                         ep if keep_trajectory else None, train_seed=int(spec.train_seed))


def evaluate_controllers(specs: Sequence[ControllerSpec], scenarios: Sequence[Scenario | str],
                         seeds: Sequence[int], workers: int | None = None,
                         trajectory_seed: int | None = None,
                         progress: Callable[[EpisodeRecord], None] | None = None,
                         backend: str = "process", address: str | None = None,
                         threads: int = 1, keep_all: bool = False) -> list[EpisodeRecord]:
    """Every controller on every scenario and seed; episodes of ``trajectory_seed`` (every episode
    with ``keep_all``) keep their arrays.

    ``backend="process"``: ``workers`` spawned processes on this machine (default: the machine's
    cores; 0 or 1 runs in this process). ``backend="ray"``: one Ray task per episode (one CPU
    each) on the cluster at ``address`` (``"auto"``, ``"ray://head:10001"``; None starts or joins
    a local instance); ``workers`` is then ignored, Ray schedules. ``threads``: torch threads per
    episode, set in every worker and, for an in-process run, in this process for the duration
    (restored after): torch's default on a many-core machine makes a planner step a hundred
    times slower. Results come back in task order whatever the backend and completion order,
    so they are reproducible and equal across backends.
    """
    check_backend(backend, address)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers={workers!r} must be None or an integer >= 0")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be an integer >= 1")
    scs = [get_scenario(s) for s in scenarios]
    tasks = [(spec, sc, int(seed), keep_all or seed == trajectory_seed) for spec in specs for sc in scs for seed in seeds]
    if backend == "ray":
        return _evaluate_on_ray(tasks, address, threads, progress)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    out = []
    if workers <= 1 or len(tasks) == 1:
        before = set_torch_threads(threads)
        try:
            for t in tasks:
                out.append(run_task(*t))
                if progress:
                    progress(out[-1])
        finally:
            set_torch_threads(before)
        return out
    with process_pool(workers, threads) as pool:
        futures = [pool.submit(run_task, *t) for t in tasks]
        for f in futures:
            out.append(f.result())
            if progress:
                progress(out[-1])
    return out


def _evaluate_on_ray(tasks: list, address: str | None, threads: int,
                     progress: Callable[[EpisodeRecord], None] | None) -> list[EpisodeRecord]:
    """One Ray task per episode; results gathered in task order. Ray is imported here only."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(_NO_RAY) from err
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_ray_task)
        refs = [remote.remote(threads, *t) for t in tasks]
        out = []
        for ref in refs:
            out.append(ray.get(ref))
            if progress:
                progress(out[-1])
        return out
    finally:
        if started:
            ray.shutdown()


def bootstrap_ci(values: Iterable[float], level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean (a single value gives a zero-width one)."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def nested_bootstrap_means(cells: Mapping[tuple[Hashable, Hashable], Iterable[float]], n_boot: int = 2000,
                           rng: np.random.Generator | None = None) -> np.ndarray:
    """Bootstrap replicates ``[n_boot]`` of a mean over strata of a mean over clusters of a mean of values.

    ``cells`` maps ``(stratum, cluster)`` to the values observed there: e.g. (scenario, training
    seed) to the returns of the evaluation episodes. Each replicate keeps every stratum (they are
    fixed by design, each weighs the same), resamples the clusters with replacement (one draw,
    shared by the strata that hold the same clusters: a training seed is one trained artefact that
    plays every scenario), then resamples the values within each drawn cell: the two-stage bootstrap
    of nested data (Davison and Hinkley 1997, sec. 3.8), whose spread covers the clusters'
    variation and the values'. Every cell must hold at least one value.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    data = {k: np.asarray(list(v), dtype=np.float64) for k, v in cells.items()}
    empty = [k for k, v in data.items() if v.size == 0]
    if not data or empty:
        raise ValueError(f"nested bootstrap: every (stratum, cluster) cell needs values; empty: {empty or 'all'}")
    strata: dict[Hashable, list[Hashable]] = {}
    for st, cl in data:
        strata.setdefault(st, []).append(cl)
    draws: dict[tuple, np.ndarray] = {}
    total = np.zeros(n_boot)
    for st, clusters in strata.items():
        key = tuple(clusters)
        if key not in draws:
            draws[key] = rng.integers(0, len(clusters), size=(n_boot, len(clusters)))
        # Within-cell replicate means [n_clusters, n_boot], then the drawn clusters' average.
        within = np.stack([x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
                           for x in (data[(st, c)] for c in clusters)])
        total += within[draws[key], np.arange(n_boot)[:, None]].mean(axis=1)
    return total / len(strata)


def hierarchical_bootstrap_ci(groups: Mapping[Hashable, Iterable[float]], level: float = 0.95,
                              n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Two-stage percentile-bootstrap interval of the mean of group means (each group weighs the same).

    ``groups``: e.g. training seed -> episode returns of that seed's artefact. Resamples groups,
    then values within each (:func:`nested_bootstrap_means`). One group gives the ordinary
    bootstrap of its values; groups of one value each, the bootstrap over groups.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    if not groups:
        return (math.nan, math.nan)
    means = nested_bootstrap_means({(0, g): v for g, v in groups.items()}, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _by_train_seed(recs: Iterable[EpisodeRecord]) -> dict[int, list[EpisodeRecord]]:
    out: dict[int, list[EpisodeRecord]] = {}
    for r in recs:
        out.setdefault(r.train_seed, []).append(r)
    return dict(sorted(out.items()))


def train_seed_pairs(seeds_a: Iterable[int], seeds_b: Iterable[int]) -> list[tuple[int, int, int]]:
    """``(label, seed of a, seed of b)``: which training seeds of two controllers meet in a paired test.

    Seeds both have meet each other; a controller with a single training seed (PI, the oracle, a
    single artefact) meets every seed of the other; a seed only one side of two multi-seed
    controllers has is left out (it has no partner)."""
    a, b = sorted(set(seeds_a)), sorted(set(seeds_b))
    if not a or not b:
        return []
    pairs = []
    for k in sorted(set(a) | set(b)):
        ka = k if k in a else (a[0] if len(a) == 1 else None)
        kb = k if k in b else (b[0] if len(b) == 1 else None)
        if ka is not None and kb is not None:
            pairs.append((k, ka, kb))
    return pairs


def train_seed_scores(records: Sequence[EpisodeRecord], reference: str = "pi",
                      oracle: str = "oracle") -> list[dict[str, Any]]:
    """Per (controller, training seed, scenario): episodes, mean return and normalised score.

    The score of each training seed's mean return against the reference's and oracle's mean
    returns on the scenario (NaN without both); the rows behind :func:`summarise`'s means, to
    show how much the training seed moves a trained controller."""
    mean_ret: dict[tuple[str, str], float] = {}
    for (ctrl, sc), recs in _groups(records).items():
        mean_ret[(ctrl, sc)] = float(np.mean([np.mean([r.metrics["return"] for r in v])
                                              for v in _by_train_seed(recs).values()]))
    rows = []
    for (ctrl, sc), recs in _groups(records).items():
        ref, orc = mean_ret.get((reference, sc)), mean_ret.get((oracle, sc))
        for k, v in _by_train_seed(recs).items():
            ret = float(np.mean([r.metrics["return"] for r in v]))
            score = (float(normalised_score(ret, ref, orc)) if ref is not None and orc is not None
                     and abs(orc - ref) > 1e-9 else math.nan)
            rows.append({"controller": ctrl, "train_seed": k, "scenario": sc, "episodes": len(v),
                         "return": ret, "score": score})
    return rows


def train_seed_table(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`train_seed_scores` as Markdown: one line per (controller, training seed), the score on
    each scenario and their mean; only controllers with more than one training seed."""
    multi = {c for c in {r["controller"] for r in rows}
             if len({r["train_seed"] for r in rows if r["controller"] == c}) > 1}
    keep = [r for r in rows if r["controller"] in multi]
    if not keep:
        return ""
    scenarios = list(dict.fromkeys(r["scenario"] for r in keep))
    lines = ["| controller | training seed | " + " | ".join(scenarios) + " | mean |",
             "|" + "---|" * (len(scenarios) + 3)]
    cells = {(r["controller"], r["train_seed"], r["scenario"]): r["score"] for r in keep}
    for ctrl, k in dict.fromkeys((r["controller"], r["train_seed"]) for r in keep):
        vals = [cells.get((ctrl, k, sc), math.nan) for sc in scenarios]
        lines.append(f"| {ctrl} | {k} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {np.mean(vals):.2f} |")
    return "\n".join(lines)


def _groups(records: Iterable[EpisodeRecord]) -> dict[tuple[str, str], list[EpisodeRecord]]:
    groups: dict[tuple[str, str], list[EpisodeRecord]] = {}
    for r in records:
        groups.setdefault((r.controller, r.scenario), []).append(r)
    return groups


def summarise(records: Sequence[EpisodeRecord], reference: str = "pi",
              oracle: str = "oracle") -> list[dict[str, Any]]:
    """Per (controller, scenario): mean metrics, the return's 95 % CI, score and fuel vs the reference.

    Means are over training seeds of the means over each seed's episodes (every training seed
    weighs the same; one training seed: the plain mean). The return's interval is the percentile
    bootstrap over episodes for one training seed, and the two-stage bootstrap over training seeds
    then episodes (:func:`hierarchical_bootstrap_ci`) for several, so it covers both sources.
    ``score`` = (R - R_reference) / (R_oracle - R_reference) on mean returns (NaN when either
    the reference or the oracle was not evaluated on that scenario); ``fuel_vs_ref`` =
    fuel / reference's fuel - 1 on means; ``train_seeds``: how many training seeds.
    """
    groups = _groups(records)
    mean = {}
    for k, v in groups.items():
        per_seed = [{m: np.mean([r.metrics[m] for r in rs]) for m in v[0].metrics}
                    for rs in _by_train_seed(v).values()]
        mean[k] = {m: float(np.mean([d[m] for d in per_seed])) for m in v[0].metrics}
    rows = []
    for (ctrl, sc), recs in groups.items():
        m = mean[(ctrl, sc)]
        seeds = _by_train_seed(recs)
        if len(seeds) == 1:
            lo, hi = bootstrap_ci([r.metrics["return"] for r in recs])
        else:
            lo, hi = hierarchical_bootstrap_ci({k: [r.metrics["return"] for r in v] for k, v in seeds.items()})
        ref, orc = mean.get((reference, sc)), mean.get((oracle, sc))
        score = math.nan
        if ref is not None and orc is not None and abs(orc["return"] - ref["return"]) > 1e-9:
            score = float(normalised_score(m["return"], ref["return"], orc["return"]))
        fuel_rel = m["fuel_kg"] / ref["fuel_kg"] - 1.0 if ref is not None and ref["fuel_kg"] > 0 else math.nan
        rows.append({"controller": ctrl, "scenario": sc, "episodes": len(recs), "return": m["return"],
                     "return_ci_lo": lo, "return_ci_hi": hi, "score": score, "iae": m["iae"],
                     "fuel_vs_ref": fuel_rel, "violation_share": m["violation_share"],
                     "co_ppm_s": m["co_ppm_s"], "trips": sum(r.metrics["trips"] for r in recs),
                     "travel_fuel": m.get("travel_fuel", math.nan), "travel_air": m.get("travel_air", math.nan),
                     "latency_ms": m["latency_ms"], "env_steps": recs[0].env_steps,
                     "train_seeds": len(seeds)})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (one line per controller and scenario)."""
    head = ("| controller | scenario | return (95 % CI) | score | IAE [K s] | fuel vs PI | violations "
            "| CO > limit [ppm s] | trips | travel fuel / air [strokes/h] | latency [ms] | env steps |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        fuel = "" if math.isnan(r["fuel_vs_ref"]) else f"{100 * r['fuel_vs_ref']:+.2f} %"
        name = r["controller"] + (f" ({r['train_seeds']} training seeds)" if r.get("train_seeds", 1) > 1 else "")
        score = "" if math.isnan(r["score"]) else f"{r['score']:.2f}"
        lines.append(
            f"| {name} | {r['scenario']} | {r['return']:.0f} ({r['return_ci_lo']:.0f}, "
            f"{r['return_ci_hi']:.0f}) | {score} | {r['iae']:.0f} | {fuel} | "
            f"{100 * r['violation_share']:.1f} % | {r['co_ppm_s']:.0f} | {r['trips']:.0f} | "
            f"{r.get('travel_fuel', math.nan):.1f} / {r.get('travel_air', math.nan):.1f} | "
            f"{r['latency_ms']:.2f} | {r['env_steps']:,} |"
        )
    return "\n".join(lines)


def sign_flip_pvalue(diffs: Iterable[float], weights: Iterable[float] | None = None,
                     n_perm: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomisation test (Fisher's sign-flip test) of a zero mean.

    Under "no difference" each paired difference is as likely negative as positive, so the
    statistic ``|sum_i w_i d_i|`` is compared with its value under every assignment of signs
    (exactly up to 16 pairs, else ``n_perm`` random ones, seeded). Distribution-free and exact for
    few pairs: with 3 pairs the smallest possible p-value is 0.25, i.e. three seeds cannot show a
    difference on one scenario, however large.
    """
    d = np.asarray(list(diffs), dtype=np.float64)
    w = np.ones_like(d) if weights is None else np.asarray(list(weights), dtype=np.float64)
    if d.size == 0:
        return math.nan
    x = w * d
    obs = abs(x.sum())
    if d.size <= 16:
        signs = 1.0 - 2.0 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, d.size))
    stats = np.abs(signs @ x)
    return float(np.mean(stats >= obs * (1 - 1e-12) - 1e-12))


def paired_differences(records: Sequence[EpisodeRecord], focus: str, reference: str = "pi",
                       oracle: str = "oracle", level: float = 0.95, alpha: float = 0.05,
                       n_boot: int = 4000, seed: int = 0) -> list[dict[str, Any]]:
    """``focus`` minus every other controller on the same episodes (same scenario and seed).

    Every controller meets the same setpoint programme, disturbances and sensor noise on a given
    (scenario, seed), so the episode-wise difference removes what the episodes share and is the
    fair test of "A beats B" on few seeds. Per scenario: the mean return difference, its
    percentile-bootstrap interval over seeds, the wins (``focus`` ahead) and the sign-flip test's
    p-value (:func:`sign_flip_pvalue`). Pooled (``scenario`` "all", where ``reference`` and
    ``oracle`` ran on every paired episode): the difference in normalised score per episode,
    averaged per scenario and then over scenarios (every scenario weighs the same, as the mean
    score over scenarios does), with a bootstrap that resamples seeds within each scenario and the
    sign-flip test with the same weights. ``significant``: p-value below ``alpha``.

    With training seeds (:attr:`EpisodeRecord.train_seed`) the episodes pair on (scenario, seed)
    within each training seed (:func:`train_seed_pairs`: a single-seed controller such as PI
    meets every training seed of the other). The mean then weighs every training seed the same,
    the interval is the two-stage bootstrap over training seeds and then seeds
    (:func:`nested_bootstrap_means`), so it covers the training runs' spread, and the sign-flip
    test runs on all the pairs (it asks whether these trained artefacts differ on these episodes).
    ``train_seeds``: how many training-seed pairings entered.
    """
    ret = {(r.controller, r.scenario, r.seed, r.train_seed): r.metrics["return"] for r in records}
    if not any(k[0] == focus for k in ret):
        raise ValueError(f"paired differences: controller {focus!r} was not evaluated; "
                         f"evaluated: {sorted({k[0] for k in ret})}")
    train_seeds: dict[str, set[int]] = {}
    for c, _, _, k in ret:
        train_seeds.setdefault(c, set()).add(k)
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    rows = []
    for ctrl in dict.fromkeys(r.controller for r in records):
        if ctrl == focus:
            continue
        pairings = train_seed_pairs(train_seeds[focus], train_seeds[ctrl])
        # scenario -> (training-seed label, seed) -> (return difference, score difference or None)
        per_sc: dict[str, dict[tuple[int, int], tuple[float, float | None]]] = {}
        for label, kf, kc in pairings:
            for (c, sc, sd, k), r_c in ret.items():
                r_f = ret.get((focus, sc, sd, kf))
                if c != ctrl or k != kc or r_f is None:
                    continue
                r_pi = _single(ret, reference, sc, sd, label)
                r_or = _single(ret, oracle, sc, sd, label)
                gap = None if r_pi is None or r_or is None or r_or == r_pi else r_or - r_pi
                per_sc.setdefault(sc, {})[(label, sd)] = (r_f - r_c, None if gap is None else (r_f - r_c) / gap)
        multi = len(pairings) > 1
        for sc, pairs in per_sc.items():
            d = np.array([v[0] for v in pairs.values()])
            if multi:
                cells = _cells({sc: pairs}, 0)
                boot = nested_bootstrap_means(cells, n_boot, np.random.default_rng(seed))
                lo, hi = (float(v) for v in np.quantile(boot, q))
                w = _cell_weights({sc: pairs})
                mean = float((w * d).sum())
            else:
                lo, hi = bootstrap_ci(d, level=level, n_boot=n_boot, seed=seed)
                w, mean = None, float(d.mean())
            pval = sign_flip_pvalue(d, w, seed=seed)
            rows.append({"focus": focus, "controller": ctrl, "scenario": sc, "unit": "return",
                         "pairs": int(d.size), "diff": mean, "ci_lo": lo, "ci_hi": hi,
                         "wins": int((d > 0).sum()), "p_value": pval, "alpha": alpha,
                         "significant": bool(pval < alpha), "train_seeds": len(pairings)})
        scored = {sc: pairs for sc, pairs in per_sc.items() if all(v[1] is not None for v in pairs.values())}
        if scored and len(scored) == len(per_sc):
            if multi:
                boot = nested_bootstrap_means(_cells(scored, 1), n_boot, rng)
            else:
                xs = [np.array([v[1] for v in pairs.values()]) for pairs in scored.values()]
                boot = np.mean([x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1) for x in xs], axis=0)
            lo, hi = (float(v) for v in np.quantile(boot, q))
            d = np.concatenate([[v[1] for v in pairs.values()] for pairs in scored.values()])
            w = _cell_weights(scored)
            pval = sign_flip_pvalue(d, w, seed=seed)
            rows.append({"focus": focus, "controller": ctrl, "scenario": "all", "unit": "score",
                         "pairs": int(d.size), "diff": float((w * d).sum()), "ci_lo": lo, "ci_hi": hi,
                         "wins": int((d > 0).sum()), "p_value": pval, "alpha": alpha,
                         "significant": bool(pval < alpha), "train_seeds": len(pairings)})
    return rows


def _single(ret: dict, ctrl: str, sc: str, sd: int, label: int) -> float | None:
    """A reference controller's return on an episode: its own training seed ``label`` if it has
    one, else its only one (PI and the oracle are untrained)."""
    if (ctrl, sc, sd, label) in ret:
        return ret[(ctrl, sc, sd, label)]
    found = [v for (c, s, d, _), v in ret.items() if c == ctrl and s == sc and d == sd]
    return found[0] if len(found) == 1 else None


def _cells(per_sc: dict[str, dict[tuple[int, int], tuple]], index: int) -> dict[tuple[str, int], list[float]]:
    """``(scenario, training-seed label) -> differences`` (``index`` 0: returns, 1: scores)."""
    cells: dict[tuple[str, int], list[float]] = {}
    for sc, pairs in per_sc.items():
        for (label, _), v in pairs.items():
            cells.setdefault((sc, label), []).append(v[index])
    return cells


def _cell_weights(per_sc: dict[str, dict[tuple[int, int], tuple]]) -> np.ndarray:
    """Per pair (in ``per_sc``'s order): every scenario, then every training seed within it, then every
    seed within that, weighs the same; the weights sum to one."""
    out = []
    for pairs in per_sc.values():
        labels: dict[int, int] = {}
        for label, _ in pairs:
            labels[label] = labels.get(label, 0) + 1
        out += [1.0 / (len(per_sc) * len(labels) * labels[label]) for label, _ in pairs]
    return np.asarray(out)


def paired_table(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`paired_differences` as Markdown: one line per controller, the pooled score difference
    first, then each scenario's return difference (mean, interval, wins/pairs)."""
    if not rows:
        return ""
    focus = rows[0]["focus"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows if r["scenario"] != "all"))
    pooled = any(r["scenario"] == "all" for r in rows)
    head = ["controller"] + (["all scenarios (score)"] if pooled else []) + [f"{s} (return)" for s in scenarios]
    lines = [f"{focus} minus each controller on the same episodes (scenario and seed): mean difference "
             "(95 % bootstrap interval), wins / pairs and the paired sign-flip test's p-value; * where "
             f"p < {rows[0]['alpha']:g} (the smallest p-value n pairs allow is 2 / 2^n: 0.25 for three seeds).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = {"score": "{:+.2f}", "return": "{:+.1f}"}
    for ctrl in dict.fromkeys(r["controller"] for r in rows):
        by = {r["scenario"]: r for r in rows if r["controller"] == ctrl}
        cells = []
        for sc in (["all"] if pooled else []) + scenarios:
            r = by.get(sc)
            if r is None:
                cells.append("")
                continue
            f = fmt[r["unit"]]
            star = "*" if r["significant"] else ""
            cells.append(f"{f.format(r['diff'])}{star} ({f.format(r['ci_lo'])}, {f.format(r['ci_hi'])}) "
                         f"{r['wins']}/{r['pairs']}, p {r['p_value']:.2g}")
        lines.append(f"| {ctrl} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
