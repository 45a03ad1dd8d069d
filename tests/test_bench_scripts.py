"""The speed benchmarks of the world model and its planner, end to end on tiny budgets."""

from __future__ import annotations

import sys
from pathlib import Path

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
    res = bench_eblnn_planner.main(["--checkpoint", str(ckpt), "--steps", "3", "--repeats", "1"])
    assert res["max_action_diff"] < 1e-3
    assert res["fast_mean_ms"] > 0 and res["stock_median_ms"] > 0
