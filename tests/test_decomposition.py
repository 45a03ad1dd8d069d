"""The oracle-gap decomposition on hand-made summary rows."""

from __future__ import annotations

import math

import pytest

from planners.decomposition import gap_decomposition, gap_table


def _row(ctrl, sc, score):
    return {"controller": ctrl, "scenario": sc, "score": score}


def test_parts_sum_to_the_gap_and_skip_incomplete_scenarios():
    summary = [_row("pi", "a", 0.0), _row("oracle", "a", 1.0), _row("physics-mpc", "a", 0.6),
               _row("eblnn-langevin", "a", 0.2), _row("physics-mpc", "b", -0.5), _row("eblnn-langevin", "b", 0.1),
               _row("physics-mpc", "c", 0.3), _row("eblnn-langevin", "c", math.nan)]
    rows = gap_decomposition(summary)
    assert [r["scenario"] for r in rows] == ["a", "b", "all"]
    a, b, mean = rows
    assert a["information"] == pytest.approx(0.4) and a["model_error"] == pytest.approx(0.4)
    assert a["gap"] == pytest.approx(0.8)
    # A learned model ahead of the filter: negative model error, information above the whole gap.
    assert b["model_error"] == pytest.approx(-0.6) and b["information"] == pytest.approx(1.5)
    for r in rows:
        assert r["information"] + r["model_error"] == pytest.approx(r["gap"])
    assert mean["information"] == pytest.approx(0.95)
    assert "| a | +0.60 | +0.20 | +0.80 | +0.40 | +0.40 |" in gap_table(rows)
    assert gap_decomposition([_row("pi", "a", 0.0)]) == []
