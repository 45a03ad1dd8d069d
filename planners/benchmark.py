"""The comparison harness: run controllers over scenarios and seeds, in parallel, and summarise.

A controller is named by a :class:`ControllerSpec`: a picklable recipe (an importable factory
and its keyword arguments) so that worker processes can build their own copy. Episodes are
independent ``(controller, scenario, seed)`` tasks spread over a process pool.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np

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
    "process_pool",
    "run_task",
    "evaluate_controllers",
    "bootstrap_ci",
    "summarise",
    "markdown_table",
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


def _worker_init(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes with one torch thread each (for episode-level parallelism).

    Spawn, not fork: forking a process that has started torch's thread pools can deadlock.
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_worker_init, initargs=(1,))


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
                         progress: Callable[[EpisodeRecord], None] | None = None) -> list[EpisodeRecord]:
    """Every controller on every scenario and seed; episodes of ``trajectory_seed`` keep their arrays.

    ``workers``: processes (default: the machine's cores; 0 or 1 runs in this process).
    Results come back in task order whatever the completion order, so they are reproducible.
    """
    scs = [get_scenario(s) for s in scenarios]
    tasks = [(spec, sc, int(seed), seed == trajectory_seed) for spec in specs for sc in scs for seed in seeds]
    workers = os.cpu_count() or 1 if workers is None else int(workers)
    if workers <= 1 or len(tasks) == 1:
        out = []
        for t in tasks:
            out.append(run_task(*t))
            if progress:
                progress(out[-1])
        return out
    with process_pool(workers) as pool:
        futures = [pool.submit(run_task, *t) for t in tasks]
        out = []
        for f in futures:
            out.append(f.result())
            if progress:
                progress(out[-1])
    return out


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
                     "latency_ms": m["latency_ms"], "env_steps": recs[0].env_steps})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (one line per controller and scenario)."""
    head = ("| controller | scenario | return (95 % CI) | score | IAE [K s] | fuel vs PI | violations "
            "| CO > limit [ppm s] | trips | latency [ms] | env steps |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        fuel = "" if math.isnan(r["fuel_vs_ref"]) else f"{100 * r['fuel_vs_ref']:+.2f} %"
        score = "" if math.isnan(r["score"]) else f"{r['score']:.2f}"
        lines.append(
            f"| {r['controller']} | {r['scenario']} | {r['return']:.0f} ({r['return_ci_lo']:.0f}, "
            f"{r['return_ci_hi']:.0f}) | {score} | {r['iae']:.0f} | {fuel} | "
            f"{100 * r['violation_share']:.1f} % | {r['co_ppm_s']:.0f} | {r['trips']:.0f} | "
            f"{r['latency_ms']:.2f} | {r['env_steps']:,} |"
        )
    return "\n".join(lines)
