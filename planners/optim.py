"""Model-agnostic optimisers over batches of action sequences, and the trajectory optimiser that owns them.

An objective maps candidate action sequences ``[N, H, A]`` to costs ``[N]`` (lower is better).
It may return a torch tensor or a numpy array; gradient methods need a differentiable torch
objective. Every optimiser implements only :meth:`Optimizer.optimize` (as in mbrl-lib's
``trajectory_opt.py``): it starts from a few given rows (``init``; row 0 is the nominal plan),
fills its population with its own samples, and returns the candidates it evaluated last, their
costs and the best sequence it evaluated. :class:`TrajectoryOptimizer` owns what all of them
share, once: shapes, bounds, the warm start (previous plan shifted by one step, last step
repeated, plus shifted kept candidates and fresh random sequences) and the choice of the
returned plan (best, or a softmax-weighted average).

Compute is measured in *evaluations*: one candidate sequence rolled out through the objective
once. A backward pass through the objective costs about two forward passes (the usual rule
for reverse-mode differentiation of a recurrent rollout), so one gradient step of
:class:`LangevinOptimizer` on ``N`` candidates counts ``N * (1 + backward_cost)`` with
``backward_cost = 2``. :func:`make_matched_optimizer` builds peers at an equal budget.

All randomness comes from the ``torch.Generator`` passed in: the same seed gives the same plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Objective",
    "OptimResult",
    "PlanResult",
    "Optimizer",
    "LangevinConfig",
    "LangevinOptimizer",
    "CEMConfig",
    "CEMOptimizer",
    "MPPIConfig",
    "MPPIOptimizer",
    "RandomShootingConfig",
    "RandomShootingOptimizer",
    "TrajectoryOptimizer",
    "OPTIMIZERS",
    "make_optimizer",
    "make_matched_optimizer",
    "colored_noise",
    "softmax_weights",
    "shift_plan",
]

#: ``actions [N, H, A] -> cost [N]`` (torch or numpy; lower is better).
Objective = Callable[[Tensor], Any]
Bound = float | Sequence[float] | Tensor


class OptimResult(NamedTuple):
    """What an optimiser returns."""

    candidates: Tensor
    """The last evaluated population ``[N, H, A]`` (in bounds)."""
    costs: Tensor
    """Their costs ``[N]`` (``+inf`` where the objective was not finite)."""
    best: Tensor
    """The lowest-cost sequence evaluated in any iteration ``[H, A]``."""
    best_cost: float
    """Its cost."""
    n_evals: int
    """Objective evaluations spent, in candidate-rollouts (a backward counts ``backward_cost``)."""
    iterations: int
    """Iterations run (fewer than configured when halted early)."""
    info: dict[str, Any]
    """Diagnostics (namespaced keys ``planner/...``)."""


class PlanResult(NamedTuple):
    """What :meth:`TrajectoryOptimizer.plan` returns."""

    actions: Tensor
    """The chosen plan ``[H, A]``."""
    cost: float
    """Its cost under the objective."""
    n_evals: int
    """Objective evaluations spent (see :class:`OptimResult`)."""
    iterations: int
    """Optimiser iterations run."""
    info: dict[str, Any]
    """Diagnostics from the optimiser and the selection."""


# -- pure helpers ----------------------------------------------------------------------------------
def shift_plan(plans: Tensor, steps: int = 1) -> Tensor:
    """Drop the first ``steps`` actions of ``plans [..., H, A]`` and repeat the last one (a warm start)."""
    if steps <= 0:
        return plans.clone()
    h = plans.shape[-2]
    steps = min(steps, h)
    tail = plans[..., -1:, :].expand(*plans.shape[:-2], steps, plans.shape[-1])
    return torch.cat([plans[..., steps:, :], tail], dim=-2)


def softmax_weights(costs: Tensor, temperature: float, normalize: bool = True) -> Tensor:
    """Weights ``exp(-(c - c_min) / (temperature * s))`` summing to one; ``+inf`` costs get zero.

    ``s`` is the standard deviation of the finite costs when ``normalize`` (so the temperature is
    free of the objective's units), else 1 (the temperature is in cost units, as in MPPI).
    """
    finite = torch.isfinite(costs)
    if not finite.any():
        return torch.full_like(costs, 1.0 / costs.numel())
    c = torch.where(finite, costs, torch.full_like(costs, float("inf")))
    scale = 1.0
    if normalize and int(finite.sum()) > 1:
        scale = float(c[finite].std()) + 1e-12
    z = -(c - c[finite].min()) / (temperature * scale)
    return torch.softmax(z, dim=0)


def colored_noise(beta: float, shape: tuple[int, int, int], generator: torch.Generator,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Unit-variance Gaussian noise ``[N, H, A]`` with power spectrum ``~ 1/f^beta`` along the time axis H.

    ``beta = 0`` is white noise; larger ``beta`` gives smoother, lower-frequency sequences (iCEM,
    Pinneri et al. 2020, section 3.1). Generated in the frequency domain and transformed back by an
    inverse real FFT (Timmer and Koenig 1995, as the ``colorednoise`` package), scaled to unit variance.
    """
    n, h, a = shape
    if beta == 0 or h < 2:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    f = torch.fft.rfftfreq(h, dtype=torch.float64)
    f[0] = 1.0 / h  # the lowest resolvable frequency stands in for DC
    s = f ** (-beta / 2.0)
    # Exact variance of the inverse transform below (DC and Nyquist bins are real), so std = 1.
    var = 2.0 * s[0] ** 2 + 4.0 * (s[1:] ** 2).sum()
    if h % 2 == 0:
        var = var - 2.0 * s[-1] ** 2
    sigma = torch.sqrt(var) / h
    re = torch.randn((n, a, f.numel()), generator=generator, dtype=torch.float64, device="cpu") * s
    im = torch.randn((n, a, f.numel()), generator=generator, dtype=torch.float64, device="cpu") * s
    if h % 2 == 0:
        im[..., -1] = 0.0
        re[..., -1] *= math.sqrt(2.0)
    im[..., 0] = 0.0
    re[..., 0] *= math.sqrt(2.0)
    y = torch.fft.irfft(torch.complex(re, im), n=h, dim=-1) / sigma
    return y.transpose(1, 2).to(dtype=dtype, device=device).contiguous()


def _uniform(n: int, like: Tensor, lower: Tensor, upper: Tensor, generator: torch.Generator) -> Tensor:
    u = torch.rand((n, *like.shape[1:]), generator=generator, dtype=like.dtype, device=like.device)
    return lower + (upper - lower) * u


class _Evaluator:
    """Calls the objective, checks its output, maps non-finite costs to ``+inf`` and counts."""

    def __init__(self, objective: Objective, backward_cost: float = 2.0) -> None:
        self.objective = objective
        self.backward_cost = backward_cost
        self.n_evals = 0.0
        self.n_nonfinite = 0

    def _check(self, out: Any, x: Tensor) -> Tensor:
        if not isinstance(out, Tensor):
            out = torch.as_tensor(np.asarray(out), device=x.device)
        if out.shape != (x.shape[0],):
            raise ValueError(f"objective returned shape {tuple(out.shape)}; expected ({x.shape[0]},) "
                             f"for candidates of shape {tuple(x.shape)}")
        return out

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            c = self._check(self.objective(x), x).to(x.dtype)
        self.n_evals += x.shape[0]
        bad = ~torch.isfinite(c)
        if bad.any():
            self.n_nonfinite += int(bad.sum())
            c = torch.where(bad, torch.full_like(c, float("inf")), c)
        return c

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Costs and gradients; non-finite entries are left for the caller to repair."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            c = self._check(self.objective(xg), x)
            if not c.requires_grad:
                raise ValueError("LangevinOptimizer needs a differentiable torch objective "
                                 "(its output does not depend on the actions through autograd); "
                                 "use 'cem', 'mppi' or 'random' for black-box objectives")
            (g,) = torch.autograd.grad(c.sum(), xg)
        self.n_evals += x.shape[0] * (1.0 + self.backward_cost)
        return c.detach().to(x.dtype), g.detach()


class _Best:
    """The lowest-cost sequence seen over all iterations."""

    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.cost = float("inf")

    def update(self, x: Tensor, c: Tensor) -> None:
        i = int(torch.argmin(c))
        ci = float(c[i])
        if self.x is None or ci < self.cost:
            self.x, self.cost = x[i].detach().clone(), ci


def _fill(init: Tensor, n: int, sampler: Callable[[int], Tensor]) -> Tensor:
    """The first population: the given rows (at most ``n``), then ``n - len(init)`` samples."""
    m = min(init.shape[0], n)
    if m == n:
        return init[:n].clone()
    return torch.cat([init[:m], sampler(n - m)], dim=0)


def _check_positive(cfg: Any, names: Sequence[str], integer: Sequence[str] = ()) -> None:
    cls = type(cfg).__name__
    for name in names:
        v = getattr(cfg, name)
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"{cls}.{name}={v!r} must be finite and > 0")
    for name in integer:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{cls}.{name}={v!r} must be an integer >= 1")


def _check_unit(cfg: Any, names: Sequence[str], upper_open: bool = True) -> None:
    cls = type(cfg).__name__
    for name in names:
        v = getattr(cfg, name)
        ok = isinstance(v, int | float) and 0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0
        if not ok:
            raise ValueError(f"{cls}.{name}={v!r} must be in [0, 1{')' if upper_open else ']'}")


# -- optimisers ------------------------------------------------------------------------------------
class Optimizer:
    """Base class: minimise an objective over ``[N, H, A]`` candidate sequences inside bounds."""

    name = "optimizer"
    config: Any

    def optimize(self, objective: Objective, init: Tensor, generator: torch.Generator,
                 lower: Bound = -1.0, upper: Bound = 1.0) -> OptimResult:
        """Minimise ``objective`` starting from ``init [M, H, A]`` (row 0: the nominal plan).

        ``lower`` and ``upper`` broadcast to ``[H, A]``; every evaluated candidate lies inside them.
        """
        raise NotImplementedError

    def nominal_evals(self) -> float:
        """Evaluations one :meth:`optimize` call spends when it runs all its iterations."""
        raise NotImplementedError

    @staticmethod
    def _bounds(init: Tensor, lower: Bound, upper: Bound) -> tuple[Tensor, Tensor]:
        if init.ndim != 3 or init.shape[0] < 1:
            raise ValueError(f"init of shape {tuple(init.shape)}; expected [M >= 1, H, A]")
        lo = torch.as_tensor(lower, dtype=init.dtype, device=init.device).expand(init.shape[1:])
        hi = torch.as_tensor(upper, dtype=init.dtype, device=init.device).expand(init.shape[1:])
        if not (lo < hi).all():
            raise ValueError(f"bounds lower={lower!r}, upper={upper!r}: need lower < upper everywhere")
        return lo, hi


@dataclass(frozen=True)
class LangevinConfig:
    """Options of :class:`LangevinOptimizer`."""

    n_candidates: int = 32
    """Candidate sequences descended in parallel (one batch)."""
    iterations: int = 5
    """Maximum population evaluations (dynamic halting may stop earlier): every evaluation but the
    last takes a gradient and moves the candidates; the last one only ranks them."""
    step_size: float = 0.1
    """Initial step ``eta`` of ``a <- a - eta/2 * P grad + sqrt(eta) * sigma_t * eps``; with the
    RMSProp preconditioner ``P`` the drift moves each action by about ``eta / 2`` per step."""
    momentum: float = 0.5
    """Heavy-ball momentum coefficient ``mu`` (0 disables)."""
    nesterov: bool = True
    """Evaluate the gradient at the look-ahead point (Nesterov; Sutskever et al. 2013 form)."""
    precondition: str = "rmsprop"
    """``"rmsprop"``: divide the gradient by a running RMS per action (preconditioned Langevin,
    pSGLD, Li et al. 2016), which makes ``step_size`` independent of the objective's scale;
    ``"none"``: plain gradient."""
    rms_decay: float = 0.9
    """Decay of the running mean of squared gradients (RMSProp ``beta2``)."""
    rms_eps: float = 1e-8
    """Added to the RMS before dividing."""
    adapt_step: bool = True
    """Per-candidate step-size adaptation ("bold driver", Battiti 1989): a step that raised the
    candidate's cost is undone (back to the previous iterate, momentum reset) and its step size is
    multiplied by ``step_shrink``; an accepted step multiplies it by ``step_grow``. Costs no extra
    evaluation: the new cost comes with the next gradient."""
    step_grow: float = 1.2
    """Step-size factor after an accepted step."""
    step_shrink: float = 0.5
    """Step-size factor after a rejected step."""
    min_step: float = 1e-4
    """Lower limit of the per-candidate step size."""
    max_step: float = 0.5
    """Upper limit of the per-candidate step size."""
    noise_scale: float = 0.1
    """Initial Langevin noise multiplier ``sigma_0`` (0: deterministic gradient descent)."""
    noise_decay: float = 0.7
    """Annealing: ``sigma_t = sigma_0 * noise_decay**t`` (explore early, descend late)."""
    max_delta: float = 0.25
    """Largest change of any action in one iteration (a trust region)."""
    init_std: float = 0.2
    """Std of the Gaussian perturbations of the nominal plan that fill the population."""
    noise_beta: float = 0.0
    """Colour of the initial perturbations and of the Langevin noise along the horizon, power
    spectrum ``1/f^noise_beta`` (0: white; 2-4: the smooth, low-frequency sequences iCEM samples,
    :func:`colored_noise`)."""
    halt_tol: float = 1e-4
    """Dynamic halting: stop when the relative change of both the best and the mean cost stays
    below this for ``halt_patience`` iterations (0 disables)."""
    halt_patience: int = 2
    """Consecutive quiet iterations before halting."""
    min_iters: int = 3
    """Iterations always run before halting is considered."""
    cem_init_iters: int = 0
    """Seed the candidates with this many CEM iterations (same population size) first."""
    backward_cost: float = 2.0
    """Evaluations one backward pass is counted as (compute accounting only)."""

    def __post_init__(self) -> None:
        _check_positive(self, ("step_size", "step_grow", "step_shrink", "min_step", "max_step",
                               "max_delta", "rms_eps"), ("n_candidates", "iterations", "halt_patience",
                                                          "min_iters"))
        _check_unit(self, ("momentum", "rms_decay"))
        _check_unit(self, ("noise_decay",), upper_open=False)
        for name in ("noise_scale", "init_std", "noise_beta", "halt_tol", "backward_cost"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"LangevinConfig.{name}={v!r} must be finite and >= 0")
        if self.precondition not in ("rmsprop", "none"):
            raise ValueError(f"LangevinConfig.precondition={self.precondition!r}; allowed: 'rmsprop', 'none'")
        if isinstance(self.cem_init_iters, bool) or not isinstance(self.cem_init_iters, int) or self.cem_init_iters < 0:
            raise ValueError(f"LangevinConfig.cem_init_iters={self.cem_init_iters!r} must be an integer >= 0")
        if self.min_step > self.max_step:
            raise ValueError(f"LangevinConfig.min_step={self.min_step} > max_step={self.max_step}")


class LangevinOptimizer(Optimizer):
    """Annealed, preconditioned Langevin descent with momentum on a batch of candidates.

    Per iteration, on all ``N`` candidates in one batch (``y`` is the evaluated point, ``v`` the
    velocity, ``P`` the RMSProp preconditioner, ``eta_i`` each candidate's step size)::

        d    = eta_i / 2 * P * grad J(y)
        v'   = mu * v - d
        step = (mu * v' - d if nesterov else v') + sqrt(eta_i) * sigma_t * eps
        y'   = clip(y + clip(step, +-max_delta), lower, upper)

    (the Nesterov form of Bengio et al. 2013, where the evaluated point is the look-ahead point).
    The noise is annealed to zero (``sigma_t = sigma_0 * decay**t``): Langevin here is a
    stochastic optimiser that explores early, not a sampler. Steps that raise a candidate's cost
    are undone (see ``adapt_step``). Candidates whose cost or gradient is not finite return to
    their previous iterate (or a fresh uniform sample at the first iteration) with zero velocity,
    counted in ``info["planner/nonfinite"]``. Halting follows the energy: it stops when the best and
    mean costs stop changing. Which plan is returned (the best candidate, or a softmax-weighted
    average of the final candidates) is the :class:`TrajectoryOptimizer`'s ``selection``, shared
    by all optimisers. With ``cem_init_iters > 0`` a short CEM pass seeds the candidates (its
    best and its final population), and its evaluations are counted.
    """

    name = "langevin"

    def __init__(self, config: LangevinConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else LangevinConfig(**kwargs)

    def nominal_evals(self) -> float:
        c = self.config
        # Every iteration but the last takes a gradient (the last population is only ranked).
        return c.n_candidates * (c.cem_init_iters + c.iterations * (1.0 + c.backward_cost) - c.backward_cost)

    def optimize(self, objective: Objective, init: Tensor, generator: torch.Generator,
                 lower: Bound = -1.0, upper: Bound = 1.0) -> OptimResult:
        c = self.config
        lo, hi = self._bounds(init, lower, upper)
        n = c.n_candidates
        ev = _Evaluator(objective, c.backward_cost)
        best = _Best()
        info: dict[str, Any] = {}

        def noise(k: int) -> Tensor:
            return colored_noise(c.noise_beta, (k, *init.shape[1:]), generator, init.dtype, init.device)

        if c.cem_init_iters > 0:
            cem = CEMOptimizer(CEMConfig(n_candidates=n, iterations=c.cem_init_iters, keep_elites=0.0,
                                         init_std=max(c.init_std, 1e-3), beta=c.noise_beta))
            pre = cem.optimize(objective, init, generator, lo, hi)
            ev.n_evals += pre.n_evals
            order = torch.argsort(pre.costs)
            y = torch.cat([pre.best[None], pre.candidates[order]], dim=0)[:n]
            if y.shape[0] < n:
                y = _fill(y, n, lambda k: torch.clamp(pre.best + c.init_std * noise(k), lo, hi))
            best.x, best.cost = pre.best.clone(), pre.best_cost
            info["planner/cem_init_cost"] = pre.best_cost
        else:
            y = _fill(init, n, lambda k: torch.clamp(init[0] + c.init_std * noise(k), lo, hi))
        y = torch.clamp(y, lo, hi)
        v = torch.zeros_like(y)
        rms = torch.zeros_like(y)
        eta = torch.full((n,), c.step_size, dtype=y.dtype, device=y.device)
        y_prev = j_prev = g_prev = None
        prev_stats: tuple[float, float] | None = None
        quiet = 0
        n_rejected = 0
        n_bad = 0
        it = 0
        j = torch.full((n,), float("inf"), dtype=y.dtype, device=y.device)
        for it in range(c.iterations):
            if it == c.iterations - 1:
                # The last population is only ranked, never moved: its gradient would go unused.
                j = ev(y)
                g = torch.zeros_like(y)
            else:
                j, g = ev.value_and_grad(y)
            # Every finite cost counts for the best plan, even where the gradient is broken.
            ok = torch.isfinite(j) & torch.isfinite(y).flatten(1).all(dim=1)
            bad = ~(ok & torch.isfinite(g).flatten(1).all(dim=1))
            if not bool(bad.any()):  # the usual case: no masking (same result, fewer ops)
                best.update(y, j)
            elif ok.any():
                best.update(y[ok], j[ok])
            # Repair non-finite costs or gradients: back to the previous iterate, or a fresh sample.
            if bad.any():
                n_bad += int(bad.sum())
                if y_prev is not None:
                    y = torch.where(bad[:, None, None], y_prev, y)
                    j = torch.where(bad, j_prev, j)
                    g = torch.where(bad[:, None, None], g_prev, g)
                else:
                    y = torch.where(bad[:, None, None], _uniform(n, y, lo, hi, generator), y)
                    j = torch.where(bad, torch.full_like(j, float("inf")), j)
                    g = torch.where(bad[:, None, None], torch.zeros_like(g), g)
                v = torch.where(bad[:, None, None], torch.zeros_like(v), v)
                eta = torch.where(bad, torch.clamp(eta * c.step_shrink, min=c.min_step), eta)
            # Bold driver: undo the steps that made things worse, shrink their step size.
            if c.adapt_step and y_prev is not None:
                worse = j > j_prev
                n_rejected += int(worse.sum())
                w3 = worse[:, None, None]
                y = torch.where(w3, y_prev, y)
                j = torch.where(worse, j_prev, j)
                g = torch.where(w3, g_prev, g)
                v = torch.where(w3, torch.zeros_like(v), v)
                eta = torch.where(worse, eta * c.step_shrink, eta * c.step_grow).clamp(c.min_step, c.max_step)
            finite = torch.isfinite(j)
            if bool(finite.all()):  # the usual case: no masking (same result, fewer ops)
                best.update(y, j)
                mean_cost = float(j.mean())
            elif finite.any():
                best.update(y[finite], j[finite])
                mean_cost = float(j[finite].mean())
            else:
                mean_cost = float("inf")
            # Dynamic halting on the energy: best and mean cost both stopped moving.
            stats = (best.cost, mean_cost)
            if prev_stats is not None and c.halt_tol > 0:
                rel = [abs(a - b) / (abs(b) + 1e-12) for a, b in zip(stats, prev_stats, strict=True)]
                quiet = quiet + 1 if max(rel) < c.halt_tol else 0
            prev_stats = stats
            if quiet >= c.halt_patience and it + 1 >= c.min_iters:
                break
            if it == c.iterations - 1:
                break  # the last evaluated population is the result
            # Preconditioned drift, momentum, annealed noise, trust region, bounds.
            if c.precondition == "rmsprop":
                rms = c.rms_decay * rms + (1.0 - c.rms_decay) * g * g
                p = 1.0 / (torch.sqrt(rms / (1.0 - c.rms_decay ** (it + 1))) + c.rms_eps)
            else:
                p = torch.ones_like(g)
            e3 = eta[:, None, None]
            drift = 0.5 * e3 * p * g
            v_new = c.momentum * v - drift
            move = c.momentum * v_new - drift if c.nesterov else v_new
            sigma = c.noise_scale * c.noise_decay**it
            if sigma > 0:
                move = move + torch.sqrt(e3) * sigma * noise(n)
            move = torch.clamp(move, -c.max_delta, c.max_delta)
            y_prev, j_prev, g_prev = y, j, g
            y_new = torch.clamp(y + move, lo, hi)
            # Velocity does not push into a bound it already sits on.
            v = torch.where((y_new == lo) | (y_new == hi), torch.zeros_like(v_new),
                            torch.clamp(v_new, -c.max_delta, c.max_delta))
            y = y_new
        if best.x is None:  # every cost was non-finite: return the nominal plan
            best.x = torch.clamp(init[0], lo, hi).clone()
        info.update({"planner/nonfinite": n_bad + ev.n_nonfinite, "planner/rejected": n_rejected,
                     "planner/step_mean": float(eta.mean()), "planner/halted": it + 1 < c.iterations})
        return OptimResult(y.detach(), j, best.x, best.cost, int(round(ev.n_evals)), it + 1, info)


@dataclass(frozen=True)
class CEMConfig:
    """Options of :class:`CEMOptimizer` (iCEM options after Pinneri et al. 2020)."""

    n_candidates: int = 128
    """Population size at the first iteration."""
    iterations: int = 5
    """Refinement iterations."""
    elite_frac: float = 0.1
    """Share of the population (at least 2) that refits the sampling distribution."""
    init_std: float = 0.5
    """Initial standard deviation of the sampling distribution, in action units."""
    min_std: float = 0.02
    """Floor of the standard deviation (keeps some exploration)."""
    alpha: float = 0.1
    """Smoothing of the refit: ``mean <- alpha * mean + (1 - alpha) * elite mean`` (same for std)."""
    beta: float = 0.0
    """Colour of the sampling noise along time, power spectrum ``1/f^beta`` (0: white; iCEM uses 2-4)."""
    keep_elites: float = 0.3
    """iCEM: share of the elites carried into the next iteration's population (0 disables)."""
    population_decay: float = 1.0
    """iCEM: population shrinks by this factor each iteration (1: constant)."""
    include_mean: bool = True
    """Evaluate the distribution mean as one extra candidate every iteration (iCEM adds it last)."""

    def __post_init__(self) -> None:
        _check_positive(self, ("init_std", "min_std", "population_decay"), ("n_candidates", "iterations"))
        if not 0.0 < self.elite_frac <= 1.0:
            raise ValueError(f"CEMConfig.elite_frac={self.elite_frac!r} must be in (0, 1]")
        _check_unit(self, ("alpha",))
        _check_unit(self, ("keep_elites",), upper_open=False)
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"CEMConfig.beta={self.beta!r} must be finite and >= 0")
        if self.population_decay < 1.0:
            raise ValueError(f"CEMConfig.population_decay={self.population_decay!r} must be >= 1")


class CEMOptimizer(Optimizer):
    """Cross-entropy method with the iCEM improvements (Pinneri et al., CoRL 2020).

    Each iteration samples ``mean + std * coloured noise`` (clipped to the bounds), adds the kept
    elites of the previous iteration and the mean itself, and refits mean and std to the elites
    with smoothing ``alpha``. The mean starts at ``init[0]`` (the shifted previous plan: iCEM's
    "shift" of the mean); the first population also contains every row of ``init``.
    """

    name = "cem"

    def __init__(self, config: CEMConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else CEMConfig(**kwargs)

    def _sizes(self) -> list[tuple[int, int]]:
        """(population sampled, elites) per iteration."""
        c = self.config
        out = []
        for it in range(c.iterations):
            pop = max(2, int(round(c.n_candidates / c.population_decay**it)))
            out.append((pop, max(2, min(pop, int(round(c.elite_frac * pop))))))
        return out

    def nominal_evals(self) -> float:
        c = self.config
        sizes = self._sizes()
        total = 0
        for it, (pop, _) in enumerate(sizes):
            total += pop + int(c.include_mean)
            if it > 0 and c.keep_elites > 0:
                total += int(round(c.keep_elites * sizes[it - 1][1]))
        return float(total)

    def optimize(self, objective: Objective, init: Tensor, generator: torch.Generator,
                 lower: Bound = -1.0, upper: Bound = 1.0) -> OptimResult:
        c = self.config
        lo, hi = self._bounds(init, lower, upper)
        ev = _Evaluator(objective)
        best = _Best()
        mean = torch.clamp(init[0], lo, hi).clone()
        std = torch.full_like(mean, c.init_std)
        kept: Tensor | None = None
        x = init[:1]
        costs = torch.zeros(1, dtype=init.dtype, device=init.device)
        for it, (pop, n_el) in enumerate(self._sizes()):
            def sample(k: int, mean: Tensor = mean, std: Tensor = std) -> Tensor:
                eps = colored_noise(c.beta, (k, *init.shape[1:]), generator, init.dtype, init.device)
                return torch.clamp(mean + std * eps, lo, hi)

            x = _fill(torch.clamp(init, lo, hi), pop, sample) if it == 0 else sample(pop)
            parts = [x]
            if kept is not None:
                parts.append(kept)
            if c.include_mean:
                parts.append(mean[None])
            x = torch.cat(parts, dim=0)
            costs = ev(x)
            best.update(x, costs)
            idx = torch.topk(costs, min(n_el, x.shape[0]), largest=False).indices
            elites = x[idx]
            mean = c.alpha * mean + (1.0 - c.alpha) * elites.mean(dim=0)
            std = torch.clamp(c.alpha * std + (1.0 - c.alpha) * elites.std(dim=0), min=c.min_std)
            n_keep = int(round(c.keep_elites * n_el))
            kept = elites[:n_keep] if n_keep > 0 else None
        info = {"planner/nonfinite": ev.n_nonfinite, "planner/std_mean": float(std.mean())}
        if best.x is None:
            best.x = mean.clone()
        return OptimResult(x, costs, best.x, best.cost, int(ev.n_evals), c.iterations, info)


@dataclass(frozen=True)
class MPPIConfig:
    """Options of :class:`MPPIOptimizer`."""

    n_candidates: int = 128
    """Sampled sequences per iteration."""
    iterations: int = 3
    """Update iterations per plan (Williams et al. use one per control step; more refines)."""
    sigma: float = 0.3
    """Standard deviation of the action perturbations, action units."""
    temperature: float = 0.5
    """Temperature ``lambda`` of the exponential weights (see ``normalize``)."""
    normalize: bool = True
    """Divide cost gaps by the population's cost std, making ``temperature`` scale-free (else
    ``temperature`` is in cost units, as in the paper)."""
    beta: float = 0.0
    """Time correlation of the perturbations: power spectrum ``1/f^beta`` (0: white)."""
    include_mean: bool = True
    """Evaluate the unperturbed mean as one extra candidate each iteration."""

    def __post_init__(self) -> None:
        _check_positive(self, ("sigma", "temperature"), ("n_candidates", "iterations"))
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"MPPIConfig.beta={self.beta!r} must be finite and >= 0")


class MPPIOptimizer(Optimizer):
    """Model-predictive path integral control (Williams et al., ICRA 2017), as a sequence optimiser.

    Each iteration perturbs the mean plan with Gaussian (optionally coloured) noise, clips to the
    bounds, and moves the mean to the exponentially weighted average of the samples,
    ``w_i ~ exp(-(J_i - J_min) / lambda)``.
    """

    name = "mppi"

    def __init__(self, config: MPPIConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else MPPIConfig(**kwargs)

    def nominal_evals(self) -> float:
        c = self.config
        return float(c.iterations * (c.n_candidates + int(c.include_mean)))

    def optimize(self, objective: Objective, init: Tensor, generator: torch.Generator,
                 lower: Bound = -1.0, upper: Bound = 1.0) -> OptimResult:
        c = self.config
        lo, hi = self._bounds(init, lower, upper)
        ev = _Evaluator(objective)
        best = _Best()
        mean = torch.clamp(init[0], lo, hi).clone()
        x = init[:1]
        costs = torch.zeros(1, dtype=init.dtype, device=init.device)
        for it in range(c.iterations):
            def sample(k: int, mean: Tensor = mean) -> Tensor:
                eps = colored_noise(c.beta, (k, *init.shape[1:]), generator, init.dtype, init.device)
                return torch.clamp(mean + c.sigma * eps, lo, hi)

            x = _fill(torch.clamp(init, lo, hi), c.n_candidates, sample) if it == 0 else sample(c.n_candidates)
            if c.include_mean:
                x = torch.cat([x, mean[None]], dim=0)
            costs = ev(x)
            best.update(x, costs)
            w = softmax_weights(costs, c.temperature, c.normalize)
            mean = (w[:, None, None] * x).sum(dim=0)
        if best.x is None:
            best.x = mean.clone()
        info = {"planner/nonfinite": ev.n_nonfinite}
        return OptimResult(x, costs, best.x, best.cost, int(ev.n_evals), c.iterations, info)


@dataclass(frozen=True)
class RandomShootingConfig:
    """Options of :class:`RandomShootingOptimizer`."""

    n_candidates: int = 256
    """Uniform random sequences per iteration."""
    iterations: int = 1
    """Batches evaluated (the best over all is kept)."""

    def __post_init__(self) -> None:
        _check_positive(self, (), ("n_candidates", "iterations"))


class RandomShootingOptimizer(Optimizer):
    """Random shooting: evaluate ``init`` and uniform random sequences, keep the best (the baseline)."""

    name = "random"

    def __init__(self, config: RandomShootingConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else RandomShootingConfig(**kwargs)

    def nominal_evals(self) -> float:
        return float(self.config.n_candidates * self.config.iterations)

    def optimize(self, objective: Objective, init: Tensor, generator: torch.Generator,
                 lower: Bound = -1.0, upper: Bound = 1.0) -> OptimResult:
        c = self.config
        lo, hi = self._bounds(init, lower, upper)
        ev = _Evaluator(objective)
        best = _Best()
        x, costs = init[:1], torch.zeros(1, dtype=init.dtype, device=init.device)
        for it in range(c.iterations):
            def sample(k: int) -> Tensor:
                return _uniform(k, init, lo, hi, generator)

            x = _fill(torch.clamp(init, lo, hi), c.n_candidates, sample) if it == 0 else sample(c.n_candidates)
            costs = ev(x)
            best.update(x, costs)
        if best.x is None:
            best.x = torch.clamp(init[0], lo, hi).clone()
        info = {"planner/nonfinite": ev.n_nonfinite}
        return OptimResult(x, costs, best.x, best.cost, int(ev.n_evals), c.iterations, info)


#: Optimiser name -> (class, config class).
OPTIMIZERS: dict[str, tuple[type[Optimizer], type]] = {
    "langevin": (LangevinOptimizer, LangevinConfig),
    "cem": (CEMOptimizer, CEMConfig),
    "mppi": (MPPIOptimizer, MPPIConfig),
    "random": (RandomShootingOptimizer, RandomShootingConfig),
}


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """Build an optimiser by name ("langevin", "cem", "mppi", "random") with config overrides.

    Raises ``ValueError`` naming the allowed values for an unknown name or option.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {sorted(OPTIMIZERS)}")
    cls, cfg_cls = OPTIMIZERS[name]
    allowed = [f.name for f in dataclasses.fields(cfg_cls)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for optimizer {name!r}; allowed: {allowed}")
    return cls(cfg_cls(**kwargs))


def make_matched_optimizer(name: str, budget: float, **kwargs: Any) -> Optimizer:
    """An optimiser whose ``nominal_evals()`` is about ``budget``, by choosing ``n_candidates``.

    The other options (iterations included) come from ``kwargs`` or the defaults, so peers can be
    compared at equal compute: e.g. ``make_matched_optimizer("cem", make_optimizer("langevin")
    .nominal_evals())``.
    """
    if not (math.isfinite(budget) and budget >= 2):
        raise ValueError(f"budget={budget!r} must be finite and >= 2 evaluations")
    kwargs.pop("n_candidates", None)
    per_candidate = make_optimizer(name, n_candidates=1000, **kwargs).nominal_evals() / 1000.0
    n = max(2, int(round(budget / per_candidate)))
    # Integer rounding inside the configs (elites kept, the extra mean): settle on the closest.
    best_n = min(range(max(2, n - 3), n + 4),
                 key=lambda k: abs(make_optimizer(name, n_candidates=k, **kwargs).nominal_evals() - budget))
    return make_optimizer(name, n_candidates=best_n, **kwargs)


# -- the trajectory optimiser ----------------------------------------------------------------------
@dataclass
class _WarmStart:
    plan: Tensor | None = None
    kept: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class TrajectoryOptimizer:
    """Owns shapes, bounds, warm start and plan selection for any :class:`Optimizer`.

    Args:
        optimizer: the optimiser (see :func:`make_optimizer`).
        horizon: plan length ``H`` in control steps.
        action_dim: ``A``.
        lower, upper: action bounds (scalars or ``[A]``).
        keep_last: how many of the previous call's lowest-cost candidates, shifted, join the
            initial rows of the next call (besides the shifted chosen plan).
        warm_start: start from the previous plan shifted by one step (else from ``hold`` or the
            centre of the bounds every call).
        n_fresh: uniform random sequences added to the initial rows every call.
        selection: ``"best"`` (the lowest-cost evaluated sequence) or ``"softmax"`` (the
            average of the last population weighted by ``softmax_weights(costs, temperature)``,
            evaluated once more to report its cost).
        temperature: softmax temperature (in units of the population's cost std).
        dtype, device: of the candidate tensors handed to the objective.
    """

    def __init__(self, optimizer: Optimizer, horizon: int, action_dim: int = 2, lower: Bound = -1.0,
                 upper: Bound = 1.0, keep_last: int = 4, warm_start: bool = True, n_fresh: int = 4,
                 selection: str = "best", temperature: float = 0.5,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer={optimizer!r} is not an Optimizer; build one with make_optimizer()")
        for name, v in (("horizon", horizon), ("action_dim", action_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be an integer >= 1")
        for name, v in (("keep_last", keep_last), ("n_fresh", n_fresh)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}={v!r} must be an integer >= 0")
        if selection not in ("best", "softmax"):
            raise ValueError(f"selection={selection!r}; allowed: 'best', 'softmax'")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature={temperature!r} must be finite and > 0")
        self.optimizer = optimizer
        self.horizon, self.action_dim = horizon, action_dim
        self.keep_last, self.warm_start, self.n_fresh = keep_last, bool(warm_start), n_fresh
        self.selection, self.temperature = selection, float(temperature)
        self.dtype, self.device = dtype, torch.device(device)
        shape = (horizon, action_dim)
        self.lower = torch.as_tensor(lower, dtype=dtype, device=self.device).expand(shape).clone()
        self.upper = torch.as_tensor(upper, dtype=dtype, device=self.device).expand(shape).clone()
        if not (self.lower < self.upper).all():
            raise ValueError(f"bounds lower={lower!r}, upper={upper!r}: need lower < upper for every action")
        self.reset()

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self._ws = _WarmStart()

    def initial(self, generator: torch.Generator, hold: Tensor | np.ndarray | None = None) -> Tensor:
        """The initial rows ``[M, H, A]``: nominal plan first, then kept, hold and fresh sequences."""
        shape = (self.horizon, self.action_dim)
        rows: list[Tensor] = []
        hold_plan = None
        if hold is not None:
            h = torch.as_tensor(np.asarray(hold, dtype=np.float64), dtype=self.dtype, device=self.device)
            hold_plan = torch.clamp(h.reshape(-1, self.action_dim)[-1].expand(shape), self.lower, self.upper)
        if self.warm_start and self._ws.plan is not None:
            rows.append(self._ws.plan)
            if self._ws.kept is not None:
                rows.extend(self._ws.kept)
            if hold_plan is not None:
                rows.append(hold_plan)
        elif hold_plan is not None:
            rows.append(hold_plan)
        else:
            rows.append(0.5 * (self.lower + self.upper))
        init = torch.stack(rows, dim=0)
        if self.n_fresh > 0:
            init = torch.cat([init, _uniform(self.n_fresh, init, self.lower, self.upper, generator)], dim=0)
        return init

    def plan(self, objective: Objective, generator: torch.Generator,
             hold: Tensor | np.ndarray | None = None) -> PlanResult:
        """Optimise a plan ``[H, A]`` for ``objective``; ``hold`` (the action now applied) adds a
        constant sequence to the initial rows and is the nominal plan when there is no warm start."""
        init = self.initial(generator, hold)
        res = self.optimizer.optimize(objective, init, generator, self.lower, self.upper)
        info = dict(res.info)
        n_evals = res.n_evals
        actions, cost = res.best, res.best_cost
        if self.selection == "softmax":
            w = softmax_weights(res.costs, self.temperature)
            actions = torch.clamp((w[:, None, None] * res.candidates).sum(dim=0), self.lower, self.upper)
            ev = _Evaluator(objective)
            cost = float(ev(actions[None])[0])
            n_evals += 1
            info["planner/best_cost"] = res.best_cost
        actions = actions.detach()
        info["planner/cost"] = cost
        if self.warm_start:
            self._ws.plan = shift_plan(actions)
            if self.keep_last > 0:
                order = torch.argsort(res.costs)[: self.keep_last]
                finite = order[torch.isfinite(res.costs[order])]
                self._ws.kept = shift_plan(res.candidates[finite].detach()) if len(finite) else None
        return PlanResult(actions, cost, n_evals, res.iterations, info)
