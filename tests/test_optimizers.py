"""The optimisers find known optima inside bounds; warm start, seeding, compute accounting and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from planners.optim import (
    CEMOptimizer,
    LangevinOptimizer,
    TrajectoryOptimizer,
    colored_noise,
    make_matched_optimizer,
    make_optimizer,
    shift_plan,
    softmax_weights,
)

H, A = 6, 2
# Budgets that solve a 12-dimensional quadratic well; small enough to keep the tests fast.
FAST = {
    "langevin": {"n_candidates": 16, "iterations": 60, "step_size": 0.2, "halt_tol": 0.0},
    "cem": {"n_candidates": 64, "iterations": 20},
    "mppi": {"n_candidates": 128, "iterations": 10, "sigma": 0.2},
    "random": {"n_candidates": 4000},
}
TOL = {"langevin": 0.02, "cem": 0.05, "mppi": 0.08, "random": 0.6}


def quadratic(target: torch.Tensor):
    def objective(x: torch.Tensor) -> torch.Tensor:
        return ((x - target) ** 2).sum(dim=(1, 2))

    return objective


def _plan(name: str, objective, seed: int = 0, **kw):
    opt = make_optimizer(name, **{**FAST[name], **kw})
    traj = TrajectoryOptimizer(opt, horizon=H, action_dim=A)
    return traj.plan(objective, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["langevin", "cem", "mppi", "random"])
def test_interior_optimum(name):
    target = torch.linspace(-0.5, 0.5, H * A).reshape(H, A)
    res = _plan(name, quadratic(target))
    assert res.actions.shape == (H, A)
    err = (res.actions - target).abs().max().item()
    assert err < TOL[name], f"{name}: max error {err:.3f}"
    assert res.n_evals > 0 and res.iterations >= 1


@pytest.mark.parametrize("name", ["langevin", "cem", "mppi"])
def test_optimum_on_the_bound(name):
    # Unconstrained minimum outside the box: the solution sits on the upper bound of action 0.
    target = torch.zeros(H, A)
    target[:, 0] = 1.7
    target[:, 1] = -0.3
    # Half of a sampler's population is clipped onto the bound and ties there, so selection
    # pressure on the free action halves: sampling methods get a larger budget here.
    kw = {"cem": {"n_candidates": 128}, "mppi": {"sigma": 0.1, "iterations": 30}}.get(name, {})
    res = _plan(name, quadratic(target), **kw)
    assert (res.actions <= 1.0).all() and (res.actions >= -1.0).all()
    assert (res.actions[:, 0] > 0.95).all()
    assert (res.actions[:, 1] - (-0.3)).abs().max() < 2 * TOL[name]


@pytest.mark.parametrize("name", ["langevin", "cem", "mppi", "random"])
def test_same_seed_same_plan(name):
    target = torch.linspace(-0.5, 0.5, H * A).reshape(H, A)
    a = _plan(name, quadratic(target), seed=3)
    b = _plan(name, quadratic(target), seed=3)
    c = _plan(name, quadratic(target), seed=4)
    assert torch.equal(a.actions, b.actions) and a.cost == b.cost
    if name != "langevin":  # deterministic descent may converge to the same point from any seed
        assert not torch.equal(a.actions, c.actions)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(["langevin", "cem", "mppi", "random"]),
       lo=st.floats(-2.0, 0.5), width=st.floats(0.05, 2.0),
       centre=st.floats(-5.0, 5.0), seed=st.integers(0, 2**16))
def test_bounds_always_respected(name, lo, width, centre, seed):
    lower = torch.tensor([lo, lo - 0.1])
    upper = lower + width
    seen = []

    def objective(x):
        seen.append(x.detach().clone())
        return ((x - centre) ** 2).sum(dim=(1, 2)) + torch.sin(7 * x).sum(dim=(1, 2))

    kw = {"langevin": {"n_candidates": 4, "iterations": 4}, "cem": {"n_candidates": 8, "iterations": 2},
          "mppi": {"n_candidates": 8, "iterations": 2}, "random": {"n_candidates": 8}}[name]
    traj = TrajectoryOptimizer(make_optimizer(name, **kw), horizon=3, action_dim=2,
                               lower=lower.tolist(), upper=upper.tolist(), selection="softmax")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(2):  # the second plan starts from the warm start
        res = traj.plan(objective, gen, hold=[centre, -centre])
        assert (res.actions >= lower - 1e-6).all() and (res.actions <= upper + 1e-6).all()
    for x in seen:
        assert (x >= lower - 1e-6).all() and (x <= upper + 1e-6).all()


def test_warm_start_shift():
    plans = torch.arange(12.0).reshape(1, 6, 2)
    s = shift_plan(plans)
    assert torch.equal(s[0, :5], plans[0, 1:]) and torch.equal(s[0, 5], plans[0, 5])
    # The trajectory optimiser starts its next call from the shifted chosen plan.
    target = torch.linspace(-0.6, 0.6, H * A).reshape(H, A)
    traj = TrajectoryOptimizer(make_optimizer("cem", **FAST["cem"]), horizon=H, action_dim=A, n_fresh=2,
                               keep_last=3)
    gen = torch.Generator().manual_seed(0)
    first = traj.plan(quadratic(target), gen)
    init = traj.initial(gen, hold=[0.1, 0.2])
    assert torch.equal(init[0], shift_plan(first.actions))
    assert init.shape == (1 + 3 + 1 + 2, H, A)  # plan, kept, hold, fresh
    assert torch.allclose(init[4], torch.tensor([0.1, 0.2]).expand(H, A))
    traj.reset()
    assert traj.initial(gen).shape[0] == 1 + 2


def test_nonfinite_gradients_do_not_escape():
    target = torch.full((H, A), 0.3)

    def objective(x):
        c = ((x - target) ** 2).sum(dim=(1, 2))
        # NaN cost for candidates in a region, infinite for some others.
        nan = torch.where(x[:, 0, 0] > 0.5, float("nan"), 0.0)
        return c + nan + torch.where(x[:, 1, 1] < -0.8, float("inf"), 0.0)

    opt = LangevinOptimizer(n_candidates=32, iterations=30, init_std=1.0)
    res = opt.optimize(objective, torch.zeros(1, H, A), torch.Generator().manual_seed(0))
    assert torch.isfinite(res.candidates).all() and torch.isfinite(res.best).all()
    assert res.info["planner/nonfinite"] > 0
    assert math.isfinite(res.best_cost)
    assert (res.best - target).abs().max() < 0.05


def test_langevin_gradient_hooks_nan():
    # A NaN gradient with a finite cost (e.g. sqrt at 0) is repaired too.
    def objective(x):
        return torch.sqrt((x**2).sum(dim=(1, 2)) * 0.0) + ((x - 0.2) ** 2).sum(dim=(1, 2))

    opt = LangevinOptimizer(n_candidates=4, iterations=5)
    res = opt.optimize(objective, torch.zeros(1, H, A), torch.Generator().manual_seed(0))
    assert torch.isfinite(res.candidates).all()
    assert res.info["planner/nonfinite"] > 0


def test_langevin_options_and_halting():
    target = torch.full((H, A), -0.4)
    for kw in ({"nesterov": False}, {"momentum": 0.0, "precondition": "none", "step_size": 0.4},
               {"adapt_step": False, "noise_scale": 0.0}, {"cem_init_iters": 2}):
        opt = LangevinOptimizer(n_candidates=16, iterations=60, **kw)
        res = opt.optimize(quadratic(target), torch.zeros(1, H, A), torch.Generator().manual_seed(1))
        assert (res.best - target).abs().max() < 0.05, kw
    # Dynamic halting stops early on a converged problem, and counts a backward as two forwards.
    opt = LangevinOptimizer(n_candidates=8, iterations=200, halt_tol=1e-3, noise_scale=0.0)
    res = opt.optimize(quadratic(target), target[None].clone(), torch.Generator().manual_seed(0))
    assert res.iterations < 200 and res.info["planner/halted"]
    assert res.n_evals == 8 * 3 * res.iterations


def test_langevin_noise_colour():
    # The initial population (iterations=1: ranked, never moved) perturbs the nominal plan with
    # white noise by default and with smooth, time-correlated noise at noise_beta 3, as iCEM samples.
    def lag1(noise_beta):
        opt = LangevinOptimizer(n_candidates=256, iterations=1, init_std=0.1, noise_beta=noise_beta)
        res = opt.optimize(quadratic(torch.zeros(16, A)), torch.zeros(1, 16, A), torch.Generator().manual_seed(0))
        d = res.candidates[1:]  # row 0 is the nominal plan itself
        return float(torch.corrcoef(torch.stack([d[:, :-1].flatten(), d[:, 1:].flatten()]))[0, 1])

    assert abs(lag1(0.0)) < 0.1 and lag1(3.0) > 0.7
    with pytest.raises(ValueError, match="noise_beta"):
        LangevinOptimizer(noise_beta=-1.0)


def test_langevin_last_population_is_ranked_without_a_gradient():
    calls = []

    def objective(x):
        calls.append(x.requires_grad)
        return (x - 0.3).pow(2).sum(dim=(1, 2))

    opt = LangevinOptimizer(n_candidates=8, iterations=4, halt_tol=0.0)
    res = opt.optimize(objective, torch.zeros(1, H, A), torch.Generator().manual_seed(0))
    assert calls == [True, True, True, False] and res.iterations == 4
    assert res.n_evals == 8 * (3 * 3 + 1) == opt.nominal_evals()


def test_langevin_needs_gradients():
    opt = LangevinOptimizer(n_candidates=4, iterations=2)
    with pytest.raises(ValueError, match="differentiable"):
        opt.optimize(lambda x: np.zeros(x.shape[0]), torch.zeros(1, H, A), torch.Generator())


def test_numpy_objective_and_bad_shape():
    opt = CEMOptimizer(n_candidates=8, iterations=2)
    res = opt.optimize(lambda x: (x.numpy() ** 2).sum(axis=(1, 2)), torch.zeros(1, H, A), torch.Generator())
    assert res.best.shape == (H, A)
    with pytest.raises(ValueError, match="shape"):
        opt.optimize(lambda x: torch.zeros(3), torch.zeros(1, H, A), torch.Generator())


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="allowed.*cem"):
        make_optimizer("adam")
    with pytest.raises(ValueError, match="allowed"):
        make_optimizer("cem", n_elites=3)
    with pytest.raises(ValueError, match="precondition"):
        make_optimizer("langevin", precondition="adam")
    with pytest.raises(ValueError, match="n_candidates"):
        make_optimizer("mppi", n_candidates=0)
    with pytest.raises(ValueError, match="selection"):
        TrajectoryOptimizer(make_optimizer("cem"), horizon=4, selection="median")
    with pytest.raises(ValueError, match="lower < upper"):
        TrajectoryOptimizer(make_optimizer("cem"), horizon=4, lower=1.0, upper=-1.0)


@pytest.mark.parametrize("name", ["cem", "mppi", "random", "langevin"])
def test_matched_budget(name):
    budget = make_optimizer("langevin", n_candidates=32, iterations=10).nominal_evals()
    opt = make_matched_optimizer(name, budget, iterations=5 if name != "random" else 1)
    assert abs(opt.nominal_evals() - budget) / budget < 0.05
    # The count reported by an actual run matches the nominal one when nothing halts early.
    kw = {"halt_tol": 0.0} if name == "langevin" else {}
    opt = make_matched_optimizer(name, budget, **kw)
    res = opt.optimize(quadratic(torch.zeros(H, A)), torch.zeros(1, H, A), torch.Generator())
    assert res.n_evals == pytest.approx(opt.nominal_evals(), rel=1e-6)


def test_helpers():
    gen = torch.Generator().manual_seed(0)
    noise = colored_noise(2.0, (2000, 16, 2), gen)
    assert noise.shape == (2000, 16, 2)
    assert abs(noise.std().item() - 1.0) < 0.1
    white = colored_noise(0.0, (2000, 16, 2), gen)
    # Coloured noise is smoother: neighbouring steps correlate.
    def lag1(x):
        return torch.corrcoef(torch.stack([x[:, :-1].flatten(), x[:, 1:].flatten()]))[0, 1].item()
    assert lag1(noise) > 0.5 > abs(lag1(white))
    w = softmax_weights(torch.tensor([1.0, 2.0, float("inf")]), 1.0)
    assert torch.isclose(w.sum(), torch.tensor(1.0)) and w[2] == 0 and w[0] > w[1]


class _Integrator:
    """A toy differentiable planning model: x' = x + 0.5 a per step, cost (x - 1)^2 + 0.01 a^2."""

    def reset(self):
        self.x = 0.0

    def observe(self, obs):
        self.x = float(obs[0])

    def make_objective(self, obs):
        x0 = self.x

        def objective(a):
            x = x0 + 0.5 * torch.cumsum(a[..., 0], dim=1)
            return ((x - 1.0) ** 2).sum(dim=1) + 0.01 * (a**2).sum(dim=(1, 2))

        return objective


@pytest.mark.parametrize("name", ["langevin", "cem", "mppi"])
def test_mpc_drives_a_toy_plant(name):
    from planners.mpc import MPCController

    ctl = MPCController(_Integrator(), TrajectoryOptimizer(make_optimizer(name, **FAST[name]), horizon=5,
                                                           action_dim=1), seed=0, name=name)
    ctl.reset()
    x = 0.0
    for _ in range(8):
        a = ctl.predict(np.array([x]))[0]
        assert a.shape == (1,) and -1.0 <= a[0] <= 1.0
        x += 0.5 * float(a[0])
    assert abs(x - 1.0) < 0.1
    assert len(ctl.latencies) == 8 and ctl.last_plan.actions.shape == (5, 1)
