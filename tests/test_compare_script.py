"""``evaluate/compare_planners.py`` end to end on tiny budgets (subprocesses, like a user runs it)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from furnace_env.scenarios import get_scenario, save_scenario

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "evaluate" / "compare_planners.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_pi_on_scenario_file_writes_every_output(tmp_path):
    sc_file = tmp_path / "short.yaml"
    save_scenario(get_scenario("nominal"), sc_file)
    out = tmp_path / "cmp"
    res = _run("--controllers", "pi", "--scenario", str(sc_file), "load_swing", "--seeds", "2",
               "--steps", "12", "--workers", "1", "--out", str(out), "--no_train", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((out / "episodes.csv").open()))
    assert len(rows) == 4 and {r["scenario"] for r in rows} == {"nominal", "load_swing"}
    assert all(float(r["steps"]) == 12 for r in rows)
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert {r["controller"] for r in summary} == {"pi"}
    assert "| pi | nominal |" in (out / "summary.md").read_text()
    assert (out / "plots" / "scores.png").stat().st_size > 0
    assert (out / "plots" / "trajectories_load_swing.png").stat().st_size > 0


def test_unknown_controller_is_named(tmp_path):
    res = _run("--controllers", "nope", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert res.returncode != 0
    assert "nope" in res.stderr and "allowed" in res.stderr


@pytest.mark.parametrize("bad", [["--seeds", "0"], ["--scenario", "no_such_scenario"]])
def test_bad_arguments_fail_clearly(tmp_path, bad):
    res = _run(*bad, "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert res.returncode != 0
    assert bad[1] in res.stderr


def test_missing_artefact_with_no_train_names_the_command(tmp_path):
    res = _run("--controllers", "pi", "sac", "--scenario", "nominal", "--seeds", "1", "--steps", "3",
               "--workers", "1", "--artifacts", str(tmp_path / "none"), "--no_train",
               "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "train/baselines.py --algo sac" in res.stdout
    rows = list(csv.DictReader((tmp_path / "cmp" / "episodes.csv").open()))
    assert {r["controller"] for r in rows} == {"pi"}
