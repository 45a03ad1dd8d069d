"""Measuring the run-time trust monitor in closed loop: false alarms, and how soon it sees a plant change.

The monitor is judged where it runs: on the EB-LNN planner's own closed loop. For each world model
the planner runs the scenarios once (unsupervised; the episodes are cached), and every monitor
setting of a grid (:class:`~planners.trust.TrustConfig` fields) is calibrated and replayed over
those records (:func:`~planners.trust.alarm_history`). Up to its first alarm a supervised run is
exactly that record, so the first alarm, and hence the detection delay, is what the supervised
controller would see; false-alarm shares after a first false alarm are those of the unsupervised
trajectory (the supervised one is handed to PI there). Per scenario:

* ``change_step``: the first step at which the plant lies outside the training range
  (:func:`furnace_env.scenarios.out_of_range_step`; None: never, 0: from the start);
* ``false_alarm_share``: alarmed steps among the in-range steps (before the change), past the burn-in;
* ``detected``: the share of episodes whose first alarm at or after the change (counted from the
  end of the burn-in for a plant out of range from the start) comes within ``delay_limit`` steps,
  ``ever``: the share alarmed at all after it, and the median delay.

``family="tune"`` measures on the tune family (defaults are chosen there: the five presets and the
three plant changes of :data:`~furnace_env.scenarios.PLANT_CHANGE_SCENARIOS`) from the tuning seeds;
``family="test"`` on the test family plus :func:`held_out_changes` (the energy diagnostics' held-out
plants as steps at 400 s) from the evaluation seeds, for the record only.
``evaluate/trust_report.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eblnn_agent.data import TransitionData
from furnace_env.scenarios import FAMILIES, Scenario, get_scenario, out_of_range_step
from planners.trust import CALIBRATION_EPISODES, detection_delays

__all__ = ["TrustReportConfig", "held_out_changes", "scenario_measures", "run_trust_report", "supervised_summary",
           "CHANGE_AT_S", "EVAL_SEED0"]

#: When the held-out plant changes happen (s).
CHANGE_AT_S = 400.0
#: First evaluation seed (as the comparison's).
EVAL_SEED0 = 10_000


@dataclass
class TrustReportConfig:
    """Settings of a trust-monitor measurement (every field is a command-line flag)."""

    checkpoints: list[str] = field(default_factory=lambda: ["runs/artifacts/world_model/best.pt"])
    """World models (one per training seed); the planner and the monitor run on each."""
    family: str = "tune"
    """``tune``: the tune family from the tuning seeds (choose settings here); ``test``: the test family
    and the held-out plant changes from the evaluation seeds (report only)."""
    seeds: int = 3
    """Episodes per scenario and world model."""
    grid: list[str] = field(default_factory=list)
    """``name=v1,v2``: :class:`~planners.trust.TrustConfig` fields to vary (e.g. ``score=energy,innovation
    detector=window,cusum``); every combination is one row. Empty: the defaults only."""
    calibration_episodes: int = CALIBRATION_EPISODES
    """Calibration episodes per world model and calibration source (``TrustConfig.calibrate_on`` and ``calibration_mix``)."""
    delay_limit: int = 10
    """A change counts as detected when the alarm comes within this many control steps."""
    planner_set: list[str] = field(default_factory=list)
    """Options of the planner, ``KEY=VALUE`` (``make_eblnn_planner`` keywords; as the comparison's)."""
    steps: int = 0
    """Truncate every episode to this many steps (0: the scenario's own length); for smoke tests."""
    workers: int = 2
    """Episodes run in parallel in this many processes."""
    out: str = "runs/trust_report"
    """Output folder: report.md, report.json, and the cached closed-loop episodes (``episodes/``)."""
    episodes_csv: str = ""
    """Instead of replaying: summarise the ``eblnn-supervised`` rows of a comparison's ``episodes.csv``
    (its own closed-loop alarms: :func:`supervised_summary`) into ``supervised.md``/``.json`` under ``out``."""


def held_out_changes() -> tuple[Scenario, ...]:
    """The energy diagnostics' held-out plants (:data:`~eblnn_agent.negatives.HELD_OUT_PLANTS`, which no
    negative and no default was drawn from) as plant steps at :data:`CHANGE_AT_S` on a setpoint programme."""
    from eblnn_agent.negatives import HELD_OUT_PLANTS

    return tuple(
        Scenario(name=f"heldout_change_{i}", description=f"at {CHANGE_AT_S:g} s the plant steps to {dict(p)}",
                 setpoint=910.0, setpoint_events=((700.0, 950.0),),
                 plant_events=tuple((CHANGE_AT_S, k, float(v)) for k, v in sorted(p.items())))
        for i, p in enumerate(HELD_OUT_PLANTS))


def scenarios_of(family: str) -> list[Scenario]:
    if family == "tune":
        return [get_scenario(n) for n in FAMILIES["tune"]]
    if family == "test":
        return [*(get_scenario(n) for n in FAMILIES["test"]), *held_out_changes()]
    raise ValueError(f"family={family!r}; allowed: 'tune', 'test'")


def scenario_measures(alarm: np.ndarray, lengths: np.ndarray, change_step: int | None, burn_in: int,
                      delay_limit: int) -> dict[str, Any]:
    """False alarms before the change and detection after it, from the alarm states ``[E, T]``."""
    t = np.arange(alarm.shape[1])[None]
    inside = t < lengths[:, None]
    start = change_step if change_step is not None else alarm.shape[1]
    in_range = inside & (t >= max(burn_in, 1)) & (t < start)
    out: dict[str, Any] = {"change_step": change_step, "in_range_steps": int(in_range.sum()),
                           "false_alarm_share": float(alarm[in_range].mean()) if in_range.any() else None}
    if change_step is None:
        return out
    delays = detection_delays(alarm & inside, max(change_step, burn_in))
    found = [d for d in delays if d is not None]
    out.update(delays=delays, detected=float(np.mean([d is not None and d <= delay_limit for d in delays])),
               ever=float(len(found) / len(delays)), median_delay=float(np.median(found)) if found else None)
    return out


def _memo_stats(memo: dict, model, name: str, data: TransitionData, tc) -> tuple:
    """The monitor's raw signals on ``data``, computed once per (data, horizon, burn-in) and kept in ``memo``."""
    from planners.trust import raw_stats

    key = (name, tc.kstep, tc.burn_in)
    if key not in memo:
        memo[key] = raw_stats(model, data, tc)
    return memo[key]


def _truncated(scenarios: list[Scenario], steps: int) -> list[Scenario]:
    # Truncate only (as the comparison's --steps): a longer episode than the scenario's is another scenario.
    return [dataclasses.replace(sc, n_steps=min(steps, sc.n_steps)) for sc in scenarios] if steps else scenarios


def _grid_points(grid: list[str]) -> list[dict[str, Any]]:
    from planners.tuning import parse_grid

    g = parse_grid(grid)
    return [dict(zip(g, combo, strict=True)) for combo in itertools.product(*g.values())]


def _tag(options: dict, steps: int) -> str:
    """A short key of the planner options and episode length, so cached episodes of other settings are not reused."""
    import hashlib

    return hashlib.sha256(json.dumps([sorted(options.items()), steps], default=str).encode()).hexdigest()[:8]


def run_trust_report(cfg: TrustReportConfig, log=print) -> dict[str, Any]:
    """Run the measurement (see the module doc); writes ``report.md`` and ``report.json`` under ``cfg.out``."""
    from eblnn_agent.checkpoint import checkpoint_digest, load_checkpoint
    from eblnn_agent.utils import check_writable_dir
    from planners.factories import planner_options
    from planners.trust import (
        TrustConfig,
        alarm_history,
        calibrate,
        calibration_data,
        calibration_scenarios,
        planner_runs,
    )
    from planners.tuning import TUNE_SEED0

    if cfg.episodes_csv:
        return _supervised_report(cfg, log)
    if cfg.seeds < 1 or cfg.calibration_episodes < 1 or cfg.delay_limit < 0 or cfg.workers < 0 or cfg.steps < 0:
        raise ValueError(f"seeds={cfg.seeds}, calibration_episodes={cfg.calibration_episodes} must be >= 1, "
                         f"delay_limit={cfg.delay_limit}, workers={cfg.workers} and steps={cfg.steps} >= 0")
    if not cfg.checkpoints:
        raise ValueError("checkpoints: give at least one world-model checkpoint")
    options = planner_options(cfg.planner_set)
    scenarios = scenarios_of(cfg.family)
    if cfg.family == "test" and len(_grid_points(cfg.grid)) > 1:
        raise ValueError(f"--grid {cfg.grid} on the test family: settings are chosen on the tune family "
                         f"(--family tune); the test family reports one setting")
    scenarios = _truncated(scenarios, cfg.steps)
    points = _grid_points(cfg.grid) if cfg.grid else [{}]
    unknown = sorted({k for pt in points for k in pt} - {f.name for f in dataclasses.fields(TrustConfig)})
    if unknown:
        raise ValueError(f"--grid: unknown TrustConfig field(s) {unknown}; allowed: "
                         f"{[f.name for f in dataclasses.fields(TrustConfig)]}")
    configs = [TrustConfig(**pt) for pt in points]  # a bad value fails here, before any episode
    check_writable_dir(cfg.out, "--out")  # the episode cache and the report go there
    ckpts = [Path(c) for c in cfg.checkpoints]
    if len({c.resolve() for c in ckpts}) < len(ckpts):
        raise ValueError(f"--checkpoints {cfg.checkpoints}: a checkpoint is given more than once (each is one "
                         "world model of the report)")
    for c in ckpts:
        if not c.is_file():
            raise FileNotFoundError(f"checkpoint {str(c)!r} not found; train it with python train/world_model.py")
    seed0 = TUNE_SEED0 if cfg.family == "tune" else EVAL_SEED0
    seeds = [seed0 + i for i in range(cfg.seeds)]
    cache = Path(cfg.out) / "episodes"
    changes = {sc.name: out_of_range_step(sc) for sc in scenarios}
    rows: dict[int, dict[str, list]] = {i: {} for i in range(len(configs))}
    tag = f"{seeds[0]}_{len(seeds)}_{_tag(options, cfg.steps)}"
    for ck in ckpts:
        # Cached episodes are keyed by the model's content, not its path: a checkpoint retrained in
        # place must not be measured on the previous model's closed loop.
        key = checkpoint_digest(ck)[:16]
        model, _, _ = load_checkpoint(ck, device="cpu")
        model.eval()
        paths = {sc.name: cache / f"{key}_{sc.name}_{tag}.npz" for sc in scenarios}
        todo = [sc for sc in scenarios if not paths[sc.name].is_file()]
        if todo:
            log(f"{ck}: {len(todo)} scenarios x {len(seeds)} planner episodes")
            for name, data in planner_runs(ck, todo, seeds, options, workers=cfg.workers).items():
                data.save(paths[name])
        runs = {sc.name: TransitionData.load(paths[sc.name]) for sc in scenarios}
        sources: dict[tuple[str, str], TransitionData] = {}
        memo: dict[tuple, tuple] = {}
        for i, tc in enumerate(configs):
            src = (tc.calibrate_on, tc.calibration_mix)
            if src not in sources:
                path = cache / f"{key}_calibration_{'_'.join(src)}_{cfg.calibration_episodes}_{_tag(options, cfg.steps)}.npz"
                if not path.is_file():
                    log(f"{ck}: calibration episodes ({src[0]} on {src[1]})")
                    calibration_data(ck, tc, cfg.calibration_episodes, options, cfg.workers,
                                     _truncated(calibration_scenarios(tc.calibration_mix), cfg.steps)).save(path)
                sources[src] = TransitionData.load(path)
            cal_src = sources[src]
            cal = calibrate(model, cal_src, tc, source=str(ck),
                            stats=_memo_stats(memo, model, f"calibration {src}", cal_src, tc))
            for name, data in runs.items():
                on = alarm_history(model, cal, data, stats=_memo_stats(memo, model, name, data, tc))
                m = scenario_measures(on, data.lengths, changes[name], tc.burn_in, cfg.delay_limit)
                rows[i].setdefault(name, []).append(m)
    report = _summarise(cfg, points, configs, rows, changes)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(_markdown(cfg, report))
    log((out / "report.md").read_text())
    return report


def _summarise(cfg, points, configs, rows, changes) -> dict[str, Any]:
    out = []
    for i, (pt, tc) in enumerate(zip(points, configs, strict=True)):
        per = {}
        fa_num = fa_den = 0.0
        det, static = [], []
        for name, ms in rows[i].items():
            n_in = sum(m["in_range_steps"] for m in ms)
            fa = sum((m["false_alarm_share"] or 0.0) * m["in_range_steps"] for m in ms)
            fa_num, fa_den = fa_num + fa, fa_den + n_in
            entry = {"change_step": changes[name], "false_alarm_share": fa / n_in if n_in else None}
            if changes[name] is not None:
                delays = [d for m in ms for d in m["delays"]]
                hit = [d is not None and d <= cfg.delay_limit for d in delays]
                found = [d for d in delays if d is not None]
                entry.update(detected=float(np.mean(hit)), ever=len(found) / len(delays),
                             median_delay=float(np.median(found)) if found else None)
                (det if changes[name] > 0 else static).extend(hit)
            per[name] = entry
        out.append({"setting": pt, "config": dataclasses.asdict(tc),
                    "false_alarm_share": fa_num / fa_den if fa_den else None,
                    "detected_changes": float(np.mean(det)) if det else None,
                    "detected_static": float(np.mean(static)) if static else None, "per_scenario": per})
    return {"family": cfg.family, "checkpoints": cfg.checkpoints, "seeds": cfg.seeds,
            "delay_limit": cfg.delay_limit, "rows": out}


def _fmt(v, pct=True) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.0f}"


def _markdown(cfg, report) -> str:
    lim = cfg.delay_limit
    lines = [f"# Trust monitor on the {cfg.family} family ({len(cfg.checkpoints)} world model(s) x {cfg.seeds} seeds)",
             "", f"False alarms: alarmed in-range steps (goal <= 1 %); detected: plant-change episodes alarmed "
             f"within {lim} steps of leaving the training range (goal >= 90 %); static: out-of-range plants "
             f"alarmed within {lim} steps of the burn-in's end.", "",
             "| setting | false alarms | detected changes | detected static |", "|---|---|---|---|"]
    for r in report["rows"]:
        name = " ".join(f"{k}={v}" for k, v in r["setting"].items()) or "defaults"
        lines.append(f"| {name} | {_fmt(r['false_alarm_share'])} | {_fmt(r['detected_changes'])} | "
                     f"{_fmt(r['detected_static'])} |")
    lines += ["", "Per scenario (false alarms / detected within the limit / ever / median delay, steps):", ""]
    names = list(report["rows"][0]["per_scenario"])
    lines += ["| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in report["rows"]:
        name = " ".join(f"{k}={v}" for k, v in r["setting"].items()) or "defaults"
        cells = []
        for n in names:
            e = r["per_scenario"][n]
            c = _fmt(e["false_alarm_share"])
            if "detected" in e:
                c += f" / {_fmt(e['detected'])} / {_fmt(e['ever'])} / {_fmt(e['median_delay'], pct=False)}"
            cells.append(c)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def supervised_summary(rows: list[dict[str, Any]], burn_in: int, delay_limit: int = 10,
                       controller: str = "eblnn-supervised") -> dict[str, dict[str, Any]]:
    """The supervised controller's own closed-loop alarms, per scenario, from comparison records
    (``episodes.csv`` rows: ``trust_first_alarm``, ``trust_held_share``, ``steps``): on scenarios whose
    plant stays in the training range, the share of steps PI held control (every alarm there is a
    false one); on the others, the share of episodes alarmed within ``delay_limit`` steps of leaving
    the range (of the end of the burn-in when out of range from the start), ever, and the median delay.
    A scenario name that is not a named scenario is skipped (its plant history is unknown)."""
    from furnace_env.scenarios import SCENARIOS

    out: dict[str, dict[str, Any]] = {}
    by: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("controller") == controller and r.get("scenario") in SCENARIOS:
            by.setdefault(r["scenario"], []).append(r)
    for name, rs in by.items():
        change = out_of_range_step(name)
        entry: dict[str, Any] = {"episodes": len(rs), "change_step": change,
                                 "held_share": float(np.mean([float(r["trust_held_share"]) for r in rs]))}
        if change is not None:
            ref = max(change, burn_in)
            first = [float(r["trust_first_alarm"]) for r in rs]
            # An alarm before the change is a false one; the detection is the first alarm after it
            # only when PI still held then (the record keeps the first alarm alone): count it as missed.
            delays = [f - ref if f >= ref else None for f in first]
            found = [d for d in delays if d is not None]
            entry.update(detected=float(np.mean([d is not None and d <= delay_limit for d in delays])),
                         ever=len(found) / len(delays), median_delay=float(np.median(found)) if found else None,
                         alarmed_before=float(np.mean([0 <= f < ref for f in first])))
        out[name] = entry
    return out


def _supervised_report(cfg: TrustReportConfig, log) -> dict[str, Any]:
    from planners.report import read_records
    from planners.trust import TrustConfig

    path = Path(cfg.episodes_csv)
    if not path.is_file():
        raise FileNotFoundError(f"episodes_csv {str(path)!r} not found (a comparison's episodes.csv)")
    # The comparison's strict reader: a cut-off row or a NaN share is refused, naming the file and line.
    rows = [r.row() for r in read_records([path])]
    ours = [r for r in rows if r["controller"] == "eblnn-supervised"]
    if not ours:
        raise ValueError(f"{str(path)!r} has no eblnn-supervised rows; run the comparison with "
                         f"--controllers eblnn-supervised ...")
    lacking = sorted({k for r in ours for k in ("trust_first_alarm", "trust_held_share") if k not in r})
    if lacking:
        raise ValueError(f"{str(path)!r}: eblnn-supervised rows without {lacking} (written by an older comparison?)")
    summary = supervised_summary(rows, TrustConfig().burn_in, cfg.delay_limit)
    lines = [f"# eblnn-supervised in closed loop ({path})", "",
             f"Held: share of steps PI held control (on an in-range plant every alarm is false; goal <= 1 %). "
             f"Detected: episodes alarmed within {cfg.delay_limit} steps of the plant leaving the training range "
             f"(goal >= 90 %).", "",
             "| scenario | episodes | out of range from step | held | detected | ever | median delay | alarmed before |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in summary.items():
        lines.append(f"| {name} | {e['episodes']} | {'-' if e['change_step'] is None else e['change_step']} | "
                     f"{_fmt(e['held_share'])} | {_fmt(e.get('detected'))} | {_fmt(e.get('ever'))} | "
                     f"{_fmt(e.get('median_delay'), pct=False)} | {_fmt(e.get('alarmed_before'))} |")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "supervised.json").write_text(json.dumps(summary, indent=1))
    (out / "supervised.md").write_text("\n".join(lines) + "\n")
    log((out / "supervised.md").read_text())
    return summary
