"""Planning latency of the EB-LNN MPC at its default budget: fused CfC path vs stock ncps, same run.

    python evaluate/bench_eblnn_planner.py --checkpoint runs/artifacts/world_model/best.pt
    python evaluate/bench_eblnn_planner.py --set horizon=12                # another budget

Runs the same nominal episode prefix with ``fast=True`` and ``fast=False`` (identical weights,
seed and budget), alternating the two to cancel machine drift, and reports the mean and median
planning time per control step of each, their ratio, and the largest difference between the
actions the two paths chose (the plans must agree).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import furnace_env  # noqa: E402,F401
from planners.factories import (  # noqa: E402
    DEFAULT_HORIZON,
    OPTIMIZER_DEFAULTS,
    make_eblnn_planner,
    parse_options,
)
from planners.optim import LangevinConfig  # noqa: E402


def run(checkpoint: str, fast: bool, steps: int, optimizer: str,
        options: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Actions and planning latencies (s; the first, warm-up call dropped) of one episode prefix."""
    env = gym.make("Furnace-v0", scenario="nominal")
    ctrl = make_eblnn_planner(env, checkpoint=checkpoint, optimizer=optimizer, fast=fast, **(options or {}))
    obs, _ = env.reset(seed=10_000)
    actions = []
    for _ in range(steps):
        a, _ = ctrl.predict(obs)
        actions.append(a)
        obs, *_ = env.step(a)
    return np.asarray(actions), np.asarray(ctrl.latencies[1:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/artifacts/world_model/best.pt")
    parser.add_argument("--steps", type=int, default=25, help="control steps per episode prefix")
    parser.add_argument("--repeats", type=int, default=2, help="episode prefixes per path, alternating")
    parser.add_argument("--optimizer", default="langevin")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="planner options for both paths (e.g. horizon=12 n_candidates=24 iterations=4)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        options = parse_options(args.set)
    except ValueError as err:
        parser.error(f"--set: {err}")
    if "fast" in options:
        parser.error("--set fast=...: the benchmark runs both paths; fast is not an option here")
    torch.set_num_threads(args.threads)
    langevin = LangevinConfig()
    budget = ({"n_candidates": langevin.n_candidates, "iterations": langevin.iterations} if args.optimizer == "langevin"
              else {**OPTIMIZER_DEFAULTS.get(args.optimizer, {}), "matched": True})
    budget["horizon"] = DEFAULT_HORIZON
    budget.update({k: v for k, v in options.items() if k in ("n_candidates", "iterations", "horizon")})
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); budget: "
          f"{budget}; options: {options or 'defaults'}")
    lat: dict[bool, list[np.ndarray]] = {True: [], False: []}
    acts = {}
    for _ in range(args.repeats):
        for fast in (True, False):
            a, t = run(args.checkpoint, fast, args.steps, args.optimizer, options)
            lat[fast].append(t)
            acts[fast] = a
    res = {"options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}
    for fast, key in ((True, "fast"), (False, "stock")):
        t = np.concatenate(lat[fast])
        res[f"{key}_mean_ms"], res[f"{key}_median_ms"] = 1e3 * float(np.mean(t)), 1e3 * float(np.median(t))
    res["speedup_mean"] = res["stock_mean_ms"] / res["fast_mean_ms"]
    res["speedup_median"] = res["stock_median_ms"] / res["fast_median_ms"]
    res["max_action_diff"] = float(np.abs(acts[True] - acts[False]).max())
    print("| path | planning latency per control step, mean / median [ms] |")
    print("|---|---|")
    print(f"| fused CfC (fast=True) | {res['fast_mean_ms']:.1f} / {res['fast_median_ms']:.1f} |")
    print(f"| stock ncps CfC (fast=False) | {res['stock_mean_ms']:.1f} / {res['stock_median_ms']:.1f} |")
    print(f"| speed-up (goal >= 5x) | {res['speedup_mean']:.2f}x / {res['speedup_median']:.2f}x |")
    print(f"| max |action difference| between the paths | {res['max_action_diff']:.2e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
