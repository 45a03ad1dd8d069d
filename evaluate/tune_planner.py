"""Tune the EB-LNN planner's objective and budget on training-mix episodes (never the evaluation seeds).

    python evaluate/tune_planner.py --checkpoint runs/artifacts/world_model/best.pt
    python evaluate/tune_planner.py --grid beta=0,0.01,0.03 smooth=0.5 horizon=12 --episodes 4
    python evaluate/tune_planner.py --grid co_backoff=0,0.5 excess_air=-0.05:1.0,0.08:1.0

Every grid point runs the planner (``planners.factories.make_eblnn_planner``) and the reference
PI controller on the same training-mix episodes (seeds 900 100+, disjoint from PI tuning and from
evaluation) and prints the mean return of each, the planner's margin over PI, trips and latency.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planners.benchmark import ControllerSpec, evaluate_controllers  # noqa: E402

TUNE_SEED0 = 900_100


def _value(v: str):
    if ":" in v:  # a range, e.g. excess_air=0.08:1.0
        return tuple(_value(x) for x in v.split(":"))
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/artifacts/world_model/best.pt")
    parser.add_argument("--grid", nargs="*", default=["beta=0,0.01,0.03,0.1"],
                        help="name=v1,v2 ... (make_eblnn_planner / optimiser / objective options)")
    parser.add_argument("--episodes", type=int, default=4, help="training-mix episodes per grid point")
    parser.add_argument("--steps", type=int, default=120, help="steps per episode")
    parser.add_argument("--scenario", default="train_mix")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    grid = {}
    for item in args.grid:
        name, _, vals = item.partition("=")
        if not vals:
            parser.error(f"--grid item {item!r}: expected name=v1,v2")
        grid[name] = [_value(v) for v in vals.split(",")]
    from dataclasses import replace

    from furnace_env.scenarios import get_scenario

    scenario = replace(get_scenario(args.scenario), n_steps=args.steps)
    seeds = [TUNE_SEED0 + i for i in range(args.episodes)]
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    specs = [ControllerSpec("pi", "planners.pi:make_pi")]
    specs += [ControllerSpec(f"p{i}", "planners.factories:make_eblnn_planner",
                             {"checkpoint": args.checkpoint, **pt}) for i, pt in enumerate(points)]
    recs = evaluate_controllers(specs, [scenario], seeds, workers=args.workers)
    by = {}
    for r in recs:
        by.setdefault(r.controller, []).append(r.metrics)
    pi_ret = np.mean([m["return"] for m in by["pi"]])
    pi_viol = np.mean([m["violation_share"] for m in by["pi"]])
    print(f"PI mean return {pi_ret:.1f} (violations {pi_viol:.3f}) over {len(seeds)} episodes of {args.steps} steps ({args.scenario})")
    rows = []
    for i, pt in enumerate(points):
        ms = by[f"p{i}"]
        row = {**pt, "return": float(np.mean([m["return"] for m in ms])),
               "margin_vs_pi": float(np.mean([m["return"] for m in ms]) - pi_ret),
               "violations": float(np.mean([m["violation_share"] for m in ms])),
               "fuel_vs_pi": float(sum(m["fuel_kg"] for m in ms) / sum(m["fuel_kg"] for m in by["pi"]) - 1.0),
               "trips": int(sum(m["trips"] for m in ms)), "latency_ms": float(np.mean([m["latency_ms"] for m in ms]))}
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


if __name__ == "__main__":
    main()
