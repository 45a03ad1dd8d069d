"""The world-model generalisation report (``eblnn_agent.generalisation``, its script) on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eblnn_agent.config import ModelConfig
from eblnn_agent.generalisation import (
    REPORT_CHANNELS,
    PlantCase,
    cases_from_dicts,
    collect_case,
    generalisation_report,
    markdown_table,
)
from eblnn_agent.model import EBLNN

SHORT = {"name": "short", "n_steps": 30}


def _tiny_model() -> EBLNN:
    torch.manual_seed(0)
    m = EBLNN(ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8]))
    m.eval()
    return m


def test_plant_case_names_a_bad_field_or_value():
    with pytest.raises(ValueError, match="heat_capacty"):
        PlantCase("typo", "nominal", {"heat_capacty": 1.0})
    with pytest.raises(ValueError, match="heat_capacity"):
        PlantCase("neg", "nominal", {"heat_capacity": -1.0})
    with pytest.raises(ValueError, match="keys"):
        cases_from_dicts([{"name": "x", "plnt": {}}])


def test_collect_case_is_seeded_and_the_plant_reaches_the_physics():
    nominal = PlantCase("a", SHORT)
    a, b = collect_case(nominal, [3]), collect_case(nominal, [3])
    np.testing.assert_array_equal(a.obs, b.obs)

    class Hold:  # the fuel valve opened to a fixed position: an open-loop step on every plant
        def reset(self):
            pass

        def act(self, obs):
            return np.array([[0.6, 0.9]])

    light = collect_case(nominal, [3], controller=Hold())
    heavy = collect_case(PlantCase("b", SHORT, {"heat_capacity": 4.0e5}, in_range=False), [3], controller=Hold())
    # Twice the heat capacity: the same step in the commands moves the temperature about half as far.
    rise = lambda d: abs(d.obs[0, -1, 0] - d.obs[0, 0, 0])  # noqa: E731
    assert 5.0 < rise(heavy) < 0.75 * rise(light)
    assert a.lengths[0] == 30 and a.actions.shape == (1, 30, 2)


def test_report_and_table_on_a_tiny_model():
    cases = (PlantCase("in", SHORT), PlantCase("out", SHORT, {"ua": 300.0, "t_amb": 45.0}, in_range=False))
    rep = generalisation_report(_tiny_model(), cases, seeds=[0, 1], horizon=5)
    assert set(rep["cases"]) == {"in", "out"}
    for c in rep["cases"].values():
        assert set(c["channels"]) == set(REPORT_CHANNELS)
        assert all(np.isfinite(v) and v >= 0 for ch in c["channels"].values() for v in ch.values())
    r = rep["out_over_in"]["temperature"]["open_loop_rmse"]
    want = (rep["cases"]["out"]["channels"]["temperature"]["open_loop_rmse"]
            / rep["cases"]["in"]["channels"]["temperature"]["open_loop_rmse"])
    assert r == pytest.approx(want)
    table = markdown_table(rep)
    assert "| in | in |" in table and "| out | out |" in table and "**out / in**" in table
    only_in = generalisation_report(_tiny_model(), cases[:1], seeds=[0], horizon=5)
    assert only_in["out_over_in"]["o2"]["one_step_rmse"] is None and "n/a" in markdown_table(only_in)
    with pytest.raises(ValueError, match="distinct"):
        generalisation_report(_tiny_model(), (cases[0], cases[0]), seeds=[0], horizon=5)


def test_script_end_to_end(tmp_path):
    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import WorldModelRunConfig
    from evaluate.world_model_generalisation import main

    model = _tiny_model()
    ckpt = save_checkpoint(tmp_path / "m.pt", model, WorldModelRunConfig(model=model.cfg))
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"name": "in", "scenario": SHORT},
                                 {"name": "hot", "scenario": SHORT, "plant": {"t_amb": 45.0}, "in_range": False}]))
    rep = main(["--checkpoint", str(ckpt), "--cases", str(cases), "--seeds", "0", "--horizon", "4",
                "--out_dir", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "generalisation.json").read_text())
    assert saved["cases"].keys() == rep["cases"].keys() == {"in", "hot"}
    assert "| hot | out |" in (tmp_path / "out" / "generalisation.md").read_text()
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--horizon", "0"])
