"""Tune the EB-LNN planner's objective and budget on training-mix episodes (never the evaluation seeds).

    python evaluate/tune_planner.py --checkpoint runs/artifacts/world_model/best.pt
    python evaluate/tune_planner.py --grid beta=0,0.01,0.03 smooth=0.5 horizon=12 --episodes 4
    python evaluate/tune_planner.py --grid co_backoff=0,0.5 excess_air=-0.05:1.0,0.08:1.0

    python evaluate/tune_planner.py --scenario eval --steps 0 --episodes 2 --grid beta=0,0.1
    python evaluate/tune_planner.py --scenario eval --steps 0 --grid optimizer=cem init_std=0.1 opt_beta=2,3
    python evaluate/tune_planner.py --scenario eval --steps 0 --grid checkpoint=a/best.pt,b/best.pt,a/best.pt:b/best.pt

(``opt_<name>`` sets an optimiser option that an objective option shadows, e.g. CEM's noise
colour ``opt_beta`` beside the energy weight ``beta``; ``a:b`` as a checkpoint plans on the
ensemble of both models.)

Every grid point runs the planner (``planners.factories.make_eblnn_planner``) and the reference
PI controller on the same episodes (tuning seeds 900 100+, disjoint from PI tuning and from
evaluation; the training mix by default, or named scenarios, ``eval`` for the five evaluation
scenarios) and prints the mean return of each, the planner's margin over PI (the mean of the
per-scenario margins, and each scenario's), violations, fuel, trips, latency and actuator travel
(fuel valve + air damper, full strokes per hour).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planners.benchmark import ControllerSpec, evaluate_controllers  # noqa: E402
from planners.factories import option_value  # noqa: E402
from planners.objective import ObjectiveConfig  # noqa: E402

TUNE_SEED0 = 900_100


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/artifacts/world_model/best.pt")
    beta = ObjectiveConfig().beta
    parser.add_argument("--grid", nargs="*", default=[f"beta={beta / 2:g},{beta:g},{2 * beta:g}"],
                        help="name=v1,v2 ... (make_eblnn_planner / optimiser / objective options; "
                             f"default: beta around its default {beta:g})")
    parser.add_argument("--episodes", type=int, default=4, help="training-mix episodes per grid point")
    parser.add_argument("--steps", type=int, default=120, help="steps per episode (0: the scenario's own length)")
    parser.add_argument("--scenario", nargs="+", default=["train_mix"],
                        help="scenario names, or 'eval' for the five evaluation scenarios")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    grid = {}
    for item in args.grid:
        name, _, vals = item.partition("=")
        if not vals:
            parser.error(f"--grid item {item!r}: expected name=v1,v2")
        grid[name] = [option_value(v) for v in vals.split(",")]
    from dataclasses import replace

    from furnace_env.scenarios import EVAL_SCENARIOS, get_scenario

    if args.steps < 0:
        parser.error(f"--steps {args.steps}: expected >= 0 (0: each scenario's own length)")
    names = list(EVAL_SCENARIOS) if args.scenario == ["eval"] else args.scenario
    scenarios = [get_scenario(n) for n in names]
    if args.steps:
        scenarios = [replace(sc, n_steps=args.steps) for sc in scenarios]
    seeds = [TUNE_SEED0 + i for i in range(args.episodes)]
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    specs = [ControllerSpec("pi", "furnace_env.pi:make_pi")]
    specs += [ControllerSpec(f"p{i}", "planners.factories:make_eblnn_planner",
                             {"checkpoint": args.checkpoint, **pt}) for i, pt in enumerate(points)]
    recs = evaluate_controllers(specs, scenarios, seeds, workers=args.workers)
    by: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        by.setdefault((r.controller, r.scenario), []).append(r.metrics)

    def pooled(ctrl: str, key: str) -> list[float]:
        return [m[key] for sc in names for m in by[(ctrl, sc)]]

    pi_ret = {sc: float(np.mean([m["return"] for m in by[("pi", sc)]])) for sc in names}
    steps = "own length" if not args.steps else f"{args.steps} steps"
    pi_travel = np.mean(pooled("pi", "travel_fuel")) + np.mean(pooled("pi", "travel_air"))
    print(f"PI mean return {np.mean(pooled('pi', 'return')):.1f} (violations {np.mean(pooled('pi', 'violation_share')):.3f}, "
          f"travel {pi_travel:.1f} strokes/h) "
          f"over {len(seeds)} episodes ({steps}) of {', '.join(names)}"
          + ("" if len(names) == 1 else ": " + ", ".join(f"{sc} {v:.1f}" for sc, v in pi_ret.items())))
    rows = []
    for i, pt in enumerate(points):
        c = f"p{i}"
        margins = {sc: float(np.mean([m["return"] for m in by[(c, sc)]]) - pi_ret[sc]) for sc in names}
        row = {**pt, "return": float(np.mean(pooled(c, "return"))),
               "margin_vs_pi": float(np.mean(list(margins.values()))),
               "violations": float(np.mean(pooled(c, "violation_share"))),
               "fuel_vs_pi": float(sum(pooled(c, "fuel_kg")) / sum(pooled("pi", "fuel_kg")) - 1.0),
               "trips": int(sum(pooled(c, "trips"))), "latency_ms": float(np.mean(pooled(c, "latency_ms"))),
               "travel": float(np.mean(pooled(c, "travel_fuel")) + np.mean(pooled(c, "travel_air")))}
        if len(names) > 1:
            row.update({f"margin_{sc}": v for sc, v in margins.items()})
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


if __name__ == "__main__":
    main()
