"""Planning latency of the EB-LNN MPC at its default budget: fused CfC path vs stock ncps, same run.

    python evaluate/bench_eblnn_planner.py --checkpoint runs/artifacts/world_model/best.pt

Runs the same nominal episode prefix with ``fast=True`` and ``fast=False`` (identical weights,
seed and budget), alternating the two to cancel machine drift, and reports the mean planning
time per control step of each, their ratio, and the largest difference between the actions the
two paths chose (the plans must agree).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import furnace_env  # noqa: E402,F401
from planners.factories import DEFAULT_HORIZON, OPTIMIZER_KWARGS, make_eblnn_planner  # noqa: E402


def run(checkpoint: str, fast: bool, steps: int, optimizer: str) -> tuple[np.ndarray, np.ndarray]:
    env = gym.make("Furnace-v0", scenario="nominal")
    ctrl = make_eblnn_planner(env, checkpoint=checkpoint, optimizer=optimizer, fast=fast)
    obs, _ = env.reset(seed=10_000)
    actions = []
    for _ in range(steps):
        a, _ = ctrl.predict(obs)
        actions.append(a)
        obs, *_ = env.step(a)
    return np.asarray(actions), np.asarray(ctrl.latencies[1:])  # the first call warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/artifacts/world_model/best.pt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--optimizer", default="langevin")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread; budget: "
          f"{OPTIMIZER_KWARGS.get(args.optimizer, 'matched')} x horizon {DEFAULT_HORIZON}")
    lat = {True: [], False: []}
    acts = {}
    for _ in range(args.repeats):
        for fast in (True, False):
            a, t = run(args.checkpoint, fast, args.steps, args.optimizer)
            lat[fast].append(t)
            acts[fast] = a
    fast_ms = 1e3 * float(np.mean(np.concatenate(lat[True])))
    stock_ms = 1e3 * float(np.mean(np.concatenate(lat[False])))
    print("| path | planning latency per control step [ms] |")
    print("|---|---|")
    print(f"| fused CfC (fast=True) | {fast_ms:.1f} |")
    print(f"| stock ncps CfC (fast=False) | {stock_ms:.1f} |")
    print(f"| speed-up (goal >= 5x) | {stock_ms / fast_ms:.2f}x |")
    print(f"| max |action difference| between the paths | {np.abs(acts[True] - acts[False]).max():.2e} |")


if __name__ == "__main__":
    main()
