"""The comparison: the controller registry, its trained artefacts, and the run that scores them all.

:class:`CompareConfig` holds a comparison's settings (``evaluate/compare_planners.py`` reads them from
the command line); :data:`CONTROLLERS` names every controller; :func:`controller_specs` turns names
into picklable :class:`~planners.benchmark.ControllerSpec` recipes, training a missing artefact
first (:func:`train_missing`, each artefact by its own training script on its small default budget);
:func:`run_comparison` evaluates, summarises and writes the reports.
Evaluation seeds start at :data:`EVAL_SEED0`, a range no training script uses.

Trained controllers (:data:`SEEDED_ARTEFACTS`: the world model and the SB3 agents) can come in
several training seeds (``--train_seeds N``): seed 0 is the artefact at its usual path, seed
``k >= 1`` is trained by the same command with ``--seed k`` into ``<artifacts>/<name>/seed_<k>/``
(:func:`seeded`), and every seed becomes a spec of the same controller name with its
``train_seed``, so the summary averages over training seeds and the paired tests pair within
each (``planners.benchmark``).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from furnace_env.scenarios import EVAL_SCENARIOS, FAMILIES, family_scenarios, get_scenario
from planners.benchmark import (
    ControllerSpec,
    check_backend,
    evaluate_controllers,
    markdown_table,
    paired_differences,
    paired_table,
    summarise,
    train_seed_scores,
    train_seed_table,
)
from planners.factories import parse_options, planner_options
from planners.report import plot_sample_efficiency, plot_scores, sample_efficiency_points, write_csv

__all__ = [
    "EVAL_SEED0",
    "CONTROLLERS",
    "DEFAULT_CONTROLLERS",
    "EXTRA_CONTROLLERS",
    "CompareConfig",
    "WORLD_MODEL_VARIANTS",
    "validate_config",
    "SEEDED_ARTEFACTS",
    "SB3_CONTROLLERS",
    "seeded",
    "artefact_commands",
    "artefact_path",
    "needed_artefacts",
    "train_missing",
    "controller_specs",
    "sample_efficiency_specs",
    "run_comparison",
    "run_sample_efficiency",
]

#: The repository root: the training scripts the artefacts come from run from here.
ROOT = Path(__file__).resolve().parents[1]

#: First evaluation seed; training scripts draw seeds far below this.
EVAL_SEED0 = 10_000


CONTROLLERS: dict[str, str] = {
    "eblnn-langevin": "EB-LNN world model + Langevin MPC (the project's planner)",
    "eblnn-energy": "Langevin MPC with the learned energy term on (beta = 1; the default plans with beta = 0)",
    "eblnn-beta0": "Langevin MPC without the energy term (beta = 0, now the default: kept for older commands)",
    "eblnn-nowarm": "ablation: Langevin MPC without warm start",
    "eblnn-nomomentum": "ablation: Langevin MPC without momentum",
    "cem": "iCEM on the same world model, equal compute",
    "mppi": "MPPI on the same world model, equal compute",
    "random": "random shooting on the same world model, equal compute",
    "cem-10x": "iCEM on the same world model at ten times the compute (not in the default set)",
    "eblnn-ensemble": "Langevin MPC on an ensemble of three world models (the main one and two more "
                      "initialisations on its data), averaging their objectives (not in the default set)",
    "eblnn-supervised": "Langevin MPC supervised by the energy trust monitor, PI fallback (planners/trust.py; "
                        "not in the default set)",
    "pi": "reference PI: temperature PI on fuel, O2-trim PI on air, cross-limiting (tuned)",
    "oracle": "CEM MPC on the true batched physics with the true hidden state (upper bound)",
    "physics-mpc": "the oracle's CEM MPC on nominal physics from an unscented Kalman filter's estimate of the "
                   "state and disturbances (the information-limited reference; not in the default set)",
    "physics-mpc-backoff": "physics-mpc with the EB-LNN planner's constraint back-offs (CO and O2 margins) "
                           "(not in the default set)",
    "pytorch-mppi": "the pytorch-mppi package's MPPI on the same world model, equal compute to mppi "
                    "(not in the default set)",
    "ppo": "stable-baselines3 PPO (VecNormalize)",
    "sac": "stable-baselines3 SAC",
    "ppo-residual": "stable-baselines3 PPO as a bounded residual on PI, under PI's cross-limits and CO override",
    "sac-residual": "stable-baselines3 SAC as a bounded residual on PI, under PI's cross-limits and CO override",
}
#: Controllers outside the default set (a larger budget, further artefacts, or peers of the issue-21 study).
EXTRA_CONTROLLERS = ("cem-10x", "eblnn-ensemble", "eblnn-supervised", "physics-mpc", "physics-mpc-backoff",
                     "pytorch-mppi", "eblnn-beta0")
DEFAULT_CONTROLLERS = [c for c in CONTROLLERS if c not in EXTRA_CONTROLLERS]
#: Controllers that are a trained stable-baselines3 agent, each its own artefact (``train/baselines.py --algo``).
SB3_CONTROLLERS = ("ppo", "sac", "ppo-residual", "sac-residual")
#: Artefacts trained once per training seed with ``--train_seeds`` (the online loop and the
#: ensemble's members are not: they have their own seeds' meaning).
SEEDED_ARTEFACTS = ("world_model", *SB3_CONTROLLERS)


@dataclass
class CompareConfig:
    """Settings of the comparison (every field is a command-line flag)."""

    controllers: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLLERS))
    """Controllers to evaluate (see ``--list``)."""
    scenario: list[str] = field(default_factory=lambda: list(EVAL_SCENARIOS))
    """Scenario names or YAML/JSON files (ignored with ``--family``)."""
    family: str = ""
    """Evaluate every scenario of this family instead (``furnace_env.scenarios.FAMILIES``: ``tune``,
    the named examples defaults are chosen on; ``test``, the held-out scenarios results are reported on)."""
    seeds: int = 3
    """Evaluation seeds per scenario (10 000, 10 001, ...)."""
    train_seeds: int = 1
    """Training seeds of every trained controller (world-model planners and SB3 agents): seeds
    0 .. N-1, seed k >= 1 trained into ``<artifacts>/<name>/seed_<k>/`` (missing ones trained
    first, as any artefact). The summary reports the mean over training seeds."""
    workers: int = 2
    """Episodes run in parallel in this many processes (1: in this process)."""
    out: str = "runs/compare"
    """Output folder: episodes.csv, summary.md, summary.json, plots."""
    artifacts: str = "runs/artifacts"
    """Where trained artefacts are found (and trained into when missing)."""
    no_train: bool = False
    """Skip controllers whose artefact is missing instead of training it."""
    steps: int = 0
    """Truncate every episode to this many steps (0: the scenario's own length); for smoke tests."""
    reuse: list[str] = field(default_factory=list)
    """``episodes.csv`` files of earlier comparisons: a controller (name and training seed) whose every
    requested episode is recorded there is read, not rerun (every controller is deterministic per
    seed). Only for records of the same artefacts and code; the env steps must match."""
    sample_efficiency: bool = False
    """Also score every intermediate artefact (world models on smaller datasets, online-loop
    iterations, PPO/SAC checkpoints) against the real env steps it consumed, on every scenario and
    seed of the comparison (needs pi and oracle)."""
    paired_focus: str = "eblnn-langevin"
    """Controller compared with every other one on the same episodes (``paired.csv`` and a section
    of ``summary.md``: mean differences, intervals, wins, the paired sign-flip test); skipped when
    it is not evaluated."""
    planner_set: list[str] = field(default_factory=list)
    """Options for every world-model planner, ``KEY=VALUE`` (``make_eblnn_planner`` keywords, e.g.
    ``beta=1 horizon=20``); a variant's own setting wins (``eblnn-energy`` keeps beta 1)."""
    backend: str = "process"
    """Where the episodes run: "process" (a pool of ``workers`` processes on this machine) or "ray"
    (one Ray task per episode on the cluster at ``address``; ``pip install 'furnace-eblnn[ray]'``,
    ``docs/multi_machine.md``). Same records in the same order either way."""
    address: str = ""
    """Ray cluster to join with ``backend ray`` (``auto``, ``ray://head:10001``); empty: a local instance."""

    @property
    def planner_options(self) -> dict:
        return parse_options(self.planner_set)


#: Options that the controller's name sets, refused in ``--planner_set``.
NAMED_OPTIONS = ("checkpoint", "optimizer")


#: Planner variants on the world model: optimiser and keyword overrides.
WORLD_MODEL_VARIANTS: dict[str, dict] = {
    "eblnn-langevin": {"optimizer": "langevin"},
    "eblnn-energy": {"optimizer": "langevin", "beta": 1.0},
    "eblnn-beta0": {"optimizer": "langevin", "beta": 0.0},
    "eblnn-nowarm": {"optimizer": "langevin", "warm_start": False},
    "eblnn-nomomentum": {"optimizer": "langevin", "momentum": 0.0},
    "cem": {"optimizer": "cem"},
    "mppi": {"optimizer": "mppi"},
    "random": {"optimizer": "random"},
    "cem-10x": {"optimizer": "cem", "compute": 10.0},
    "pytorch-mppi": {"optimizer": "pytorch-mppi"},
    "eblnn-ensemble": {"optimizer": "langevin"},
    "eblnn-supervised": {"optimizer": "langevin"},
}
#: Initialisation seeds of the ensemble's further members (the main world model is seed 0); each is
#: trained on the main model's data and split (``--data_seed 0``) into ``world_model_seeds/seed_<k>``.
ENSEMBLE_SEEDS = (1, 2)
#: Artefacts that must wait for another (the ensemble members reuse the main model's dataset).
ARTEFACT_AFTER = {f"world_model_seed_{k}": "world_model" for k in ENSEMBLE_SEEDS}


def seeded(name: str, train_seed: int) -> str:
    """The artefact key of ``name``'s training seed: ``name`` itself for seed 0, else ``name/seed_<k>``."""
    if name not in SEEDED_ARTEFACTS:
        raise ValueError(f"artefact {name!r} has no training seeds; seeded: {', '.join(SEEDED_ARTEFACTS)}")
    return name if train_seed == 0 else f"{name}/seed_{train_seed}"


def _unseed(key: str) -> tuple[str, int]:
    """``(artefact name, training seed)`` of an artefact key (see :func:`seeded`)."""
    name, _, tail = key.partition("/seed_")
    return name, int(tail) if tail else 0


def artefact_commands(cfg: CompareConfig) -> dict[str, list[str]]:
    """The command that makes each trained artefact on the small default budget.

    A training seed ``k >= 1`` of a world model collects its own data (``--seed k``, into its own
    folder, so parallel trainings never share a dataset file); of an SB3 agent, ``--seed k``."""
    art = Path(cfg.artifacts)
    py = sys.executable
    cmds = {
        "world_model": [py, "train/world_model.py", "--out_dir", str(art / "world_model")],
        **{a: [py, "train/baselines.py", "--algo", a, "--out", str(art / a)] for a in SB3_CONTROLLERS},
        "online": [py, "train/online_mbrl.py", "--out_dir", str(art / "online")],
        **{f"world_model_seed_{k}": [py, "train/world_model.py", "--seed", str(k), "--data_seed", "0",
                                     "--out_dir", str(art / "world_model_seeds" / f"seed_{k}")]
           for k in ENSEMBLE_SEEDS},
    }
    for k in range(1, cfg.train_seeds):
        out = art / "world_model" / f"seed_{k}"
        cmds[seeded("world_model", k)] = [py, "train/world_model.py", "--seed", str(k), "--data_path",
                                          str(out / "transitions.npz"), "--out_dir", str(out)]
        for a in SB3_CONTROLLERS:
            cmds[seeded(a, k)] = [py, "train/baselines.py", "--algo", a, "--seed", str(k), "--out",
                                  str(art / a / f"seed_{k}")]
    return cmds


def artefact_path(cfg: CompareConfig, name: str) -> Path:
    """Where artefact ``name`` (a key of :func:`artefact_commands`) is complete."""
    art = Path(cfg.artifacts)
    base, k = _unseed(name)
    if k:
        return artefact_path(cfg, base).parent / f"seed_{k}" / artefact_path(cfg, base).name
    return {"world_model": art / "world_model" / "best.pt", "online": art / "online" / "report.json",
            **{a: art / a / "model.zip" for a in SB3_CONTROLLERS},
            **{f"world_model_seed_{k}": art / "world_model_seeds" / f"seed_{k}" / "best.pt"
               for k in ENSEMBLE_SEEDS}}[name]


def needed_artefacts(cfg: CompareConfig) -> list[str]:
    """The trained artefacts the requested controllers (and the sample-efficiency plot) need."""
    need = []
    if any(c in WORLD_MODEL_VARIANTS for c in cfg.controllers):
        need += [seeded("world_model", k) for k in range(cfg.train_seeds)]
    need += [seeded(a, k) for a in SB3_CONTROLLERS if a in cfg.controllers for k in range(cfg.train_seeds)]
    if cfg.sample_efficiency and "eblnn-langevin" in cfg.controllers:
        need.append("online")
    if "eblnn-ensemble" in cfg.controllers:
        need += [f"world_model_seed_{k}" for k in ENSEMBLE_SEEDS]
    return need


def train_missing(cfg: CompareConfig, names: list[str], parallel: int = 2) -> None:
    """Train the missing artefacts among ``names``, ``parallel`` at a time, showing their progress.

    Each training writes its console to ``<artifacts>/<name>.log``; every 30 s the last line of
    each running one is printed. With ``--no_train`` the commands are printed instead.
    """
    todo = [n for n in names if not artefact_path(cfg, n).exists()]
    cmds = artefact_commands(cfg)
    if cfg.no_train:
        for n in todo:
            print(f"skipping controllers that need {artefact_path(cfg, n)} (missing); make it with:\n"
                  f"    python {' '.join(cmds[n][1:])}")
        return
    Path(cfg.artifacts).mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    t0 = time.perf_counter()
    last_report = t0
    while todo or running:
        while len(running) < parallel:
            ready = [n for n in todo if ARTEFACT_AFTER.get(n) not in (*todo, *running)]
            if not ready:
                break
            n = ready[0]
            todo.remove(n)
            log = Path(cfg.artifacts) / f"{n.replace('/', '_')}.log"
            print(f"training {n} on its small default budget: python {' '.join(cmds[n][1:])}  (log: {log})",
                  flush=True)
            fh = log.open("w")
            running[n] = (subprocess.Popen(cmds[n], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT),
                          log, time.perf_counter())
        time.sleep(2.0)
        for n, (proc, log, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[n]
            if proc.returncode != 0 or not artefact_path(cfg, n).exists():
                tail = log.read_text()[-2000:]
                raise SystemExit(f"training {n} failed (exit {proc.returncode}); end of {log}:\n{tail}")
            print(f"trained {n} in {time.perf_counter() - start:.0f} s", flush=True)
        if running and time.perf_counter() - last_report > 30:
            last_report = time.perf_counter()
            for n, (_, log, start) in running.items():
                lines = [ln for ln in log.read_text().replace("\r", "\n").splitlines() if ln.strip()]
                print(f"  [{time.perf_counter() - start:4.0f} s] {n}: {lines[-1][:150] if lines else '...'}",
                      flush=True)


def ensure_artefact(cfg: CompareConfig, name: str) -> Path | None:
    """The artefact's path, or None when it is missing (after :func:`train_missing`, only with --no_train)."""
    path = artefact_path(cfg, name)
    return path if path.exists() else None


def _env_steps(path: Path) -> int:
    meta = path.parent / "meta.json"
    if meta.exists():
        return int(json.loads(meta.read_text()).get("env_steps", 0))
    return 0


def controller_specs(cfg: CompareConfig) -> list[ControllerSpec]:
    """The specs of the requested controllers (training or skipping missing artefacts)."""
    unknown = [n for n in cfg.controllers if n not in CONTROLLERS]
    if unknown:
        raise SystemExit(f"unknown controller(s) {unknown}; allowed: {', '.join(CONTROLLERS)}")
    specs = []
    for name in cfg.controllers:
        if name == "pi":
            specs.append(ControllerSpec("pi", "furnace_env.pi:make_pi"))
        elif name == "oracle":
            specs.append(ControllerSpec("oracle", "planners.oracle:make_oracle"))
        elif name == "physics-mpc":
            specs.append(ControllerSpec(name, "planners.physics_mpc:make_physics_mpc"))
        elif name == "physics-mpc-backoff":
            from planners.physics_mpc import PLANNER_BACKOFFS

            specs.append(ControllerSpec(name, "planners.physics_mpc:make_physics_mpc", dict(PLANNER_BACKOFFS)))
        elif name in SB3_CONTROLLERS:
            for k in range(cfg.train_seeds):
                path = ensure_artefact(cfg, seeded(name, k))
                if path is not None:
                    specs.append(ControllerSpec(name, "planners.factories:make_sb3", {"path": str(path)},
                                                env_steps=_env_steps(path), train_seed=k))
        elif name == "eblnn-ensemble":
            paths = [ensure_artefact(cfg, "world_model"),
                     *(ensure_artefact(cfg, f"world_model_seed_{k}") for k in ENSEMBLE_SEEDS)]
            if None not in paths:
                steps = {_world_model_env_steps(p) for p in paths}
                if len(steps) != 1:
                    raise SystemExit(f"the ensemble's world models {[str(p) for p in paths]} record different "
                                     f"env steps {sorted(steps)}: its members must share one dataset")
                specs.append(ControllerSpec(name, "planners.factories:make_eblnn_planner",
                                            {"checkpoint": tuple(str(p) for p in paths), **cfg.planner_options,
                                             **WORLD_MODEL_VARIANTS[name]}, env_steps=steps.pop()))
        elif name == "eblnn-supervised":
            from planners.trust import (
                calibrate_checkpoint,
                default_calibration_path,
                load_calibration_for,
            )

            for k in range(cfg.train_seeds):
                path = ensure_artefact(cfg, seeded("world_model", k))
                if path is None:
                    continue
                current = default_calibration_path(path).is_file()  # once per checkpoint, stored beside it
                if current:
                    try:
                        load_calibration_for(path)
                    except ValueError as err:  # another model's (a retrained checkpoint) or damaged
                        print(f"recalibrating: {err}")
                        current = False
                if not current:
                    calibrate_checkpoint(path, planner_options=cfg.planner_options, workers=cfg.workers)
                kw = {"checkpoint": str(path), **cfg.planner_options, **WORLD_MODEL_VARIANTS[name]}
                specs.append(ControllerSpec(name, "planners.trust:make_supervised_planner", kw,
                                            env_steps=_world_model_env_steps(path), train_seed=k))
        else:
            for k in range(cfg.train_seeds):
                path = ensure_artefact(cfg, seeded("world_model", k))
                if path is not None:
                    kw = {"checkpoint": str(path), **cfg.planner_options, **WORLD_MODEL_VARIANTS[name]}
                    specs.append(ControllerSpec(name, "planners.factories:make_eblnn_planner", kw,
                                                env_steps=_world_model_env_steps(path), train_seed=k))
    return specs


@functools.cache
def _world_model_env_steps(path: Path) -> int:
    """Real env steps recorded in a world-model checkpoint (read once per file: seven variants share one)."""
    from eblnn_agent.checkpoint import read_checkpoint

    return int(read_checkpoint(path).get("meta", {}).get("env_steps", 0))


#: Series on the sample-efficiency plot: the EB-LNN planner on world models trained on fixed
#: datasets ("offline data": the main world model and any under ``world_model_budgets/``), on the
#: online loop's models, and the SB3 agents (from scratch and residual) at their checkpoints.
SAMPLE_EFFICIENCY_CONTROLLERS = ("eblnn-langevin", "eblnn-online", *SB3_CONTROLLERS)
_STEPS_RE = re.compile(r"_(\d+)_steps\.zip$")


def _planner_spec(name: str, ckpt: Path, options: dict) -> ControllerSpec:
    return ControllerSpec(name, "planners.factories:make_eblnn_planner",
                          {"checkpoint": str(ckpt), **options, "optimizer": "langevin"},
                          env_steps=_world_model_env_steps(ckpt))


def sample_efficiency_specs(cfg: CompareConfig) -> list[ControllerSpec]:
    """Intermediate artefacts with their env-step counts: the points of the sample-efficiency plot.

    * ``<artifacts>/world_model_budgets/*/best.pt``: world models trained on smaller datasets
      (``python train/world_model.py --n_env_steps N --data_path ... --out_dir ...``), as
      ``eblnn-langevin`` points beside the main world model;
    * ``<artifacts>/online/iter_*/best.pt``: the online loop's models, as ``eblnn-online``;
    * ``<artifacts>/<agent>/checkpoints/*_<steps>_steps.zip`` for every SB3 agent requested
      (``ppo``, ``sac``, ``ppo-residual``, ``sac-residual``), and the same under each further
      training seed's ``<agent>/seed_<k>/`` (the points then pool the training seeds' episodes).
    """
    art = Path(cfg.artifacts)
    specs = []
    if "eblnn-langevin" in cfg.controllers:
        for ckpt in sorted(art.glob("world_model_budgets/*/best.pt")):
            specs.append(_planner_spec("eblnn-langevin", ckpt, cfg.planner_options))
        if ensure_artefact(cfg, "online") is not None:
            for ckpt in sorted(art.glob("online/iter_*/best.pt"), key=lambda p: int(p.parent.name[5:])):
                specs.append(_planner_spec("eblnn-online", ckpt, cfg.planner_options))
    for algo in SB3_CONTROLLERS:
        if algo not in cfg.controllers:
            continue
        for k in range(cfg.train_seeds):
            folder = artefact_path(cfg, seeded(algo, k)).parent
            for ckpt in sorted(folder.glob(f"checkpoints/{algo}_*_steps.zip")):
                m = _STEPS_RE.search(ckpt.name)
                if m:
                    specs.append(ControllerSpec(algo, "planners.factories:make_sb3", {"path": str(ckpt)},
                                                env_steps=int(m.group(1)), train_seed=k))
    return specs


def validate_config(cfg: CompareConfig) -> CompareConfig:
    """Check the settings before any work; ``SystemExit`` naming the bad value otherwise."""
    if cfg.seeds < 1:
        raise SystemExit(f"--seeds {cfg.seeds}: must be >= 1")
    unknown = [c for c in cfg.controllers if c not in CONTROLLERS]
    if unknown:
        raise SystemExit(f"--controllers: unknown {unknown}; allowed: {', '.join(CONTROLLERS)} (see --list)")
    if not cfg.controllers:
        raise SystemExit("--controllers: name at least one controller (see --list)")
    # Records are keyed by controller and scenario name: a repeat would be run twice and counted twice
    # (narrower intervals, a paired test on duplicated episodes), without a word.
    repeated = sorted({c for c in cfg.controllers if cfg.controllers.count(c) > 1})
    if repeated:
        raise SystemExit(f"--controllers: {repeated} given more than once")
    if cfg.workers < 0:
        raise SystemExit(f"--workers {cfg.workers}: must be >= 0 (0 or 1: in this process)")
    if cfg.steps < 0:
        raise SystemExit(f"--steps {cfg.steps}: must be >= 0 (0: the scenario's own length)")
    names = []
    for s in cfg.scenario:
        try:
            names.append(get_scenario(s).name)
        except ValueError as err:
            raise SystemExit(f"--scenario: {err}") from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated and not cfg.family:
        raise SystemExit(f"--scenario: more than one scenario named {repeated} (a file's scenario is named by "
                         "its 'name' field, else its file name); records are kept by scenario name")
    try:
        check_backend(cfg.backend, cfg.address or None)
    except (ValueError, ImportError) as err:
        raise SystemExit(f"--backend {cfg.backend}: {err}") from None
    if cfg.train_seeds < 1:
        raise SystemExit(f"--train_seeds {cfg.train_seeds}: must be >= 1")
    if cfg.family and cfg.family not in FAMILIES:
        raise SystemExit(f"--family {cfg.family!r}: not a scenario family; allowed: {', '.join(FAMILIES)}")
    if cfg.reuse:
        from planners.report import read_records

        try:
            read_records(cfg.reuse, n_steps={sc.name: sc.n_steps for sc in comparison_scenarios(cfg)})
        except ValueError as err:
            raise SystemExit(f"--reuse: {err}") from None
    if cfg.paired_focus not in CONTROLLERS:
        raise SystemExit(f"--paired_focus {cfg.paired_focus!r}: not a controller; allowed: {', '.join(CONTROLLERS)}")
    try:
        planner_options(cfg.planner_set, NAMED_OPTIONS, "the controller's name (--controllers)")
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--planner_set: {err}") from None
    return cfg


def reused_records(cfg: CompareConfig, specs: list[ControllerSpec], scenarios, seeds: list[int]):
    """``(records read from cfg.reuse, specs still to run)``: a spec is read when every one of its
    (scenario, seed) episodes is in the files; a recorded episode whose env steps differ from the
    spec's artefact is refused (another artefact made it)."""
    if not cfg.reuse:
        return [], specs
    from planners.report import read_records

    n_steps = {sc.name: sc.n_steps for sc in scenarios}
    have = {(r.controller, r.train_seed, r.scenario, r.seed): r for r in read_records(cfg.reuse, n_steps=n_steps)}
    reused, todo = [], []
    for spec in specs:
        keys = [(spec.name, spec.train_seed, sc.name, s) for sc in scenarios for s in seeds]
        if not all(k in have for k in keys):
            todo.append(spec)
            continue
        recs = [have[k] for k in keys]
        bad = {r.env_steps for r in recs} - {spec.env_steps}
        if bad:
            raise SystemExit(f"--reuse: the recorded {spec.name} (training seed {spec.train_seed}) used "
                             f"{sorted(bad)} env steps, its artefact now {spec.env_steps}: not the same artefact")
        reused += recs
        print(f"reusing {len(recs)} recorded episodes of {spec.name} (training seed {spec.train_seed})")
    return reused, todo


def comparison_scenarios(cfg: CompareConfig) -> list:
    """The scenarios a comparison runs: ``--family``'s or ``--scenario``'s, each cut to ``--steps`` if set."""
    scenarios = []
    for sc in family_scenarios(cfg.family) if cfg.family else map(get_scenario, cfg.scenario):
        scenarios.append(replace(sc, n_steps=min(cfg.steps, sc.n_steps)) if cfg.steps else sc)
    return scenarios


def run_comparison(cfg: CompareConfig) -> list[dict]:
    """Train what is missing, evaluate every controller on every scenario and seed, write the reports.

    Writes ``episodes.csv``, ``summary.md``, ``summary.json``, ``paired.csv`` and ``plots/`` into
    ``cfg.out``; returns the summary rows.
    """
    out = Path(cfg.out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    scenarios = comparison_scenarios(cfg)
    train_missing(cfg, needed_artefacts(cfg))
    specs = controller_specs(cfg)
    if not specs:
        raise SystemExit("no controller left to evaluate (every requested one needs a missing artefact)")
    seeds = [EVAL_SEED0 + i for i in range(cfg.seeds)]
    reused, specs = reused_records(cfg, specs, scenarios, seeds)
    n_tasks = len(specs) * len(scenarios) * len(seeds)
    print(f"evaluating {len(specs)} controllers x {len(scenarios)} scenarios x {len(seeds)} seeds "
          f"= {n_tasks} episodes on {cfg.workers} workers")
    t0 = time.perf_counter()
    done = [0]

    def progress(rec):
        done[0] += 1
        print(f"  [{done[0]:3d}/{n_tasks}] {rec.controller:18s} {rec.scenario:14s} seed {rec.seed}: "
              f"return {rec.metrics['return']:9.1f}  trips {rec.metrics['trips']:.0f}  "
              f"latency {rec.metrics['latency_ms']:.2f} ms", flush=True)

    records = reused + (evaluate_controllers(specs, scenarios, seeds, workers=cfg.workers,
                                             trajectory_seed=seeds[0], progress=progress, backend=cfg.backend,
                                             address=cfg.address or None) if specs else [])
    rows = [r.row() for r in records]
    write_csv(rows, out / "episodes.csv")
    summary = summarise(records)
    table = markdown_table(summary)
    paired = []
    if any(r.controller == cfg.paired_focus for r in records) and len({r.controller for r in records}) > 1:
        paired = paired_differences(records, focus=cfg.paired_focus)
        write_csv(paired, out / "paired.csv")
        table += "\n\n## Paired differences\n\n" + paired_table(paired)
    per_seed = train_seed_scores(records)
    if train_seed_table(per_seed):
        table += ("\n\n## Training seeds\n\nNormalised score of each training seed's artefact (its mean "
                  "return over the evaluation seeds against PI's and the oracle's):\n\n" + train_seed_table(per_seed))
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps({"config": asdict(cfg), "summary": summary,
                                                  "paired": paired, "train_seeds": per_seed}, indent=1))
    print(table)
    from furnace_env.plotting import plot_trajectories

    for sc in scenarios:
        trajs = {r.controller: {"obs": r.episode.obs_clean, "actions": r.episode.actions}
                 for r in records if r.scenario == sc.name and r.episode is not None}
        fig = plot_trajectories(trajs, dt=5.0, title=f"{sc.name}, seed {seeds[0]}")
        fig.savefig(out / "plots" / f"trajectories_{sc.name}.png", dpi=110)
    plot_scores(summary, out / "plots" / "scores.png")
    if cfg.sample_efficiency:
        run_sample_efficiency(cfg, scenarios, seeds, records, out)
    print(f"wrote {out}/episodes.csv, summary.md, summary.json, plots/ in {time.perf_counter() - t0:.0f} s")
    return summary


def run_sample_efficiency(cfg: CompareConfig, scenarios, seeds: list[int], records, out: Path) -> list[dict]:
    """Score each intermediate artefact on every scenario and seed of the comparison; CSV and plot."""
    if not {"pi", "oracle"} <= {r.controller for r in records}:
        print("sample efficiency needs the pi and oracle controllers in the comparison; skipped")
        return []
    # A checkpoint at the final artefact's step count is that artefact: evaluated once, above.
    final = {(r.controller, r.env_steps) for r in records}
    specs = [s for s in sample_efficiency_specs(cfg) if (s.name, s.env_steps) not in final]
    print(f"sample efficiency: {len(specs)} intermediate artefacts x {len(scenarios)} scenarios x "
          f"{len(seeds)} seeds = {len(specs) * len(scenarios) * len(seeds)} episodes")
    recs = evaluate_controllers(specs, scenarios, seeds, workers=cfg.workers, backend=cfg.backend,
                                address=cfg.address or None)
    if recs:
        write_csv([r.row() for r in recs], out / "sample_efficiency_episodes.csv")
    # The final artefacts of the main comparison are points too, and pi / oracle are the references.
    recs += [r for r in records if r.controller in (*SAMPLE_EFFICIENCY_CONTROLLERS, "pi", "oracle")]
    points = sample_efficiency_points(recs)
    if points:
        write_csv(points, out / "sample_efficiency.csv")
        plot_sample_efficiency(points, out / "plots" / "sample_efficiency.png")
    return points
