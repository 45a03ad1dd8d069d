"""Tune the reference PI controller honestly: SIMC start, then a grid search on the training mix.

The temperature loop's first-order-plus-dead-time model is identified from a fuel step
at the nominal operating point; SIMC (Skogestad 2003) gives starting gains; a grid around
them (and over the O2 setpoint, the cross-limit and the CO override) is scored by the mean
return on training-mix episodes whose seeds are never used for evaluation. The winner is
printed as ``PIConfig`` arguments; the defaults in ``furnace_env/pi.py`` are that result.

    python evaluate/tune_pi.py            # about 2-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import furnace_env  # noqa: E402,F401
from furnace_env.pi import PIConfig, PIController  # noqa: E402
from planners.evaluation import episode_metrics, run_episode  # noqa: E402

TUNE_SEEDS = tuple(range(900_000, 900_008))


def identify_fopdt(dt: float = 5.0, step: float = 0.04) -> tuple[float, float, float]:
    """Gain (K per unit firing fraction), time constant and dead time from a fuel step."""
    env = gym.make("Furnace-v0", scenario=dict(name="id", load_wander=0.0, time_jitter=0.0, size_jitter=0.0),
                   sensor_noise=False)
    obs, info = env.reset(seed=0)
    a0 = env.unwrapped.command
    a = a0 + np.array([2 * step, 2 * step * 1.0])
    temps = [obs[0]]
    for _ in range(200):
        obs, *_ = env.step(a)
        temps.append(obs[0])
    temps = np.asarray(temps) - temps[0]
    gain = temps[-1] / step
    t63 = np.argmax(temps >= 0.632 * temps[-1]) * dt
    t05 = np.argmax(temps >= 0.05 * temps[-1]) * dt
    return float(gain), float(t63 - t05), float(t05)


def score(cfg: PIConfig, seeds=TUNE_SEEDS) -> float:
    env = gym.make("Furnace-v0", scenario="train_mix")
    return float(np.mean([episode_metrics(run_episode(PIController(cfg), env, s))["return"] for s in seeds]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 2-point grid (for tests)")
    args = ap.parse_args()
    k, tau, theta = identify_fopdt()
    tc = max(theta, 10.0) + 5.0
    kp0 = tau / (k * (tc + theta))
    ti0 = min(tau, 4 * (tc + theta))
    print(f"identified: gain={k:.0f} K/fraction  tau={tau:.0f} s  dead time={theta:.0f} s")
    print(f"SIMC start: kp={kp0:.4f} /K  ti={ti0:.0f} s")
    grid = {
        "kp": [kp0 * f for f in ((1.0, 2.0) if args.quick else (1.0, 1.5, 2.0, 3.0))],
        "ti": [ti0 * f for f in ((1.0,) if args.quick else (0.5, 1.0))],
        "o2_sp_ref": (2.5,) if args.quick else (2.0, 2.5, 3.0),
        "cross_limit_lambda": (1.05,) if args.quick else (1.02, 1.06, 1.10),
        "co_override": (150.0,) if args.quick else (100.0, 200.0),
    }
    best, best_ret = None, -np.inf
    for values in itertools.product(*grid.values()):
        cfg = dataclasses.replace(PIConfig(), **dict(zip(grid, values, strict=True)))
        ret = score(cfg)
        if ret > best_ret:
            best, best_ret = cfg, ret
            print(f"  better: return {ret:9.1f}  {dict(zip(grid, np.round(values, 4), strict=True))}")
    print(f"best mean return on {len(TUNE_SEEDS)} training-mix episodes: {best_ret:.1f}")
    print("PIConfig(" + ", ".join(f"{k}={getattr(best, k)!r}" for k in grid) + ")")


if __name__ == "__main__":
    main()
