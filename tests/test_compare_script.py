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


@pytest.mark.parametrize("bad", [["--seeds", "0"], ["--scenario", "no_such_scenario"],
                                 ["--paired_focus", "no_such_controller"]])
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


def _tiny_world_model(path: Path, env_steps: int) -> Path:
    import torch

    from eblnn_agent.checkpoint import save_checkpoint
    from eblnn_agent.config import ModelConfig, WorldModelRunConfig
    from eblnn_agent.model import EBLNN

    torch.manual_seed(env_steps)
    cfg = ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8, 4])
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, EBLNN(cfg), WorldModelRunConfig(model=cfg), {"env_steps": env_steps})


def test_sample_efficiency_end_to_end_with_tiny_artefacts(tmp_path):
    """Planner, PI and oracle on tiny untrained world models: every sample-efficiency artefact is
    found (smaller data budgets, online-loop iterations), scored on every scenario and seed, and
    written as CSV and plot; one at a final artefact's step count is not evaluated again."""
    art = tmp_path / "art"
    _tiny_world_model(art / "world_model" / "best.pt", 3000)
    _tiny_world_model(art / "world_model_budgets" / "1000" / "best.pt", 1000)
    # At the main world model's step count: that artefact's point, not evaluated twice.
    _tiny_world_model(art / "world_model_budgets" / "same" / "best.pt", 3000)
    for i, steps in enumerate((500, 700)):
        _tiny_world_model(art / "online" / f"iter_{i}" / "best.pt", steps)
    (art / "online" / "report.json").write_text("{}")
    out = tmp_path / "cmp"
    res = _run("--controllers", "eblnn-langevin", "pi", "oracle", "--scenario", "nominal", "low_fire",
               "--seeds", "1", "--steps", "3", "--workers", "1", "--artifacts", str(art), "--no_train",
               "--sample_efficiency", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "3 intermediate artefacts x 2 scenarios x 1 seeds = 6 episodes" in res.stdout
    points = list(csv.DictReader((out / "sample_efficiency.csv").open()))
    got = {(p["controller"], int(p["env_steps"])) for p in points}
    assert got == {("eblnn-langevin", 1000), ("eblnn-langevin", 3000), ("eblnn-online", 500),
                   ("eblnn-online", 700)}
    assert all(int(p["episodes"]) == 2 and p["score_nominal"] and p["score_low_fire"] for p in points)
    episodes = list(csv.DictReader((out / "sample_efficiency_episodes.csv").open()))
    assert len(episodes) == 6
    assert (out / "plots" / "sample_efficiency.png").stat().st_size > 0
    # The planner against the others on the same episodes: each scenario, and pooled in score units.
    paired = list(csv.DictReader((out / "paired.csv").open()))
    assert {(r["controller"], r["scenario"]) for r in paired} == {
        (c, s) for c in ("pi", "oracle") for s in ("nominal", "low_fire", "all")}
    assert all(r["focus"] == "eblnn-langevin" and int(r["pairs"]) in (1, 2) for r in paired)
    assert "## Paired differences" in (out / "summary.md").read_text()


def test_sample_efficiency_points_are_paired_by_scenario_and_seed():
    from planners.benchmark import EpisodeRecord
    from planners.report import sample_efficiency_points

    def rec(ctrl, sc, seed, ret, steps=0):
        return EpisodeRecord(ctrl, sc, seed, {"return": ret}, steps)

    records = [rec("pi", "a", 1, -100.0), rec("oracle", "a", 1, -90.0),
               rec("pi", "a", 2, -200.0), rec("oracle", "a", 2, -160.0),
               rec("pi", "b", 1, -50.0), rec("oracle", "b", 1, -40.0),
               rec("ppo", "a", 1, -95.0, 10), rec("ppo", "a", 2, -200.0, 10), rec("ppo", "b", 1, -60.0, 10),
               rec("ppo", "c", 1, -1.0, 10),  # no references on scenario c: left out
               rec("ppo", "a", 1, -90.0, 20)]
    points = {(p["controller"], p["env_steps"]): p for p in sample_efficiency_points(records)}
    assert set(points) == {("ppo", 10), ("ppo", 20)}
    p = points[("ppo", 10)]
    # Per episode: (-95 + 100) / 10 = 0.5, (-200 + 200) / 40 = 0, (-60 + 50) / 10 = -1.
    assert p["episodes"] == 3 and p["score"] == pytest.approx(-0.5 / 3)
    assert p["score_a"] == pytest.approx(0.25) and p["score_b"] == pytest.approx(-1.0)
    assert p["score_ci_lo"] <= p["score"] <= p["score_ci_hi"]
    assert points[("ppo", 20)]["score"] == pytest.approx(1.0)
    assert p["return"] == pytest.approx((-95 - 200 - 60) / 3)


def test_sample_efficiency_pools_training_seeds_of_one_budget_only():
    from planners.benchmark import EpisodeRecord
    from planners.report import budget_steps, sample_efficiency_points

    def rec(ctrl, ret, steps, train_seed, seed=1):
        return EpisodeRecord(ctrl, "a", seed, {"return": ret}, steps, train_seed=train_seed)

    # Three world models of one data budget (slightly different step counts), and one training run's
    # 250 k checkpoint beside its final 251 904-step artefact (close, but the same seeds: two points).
    records = [rec("pi", -100.0, 0, 0), rec("oracle", -90.0, 0, 0),
               rec("eblnn-langevin", -95.0, 137_521, 0), rec("eblnn-langevin", -99.0, 137_785, 1),
               rec("eblnn-langevin", -91.0, 138_734, 2), rec("eblnn-langevin", -90.0, 70_000, 0),
               *[rec("ppo-residual", -100.0, n, k) for n in (250_000, 251_904) for k in range(3)]]
    budget = budget_steps(r for r in records if r.controller not in ("pi", "oracle"))
    assert {budget[("eblnn-langevin", n)] for n in (137_521, 137_785, 138_734)} == {138_013}
    assert budget[("eblnn-langevin", 70_000)] == 70_000
    assert budget[("ppo-residual", 250_000)] == 250_000 and budget[("ppo-residual", 251_904)] == 251_904
    points = {(p["controller"], p["env_steps"]): p for p in sample_efficiency_points(records)}
    assert set(points) == {("eblnn-langevin", 138_013), ("eblnn-langevin", 70_000),
                           ("ppo-residual", 250_000), ("ppo-residual", 251_904)}
    pooled = points[("eblnn-langevin", 138_013)]
    assert pooled["episodes"] == 3 and pooled["score"] == pytest.approx((0.5 + 0.1 + 0.9) / 3)


@pytest.mark.slow  # three comparison runs and three tiny trainings
def test_ensemble_controller_on_tiny_members(tmp_path):
    art = tmp_path / "art"
    _tiny_world_model(art / "world_model" / "best.pt", 3000)
    _tiny_world_model(art / "world_model_seeds" / "seed_1" / "best.pt", 3000)
    args = ["--controllers", "eblnn-ensemble", "pi", "--scenario", "nominal", "--seeds", "1", "--steps", "3",
            "--workers", "1", "--artifacts", str(art), "--no_train"]
    # A member missing: skipped, with the command that trains it on the main model's data.
    res = _run(*args, "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "train/world_model.py --seed 2 --data_seed 0" in res.stdout
    assert {r["controller"] for r in csv.DictReader((tmp_path / "a" / "episodes.csv").open())} == {"pi"}
    # Members on another dataset: refused, naming the step counts.
    _tiny_world_model(art / "world_model_seeds" / "seed_2" / "best.pt", 2000)
    res = _run(*args, "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert res.returncode != 0 and "share one dataset" in res.stderr and "[2000, 3000]" in res.stderr
    _tiny_world_model(art / "world_model_seeds" / "seed_2" / "best.pt", 3000)
    res = _run(*args, "--out", str(tmp_path / "c"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = [r for r in csv.DictReader((tmp_path / "c" / "episodes.csv").open()) if r["controller"] == "eblnn-ensemble"]
    assert len(rows) == 1 and int(rows[0]["env_steps"]) == 3000 and float(rows[0]["steps"]) == 3


def test_ensemble_members_train_after_the_main_world_model(tmp_path, monkeypatch, capsys):
    """The members reuse the main model's dataset, so they start only once it is trained."""
    from planners import experiment as cp

    cfg = cp.CompareConfig(controllers=["eblnn-ensemble"], artifacts=str(tmp_path / "art"))
    names = cp.needed_artefacts(cfg)
    assert names == ["world_model", "world_model_seed_1", "world_model_seed_2"]

    def fake_commands(cfg):  # each "training" writes its artefact after a moment
        return {n: [sys.executable, "-c", f"import time, pathlib; time.sleep(0.5); "
                    f"p = pathlib.Path({str(cp.artefact_path(cfg, n))!r}); p.parent.mkdir(parents=True); "
                    f"p.write_text('x')"] for n in names}

    monkeypatch.setattr(cp, "artefact_commands", fake_commands)
    cp.train_missing(cfg, names, parallel=2)
    lines = [ln.split()[0] + " " + ln.split()[1] for ln in capsys.readouterr().out.splitlines()
             if ln.startswith(("training", "trained"))]
    assert lines.index("trained world_model") < lines.index("training world_model_seed_1")
    assert lines.index("trained world_model") < lines.index("training world_model_seed_2")
    assert all(cp.artefact_path(cfg, n).exists() for n in names)


def test_planner_set_reaches_every_world_model_planner_but_not_a_variants_own_setting(tmp_path):
    sys.path.insert(0, str(ROOT / "evaluate"))
    import compare_planners

    art = tmp_path / "art"
    _tiny_world_model(art / "world_model" / "best.pt", 100)
    _tiny_world_model(art / "online" / "iter_0" / "best.pt", 50)
    (art / "online" / "report.json").write_text("{}")
    cfg = compare_planners.parse_args(["--controllers", "eblnn-langevin", "eblnn-beta0", "eblnn-energy", "--artifacts", str(art),
                                       "--no_train", "--planner_set", "beta=3", "horizon=4"])
    from planners.experiment import controller_specs, sample_efficiency_specs

    kw = {s.name: s.kwargs for s in controller_specs(cfg)}
    assert kw["eblnn-langevin"]["beta"] == 3 and kw["eblnn-beta0"]["beta"] == 0.0 and kw["eblnn-energy"]["beta"] == 1.0
    assert kw["eblnn-langevin"]["horizon"] == kw["eblnn-beta0"]["horizon"] == 4
    (online,) = sample_efficiency_specs(cfg)
    assert online.kwargs["beta"] == 3 and online.kwargs["horizon"] == 4
    for bad in (["beta"], ["checkpoint=x.pt"], ["optimizer=cem"]):
        with pytest.raises(SystemExit, match="planner_set"):
            compare_planners.parse_args(["--planner_set", *bad])


def test_train_seeds_schedule_one_artefact_per_seed(tmp_path):
    from planners.experiment import (
        CompareConfig,
        artefact_commands,
        artefact_path,
        needed_artefacts,
        seeded,
        validate_config,
    )

    art = tmp_path / "art"
    cfg = CompareConfig(controllers=["pi", "eblnn-langevin", "cem", "sac-residual", "ppo"], train_seeds=3,
                        artifacts=str(art))
    need = needed_artefacts(cfg)
    assert need == ["world_model", "world_model/seed_1", "world_model/seed_2", "ppo", "ppo/seed_1",
                    "ppo/seed_2", "sac-residual", "sac-residual/seed_1", "sac-residual/seed_2"]
    cmds = artefact_commands(cfg)
    assert artefact_path(cfg, "sac-residual") == art / "sac-residual" / "model.zip"
    assert artefact_path(cfg, "sac-residual/seed_2") == art / "sac-residual" / "seed_2" / "model.zip"
    assert cmds["sac-residual/seed_2"][2:] == ["--algo", "sac-residual", "--seed", "2", "--out",
                                              str(art / "sac-residual" / "seed_2")]
    # A world model's further seed collects its own data, in its own folder.
    wm = cmds["world_model/seed_1"]
    assert wm[wm.index("--seed") + 1] == "1" and wm[wm.index("--out_dir") + 1] == str(art / "world_model" / "seed_1")
    assert Path(wm[wm.index("--data_path") + 1]).parent == art / "world_model" / "seed_1"
    assert artefact_path(cfg, "world_model/seed_1") == art / "world_model" / "seed_1" / "best.pt"
    assert "world_model/seed_3" not in cmds  # seeds 0 .. N-1
    with pytest.raises(ValueError, match="'online' has no training seeds"):
        seeded("online", 1)
    with pytest.raises(SystemExit, match="--train_seeds 0"):
        validate_config(CompareConfig(train_seeds=0))


def test_train_seeds_end_to_end_report_the_mean_and_each_seed(tmp_path):
    art = tmp_path / "art"
    _tiny_world_model(art / "world_model" / "best.pt", 3000)
    _tiny_world_model(art / "world_model" / "seed_1" / "best.pt", 3000)
    out = tmp_path / "cmp"
    res = _run("--controllers", "eblnn-langevin", "pi", "oracle", "--scenario", "nominal", "--seeds", "2",
               "--steps", "3", "--workers", "1", "--artifacts", str(art), "--no_train", "--train_seeds", "2",
               "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((out / "episodes.csv").open()))
    assert sorted((r["train_seed"], r["seed"]) for r in rows if r["controller"] == "eblnn-langevin") == [
        ("0", "10000"), ("0", "10001"), ("1", "10000"), ("1", "10001")]
    summary = (out / "summary.md").read_text()
    assert "| eblnn-langevin (2 training seeds) | nominal |" in summary and "## Training seeds" in summary
    paired = list(csv.DictReader((out / "paired.csv").open()))
    assert {(r["controller"], r["pairs"], r["train_seeds"]) for r in paired if r["scenario"] == "nominal"} == {
        ("pi", "4", "2"), ("oracle", "4", "2")}


def test_family_test_runs_end_to_end(tmp_path):
    from furnace_env.scenarios import FAMILIES

    out = tmp_path / "cmp"
    res = _run("--family", "test", "--controllers", "pi", "oracle", "--seeds", "1", "--steps", "5",
               "--workers", "1", "--out", str(out), "--no_train", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((out / "episodes.csv").open()))
    assert {r["scenario"] for r in rows} == set(FAMILIES["test"]) and len(rows) == 2 * len(FAMILIES["test"])
    assert all(float(r["steps"]) == 5 for r in rows)
    bad = _run("--family", "eval", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert bad.returncode != 0 and "'eval'" in bad.stderr and "allowed: tune, test" in bad.stderr


def test_reuse_reads_recorded_controllers_and_runs_only_the_new_ones(tmp_path):
    first = tmp_path / "first"
    res = _run("--controllers", "pi", "oracle", "--scenario", "nominal", "--seeds", "2", "--steps", "6",
               "--workers", "1", "--out", str(first), "--no_train", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    again = tmp_path / "again"
    res = _run("--controllers", "pi", "oracle", "eblnn-beta0", "--scenario", "nominal", "--seeds", "2", "--steps", "6",
               "--workers", "1", "--out", str(again), "--no_train", "--reuse", str(first / "episodes.csv"),
               "--paired_focus", "pi", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (again / "paired.csv").is_file()  # paired on reused records alone
    assert "reusing 2 recorded episodes of pi" in res.stdout and "reusing 2 recorded episodes of oracle" in res.stdout
    assert "oracle " not in "".join(ln for ln in res.stdout.splitlines() if ln.strip().startswith("["))
    old = {(r["controller"], r["seed"]): r["return"] for r in csv.DictReader((first / "episodes.csv").open())}
    new = {(r["controller"], r["seed"]): r["return"] for r in csv.DictReader((again / "episodes.csv").open())}
    assert all(new[k] == v for k, v in old.items())
    # A seed the file does not hold: that controller runs again.
    res = _run("--controllers", "pi", "--scenario", "nominal", "--seeds", "3", "--steps", "6", "--workers", "1",
               "--out", str(tmp_path / "more"), "--no_train", "--reuse", str(first / "episodes.csv"), cwd=tmp_path)
    assert res.returncode == 0 and "reusing" not in res.stdout
    (tmp_path / "bad.csv").write_text("controller,scenario\npi,nominal\n")
    for bad, word in ((str(tmp_path / "none.csv"), "not found"), (str(tmp_path / "bad.csv"), "no column")):
        res = _run("--controllers", "pi", "--reuse", bad, "--out", str(tmp_path / "x"), cwd=tmp_path)
        assert res.returncode != 0 and word in res.stderr
