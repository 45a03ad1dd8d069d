"""Benchmark Furnace-v0: single-env steps/s against Pendulum-v1, and batched physics throughput.

    python evaluate/bench_env.py                 # about 5 s
    python evaluate/bench_env.py --n 4096 --steps 2000

Goals (issue #2): single-env ratio Furnace-v0 / Pendulum-v1 >= 1.0, measured in the same run
so machine noise cancels; batched physics >= 5 million furnace-steps/s at N = 4096.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium as gym
import numpy as np

import furnace_env  # noqa: F401  (registers Furnace-v0)
from furnace_env.cost import CostWeights
from furnace_env.physics import FurnaceParams, FurnaceSim, step_kernel


def single_env_steps_per_s(env_id: str, steps: int, seed: int = 0, **kw) -> float:
    """Steps per second of ``gym.make(env_id)`` under a fixed random action sequence."""
    env = gym.make(env_id, **kw)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, *env.action_space.shape))
    actions = actions.astype(np.float32)
    for a in actions[:100]:  # warm-up: JIT, caches
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def _batched_sim(n: int, seed: int) -> tuple[FurnaceSim, np.ndarray, np.ndarray]:
    """N furnaces at a nominal operating point, their disturbances and 8 slightly varied commands."""
    params, weights = FurnaceParams(), CostWeights()
    sim = FurnaceSim(n, params, weights)
    rng = np.random.default_rng(seed)
    dist = np.tile(np.array([[950.0, 7.4e5, 1.0, 0.02]]), (n, 1))
    cmd = np.zeros((n, 2))
    sim.reset_rows(np.arange(n), dist, np.full(n, 1.15), cmd)
    cmds = cmd[None] + rng.normal(scale=0.02, size=(8, n, 2))
    return sim, dist, cmds


def batched_steps_per_s(n: int, steps: int, seed: int = 0) -> float:
    """Furnace-steps per second of the batched kernel (N furnaces, one call per control step)."""
    sim, dist, cmds = _batched_sim(n, seed)
    sim.step(cmds[0], dist)  # warm-up (JIT)
    t0 = time.perf_counter()
    for k in range(steps):
        sim.step(cmds[k % 8], dist)
    return n * steps / (time.perf_counter() - t0)


def kernel_cpu_ns(n: int, steps: int, seed: int = 0) -> float:
    """CPU time of the serial kernel per furnace-step (one thread; counts only this thread's time,
    so other jobs on the machine barely move it, unlike the wall-clock figures)."""
    sim, dist, cmds = _batched_sim(n, seed)

    def run(k: int) -> None:
        step_kernel(sim.state, sim.o2_buf, sim.co_buf, sim.k, cmds[k % 8], dist, sim.p, sim.w, sim.obs, sim.report,
                    sim.cost, sim.tripped)
        sim.k += sim.params.n_substeps

    run(0)  # warm-up (JIT)
    t0 = time.thread_time()
    for k in range(steps):
        run(k)
    return (time.thread_time() - t0) / (n * steps) * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single_steps", type=int, default=20_000, help="steps per single-env measurement")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 64, 512, 4096], help="batch sizes")
    parser.add_argument("--steps", type=int, default=500, help="control steps per batched measurement")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many repeats")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    # Other jobs on a shared machine move every figure here; the load says how much.
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    best = lambda f: max(f() for _ in range(args.repeats))  # noqa: E731
    # Interleave the two envs and take the median of the paired ratios: on a shared VM the
    # speed of the machine drifts between measurements more than the envs differ.
    pairs = [(single_env_steps_per_s("Furnace-v0", args.single_steps),
              single_env_steps_per_s("Pendulum-v1", args.single_steps)) for _ in range(2 * args.repeats + 1)]
    furnace, pendulum = (float(np.median(x)) for x in zip(*pairs, strict=True))
    ratio = float(np.median([f / p for f, p in pairs]))
    print("| benchmark | figure |")
    print("|---|---|")
    print(f"| gym.make('Furnace-v0') steps/s (median) | {furnace:,.0f} |")
    print(f"| gym.make('Pendulum-v1') steps/s (median) | {pendulum:,.0f} |")
    print(f"| ratio Furnace-v0 / Pendulum-v1, median of {len(pairs)} paired runs (goal >= 1.0) | {ratio:.2f} |")
    for n in args.n:
        rate = best(lambda n=n: batched_steps_per_s(n, args.steps))
        print(f"| batched physics, N = {n}, furnace-steps/s | {rate:,.0f} |")
    ns = min(kernel_cpu_ns(max(args.n), args.steps) for _ in range(args.repeats))
    print(f"| serial kernel, N = {max(args.n)}, CPU ns per furnace-step (one thread, best of {args.repeats}) | {ns:.0f} |")
    print("load average (1, 5, 15 min) at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
