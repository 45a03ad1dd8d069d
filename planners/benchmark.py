"""The comparison harness: run controllers over scenarios and seeds, in parallel, and summarise.

A controller is named by a :class:`ControllerSpec`: a picklable recipe (an importable factory
and its keyword arguments) so that worker processes can build their own copy. Episodes are
independent ``(controller, scenario, seed)`` tasks spread over a process pool on this machine,
or over a Ray cluster (``backend="ray"``; ``docs/multi_machine.md``), with the same records in
the same order either way.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from collections.abc import Callable, Iterable, Sequence
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

    def row(self) -> dict[str, Any]:
        return {"controller": self.controller, "scenario": self.scenario, "seed": self.seed,
                "env_steps": self.env_steps, **self.metrics}


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
                         ep if keep_trajectory else None)


def evaluate_controllers(specs: Sequence[ControllerSpec], scenarios: Sequence[Scenario | str],
                         seeds: Sequence[int], workers: int | None = None,
                         trajectory_seed: int | None = None,
                         progress: Callable[[EpisodeRecord], None] | None = None,
                         backend: str = "process", address: str | None = None,
                         threads: int = 1) -> list[EpisodeRecord]:
    """Every controller on every scenario and seed; episodes of ``trajectory_seed`` keep their arrays.

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
    tasks = [(spec, sc, int(seed), seed == trajectory_seed) for spec in specs for sc in scs for seed in seeds]
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


def summarise(records: Sequence[EpisodeRecord], reference: str = "pi",
              oracle: str = "oracle") -> list[dict[str, Any]]:
    """Per (controller, scenario): mean metrics, the return's 95 % CI, score and fuel vs the reference.

    ``score`` = (R - R_reference) / (R_oracle - R_reference) on mean returns (NaN when either
    the reference or the oracle was not evaluated on that scenario); ``fuel_vs_ref`` =
    fuel / reference's fuel - 1 on means.
    """
    groups: dict[tuple[str, str], list[EpisodeRecord]] = {}
    for r in records:
        groups.setdefault((r.controller, r.scenario), []).append(r)
    mean = {k: {m: float(np.mean([r.metrics[m] for r in v])) for m in v[0].metrics} for k, v in groups.items()}
    rows = []
    for (ctrl, sc), recs in groups.items():
        m = mean[(ctrl, sc)]
        lo, hi = bootstrap_ci([r.metrics["return"] for r in recs])
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
                     "latency_ms": m["latency_ms"], "env_steps": recs[0].env_steps})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (one line per controller and scenario)."""
    head = ("| controller | scenario | return (95 % CI) | score | IAE [K s] | fuel vs PI | violations "
            "| CO > limit [ppm s] | trips | travel fuel / air [strokes/h] | latency [ms] | env steps |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        fuel = "" if math.isnan(r["fuel_vs_ref"]) else f"{100 * r['fuel_vs_ref']:+.2f} %"
        score = "" if math.isnan(r["score"]) else f"{r['score']:.2f}"
        lines.append(
            f"| {r['controller']} | {r['scenario']} | {r['return']:.0f} ({r['return_ci_lo']:.0f}, "
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
    """
    ret = {(r.controller, r.scenario, r.seed): r.metrics["return"] for r in records}
    if not any(k[0] == focus for k in ret):
        raise ValueError(f"paired differences: controller {focus!r} was not evaluated; "
                         f"evaluated: {sorted({k[0] for k in ret})}")
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    rows = []
    for ctrl in dict.fromkeys(r.controller for r in records):
        if ctrl == focus:
            continue
        per_sc: dict[str, dict[int, tuple[float, float | None]]] = {}
        for (c, sc, sd), r_c in ret.items():
            r_f = ret.get((focus, sc, sd))
            if c != ctrl or r_f is None:
                continue
            r_pi, r_or = ret.get((reference, sc, sd)), ret.get((oracle, sc, sd))
            gap = None if r_pi is None or r_or is None or r_or == r_pi else r_or - r_pi
            per_sc.setdefault(sc, {})[sd] = (r_f - r_c, None if gap is None else (r_f - r_c) / gap)
        for sc, pairs in per_sc.items():
            d = np.array([v[0] for v in pairs.values()])
            lo, hi = bootstrap_ci(d, level=level, n_boot=n_boot, seed=seed)
            pval = sign_flip_pvalue(d, seed=seed)
            rows.append({"focus": focus, "controller": ctrl, "scenario": sc, "unit": "return",
                         "pairs": int(d.size), "diff": float(d.mean()), "ci_lo": lo, "ci_hi": hi,
                         "wins": int((d > 0).sum()), "p_value": pval, "alpha": alpha,
                         "significant": bool(pval < alpha)})
        scored = {sc: np.array([v[1] for v in pairs.values()]) for sc, pairs in per_sc.items()
                  if all(v[1] is not None for v in pairs.values())}
        if scored and len(scored) == len(per_sc):
            boot = np.mean([x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
                            for x in scored.values()], axis=0)
            lo, hi = (float(v) for v in np.quantile(boot, q))
            d = np.concatenate(list(scored.values()))
            w = np.concatenate([np.full(x.size, 1.0 / (x.size * len(scored))) for x in scored.values()])
            pval = sign_flip_pvalue(d, w, seed=seed)
            rows.append({"focus": focus, "controller": ctrl, "scenario": "all", "unit": "score",
                         "pairs": int(d.size), "diff": float((w * d).sum()), "ci_lo": lo, "ci_hi": hi,
                         "wins": int((d > 0).sum()), "p_value": pval, "alpha": alpha,
                         "significant": bool(pval < alpha)})
    return rows


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
