"""Receding-horizon control: any planning model + any trajectory optimiser -> a :class:`Controller`.

The controller knows nothing about what predicts the future. A *planning model* (the learned
world model, or the oracle on the true physics) filters the real observations and builds an
objective over candidate action sequences; the :class:`~planners.optim.TrajectoryOptimizer`
minimises it. Each control step the first action of the plan is applied and the rest of the plan
warm-starts the next step (TD-MPC2's shifted warm start).
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from furnace_env.control import Controller, one_plant_observation
from planners.optim import Objective, PlanResult, TrajectoryOptimizer

__all__ = ["PlanningModel", "MPCController"]


@runtime_checkable
class PlanningModel(Protocol):
    """What :class:`MPCController` needs from a model of the plant.

    Optional extras, used when present: ``applied(action [A])`` is told the action actually sent
    to the plant (a recurrent filter consumes it at the next ``observe``);
    ``nominal_action() -> [A] | None`` gives the action now applied at the first step, before the
    controller has applied any (a bumpless start); ``decode(plan [..., A]) -> actions`` maps the
    optimiser's search coordinates to plant actions when the model plans in other coordinates
    (identity when absent; ``nominal_action`` is then in search coordinates too).
    """

    def reset(self) -> None:
        """Start a new episode (forget the filtered state)."""

    def observe(self, obs: np.ndarray) -> None:
        """Filter one real observation ``[obs_dim]``."""

    def make_objective(self, obs: np.ndarray) -> Objective:
        """The objective ``actions [N, H, A] -> cost [N]`` from the current (filtered) state."""


class MPCController(Controller):
    """Model-predictive control of one plant: plan, apply the first action, warm-start the next plan.

    Args:
        model: a :class:`PlanningModel`.
        trajopt: the trajectory optimiser (owns horizon, bounds, warm start and plan selection).
        generator: the planner's random generator; its state at construction is restored by
            :meth:`reset`, so an episode replays exactly. A fresh one seeded with ``seed`` if omitted.
        seed: seed of the fresh generator.
        name: shown in reports.

    After each :meth:`act`, ``last_plan`` holds the :class:`~planners.optim.PlanResult` and
    ``latencies`` the wall-clock seconds of every planning call of the episode.
    """

    def __init__(self, model: PlanningModel, trajopt: TrajectoryOptimizer,
                 generator: torch.Generator | None = None, seed: int = 0, name: str = "mpc") -> None:
        for method in ("reset", "observe", "make_objective"):
            if not callable(getattr(model, method, None)):
                raise ValueError(f"model {type(model).__name__} has no {method}(); it must follow PlanningModel")
        if not isinstance(trajopt, TrajectoryOptimizer):
            raise ValueError(f"trajopt={trajopt!r} is not a TrajectoryOptimizer")
        self.model = model
        self.trajopt = trajopt
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._gen_state = self.generator.get_state()
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.model.reset()
        self.trajopt.reset()
        self.generator.set_state(self._gen_state)
        self._last_action: np.ndarray | None = None
        self.last_plan: PlanResult | None = None
        self.latencies: list[float] = []
        self.total_evals = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        # Before the model's filter sees it; any width (the controller knows no plant), the model checks its own.
        o = one_plant_observation(obs, "MPCController")
        t0 = time.perf_counter()
        self.model.observe(o)
        hold = self._last_action
        if hold is None and callable(getattr(self.model, "nominal_action", None)):
            hold = self.model.nominal_action()
        objective = self.model.make_objective(o)
        res = self.trajopt.plan(objective, self.generator, hold=hold)
        first = res.actions[0].detach().cpu().numpy().astype(np.float64)
        decode = getattr(self.model, "decode", None)
        action = np.clip(decode(first) if callable(decode) else first, -1.0, 1.0)
        if callable(getattr(self.model, "applied", None)):
            self.model.applied(action)
        self._last_action = first  # the next plan's hold sequence, in search coordinates
        self.last_plan = res
        self.total_evals += res.n_evals
        self.latencies.append(time.perf_counter() - t0)
        return action[None].astype(np.float32)

    def applied(self, action: np.ndarray) -> None:
        """Tell the model the action actually sent to the plant, where it differs from the one
        :meth:`act` returned (exploration noise, a supervisor's override)."""
        if callable(getattr(self.model, "applied", None)):
            self.model.applied(np.asarray(action))

    def track(self, obs: np.ndarray, action: np.ndarray) -> None:
        """Follow the plant while another controller holds it: filter ``obs`` as :meth:`act` would and
        record ``action`` as the one applied, so the model's state and the warm start are those of
        the plant when control comes back (a bumpless return)."""
        o = np.asarray(obs, dtype=np.float64).reshape(-1)
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        self.model.observe(o)
        self.applied(a)
        encode = getattr(self.model, "encode", None)
        self._last_action = encode(a) if callable(encode) else a
        self.trajopt.reset()  # the stored plan was not followed

    def stats(self) -> dict[str, Any]:
        """Planner diagnostics of the episode so far (namespaced ``planner/``)."""
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        return {"planner/latency_ms_mean": float(lat.mean() * 1e3),
                "planner/latency_ms_p95": float(np.percentile(lat, 95) * 1e3),
                "planner/evals_per_step": self.total_evals / max(1, len(self.latencies))}
