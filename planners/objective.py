"""The planning objective on the learned EB-LNN world model, and the model-based controllers built on it.

At each control step the controller filters the newest real observation through the CfC body
(so its hidden state summarises the disturbances it cannot see), then an optimiser minimises

    J(a_{0:H}) = sum_t cost(o_hat_{t+1})  +  beta * E(h_hat_{1:H})  +  smooth * sum_t |a_t - a_{t-1}|^2

over a batch of candidate action sequences, where ``o_hat`` is the physics head's imagined
trajectory, ``cost`` is the environment's own step cost (:func:`furnace_env.cost.obs_cost`, the
reward's formula, evaluated in torch) and ``E`` the energy head on the imagined hidden states:
the term meant to keep plans where the world model has seen real furnace behaviour. Its weight
``beta`` is 0 by default (chosen on the tune family: the term did not pay there); the energy then
serves the run-time trust monitor, and ``beta > 0`` is the comparison's ``eblnn-energy`` row.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from furnace_env.cost import CostWeights, obs_cost, obs_cost_terms
from furnace_env.env import validate_observation
from furnace_env.physics import FurnaceParams
from furnace_env.ratio import DEFAULT_EXCESS_AIR, RatioActions
from planners.estimate import corrected_estimate, gain_vector, validate_gains

__all__ = ["ObjectiveConfig", "WorldModelPlanningModel", "EnsemblePlanningModel"]


@dataclass(frozen=True)
class ObjectiveConfig:
    """Terms of the planning objective."""

    beta: float = 0.0
    """Weight of the learned energy of the imagined hidden states (0: no energy term). The energy is
    meant to keep the plan where the world model's predictions can be trusted; too much of it pulls
    the plan towards the training data's operation (PI-like excess air). On the tune family with
    its plant changes, 0 gave the largest margin over PI with both world models tried, ahead of 0.5
    and 1 (docs/tuning.md, "the energy weight on the tune family with plant changes"), so the energy
    serves the run-time trust monitor (:mod:`planners.trust`) and ``eblnn-energy`` (beta 1) is the
    comparison's row with the term on."""
    smooth: float = 60.0
    """Weight of the action-smoothness term (move suppression), per unit squared change of a command.
    It is what keeps the plan from passing sensor noise and model error to the valves: on the tune
    family without the energy term, 60 kept the margin over PI of 20 and cut valve travel by a third
    (docs/tuning.md, "the move suppression without the energy term")."""
    energy_reduce: str = "sequence"
    """How the energy enters: "sequence" (the model's multi-scale sequence energy) or "mean" (mean fine energy)."""
    terminal_steps: float = 10.0
    """Cost-to-go beyond the horizon: the tracking cost of the last predicted temperature, counted
    this many more steps. Without it a short horizon sees the fuel saved now but not the
    temperature lost later, and the plan starves the furnace; too much of it makes the plan chase
    the model's least accurate prediction. Chosen with the integral action on, which holds the
    steady state (docs/tuning.md, "the objective's safety terms")."""
    coords: str = "ratio"
    """Search coordinates: "ratio" (fuel command, burner excess air in ``excess_air``) or "raw" (env actions)."""
    excess_air: tuple[float, float] = DEFAULT_EXCESS_AIR
    """Excess-air range ``lambda - 1`` mapped onto [-1, 1] in "ratio" coordinates (nominal fuel quality)."""
    co_backoff: float = 0.85
    """Constraint tightening: the plan is charged for predicted CO above ``(1 - co_backoff)`` times the
    env's CO limit (0: the env's own limit). A back-off keeps the plan a margin away from the CO knee,
    where a learned model's CO error is largest and an optimiser would otherwise exploit it
    (docs/tuning.md, "the objective's safety terms")."""
    o2_backoff: float = 1.5
    """Constraint tightening of the O2 minimum, percentage points added to the env's ``o2_min``: the
    plan pays for predicted O2 below ``o2_min + o2_backoff``. It is the margin a combustion engineer
    keeps for an unmeasured rise in the fuel's air demand, which the analysers report only after
    their dead time, when the CO it causes has already been charged (``fuel_quality``: a step to 9 %
    more air demand). A larger margin costs more fuel in excess air than the CO it saves
    (docs/tuning.md, "world-model data and the O2 margin")."""
    bias_filter: float = 0.1
    """Offset-free MPC (output-disturbance estimate, as in DMC): weight ``alpha`` of an exponential
    filter of the model's one-step prediction errors on the real plant, ``b <- (1 - alpha) b + alpha e``,
    added to every predicted step of the horizon: additive for temperature and O2, multiplicative
    (in ``log(CO + co_floor)``) for CO. 0 switches it off. It corrects the model where the plant
    is now (a leak, a fuel it has not seen) without retraining. A light filter (small ``alpha``)
    keeps the sensor noise out of the plan, and so out of the valves (docs/tuning.md, "the
    offset-free correction's filter")."""
    co_floor: float = 10.0
    """CO offset of the multiplicative CO correction, ppm (keeps the log finite near zero CO)."""
    track_integral: float = 0.02
    """Integral action by target shifting: each control step the plan's temperature target moves
    by this gain times the measured tracking error ``setpoint - T`` (K per K per step), so a model
    whose steady-state gain is off (it expects a rise that never comes, and the plan under-fires)
    is pushed to the setpoint. Integrates only while ``|setpoint - T| <= track_integral_band``
    (not through transients); reset when the setpoint moves. 0 switches it off. It helps on
    full-length episodes and costs a little on short ones, which leave an integrator little
    time (docs/tuning.md, "the objective's safety terms")."""
    track_integral_max: float = 20.0
    """Largest target shift of ``track_integral``, K (anti-windup)."""
    track_integral_band: float = 15.0
    """Tracking errors beyond this, K, are transients and are not integrated."""
    state_gain: tuple[float, ...] | None = None
    """Where imagined rollouts start: ``None``, the raw noisy reading; or the gains of a
    steady-state state estimator (:mod:`planners.estimate`), one per channel (temperature, O2,
    CO, fuel flow, air flow) in (0, 1]: rollouts start from the model's one-step prediction
    corrected by that fraction of the innovation, so the sensor noise does not pass into the
    plan. ``python evaluate/estimator_gains.py --checkpoint ...`` computes them for a model from
    the instruments' noise and the model's one-step error on held-out episodes."""

    def __post_init__(self) -> None:
        for name in ("beta", "smooth"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"ObjectiveConfig.{name}={v!r} must be finite and >= 0")
        if not (np.isfinite(self.terminal_steps) and self.terminal_steps >= 0):
            raise ValueError(f"ObjectiveConfig.terminal_steps={self.terminal_steps!r} must be finite and >= 0")
        if self.coords not in ("ratio", "raw"):
            raise ValueError(f"ObjectiveConfig.coords={self.coords!r}; allowed: 'ratio', 'raw'")
        if not -1.0 < self.excess_air[0] < self.excess_air[1]:
            raise ValueError(f"ObjectiveConfig.excess_air={self.excess_air!r} must satisfy -1 < low < high")
        if not (np.isfinite(self.co_backoff) and 0.0 <= self.co_backoff < 1.0):
            raise ValueError(f"ObjectiveConfig.co_backoff={self.co_backoff!r} must lie in [0, 1)")
        if not (np.isfinite(self.o2_backoff) and self.o2_backoff >= 0):
            raise ValueError(f"ObjectiveConfig.o2_backoff={self.o2_backoff!r} must be finite and >= 0")
        if not (np.isfinite(self.bias_filter) and 0.0 <= self.bias_filter <= 1.0):
            raise ValueError(f"ObjectiveConfig.bias_filter={self.bias_filter!r} must lie in [0, 1]")
        if not (np.isfinite(self.co_floor) and self.co_floor > 0):
            raise ValueError(f"ObjectiveConfig.co_floor={self.co_floor!r} must be finite and > 0")
        for name in ("track_integral", "track_integral_max", "track_integral_band"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"ObjectiveConfig.{name}={v!r} must be finite and >= 0")
        if self.energy_reduce not in ("sequence", "mean"):
            raise ValueError(f"ObjectiveConfig.energy_reduce={self.energy_reduce!r}; allowed: 'sequence', 'mean'")
        if self.state_gain is not None:
            object.__setattr__(self, "state_gain", validate_gains(self.state_gain, "ObjectiveConfig.state_gain"))


class WorldModelPlanningModel:
    """Adapts an :class:`~eblnn_agent.model.EBLNN` to the MPC controller's planning-model protocol.

    Holds the filtered hidden state of the real plant (one furnace); builds objectives over
    candidate action sequences ``[N, H, 2]`` from it. ``fast`` selects the fused CfC rollout
    (the stock ``ncps`` forward otherwise; both give the same plans).
    """

    def __init__(self, model, objective: ObjectiveConfig | None = None, weights: CostWeights | None = None,
                 fast: bool = True, params: FurnaceParams | None = None) -> None:
        self.model = model
        self.cfg = objective if objective is not None else ObjectiveConfig()
        self._ratio = RatioActions(params, self.cfg.excess_air)
        self.weights = weights if weights is not None else CostWeights()
        # The planner's own copy of the cost, tightened by the back-offs (the env's reward is untouched).
        self.plan_weights = dataclasses.replace(
            self.weights, co_limit=self.weights.co_limit * (1.0 - self.cfg.co_backoff),
            o2_min=self.weights.o2_min + self.cfg.o2_backoff)
        self.fast = bool(fast)
        if self.fast and any(p.requires_grad for p in model.parameters()):
            warnings.warn("planning with weights that require gradients: the frozen-weight fused rollout "
                          "(one autograd node) is not used and plans cost about twice as much; call "
                          "model.requires_grad_(False) first (planners.factories.make_eblnn_planner does)",
                          stacklevel=2)
        self.device = next(model.parameters()).device
        self._dtype = next(model.parameters()).dtype
        self._gain = (None if self.cfg.state_gain is None
                      else gain_vector(self.cfg.state_gain, dtype=self._dtype, device=self.device))
        self.reset()

    def reset(self) -> None:
        self._h: torch.Tensor | None = None
        self._last_obs: torch.Tensor | None = None
        self._last_action: torch.Tensor | None = None
        # Output-disturbance estimate (temperature K, O2 points, log CO ratio); see ``bias_filter``.
        self.bias = torch.zeros(3, dtype=self._dtype, device=self.device)
        # Target shift of the integral action (K), see ``track_integral``.
        self.target_shift = 0.0
        # State estimates of the newest and the previous step (``state_gain``; None: off).
        self.estimate: torch.Tensor | None = None
        self._prev_estimate: torch.Tensor | None = None

    def _tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=self._dtype, device=self.device).reshape(1, -1)

    @torch.no_grad()
    def observe(self, obs: np.ndarray) -> None:
        """Filter one real observation: ``h_t = step(o_{t-1}, a_{t-1}, h_{t-1})`` (and, with
        ``state_gain``, update the state estimate).

        The observation is checked first (:func:`~furnace_env.env.validate_observation`), and the
        new hidden state and bias estimate are committed only when finite: a ``ValueError`` leaves
        the filter as it was, so its state can never turn NaN silently.
        """
        obs = validate_observation(obs)[0]
        if obs.shape[0] != 1:
            raise ValueError(f"observation batch of shape {obs.shape}: the planning model filters one furnace")
        o = self._tensor(obs)
        h, bias = self._h, self.bias
        prior = None
        if h is None:
            h = self.model.initial_state(1).to(self.device, self._dtype)
        elif self._last_action is not None:
            h = self.model.step(self._last_obs, self._last_action, h)
            if self._gain is not None and self.estimate is not None:
                # Predicted from the previous estimate, with the offset correction known before o_t.
                prior = self.correct(self.model.predict_next(self.estimate, h, self._last_action))
            if self.cfg.bias_filter > 0:
                pred = self.model.predict_next(self._last_obs, h, self._last_action)
                err = torch.stack([o[0, 0] - pred[0, 0], o[0, 2] - pred[0, 2],
                                   torch.log((o[0, 3].clamp_min(0) + self.cfg.co_floor)
                                             / (pred[0, 3].clamp_min(0) + self.cfg.co_floor))])
                bias = bias + self.cfg.bias_filter * (err - bias)
        if not (bool(torch.isfinite(h).all()) and bool(torch.isfinite(bias).all())):
            raise ValueError(f"the world model's filtered state turned non-finite on observation {obs[0].tolist()}; "
                             "the planner's state is left as it was (check the observation's scale)")
        self._h, self.bias = h, bias
        if self._gain is not None:
            # Nothing to predict from (the first reading, no action applied): the reading as it is.
            self._prev_estimate = self.estimate if self.estimate is not None else o
            self.estimate = o if prior is None else corrected_estimate(prior, o, self._gain)
        if self.cfg.track_integral > 0:
            self._integrate(o)
        self._last_obs = o

    def _integrate(self, o: torch.Tensor) -> None:
        c = self.cfg
        if self._last_obs is not None and float(o[0, 1]) != float(self._last_obs[0, 1]):
            self.target_shift = 0.0  # a new setpoint: the old offset says nothing about it
        err = float(o[0, 1] - o[0, 0])
        if abs(err) <= c.track_integral_band:
            self.target_shift = float(np.clip(self.target_shift + c.track_integral * err,
                                              -c.track_integral_max, c.track_integral_max))

    def correct(self, obs: torch.Tensor) -> torch.Tensor:
        """Predicted observations ``[..., 8]`` corrected by the output-disturbance estimate, with the
        temperature target (the setpoint channel) moved by the integral action's shift."""
        if self.cfg.bias_filter == 0 and self.target_shift == 0.0:
            return obs
        b, f = self.bias, self.cfg.co_floor
        co = (obs[..., 3] + f) * torch.exp(b[2]) - f
        return torch.stack([obs[..., 0] + b[0], obs[..., 1] + self.target_shift, obs[..., 2] + b[1], co,
                            *obs.unbind(-1)[4:]], -1)

    def applied(self, action: np.ndarray) -> None:
        """Record the action actually sent to the plant (consumed by the next :meth:`observe`)."""
        self._last_action = self._tensor(action)

    # -- search coordinates ---------------------------------------------------------------
    def to_actions(self, u):
        """Search coordinates ``[..., 2]`` -> env actions (torch or numpy; differentiable in torch)."""
        return u if self.cfg.coords == "raw" else self._ratio.to_env(u)

    def decode(self, u: np.ndarray) -> np.ndarray:
        """The plant action of a plan step (the MPC controller applies this)."""
        return self.to_actions(np.asarray(u, dtype=np.float64))

    def encode(self, action: np.ndarray) -> np.ndarray:
        """Env actions -> search coordinates (inverse of :meth:`to_actions` inside its range)."""
        a = np.asarray(action, dtype=np.float64)
        return a.copy() if self.cfg.coords == "raw" else self._ratio.from_env(a)

    def nominal_action(self) -> np.ndarray | None:
        """The commands now applied (the observation's previous-action channels), in search coordinates."""
        if self._last_obs is None:
            return None
        return self.encode(self._last_obs[0, 6:8].detach().cpu().numpy().astype(np.float64))

    def plan_start(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(obs0 [1, 8], h0 [1, S])`` the imagined rollouts start from: the newest reading and the
        filtered state, or with ``state_gain`` the state estimate and the filtered state whose
        previous observation is the previous estimate (:meth:`~eblnn_agent.model.EBLNN.with_previous_obs`)."""
        if self._h is None or self._last_obs is None:
            raise RuntimeError("observe() an observation before planning")
        if self._gain is None:
            return self._last_obs, self._h
        return self.estimate, self.model.with_previous_obs(self._h, self._prev_estimate)

    def make_objective(self, obs: np.ndarray | None = None, terms: bool = False):
        """The objective ``actions [N, H, 2] -> cost [N]`` from the current filtered state.

        ``terms=True``: the callable returns the objective's terms instead, a dict of ``[N]``
        tensors whose sum is the objective: ``track``, ``fuel``, ``co``, ``o2`` (the step cost's
        terms with the back-offs, summed over the horizon), ``terminal``, ``energy`` (times
        ``beta``) and ``smooth`` (the last three 0 where their weight is 0). For diagnosis
        (``evaluate/objective_landscape.py``); the planner uses the plain sum.
        """
        o0, h0 = self.plan_start()
        a_prev = o0[:, 6:8]
        cfg, w, model, fast = self.cfg, self.plan_weights, self.model, self.fast

        to_actions, correct = self.to_actions, self.correct

        def objective(u: torch.Tensor):
            n = u.shape[0]
            actions = to_actions(u)
            out = model.rollout(o0.expand(n, -1), h0.expand(n, -1), actions, fast=fast)
            pred = correct(out.obs)
            if terms:
                parts = dict(zip(("track", "fuel", "co", "o2"), (t.sum(dim=1) for t in obs_cost_terms(pred, w)),
                                 strict=True))
                parts.update(terminal=torch.zeros_like(parts["fuel"]), energy=torch.zeros_like(parts["fuel"]),
                             smooth=torch.zeros_like(parts["fuel"]))
            cost = obs_cost(pred, w).sum(dim=1)
            if cfg.terminal_steps > 0:
                err = (pred[:, -1, 0] - pred[:, -1, 1]).abs()
                term = cfg.terminal_steps * w.w_track * err / w.track_scale
                cost = cost + term
                if terms:
                    parts["terminal"] = term
            if cfg.beta > 0:
                # out.energy is the fine energy of each step: reused, not recomputed.
                energy = out.energy.mean(dim=1)
                if cfg.energy_reduce == "sequence":  # = model.sequence_energy(out.hidden)
                    energy = energy + model.coarse_energy(out.hidden.mean(dim=1))
                cost = cost + cfg.beta * energy
                if terms:
                    parts["energy"] = cfg.beta * energy
            if cfg.smooth > 0:
                prev = torch.cat([a_prev.expand(n, 1, -1), actions[:, :-1]], dim=1)
                sm = cfg.smooth * (actions - prev).pow(2).sum(dim=(1, 2))
                cost = cost + sm
                if terms:
                    parts["smooth"] = sm
            return parts if terms else cost

        return objective


class EnsemblePlanningModel:
    """Several world models planned as one, as in PETS: the objective is the mean of the members'.

    Each member (a :class:`WorldModelPlanningModel`, e.g. the same architecture trained on the
    same data from different initialisations) filters the real observations through its own CfC
    body and keeps its own output-disturbance and integral-action state. A candidate sequence is
    scored by every member and the scores averaged (plus ``kappa`` times their standard
    deviation: a pessimistic plan where the members disagree), so the optimiser cannot exploit
    an error that one model makes and the others do not. Search coordinates and action decoding
    are the first member's (all members share the objective configuration).
    """

    def __init__(self, members: list[WorldModelPlanningModel], kappa: float = 0.0) -> None:
        if len(members) < 1:
            raise ValueError("EnsemblePlanningModel needs at least one member")
        if not (np.isfinite(kappa) and kappa >= 0):
            raise ValueError(f"kappa={kappa!r} must be finite and >= 0")
        cfgs = {m.cfg for m in members}
        if len(cfgs) != 1:
            raise ValueError("ensemble members must share one ObjectiveConfig")
        self.members = list(members)
        self.kappa = float(kappa)
        self.cfg = members[0].cfg

    def reset(self) -> None:
        for m in self.members:
            m.reset()

    def observe(self, obs: np.ndarray) -> None:
        validate_observation(obs)  # before any member moves
        for m in self.members:
            m.observe(obs)

    def applied(self, action: np.ndarray) -> None:
        for m in self.members:
            m.applied(action)

    def to_actions(self, u):
        return self.members[0].to_actions(u)

    def decode(self, u: np.ndarray) -> np.ndarray:
        return self.members[0].decode(u)

    def encode(self, action: np.ndarray) -> np.ndarray:
        return self.members[0].encode(action)

    def nominal_action(self) -> np.ndarray | None:
        return self.members[0].nominal_action()

    def make_objective(self, obs: np.ndarray | None = None, terms: bool = False):
        """The mean (plus ``kappa`` x the spread) of the members' objectives; ``terms=True``: each
        term averaged over the members, plus ``spread`` (``kappa`` x the standard deviation)."""
        objs = [m.make_objective(obs, terms=terms) for m in self.members]
        kappa = self.kappa

        def objective(u: torch.Tensor):
            vals = [f(u) for f in objs]
            if terms:
                parts = {k: torch.stack([v[k] for v in vals]).mean(0) for k in vals[0]}
                total = torch.stack([sum(v.values()) for v in vals])
                parts["spread"] = (kappa * total.std(0, unbiased=False) if kappa > 0
                                   else torch.zeros_like(total[0]))
                return parts
            costs = torch.stack(vals)
            cost = costs.mean(0)
            return cost + kappa * costs.std(0, unbiased=False) if kappa > 0 else cost

        return objective
