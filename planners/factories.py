"""Factories ``make_*(env, **kwargs) -> controller`` that the comparison harness imports by name.

Each builds one controller for one evaluation env from plain, picklable arguments (paths,
numbers), so a worker process can build its own copy. The artefacts they load are made by the
training scripts in ``train/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

__all__ = ["make_eblnn_planner", "make_sb3", "OPTIMIZER_KWARGS", "OPT_PREFIX", "option_value"]


#: Prefix of a keyword that goes to the optimiser whatever its name (``opt_beta``: CEM/MPPI's noise colour).
OPT_PREFIX = "opt_"


def _split(kwargs: dict[str, Any], cls) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fields of cls, the rest)``; a key ``opt_<name>`` always goes to the rest, as ``<name>``."""
    names = {f.name for f in fields(cls)}
    forced = [k for k in kwargs if k.startswith(OPT_PREFIX) and k[len(OPT_PREFIX):] in set(kwargs) - names]
    if forced:
        raise ValueError(f"{forced[0]!r} and {forced[0][len(OPT_PREFIX):]!r} both given; one name, one value")
    ours = {k: v for k, v in kwargs.items() if k in names}
    rest = {k[len(OPT_PREFIX):] if k.startswith(OPT_PREFIX) else k: v for k, v in kwargs.items() if k not in names}
    return ours, rest


#: Each optimiser's settings on the world model. Langevin: the default budget (candidates x
#: iterations; horizon below), tuned with ``evaluate/tune_planner.py``; latency in BENCHMARKS.md.
#: CEM and MPPI (their candidates matched to Langevin's compute): tuned on the evaluation
#: scenarios with tuning seeds (BENCHMARKS.md, "its gradient-free peers, tuned"): small
#: perturbations of time-correlated noise (colour ``beta``) around the warm start, as iCEM does.
OPTIMIZER_KWARGS: dict[str, dict[str, Any]] = {
    "langevin": {"n_candidates": 32, "iterations": 5},
    "cem": {"init_std": 0.1, "beta": 3.0},
    "mppi": {"sigma": 0.05, "beta": 2.0, "temperature": 0.1},
}
#: Planning horizon, control steps (75 s; 15 planned as well as 20 at 0.78-0.85x the latency, and better
#: than 10 or 12: BENCHMARKS.md, "the horizon and the iterations").
DEFAULT_HORIZON = 15


def make_eblnn_planner(env, checkpoint: str | Sequence[str], optimizer: str = "langevin",
                       horizon: int = DEFAULT_HORIZON, seed: int = 0, fast: bool = True, warm_start: bool = True,
                       device: str = "cpu", compute: float = 1.0, kappa: float = 0.0, selection: str = "best",
                       selection_temperature: float = 0.5, **kwargs: Any):
    """The MPC controller on a trained EB-LNN world model, or on an ensemble of them.

    ``checkpoint``: one checkpoint path, or several (a sequence) for an
    :class:`~planners.objective.EnsemblePlanningModel` that averages the members' objectives
    (plus ``kappa`` times their spread). ``kwargs`` go to
    :class:`~planners.objective.ObjectiveConfig` (``beta``, ``smooth``, ...) when they name one
    of its fields, else to the optimiser's config; ``opt_<name>`` goes to the optimiser's
    ``<name>`` where both have one (``opt_beta``: the noise colour of CEM and MPPI, while ``beta``
    is the energy weight). The gradient-free optimisers get
    ``n_candidates`` matched to ``compute`` times the default Langevin planner's objective
    evaluations (a backward pass counted as two), unless ``n_candidates`` is given.
    ``selection`` and ``selection_temperature``: which plan is applied, the best candidate or the
    softmax-weighted average of the last population (:class:`~planners.optim.TrajectoryOptimizer`).
    """
    from eblnn_agent.checkpoint import load_checkpoint
    from planners.mpc import MPCController
    from planners.objective import EnsemblePlanningModel, ObjectiveConfig, WorldModelPlanningModel
    from planners.optim import TrajectoryOptimizer, make_matched_optimizer, make_optimizer

    obj_kw, opt_kw = _split(kwargs, ObjectiveConfig)
    paths = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
    if not paths:
        raise ValueError("checkpoint: expected a path or a non-empty sequence of paths, got an empty sequence")
    objective = ObjectiveConfig(**obj_kw)
    members = []
    for path in paths:
        model, _, _ = load_checkpoint(Path(path), device=device)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        members.append(WorldModelPlanningModel(model, objective, env.unwrapped.weights, fast=fast,
                                               params=env.unwrapped.params))
    if len(members) == 1 and kappa == 0:
        planning_model = members[0]
    else:
        planning_model = EnsemblePlanningModel(members, kappa=kappa)
    opt_kw = {**OPTIMIZER_KWARGS.get(optimizer, {}), **opt_kw}
    if optimizer != "langevin" and "n_candidates" not in opt_kw:
        budget = compute * make_optimizer("langevin", **OPTIMIZER_KWARGS["langevin"]).nominal_evals()
        opt = make_matched_optimizer(optimizer, budget, **opt_kw)
    else:
        opt = make_optimizer(optimizer, **opt_kw)
    traj = TrajectoryOptimizer(opt, horizon=horizon, warm_start=warm_start, selection=selection,
                               temperature=selection_temperature)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return MPCController(planning_model, traj, generator=gen, name=f"eblnn-{optimizer}")


def option_value(text: str):
    """A planner option's value from the command line: int, float, true/false, ``a:b`` (a tuple,
    e.g. ``excess_air=0.08:1.0``) or the string itself."""
    if ":" in text:
        return tuple(option_value(x) for x in text.split(":"))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


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


def make_sb3(env, path: str):
    """A trained stable-baselines3 PPO or SAC policy (with its saved observation normalisation);
    a residual agent runs on a PI controller with ``env``'s actuator ranges."""
    from planners.sb3_policy import load_sb3_policy

    return load_sb3_policy(path, params=env.unwrapped.params if env is not None else None)
