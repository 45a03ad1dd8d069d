"""Tuning the EB-LNN planner on tuning seeds: a grid of planner options against PI on the same episodes.

Every grid point runs the planner (:func:`planners.factories.make_eblnn_planner`) and the reference
PI controller on the same episodes (tuning seeds from :data:`TUNE_SEED0`, disjoint from PI tuning and
from evaluation) and reports the mean return of each, the planner's margin over PI (the mean of the
per-scenario margins, and each scenario's), violations, fuel, trips, latency and actuator travel
(fuel valve + air damper, full strokes per hour). ``evaluate/tune_planner.py`` is its command line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from planners.benchmark import ControllerSpec, check_backend, evaluate_controllers
from planners.factories import option_value

__all__ = ["TUNE_SEED0", "TuneConfig", "parse_grid", "tune"]

#: First tuning seed (PI tuning and evaluation use other ranges).
TUNE_SEED0 = 900_100


def _default_grid() -> list[str]:
    return ["beta=0,0.5,1"]


@dataclass
class TuneConfig:
    """Settings of a tuning run (every field is a command-line flag)."""

    checkpoint: str = "runs/artifacts/world_model/best.pt"
    """The world model the planner plans on."""
    grid: list[str] = field(default_factory=_default_grid)
    """``name=v1,v2 ...``: planner options (``make_eblnn_planner`` keywords, dotted names for a section,
    e.g. ``optimizer.beta``); default: the energy weight beta from 0 (the default) to 1."""
    episodes: int = 4
    """Episodes (tuning seeds) per scenario and grid point."""
    steps: int = 120
    """Steps per episode (0: the scenario's own length)."""
    scenario: list[str] = field(default_factory=lambda: ["train_mix"])
    """Scenario names or files, or ``eval`` for the ``tune`` family (the five named presets);
    test-family scenarios are refused (``furnace_env.scenarios.FAMILIES``)."""
    workers: int = 2
    """Episodes run in parallel in this many processes (1: in this process; ignored with ``backend ray``)."""
    backend: str = "process"
    """Where the episodes run: "process" (this machine) or "ray" (a Ray cluster; ``docs/multi_machine.md``)."""
    address: str = ""
    """Ray cluster to join with ``backend ray`` (``auto``, ``ray://head:10001``); empty: a local instance."""


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``{"beta": [0.5, 1.0], ...}`` from ``["beta=0.5,1", ...]``; ValueError naming a malformed item."""
    grid = {}
    for item in items:
        name, _, vals = item.partition("=")
        if not name or not vals:
            raise ValueError(f"--grid item {item!r}: expected name=v1,v2")
        if name in grid:  # a second item would silently replace the first one's values
            raise ValueError(f"--grid item {item!r}: {name!r} is given twice; list its values once, {name}=v1,v2")
        grid[name] = [option_value(v) for v in vals.split(",")]
    return grid


def tune(cfg: TuneConfig, report=print) -> list[dict[str, Any]]:
    """Evaluate every grid point and PI on the same tuning episodes; one row per grid point.

    ``report`` receives one line for PI and one per grid point as they are ready.
    """
    from furnace_env.scenarios import FAMILIES, get_scenario, refuse_test_family

    if cfg.steps < 0:
        raise ValueError(f"--steps {cfg.steps}: expected >= 0 (0: each scenario's own length)")
    if cfg.workers < 0:
        raise ValueError(f"--workers {cfg.workers}: expected >= 0 (0 or 1: in this process)")
    check_backend(cfg.backend, cfg.address or None)
    grid = parse_grid(cfg.grid)
    names = list(FAMILIES["tune"]) if cfg.scenario == ["eval"] else cfg.scenario
    scenarios = [get_scenario(n) for n in names]
    refuse_test_family(scenarios, "tuning")  # defaults are chosen on the tune family only
    if cfg.steps:
        scenarios = [replace(sc, n_steps=cfg.steps) for sc in scenarios]
    names = [sc.name for sc in scenarios]
    seeds = [TUNE_SEED0 + i for i in range(cfg.episodes)]
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    specs = [ControllerSpec("pi", "furnace_env.pi:make_pi")]
    specs += [ControllerSpec(f"p{i}", "planners.factories:make_eblnn_planner",
                             {"checkpoint": cfg.checkpoint, **pt}) for i, pt in enumerate(points)]
    recs = evaluate_controllers(specs, scenarios, seeds, workers=cfg.workers, backend=cfg.backend,
                                address=cfg.address or None)
    by: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        by.setdefault((r.controller, r.scenario), []).append(r.metrics)

    def pooled(ctrl: str, key: str) -> list[float]:
        return [m[key] for sc in names for m in by[(ctrl, sc)]]

    pi_ret = {sc: float(np.mean([m["return"] for m in by[("pi", sc)]])) for sc in names}
    steps = "own length" if not cfg.steps else f"{cfg.steps} steps"
    pi_travel = np.mean(pooled("pi", "travel_fuel")) + np.mean(pooled("pi", "travel_air"))
    report(f"PI mean return {np.mean(pooled('pi', 'return')):.1f} (violations {np.mean(pooled('pi', 'violation_share')):.3f}, "
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
        report("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows
