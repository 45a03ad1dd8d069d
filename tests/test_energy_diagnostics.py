"""The energy diagnostics (AUROC by plant, Spearman against the open-loop error, histograms) and their script."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eblnn_agent.config import WorldModelRunConfig
from eblnn_agent.data import collect_transitions, compute_norm_stats
from eblnn_agent.model import EBLNN
from evaluate.energy_diagnostics import (
    cd_gap_summary,
    energy_error_spearman,
    kstep_innovation,
    plant_auroc,
    spearman,
    window_scores,
)
from furnace_env.physics import FurnaceParams
from planners.trust import TrustConfig, TrustMonitor, pi_episodes

SHORT = {"name": "short", "n_steps": 40}
TINY = dict(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8], n_steps=2)


@pytest.fixture(scope="module")
def model_and_data():
    data = collect_transitions(720, seed=0, scenario="train_mix", num_envs=4)
    cfg = WorldModelRunConfig().with_overrides(**TINY)
    torch.manual_seed(0)
    m = EBLNN(cfg.model)
    m.set_norm_stats(*compute_norm_stats(data, co_log_scale=m.cfg.co_log_scale))
    return m.eval().requires_grad_(False), cfg, data


def test_spearman_and_window_scores():
    x = np.arange(10.0)
    assert spearman(x, x ** 3) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    v = np.arange(12.0)[None].repeat(2, 0)
    mask = np.ones_like(v, dtype=bool)
    mask[1, 8:] = False
    np.testing.assert_allclose(window_scores(v, mask, 4, 2), [3.5, 7.5, 3.5])


def test_cd_gap_summary():
    s = cd_gap_summary([{"train/cd_gap": 5.0}, {"train/cd_gap": 90.0}, {"val/loss": 1.0}], l2_reg=0.01)
    assert s == {"available": True, "min": 5.0, "max": 90.0, "last": 90.0, "bound": 100.0, "positive": True,
                 "bounded": True}
    assert not cd_gap_summary([{"train/cd_gap": 120.0}], 0.01)["bounded"]
    assert cd_gap_summary([], 0.01) == {"available": False}


def test_kstep_innovation_is_what_the_monitor_sees(model_and_data):
    m, _, _ = model_and_data
    data = pi_episodes(FurnaceParams(), [3], SHORT)
    k = 3
    innov = kstep_innovation(m, data, k)
    mon = TrustMonitor(m, TrustConfig(window=1, kstep=k, burn_in=0))
    for t in range(data.actions.shape[1]):
        _, i = mon.update(data.obs[:, t], data.actions[:, t - 1] if t else None)
        if t > k:  # the monitor's innovation of obs_t sits at index t - 1, beside the energy of h_t
            rms = float(np.sqrt(i[0].mean()))  # the diagnostics' innovation is the RMS over the channels
            assert rms == pytest.approx(innov[0, t - 1], rel=3e-3, abs=1e-4)


def test_plant_auroc_and_spearman_run_on_a_tiny_model(model_and_data):
    m, _, data = model_and_data
    r = plant_auroc(m, [0, 1], window=10, burn_in=10, scenario="train_mix")
    assert 0.0 <= r.energy <= 1.0 and 0.0 <= r.innovation <= 1.0 and len(r.per_plant) == 3
    assert r.n_windows[1] == 3 * r.n_windows[0] > 0  # the same seeds on each plant (no trips here)
    rho = energy_error_spearman(m, data, horizon=10, burn_in=10, stride=10)
    assert -1.0 <= rho["during"] <= 1.0 and rho["n_windows"] > 0


def test_energy_report_script_end_to_end(model_and_data, tmp_path):
    from eblnn_agent.checkpoint import save_checkpoint
    from evaluate.energy_report import main

    m, cfg, data = model_and_data
    path = tmp_path / "d.npz"
    data.save(path)
    cfg = cfg.with_overrides(data_path=str(path), val_fraction=0.2, test_fraction=0.2)
    ckpt = save_checkpoint(tmp_path / "wm" / "best.pt", m, cfg, {"env_steps": data.env_steps})
    (tmp_path / "wm" / "report.json").write_text(json.dumps({"history": [{"train/cd_gap": 3.0}]}))
    out = tmp_path / "report"
    res = main(["--checkpoint", str(ckpt), "--out", str(out), "--episodes", "2", "--max_test_episodes", "2"])
    assert (out / "energy_hist.png").stat().st_size > 0
    saved = json.loads((out / "energy_report.json").read_text())
    assert saved["plant_auroc"]["energy"] == res["plant_auroc"]["energy"]
    assert saved["cd_gap"]["positive"] and saved["trust_monitor"]["available"] is False
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--episodes", "0"])
