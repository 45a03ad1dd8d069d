"""Benchmark the oracle planner against the reference PI controller, and check the oracle's budget.

    python evaluate/bench_planners.py                                   # all scenarios, seed 0, ~10 min
    python evaluate/bench_planners.py --scenarios nominal --seeds 0 1 --variants default double_n
    python evaluate/bench_planners.py --scenarios nominal --steps 40 --variants default   # tiny

Each variant is a set of :func:`planners.oracle.make_oracle` overrides; ``default`` is the
oracle as the comparison harness builds it, ``double_n`` and ``double_iters`` double its
planning budget (a near-optimal oracle barely improves), ``h24``/``h40``/``h60`` change the horizon,
``raw_coords`` searches the env's raw actions, ``mppi_matched``/``random_matched`` swap in the
other gradient-free optimisers at the default's number of evaluations per step.
Prints a markdown table of returns, the gain over PI and the mean planning latency.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from furnace_env.pi import PIController
from furnace_env.scenarios import EVAL_SCENARIOS, get_scenario
from planners.evaluation import episode_metrics, make_scenario_env, run_episode
from planners.optim import make_matched_optimizer, make_optimizer
from planners.oracle import DEFAULT_ORACLE_OPTIMIZER, make_oracle

#: The default oracle's planning budget, in objective evaluations per control step.
BUDGET = make_optimizer("cem", **DEFAULT_ORACLE_OPTIMIZER).nominal_evals()
_MPPI = {"iterations": 5, "sigma": 0.1, "beta": 3.0}

VARIANTS: dict[str, dict] = {
    "default": {},
    "double_n": {"n_candidates": 2 * DEFAULT_ORACLE_OPTIMIZER["n_candidates"]},
    "double_iters": {"iterations": 2 * DEFAULT_ORACLE_OPTIMIZER["iterations"]},
    "h24": {"horizon": 24},
    "h40": {"horizon": 40},
    "h60": {"horizon": 60},
    "raw_coords": {"coords": "raw"},
    # Peers of the default CEM at the same number of evaluations per step.
    "mppi_matched": {"optimizer": "mppi", **_MPPI,
                     "n_candidates": make_matched_optimizer("mppi", BUDGET, **_MPPI).config.n_candidates},
    "random_matched": {"optimizer": "random", "n_candidates": int(BUDGET)},
}


def run(scenario: str, seed: int, variant: str | None, steps: int | None) -> dict:
    sc = get_scenario(scenario)
    if steps is not None:
        sc = replace(sc, n_steps=steps)
    env = make_scenario_env(sc)
    ctl = PIController() if variant is None else make_oracle(env, **VARIANTS[variant])
    t0 = time.perf_counter()
    m = episode_metrics(run_episode(ctl, env, seed))
    m["wall_s"] = time.perf_counter() - t0
    return {"controller": "pi" if variant is None else f"oracle[{variant}]", "scenario": scenario,
            "seed": seed, **m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=list(EVAL_SCENARIOS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--variants", nargs="+", default=["default", "double_n"], choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=None, help="shorten episodes (smoke runs)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for sc in args.scenarios:
        for seed in args.seeds:
            for variant in (None, *args.variants):
                r = run(sc, seed, variant, args.steps)
                rows.append(r)
                print(f"{r['controller']:22s} {sc:13s} seed {seed}  return {r['return']:9.1f}  "
                      f"trips {r['trips']:.0f}  fuel {r['fuel_kg']:5.1f} kg  IAE {r['iae']:7.0f} K s  "
                      f"latency {r['latency_ms']:6.1f} ms  ({r['wall_s']:.0f} s)", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))
    # Markdown summary: mean return per controller and scenario, gain over PI in per cent.
    ctrls = list(dict.fromkeys(r["controller"] for r in rows))
    print("\n| scenario | " + " | ".join(ctrls) + " |")
    print("|---" * (len(ctrls) + 1) + "|")
    for sc in args.scenarios:
        mean = {c: np.mean([r["return"] for r in rows if r["controller"] == c and r["scenario"] == sc])
                for c in ctrls}
        cells = [f"{mean[c]:.1f}" + ("" if c == "pi" else f" ({100 * (mean[c] - mean['pi']) / abs(mean['pi']):+.1f} %)")
                 for c in ctrls]
        print(f"| {sc} | " + " | ".join(cells) + " |")
    lat = {c: np.mean([r["latency_ms"] for r in rows if r["controller"] == c]) for c in ctrls}
    print("\nmean latency per step (ms): " + ", ".join(f"{c} {v:.1f}" for c, v in lat.items()))


if __name__ == "__main__":
    main()
