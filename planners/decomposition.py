"""The oracle gap split into what information is worth and what model error costs, per scenario.

On the normalised score (PI = 0, oracle = 1; :func:`planners.benchmark.summarise`), a controller
that plans on the true physics from an estimate of the state (the physics MPC) differs from the
oracle only in what it knows, and from a learned-model planner that sees the same measurements only
in its model. So, per scenario,

    1 - score(learned) = [1 - score(estimator)] + [score(estimator) - score(learned)]
                         \\_____ information ____/   \\__________ model error _________/

Either part may be negative (a learned model may estimate the disturbances better than the filter,
or the filter's controller may lose to PI); the two always sum to the learned planner's gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["gap_decomposition", "gap_table"]


def gap_decomposition(summary: Sequence[dict[str, Any]], estimator: str = "physics-mpc",
                      learned: str = "eblnn-langevin") -> list[dict[str, Any]]:
    """One row per scenario where both controllers have a finite score (rows of ``summarise``), plus
    ``all`` (the mean over those scenarios): ``gap`` = 1 - score(learned), ``information`` =
    1 - score(estimator), ``model_error`` = score(estimator) - score(learned)."""
    score = {(r["controller"], r["scenario"]): r["score"] for r in summary}
    scenarios = [sc for sc in dict.fromkeys(r["scenario"] for r in summary)
                 if math.isfinite(score.get((estimator, sc), math.nan))
                 and math.isfinite(score.get((learned, sc), math.nan))]
    rows = []
    for sc in scenarios:
        s_est, s_learn = score[(estimator, sc)], score[(learned, sc)]
        rows.append({"scenario": sc, "score_estimator": s_est, "score_learned": s_learn, "gap": 1.0 - s_learn,
                     "information": 1.0 - s_est, "model_error": s_est - s_learn})
    if rows:
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "scenario"}
        rows.append({"scenario": "all", **mean})
    return rows


def gap_table(rows: Sequence[dict[str, Any]], estimator: str = "physics-mpc",
              learned: str = "eblnn-langevin") -> str:
    """The decomposition as a Markdown table."""
    lines = [f"| scenario | score {estimator} | score {learned} | gap of {learned} | information "
             f"(oracle - {estimator}) | model error ({estimator} - {learned}) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['score_estimator']:+.2f} | {r['score_learned']:+.2f} | {r['gap']:+.2f} "
                     f"| {r['information']:+.2f} | {r['model_error']:+.2f} |")
    return "\n".join(lines)
