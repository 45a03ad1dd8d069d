"""Reports of a comparison: CSV rows, score plots and the sample-efficiency curve."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from planners.benchmark import bootstrap_ci

__all__ = ["budget_steps", "sample_efficiency_points", "plot_sample_efficiency", "write_csv", "plot_scores"]


#: Artefacts of different training seeds whose env-step counts differ by less than this fraction are
#: one budget (a world model's data collection stops after the episode that passes its target, so
#: each seed consumes a slightly different number of real env steps).
SAME_BUDGET_TOLERANCE = 0.01


def budget_steps(records) -> dict[tuple[str, int], int]:
    """``(controller, env steps) -> env steps of its budget``: one point per budget, not per seed.

    Per controller, step counts are pooled while they lie within :data:`SAME_BUDGET_TOLERANCE`
    of the group's smallest one and no training seed appears twice in the group (a checkpoint and
    the final artefact of one training run stay apart however close their counts); the pooled
    point sits at the group's mean step count.
    """
    seeds: dict[tuple[str, int], set[int]] = {}
    for r in records:
        seeds.setdefault((r.controller, int(r.env_steps)), set()).add(r.train_seed)
    groups: list[tuple[str, list[int]]] = []
    for ctrl in dict.fromkeys(c for c, _ in seeds):
        group: list[int] = []
        taken: set[int] = set()
        for steps in sorted(s for c, s in seeds if c == ctrl):
            own = seeds[(ctrl, steps)]
            if group and (steps > group[0] * (1.0 + SAME_BUDGET_TOLERANCE) or own & taken):
                groups.append((ctrl, group))
                group, taken = [], set()
            group.append(steps)
            taken |= own
        groups.append((ctrl, group))
    return {(ctrl, s): int(round(float(np.mean(group)))) for ctrl, group in groups for s in group}


def sample_efficiency_points(records, reference: str = "pi", oracle: str = "oracle") -> list[dict]:
    """One point per (controller, budget): mean normalised score over its episodes, 95 % CI.

    Each episode is scored against the reference and the oracle on the same scenario and seed
    (paired: the same setpoint programme and disturbances), ``(R - R_pi) / (R_oracle - R_pi)``;
    episodes without both references are left out. Also the mean score per scenario. The
    training seeds of one budget are one point (:func:`budget_steps`).
    """
    ref = {(r.scenario, r.seed): r.metrics["return"] for r in records if r.controller == reference}
    orc = {(r.scenario, r.seed): r.metrics["return"] for r in records if r.controller == oracle}
    budget = budget_steps(r for r in records if r.controller not in (reference, oracle))
    groups: dict[tuple[str, int], list] = {}
    for r in records:
        key = (r.scenario, r.seed)
        if r.controller in (reference, oracle) or key not in ref or key not in orc or orc[key] == ref[key]:
            continue
        groups.setdefault((r.controller, budget[(r.controller, int(r.env_steps))]), []).append(r)
    points = []
    for (ctrl, steps), recs in sorted(groups.items()):
        scores = [(r.metrics["return"] - ref[(r.scenario, r.seed)]) / (orc[(r.scenario, r.seed)]
                                                                       - ref[(r.scenario, r.seed)]) for r in recs]
        lo, hi = bootstrap_ci(scores)
        point = {"controller": ctrl, "env_steps": int(steps), "episodes": len(recs),
                 "score": float(np.mean(scores)), "score_ci_lo": lo, "score_ci_hi": hi,
                 "return": float(np.mean([r.metrics["return"] for r in recs]))}
        for sc in dict.fromkeys(r.scenario for r in recs):
            point[f"score_{sc}"] = float(np.mean([s for s, r in zip(scores, recs, strict=True) if r.scenario == sc]))
        points.append(point)
    return points


def plot_sample_efficiency(points: list[dict], path: Path) -> None:
    """Mean score (95 % CI bars) against real env steps consumed, one line per series (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"eblnn-langevin": "EB-LNN Langevin MPC (offline data)", "eblnn-online": "EB-LNN Langevin MPC (online loop)",
              "ppo": "PPO", "sac": "SAC", "ppo-residual": "residual PPO on PI", "sac-residual": "residual SAC on PI"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, name in enumerate(dict.fromkeys(p["controller"] for p in points)):
        pts = sorted((p for p in points if p["controller"] == name), key=lambda p: p["env_steps"])
        x = [p["env_steps"] for p in pts]
        y = np.array([p["score"] for p in pts])
        err = np.array([[p["score"] - p["score_ci_lo"] for p in pts], [p["score_ci_hi"] - p["score"] for p in pts]])
        ax.errorbar(x, y, yerr=np.maximum(err, 0.0), fmt="o-", color=f"C{i}", capsize=3, label=labels.get(name, name))
    ax.axhline(0.0, color="k", lw=0.8, ls=":")
    ax.axhline(1.0, color="g", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1.0)  # linear between -1 and 1, where PI and the oracle are
    lowest = min((p["score_ci_lo"] for p in points), default=0.0)
    ticks = [t for t in (-100, -30, -10, -3, -1, -0.5, 0, 0.5, 1) if t >= min(lowest, -1)]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("real environment steps consumed")
    ax.set_ylabel("normalised score (PI = 0, oracle = 1; symlog)")
    n = max((p["episodes"] for p in points), default=0)
    ax.set_title(f"mean score over up to {n} episodes per point (95 % CI)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows as CSV; the columns are every key of any row, in first-seen order (missing cells empty).

    Written atomically: a comparison killed mid-write leaves the previous file, never a file whose
    last row is cut off (which ``--reuse`` would read back)."""
    from eblnn_agent.utils import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


#: The identifying columns of an ``episodes.csv`` row (every other column is a metric).
RECORD_KEYS = ("controller", "train_seed", "scenario", "seed", "env_steps")


def _cell(where: str, key: str, text: str, whole: bool = False) -> float:
    """A finite number from a cell (with ``whole``: a whole number >= 0, ``"12"`` or ``"12.0"``), else
    ``ValueError`` naming the cell. NaN and inf are refused too: ``write_csv`` writes finite metrics
    only, so one that is not was edited or damaged."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if whole and not (math.isfinite(v) and v.is_integer() and v >= 0):
        raise ValueError(f"{where}: {key}={text!r} must be a whole number >= 0")
    if not math.isfinite(v):
        raise ValueError(f"{where}: {key}={text!r} must be a finite number")
    return v


def read_records(paths, n_steps: Mapping[str, int] | None = None) -> list:
    """:class:`~planners.benchmark.EpisodeRecord` s (metrics only, no trajectory) from ``episodes.csv``
    files written by :func:`write_csv`.

    ``ValueError`` naming the file (and line) for anything but complete records: a missing or repeated
    column, a row with more or fewer cells than the header (a file cut off mid-write), an identifier
    that is empty or not a whole number, a metric that is not a finite number, no ``return``, two
    records of one episode (controller, training seed, scenario, seed) whose env steps or return
    differ (within or across files; an equal repeat is read once), a file without records. With
    ``n_steps`` (episode length by scenario name), a record of such a scenario that ran another number
    of steps without a trip was made with another ``--steps`` or scenario length and is refused too.
    """
    from planners.benchmark import EpisodeRecord

    out, seen = [], {}
    for path in map(Path, paths):
        name = str(path)
        if path.is_dir():
            raise ValueError(f"episodes file {name!r} is a directory; pass a comparison's episodes.csv")
        if not path.is_file():
            raise ValueError(f"episodes file {name!r} not found (a comparison's episodes.csv)")
        try:
            with path.open(newline="", encoding="utf-8") as f:
                table = list(csv.reader(f))
        except (UnicodeDecodeError, csv.Error) as err:
            raise ValueError(f"{name!r} is not a readable CSV file ({type(err).__name__}: {err})") from err
        header = table[0] if table else []
        missing = [k for k in RECORD_KEYS if k not in header]
        if missing:
            raise ValueError(f"{name!r} is not a comparison's episodes.csv: no column(s) {missing}")
        repeated = sorted({k for k in header if header.count(k) > 1})
        if repeated:
            raise ValueError(f"{name!r}: column(s) {repeated} appear more than once")
        if len(table) < 2:
            raise ValueError(f"{name!r} has a header but no records")
        for i, cells in enumerate(table[1:], start=2):
            where = f"{name!r} line {i}"
            if len(cells) != len(header):
                raise ValueError(f"{where}: {len(cells)} cells, the header has {len(header)} (a file cut off "
                                 "while it was written, or edited by hand)")
            row = dict(zip(header, cells, strict=True))
            for key in ("controller", "scenario"):
                if not row[key].strip():
                    raise ValueError(f"{where}: empty {key}")
            ids = {k: int(_cell(where, k, row[k], whole=True)) for k in ("train_seed", "seed", "env_steps")}
            metrics = {k: _cell(where, k, v) for k, v in row.items() if k not in RECORD_KEYS and v != ""}
            if "return" not in metrics:
                raise ValueError(f"{where}: no return")
            rec = EpisodeRecord(row["controller"], row["scenario"], ids["seed"], metrics, ids["env_steps"],
                                train_seed=ids["train_seed"])
            _check_steps(where, rec, n_steps)
            key = (rec.controller, rec.train_seed, rec.scenario, rec.seed)
            if key in seen:
                first, at = seen[key]
                if (first.env_steps, first.metrics["return"]) != (rec.env_steps, rec.metrics["return"]):
                    raise ValueError(f"{where}: {rec.controller} (training seed {rec.train_seed}) on {rec.scenario} "
                                     f"seed {rec.seed} has env steps {rec.env_steps} and return {rec.metrics['return']}, "
                                     f"but {at} has {first.env_steps} and {first.metrics['return']}: two different "
                                     "records of one episode (other code or another artefact); reuse only one")
                continue
            seen[key] = (rec, where)
            out.append(rec)
    return out


def _check_steps(where: str, rec, n_steps: Mapping[str, int] | None) -> None:
    """Refuse a record whose episode length is not its scenario's (unless a trip ended it early)."""
    if n_steps is None or rec.scenario not in n_steps or "steps" not in rec.metrics:
        return
    ran, want = rec.metrics["steps"], n_steps[rec.scenario]
    if ran > want or (ran < want and not rec.metrics.get("trips", 0.0)):
        raise ValueError(f"{where}: {rec.controller} on {rec.scenario} seed {rec.seed} ran {ran:g} steps, but the "
                         f"comparison's {rec.scenario} has {want} (recorded with another --steps or scenario length)")


def plot_scores(summary: list[dict], path: Path) -> None:
    """Grouped bars: normalised score (or return where no score) per scenario and controller."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctrls = list(dict.fromkeys(r["controller"] for r in summary))
    scs = list(dict.fromkeys(r["scenario"] for r in summary))
    use_score = all(np.isfinite(r["score"]) for r in summary)
    key = "score" if use_score else "return"
    val = {(r["controller"], r["scenario"]): r[key] for r in summary}
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(scs)) + 2, 4))
    width = 0.8 / len(ctrls)
    for i, c in enumerate(ctrls):
        x = np.arange(len(scs)) + (i - (len(ctrls) - 1) / 2) * width
        color = plt.get_cmap("tab20")(i % 20) if len(ctrls) > 10 else f"C{i}"
        ax.bar(x, [val.get((c, s), np.nan) for s in scs], width, label=c, color=color)
    ax.set_xticks(np.arange(len(scs)), scs)
    ax.set_ylabel("normalised score (PI = 0, oracle = 1)" if use_score else "episode return")
    if use_score:
        # Symmetric log beyond |score| = 1: a weak baseline at -70 would otherwise flatten the
        # region between PI (0) and the oracle (1) that the comparison is about.
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never on them
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
