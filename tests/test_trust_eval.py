"""The trust monitor's closed-loop measurement (``planners.trust_eval``) and ``evaluate/trust_report.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eblnn_agent.config import ModelConfig
from furnace_env.scenarios import FAMILIES, out_of_range_step
from planners.trust_eval import (
    CHANGE_AT_S,
    TrustReportConfig,
    held_out_changes,
    run_trust_report,
    scenario_measures,
)

ROOT = Path(__file__).resolve().parents[1]


def test_scenario_measures_count_false_alarms_before_and_delays_after_the_change():
    alarm = np.zeros((3, 12), dtype=bool)
    alarm[0, 3] = True          # in range, past the burn-in: a false alarm
    alarm[0, 9] = True          # 3 steps after the change
    alarm[1, 6:] = True         # at the change
    alarm[2, 1] = True          # inside the burn-in: not counted
    m = scenario_measures(alarm, np.array([12, 12, 12]), change_step=6, burn_in=2, delay_limit=2)
    assert m["in_range_steps"] == 3 * 4 and m["false_alarm_share"] == pytest.approx(1 / 12)
    assert m["delays"] == [3, 0, None] and m["detected"] == pytest.approx(1 / 3) and m["ever"] == pytest.approx(2 / 3)
    assert m["median_delay"] == 1.5
    # A plant out of range from the start: delays count from the end of the burn-in, no in-range steps.
    s = scenario_measures(alarm, np.array([12, 12, 12]), change_step=0, burn_in=3, delay_limit=0)
    assert s["false_alarm_share"] is None and s["delays"] == [0, 3, None]
    # Never out of range: false alarms only; an episode that ended early counts only its own steps.
    n = scenario_measures(alarm, np.array([12, 5, 12]), change_step=None, burn_in=2, delay_limit=2)
    assert "detected" not in n and n["in_range_steps"] == 10 + 3 + 10


def test_held_out_changes_step_out_of_the_training_range_and_are_not_in_a_family():
    scs = held_out_changes()
    assert len(scs) == 3
    for sc in scs:
        assert out_of_range_step(sc) == int(CHANGE_AT_S / 5.0)
        assert sc.name not in FAMILIES["tune"] + FAMILIES["test"]


def test_bad_settings_fail_before_any_episode(tmp_path):
    with pytest.raises(ValueError, match="detector"):
        run_trust_report(TrustReportConfig(checkpoints=[str(tmp_path / "none.pt")], grid=["detector=ewma"]))
    with pytest.raises(FileNotFoundError, match="none.pt"):
        run_trust_report(TrustReportConfig(checkpoints=[str(tmp_path / "none.pt")]))
    with pytest.raises(ValueError, match="family"):
        run_trust_report(TrustReportConfig(checkpoints=[str(tmp_path / "none.pt")], family="eval"))
    with pytest.raises(ValueError, match="seeds=0"):
        run_trust_report(TrustReportConfig(seeds=0))
    with pytest.raises(ValueError, match="at least one"):
        run_trust_report(TrustReportConfig(checkpoints=[]))
    with pytest.raises(ValueError, match="chosen on the tune family"):
        run_trust_report(TrustReportConfig(family="test", grid=["window=10,20"]))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig
    from eblnn_agent.data import compute_norm_stats
    from eblnn_agent.model import EBLNN
    from furnace_env.physics import FurnaceParams
    from planners.trust import pi_episodes

    torch.manual_seed(0)
    m = EBLNN(ModelConfig(hidden_size=16, backbone_units=16, physics_hidden_dims=[16], ebm_hidden_dims=[16, 8]))
    m.set_norm_stats(*compute_norm_stats(pi_episodes(FurnaceParams(), range(4), {"name": "s", "n_steps": 40}),
                                         co_log_scale=m.cfg.co_log_scale))
    cfg = WorldModelRunConfig().with_overrides(hidden_size=16, backbone_units=16, physics_hidden_dims=[16],
                                               ebm_hidden_dims=[16, 8])
    return save_checkpoint(tmp_path_factory.mktemp("wm") / "best.pt", m, cfg, {"env_steps": 1})


def test_trust_report_script_end_to_end_on_a_tiny_budget(tiny_checkpoint, tmp_path):
    out = tmp_path / "report"
    args = ["--checkpoints", str(tiny_checkpoint), "--family", "tune", "--seeds", "1", "--steps", "90",
            "--calibration_episodes", "2", "--grid", "score=energy,innovation", "calibrate_on=pi,planner",
            "--planner_set", "horizon=3", "n_candidates=4", "iterations=1", "--workers", "0", "--out", str(out)]
    r = subprocess.run([sys.executable, str(ROOT / "evaluate" / "trust_report.py"), *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["rows"]) == 4 and set(rep["rows"][0]["per_scenario"]) == set(FAMILIES["tune"])
    for row in rep["rows"]:
        assert 0.0 <= row["false_alarm_share"] <= 1.0 and 0.0 <= row["detected_changes"] <= 1.0
        assert row["per_scenario"]["shift_burner"]["change_step"] == 80
    assert "| score=innovation calibrate_on=planner |" in (out / "report.md").read_text()
    cached = sorted(p.name for p in (out / "episodes").iterdir())
    assert len(cached) == len(FAMILIES["tune"]) + 2  # every scenario's episodes and the two calibrations
    # A second run reuses the cached episodes (and gives the same report).
    r2 = subprocess.run([sys.executable, str(ROOT / "evaluate" / "trust_report.py"), *args], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0 and "planner episodes" not in r2.stdout
    assert json.loads((out / "report.json").read_text()) == rep
    bad = subprocess.run([sys.executable, str(ROOT / "evaluate" / "trust_report.py"), "--checkpoints",
                          str(tmp_path / "missing.pt")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "missing.pt" in bad.stderr


def test_calibrate_trust_script_writes_a_calibration_and_refuses_bad_flags(tiny_checkpoint, tmp_path):
    import shutil

    from planners.trust import TrustCalibration, default_calibration_path

    ckpt = tmp_path / "best.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    script = str(ROOT / "evaluate" / "calibrate_trust.py")
    r = subprocess.run([sys.executable, script, "--checkpoint", str(ckpt), "--episodes", "2", "--score", "innovation", "--calibrate_on", "pi",
                        "--detector", "cusum"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    cal = TrustCalibration.load(default_calibration_path(ckpt))
    assert cal.config.score == "innovation" and cal.config.detector == "cusum" and "PI" in cal.source
    for bad, word in ((["--detector", "ewma"], "ewma"), (["--episodes", "0"], "episodes"),
                      (["--planner_set", "nonsense"], "nonsense")):
        b = subprocess.run([sys.executable, script, "--checkpoint", str(ckpt), *bad], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert b.returncode == 2 and word in b.stderr
    assert TrustCalibration.load(default_calibration_path(ckpt)) == cal  # a refused call wrote nothing


def test_calibration_scenarios_draw_in_range_plants_on_the_presets():
    from furnace_env.scenarios import EVAL_SCENARIOS, TRAINING_PLANT
    from planners.trust import TrustConfig, calibration_data, calibration_scenarios

    scs = calibration_scenarios("presets")
    assert [sc.name for sc in scs] == [f"{n}+plants" for n in EVAL_SCENARIOS]
    assert all(dict(sc.plant) == TRAINING_PLANT for sc in scs)
    assert [sc.name for sc in calibration_scenarios("train_mix")] == ["train_mix"]
    with pytest.raises(ValueError, match="calibration_mix"):
        calibration_scenarios("test")
    short = [{"name": f"s{i}", "n_steps": 10 + i} for i in range(2)]
    data = calibration_data("unused.pt", TrustConfig(calibrate_on="pi"), episodes=4, scenarios=short)
    assert data.obs.shape == (4, 12, 8) and list(data.lengths) == [10, 10, 11, 11]


def test_supervised_summary_of_comparison_records(tmp_path):
    from planners.trust_eval import supervised_summary

    def row(sc, first, held, ctrl="eblnn-supervised"):
        return {"controller": ctrl, "scenario": sc, "trust_first_alarm": str(first), "trust_held_share": str(held)}

    rows = [row("nominal", -1, 0.0), row("nominal", 100, 0.05),            # in range: held share only
            row("fouling_drift", 90, 0.5), row("fouling_drift", 120, 0.4),  # change at step 85
            row("fouling_drift", 50, 0.9),                                   # alarmed before the change
            row("fouled", 25, 0.9), row("fouled", -1, 0.0),                  # static: from the burn-in (20)
            row("nominal", 0, 1.0, ctrl="pi"), row("my_file", 3, 1.0)]      # other controller, unknown scenario
    s = supervised_summary(rows, burn_in=20, delay_limit=10)
    assert set(s) == {"nominal", "fouling_drift", "fouled"}
    assert s["nominal"]["held_share"] == pytest.approx(0.025) and "detected" not in s["nominal"]
    d = s["fouling_drift"]
    assert d["detected"] == pytest.approx(1 / 3) and d["ever"] == pytest.approx(2 / 3) and d["median_delay"] == 20.0
    assert d["alarmed_before"] == pytest.approx(1 / 3)
    assert s["fouled"]["detected"] == 0.5 and s["fouled"]["median_delay"] == 5.0
    csv_path = tmp_path / "episodes.csv"
    header = "controller,train_seed,scenario,seed,env_steps,return,trust_first_alarm,trust_held_share\n"
    csv_path.write_text(header + "eblnn-supervised,0,fouled,10000,0,-5.0,30,0.5\n")
    rep = run_trust_report(TrustReportConfig(episodes_csv=str(csv_path), out=str(tmp_path / "o")))
    assert rep["fouled"]["detected"] == 1.0 and (tmp_path / "o" / "supervised.md").is_file()
    csv_path.write_text(header + "pi,0,fouled,10000,0,-5.0,,\n")
    with pytest.raises(ValueError, match="no eblnn-supervised rows"):
        run_trust_report(TrustReportConfig(episodes_csv=str(csv_path)))
