"""The speed benchmarks of the world model and its planner, end to end on tiny budgets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eblnn_agent.checkpoint import save_checkpoint
from eblnn_agent.config import ModelConfig, WorldModelRunConfig
from eblnn_agent.model import EBLNN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_rollout_runs_and_paths_agree(tmp_path):
    import bench_rollout

    res = bench_rollout.main(["--batch", "3", "--horizon", "4", "--repeats", "1", "--blocks", "1",
                              "--json", str(tmp_path / "r.json")])
    (row,) = res["rows"]
    assert row["max_abs_diff_hidden"] < 1e-3 and row["max_rel_diff_grad"] < 1e-3
    assert row["fast_fwd_ms"] > 0 and row["stock_fwd_bwd_ms"] > 0
    assert (tmp_path / "r.json").exists()


def test_bench_eblnn_planner_runs_and_plans_agree(tmp_path):
    import bench_eblnn_planner

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8, 4])
    ckpt = save_checkpoint(tmp_path / "m.pt", EBLNN(cfg), WorldModelRunConfig(model=cfg))
    res = bench_eblnn_planner.main(["--checkpoint", str(ckpt), "--steps", "3", "--repeats", "1",
                                    "--set", "horizon=4", "n_candidates=4", "iterations=2"])
    assert res["max_action_diff"] < 1e-3
    assert res["fast_mean_ms"] > 0 and res["stock_median_ms"] > 0
    assert res["options"] == {"horizon": 4, "n_candidates": 4, "iterations": 2}
    for bad in (["horizon"], ["fast=false"]):
        with pytest.raises(SystemExit):
            bench_eblnn_planner.main(["--checkpoint", str(ckpt), "--steps", "1", "--set", *bad])


def test_tune_planner_grid_over_scenarios(tmp_path, capsys):
    import tune_planner

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8, 4])
    ckpt = save_checkpoint(tmp_path / "m.pt", EBLNN(cfg), WorldModelRunConfig(model=cfg))
    rows = tune_planner.main(["--checkpoint", str(ckpt), "--grid", "beta=0,0.1", "n_candidates=4",
                              "iterations=2", "--episodes", "1", "--steps", "3", "--scenario", "eval",
                              "--workers", "1"])
    assert [r["beta"] for r in rows] == [0, 0.1] and all(r["n_candidates"] == 4 for r in rows)
    from furnace_env.scenarios import FAMILIES

    names = FAMILIES["tune"]  # the five presets and the three plant changes
    for r in rows:
        margins = [r[f"margin_{n}"] for n in names]
        assert r["margin_vs_pi"] == pytest.approx(sum(margins) / len(names)) and r["trips"] == 0
        assert np.isfinite(r["travel"]) and r["travel"] >= 0
    assert "PI mean return" in capsys.readouterr().out
    (one,) = tune_planner.main(["--checkpoint", str(ckpt), "--grid", "iterations=2", "--episodes", "1",
                                "--steps", "3", "--workers", "1"])
    assert "margin_train_mix" not in one and np.isfinite(one["return"])
    with pytest.raises(SystemExit):
        tune_planner.main(["--checkpoint", str(ckpt), "--steps", "-1"])


def test_objective_landscape_maps_the_objective_and_the_truth(tmp_path, capsys):
    import objective_landscape

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8, 4])
    ckpt = save_checkpoint(tmp_path / "m.pt", EBLNN(cfg), WorldModelRunConfig(model=cfg))
    scen = tmp_path / "short.json"
    scen.write_text('{"name": "short", "n_steps": 5}')
    res = objective_landscape.main(["--checkpoint", str(ckpt), "--scenario", str(scen), "--at", "2", "9",
                                    "--lambdas", "1.0", "1.1", "1.3", "--fuel_points", "3",
                                    "--set", "n_candidates=4", "iterations=2", "--json", str(tmp_path / "l.json")])
    (m,) = res["maps"].values()
    assert [r["lambda"] for r in m["rows"]] == [1.0, 1.1, 1.3]
    for r in m["rows"]:
        assert all(np.isfinite(r[c]) for c in objective_landscape.COLUMNS)
        assert r["true_cost"] > 0 and abs(r["true_cost_dfuel"]) <= 0.12
    assert set(m["argmin_lambda"].values()) <= {1.0, 1.1, 1.3}
    assert np.isfinite(res["episode"]["first_step_lambda"])
    assert "steps [9] are beyond" in capsys.readouterr().out
    assert (tmp_path / "l.json").exists()


def test_objective_landscape_rejects_bad_options():
    import objective_landscape

    with pytest.raises(SystemExit):
        objective_landscape.parse_args(["--set", "beta"])
    with pytest.raises(SystemExit):
        objective_landscape.parse_args(["--lambdas", "0", "1.1"])


def test_option_value_parses_the_command_line_forms():
    from planners.factories import option_value

    assert option_value("3") == 3 and isinstance(option_value("3"), int)
    assert option_value("0.5") == 0.5 and option_value("1e-3") == 1e-3
    assert option_value("True") is True and option_value("false") is False
    assert option_value("0.08:1.0") == (0.08, 1.0)
    assert option_value("ratio") == "ratio"


def test_parse_options_reads_key_value_items_and_names_a_bad_one():
    from planners.factories import parse_options

    assert parse_options(["horizon=12", "excess_air=0.08:1.0", "beta=0.5"]) == {
        "horizon": 12, "excess_air": (0.08, 1.0), "beta": 0.5}
    assert parse_options([]) == {}
    for bad in ("horizon", "=3"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_options([bad])
