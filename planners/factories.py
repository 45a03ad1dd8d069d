"""Factories ``make_*(env, **kwargs) -> controller`` that the comparison harness imports by name.

Each builds one controller for one evaluation env from plain, picklable arguments (paths,
numbers), so a worker process can build its own copy. The artefacts they load are made by the
training scripts in ``train/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

__all__ = ["PlannerConfig", "make_eblnn_planner", "make_sb3", "OPTIMIZER_DEFAULTS", "DEFAULT_HORIZON",
           "option_value", "parse_options", "planner_options"]


#: The world-model settings of the gradient-free peers (their candidates are matched to the Langevin
#: planner's compute): small perturbations of time-correlated noise (colour ``beta``) around the warm
#: start, as iCEM does (docs/tuning.md, "its gradient-free peers, tuned"). Langevin's budget is its
#: config's default (:class:`~planners.optim.LangevinConfig`: 32 candidates x 5 iterations, the most
#: that fits near the latency goal: docs/tuning.md, "the horizon and the iterations").
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "cem": {"init_std": 0.1, "beta": 3.0},
    "mppi": {"sigma": 0.05, "beta": 2.0, "temperature": 0.1},
}
#: Planning horizon, control steps (75 s): as good as 20 at a lower latency, better than 10 or 12
#: (docs/tuning.md, "the horizon and the iterations").
DEFAULT_HORIZON = 15


def _objective_config():
    from planners.objective import ObjectiveConfig

    return ObjectiveConfig()


@dataclass(frozen=True)
class PlannerConfig:
    """The EB-LNN planner, nested: its objective, its optimiser with that optimiser's options, the
    horizon and the budget. Every default of the planner is written here or in the nested configs.

    :meth:`from_options` builds one from flat keywords (the picklable form the comparison and the
    tuning grid pass around): ``objective.<name>`` and ``optimizer.<name>`` address a section
    explicitly; a bare name goes to this class's own fields, else to
    :class:`~planners.objective.ObjectiveConfig`, else to the optimiser's config (so ``beta`` is the
    energy weight and ``optimizer.beta`` CEM's noise colour).
    """

    optimizer: str = "langevin"
    """Trajectory optimiser: langevin, cem, mppi or random (:data:`planners.optim.OPTIMIZERS`), or
    pytorch-mppi (the ``pytorch-mppi`` package's MPPI, :mod:`planners.external_mppi`, at the in-house
    MPPI's evaluations per step; its options are :class:`~planners.external_mppi.PyTorchMPPIConfig`'s)."""
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    """Fields of the optimiser's config set here (over :data:`OPTIMIZER_DEFAULTS` and its defaults)."""
    horizon: int = DEFAULT_HORIZON
    """Plan length, control steps."""
    compute: float = 1.0
    """Budget of a gradient-free optimiser, as a multiple of the default Langevin planner's objective
    evaluations per step (a backward pass counted as two); ignored when ``n_candidates`` is given."""
    warm_start: bool = True
    """Start each plan from the previous one shifted by a step."""
    selection: str = "best"
    """Applied plan: the best candidate, or "softmax" (the weighted average of the last population)."""
    selection_temperature: float = 0.5
    """Softmax temperature (in units of the population's cost std)."""
    kappa: float = 0.0
    """Ensembles: weight of the members' spread in the objective (0 with one model: the plain planner)."""
    seed: int = 0
    """Seed of the planner's ``torch.Generator``."""
    fast: bool = True
    """Plan with the fused CfC rollout (False: the stock ncps path; the same plans to float precision)."""
    device: str = "cpu"
    """Torch device of the world model while planning."""
    objective: Any = field(default_factory=_objective_config)
    """The planning objective's settings (:class:`~planners.objective.ObjectiveConfig`)."""

    @classmethod
    def from_options(cls, base: PlannerConfig | None = None, **options: Any) -> PlannerConfig:
        """``base`` (default: the defaults) with flat or dotted ``options``; unknown names are refused."""
        from planners.objective import ObjectiveConfig
        from planners.optim import OPTIMIZERS

        base = base if base is not None else cls()
        own = {f.name for f in fields(cls)} - {"objective", "optimizer_options"}
        obj_names = {f.name for f in fields(ObjectiveConfig)}
        top = {k: v for k, v in options.items() if k in own}
        name = top.get("optimizer", base.optimizer)
        configs = {**{k: v[1] for k, v in OPTIMIZERS.items()}, **_external_optimizers()}
        if name not in configs:
            raise ValueError(f"optimizer={name!r}; allowed: {', '.join(configs)}")
        opt_names = {f.name for f in fields(configs[name])}
        obj_kw: dict[str, Any] = {}
        opt_kw: dict[str, Any] = dict(base.optimizer_options)
        for key, val in options.items():
            if key in own:
                continue
            section, dot, sub = key.partition(".")
            if dot and section not in ("objective", "optimizer"):
                raise ValueError(f"planner option {key!r}: the sections are 'objective.' and 'optimizer.'")
            if dot:
                target = obj_kw if section == "objective" else opt_kw
                bare = "objective" if sub in obj_names else "optimizer" if sub in opt_names else None
                if sub in options and bare == section:
                    raise ValueError(f"{sub!r} and {key!r} both given; one name, one value")
            elif key in obj_names:
                target, sub = obj_kw, key
            elif key in opt_names:
                target, sub = opt_kw, key
            else:
                raise ValueError(f"unknown planner option {key!r}; allowed: {sorted(own)}, the objective's "
                                 f"{sorted(obj_names)} or optimizer {name!r}'s {sorted(opt_names)}")
            target[sub] = val
        objective = dataclasses.replace(base.objective, **obj_kw)
        return dataclasses.replace(base, **top, objective=objective, optimizer_options=opt_kw)


def make_eblnn_planner(env, checkpoint: str | Sequence[str], config: PlannerConfig | None = None,
                       **options: Any):
    """The MPC controller on a trained EB-LNN world model, or on an ensemble of them.

    ``checkpoint``: one checkpoint path, or several (a sequence) for an
    :class:`~planners.objective.EnsemblePlanningModel` that averages the members' objectives
    (plus ``kappa`` times their spread). ``config`` (default: :class:`PlannerConfig`'s defaults)
    with ``options`` applied by :meth:`PlannerConfig.from_options` (flat or dotted names, e.g.
    ``beta=0``, ``optimizer="cem"``, ``**{"optimizer.beta": 2}``). The gradient-free optimisers get
    ``n_candidates`` matched to ``compute`` times the default Langevin planner's objective
    evaluations (a backward pass counted as two), unless ``n_candidates`` is given.
    """
    from eblnn_agent.checkpoint import load_checkpoint
    from planners.mpc import MPCController
    from planners.objective import EnsemblePlanningModel, WorldModelPlanningModel
    from planners.optim import TrajectoryOptimizer, make_matched_optimizer, make_optimizer

    cfg = PlannerConfig.from_options(config, **options)
    paths = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
    if not paths:
        raise ValueError("checkpoint: expected a path or a non-empty sequence of paths, got an empty sequence")
    members = []
    for path in paths:
        model, _, _ = load_checkpoint(Path(path), device=cfg.device)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        members.append(WorldModelPlanningModel(model, cfg.objective, env.unwrapped.weights, fast=cfg.fast,
                                               params=env.unwrapped.params))
    if len(members) == 1 and cfg.kappa == 0:
        planning_model = members[0]
    else:
        planning_model = EnsemblePlanningModel(members, kappa=cfg.kappa)
    if cfg.optimizer == "pytorch-mppi":
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        return _pytorch_mppi(planning_model, cfg, gen, next(model.parameters()).dtype)
    opt_kw = {**OPTIMIZER_DEFAULTS.get(cfg.optimizer, {}), **cfg.optimizer_options}
    if cfg.optimizer != "langevin" and "n_candidates" not in opt_kw:
        budget = cfg.compute * make_optimizer("langevin").nominal_evals()
        opt = make_matched_optimizer(cfg.optimizer, budget, **opt_kw)
    else:
        opt = make_optimizer(cfg.optimizer, **opt_kw)
    traj = TrajectoryOptimizer(opt, horizon=cfg.horizon, warm_start=cfg.warm_start, selection=cfg.selection,
                               temperature=cfg.selection_temperature)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    return MPCController(planning_model, traj, generator=gen, name=f"eblnn-{cfg.optimizer}")


def _external_optimizers() -> dict[str, type]:
    """Optimisers from other packages that the planner can use: name -> their options' config class."""
    from planners.external_mppi import PyTorchMPPIConfig

    return {"pytorch-mppi": PyTorchMPPIConfig}


def _pytorch_mppi(planning_model, cfg: PlannerConfig, generator: torch.Generator, dtype: torch.dtype):
    """``optimizer="pytorch-mppi"``: the library's MPPI at the evaluations per step of the in-house
    ``"mppi"`` peer (built as that peer is); ``cfg.optimizer_options`` override
    :class:`~planners.external_mppi.PyTorchMPPIConfig` (``horizon`` is the planner's)."""
    from planners.external_mppi import PyTorchMPPIController, matched_pytorch_mppi_config
    from planners.optim import make_matched_optimizer, make_optimizer

    if not cfg.warm_start or cfg.selection != "best":
        raise ValueError(f"optimizer='pytorch-mppi' keeps the library's own warm start and applies its updated "
                         f"mean: warm_start={cfg.warm_start!r}, selection={cfg.selection!r} cannot be honoured "
                         "(allowed: warm_start=True, selection='best')")
    budget = cfg.compute * make_optimizer("langevin").nominal_evals()
    peer = make_matched_optimizer("mppi", budget, **OPTIMIZER_DEFAULTS["mppi"])
    config = matched_pytorch_mppi_config(peer, cfg.horizon, **cfg.optimizer_options)
    return PyTorchMPPIController(planning_model, config, generator=generator, dtype=dtype, device=cfg.device,
                                 name="eblnn-pytorch-mppi")


def option_value(text: str):
    """A planner option's value from the command line: int, float, true/false, none, ``a:b`` (a
    tuple, e.g. ``excess_air=0.08:1.0``) or the string itself."""
    if ":" in text:
        return tuple(option_value(x) for x in text.split(":"))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_options(items) -> dict:
    """Planner options from ``KEY=VALUE`` strings (values as :func:`option_value` reads them).

    Raises ``ValueError`` naming the item that is not of that form.
    """
    options = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ValueError(f"planner option {item!r}: expected KEY=VALUE, e.g. horizon=12")
        options[key] = option_value(val)
    return options


def planner_options(items, named: Sequence[str] = ("checkpoint",), set_by: str = "the script's own flags") -> dict:
    """:func:`parse_options`, checked in full now (:meth:`PlannerConfig.from_options`): a script that
    hands the options to episode workers must refuse an unknown name or a bad value before the first
    episode, not inside a worker. ``named``: options the caller sets itself (``set_by`` says how, e.g.
    the checkpoint), refused here rather than silently overriding it. ``ValueError`` naming the option."""
    options = parse_options(items)
    clash = sorted(set(options) & set(named))
    if clash:
        raise ValueError(f"planner option(s) {clash} are set by {set_by}, not here")
    PlannerConfig.from_options(**options)
    return options


def make_sb3(env, path: str):
    """A trained stable-baselines3 PPO or SAC policy (with its saved observation normalisation);
    a residual agent runs on a PI controller with ``env``'s actuator ranges."""
    from planners.sb3_policy import load_sb3_policy

    return load_sb3_policy(path, params=env.unwrapped.params if env is not None else None)
