"""The ``pytorch-mppi`` package's MPPI as a controller on any planning model (a peer from outside this project).

``pytorch_mppi.MPPI`` (Williams et al., ICRA 2017, algorithm 2; github.com/UM-ARM-Lab/pytorch_mppi)
wants a dynamics function ``f(state, u) -> next state`` and a running cost ``c(state, u)``, summed
over the horizon. The planning objectives here (the world model's, :mod:`planners.objective`)
are not of that form: they score a whole action sequence at once (the energy of the imagined
hidden trajectory, the terminal cost, the smoothness term against the applied action, the
output-disturbance correction), and the world model's recurrent state is not a vector the library
could carry. So the mapping is:

* the library's state is a dummy ``[1]`` vector that the dynamics leave unchanged, and the running
  cost is zero;
* the library's terminal cost, which it calls with the full sampled action sequences
  ``[1, K, T, A]``, is the planning objective evaluated on them: the same objective, evaluated once
  per sample, as the in-house optimisers evaluate it;
* the library's actions are *deviations from the action now applied* (in search coordinates),
  re-expressed at every control step, with the bounds moved to match. The library's control-cost
  term ``lambda * U^T Sigma^-1 eps`` treats zero as the free action: in absolute coordinates zero
  is a half-open valve, and that term (whose weight in the exponential average does not depend on
  ``lambda``) pulled every plan towards it (the furnace under-fired by 15-20 % of its fuel); on
  deviations it is a move-suppression term around the current operating point, which is what a
  control cost means on a plant.

The library's sampling, weighting (``exp(-(J - J_min) / lambda)``, ``lambda`` in cost units), its
control-cost term ``lambda * U^T Sigma^-1 eps`` and its update of the nominal sequence are used as
they are. Compute: ``iterations`` calls of ``MPPI.command`` per control step (the first shifts the
nominal sequence, the rest refine it, as the library's ``shift_nominal_trajectory=False`` is meant
for), each evaluating ``num_samples`` sequences; :func:`make_pytorch_mppi` matches the product to
the in-house MPPI's evaluations per step.

What cannot be matched with the in-house MPPI (:class:`~planners.optim.MPPIOptimizer`):

* noise: the library samples white Gaussian noise (``noise_sigma``); the in-house MPPI's tuned
  perturbations are time-correlated (``1/f^beta``);
* the population: the in-house optimiser's first iteration also evaluates the shifted previous
  plan, its best kept candidates, the applied action held and a few uniform sequences
  (:class:`~planners.optim.TrajectoryOptimizer`); the library samples around its nominal sequence only;
* the applied action: the library applies the first step of the updated nominal sequence (the
  weighted mean); the in-house planner applies the best evaluated sequence;
* the temperature: the in-house MPPI normalises cost gaps by the population's spread, the library
  does not, so ``lambda`` is in cost units.

Warm start: at each control step the library shifts its nominal sequence and fills the last step
with ``u_init``; setting ``u_init`` to the sequence's current last step (a public attribute) makes
the shift repeat the last action, as the in-house warm start does. The first plan of an episode
starts from the applied action held over the horizon (zero deviation).

Randomness: the library draws from torch's global generator. Each control step draws one seed
from the controller's own ``torch.Generator`` and runs the library inside
``torch.random.fork_rng``, so the global generator is left as it was and an episode replays exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from furnace_env.control import Controller, one_plant_observation
from furnace_env.physics import is_real

__all__ = ["PyTorchMPPIConfig", "PyTorchMPPIController", "matched_pytorch_mppi_config"]


@dataclass(frozen=True)
class PyTorchMPPIConfig:
    """Options of :class:`PyTorchMPPIController` (the library's names in brackets)."""

    num_samples: int = 129
    """Sampled sequences per library call (``num_samples``, K)."""
    iterations: int = 3
    """Library calls per control step (the first shifts the nominal sequence, the rest refine it)."""
    horizon: int = 15
    """Plan length in control steps (``horizon``, T)."""
    sigma: float = 0.05
    """Standard deviation of the perturbations, search-coordinate units (``noise_sigma = sigma^2 I``)."""
    temperature: float = 0.1
    """MPPI temperature in cost units (``lambda_``). Chosen on the tune family from 0.01 to 3 (the
    library's default is 1.0): 0.1 gave the largest margin over PI; hotter averages the plan towards
    the nominal sequence and under-fires, colder follows single noisy samples (docs/benchmarks/peers.md,
    "pytorch-mppi's temperature on the tune family")."""

    def __post_init__(self) -> None:
        for name in ("num_samples", "iterations", "horizon"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"PyTorchMPPIConfig.{name}={v!r} must be an integer >= 1")
        for name in ("sigma", "temperature"):
            v = getattr(self, name)
            if not (is_real(v) and math.isfinite(v) and v > 0):
                raise ValueError(f"PyTorchMPPIConfig.{name}={v!r} must be finite and > 0")

    def evals_per_step(self) -> int:
        """Objective evaluations one control step spends."""
        return self.num_samples * self.iterations


def matched_pytorch_mppi_config(mppi_optimizer, horizon: int, **overrides: Any) -> PyTorchMPPIConfig:
    """A config at the compute of the in-house MPPI ``mppi_optimizer`` (an :class:`~planners.optim.MPPIOptimizer`).

    Same iterations, same perturbation std, and ``num_samples`` = the in-house evaluations per
    iteration (its candidates plus the mean it also evaluates), so both spend
    ``mppi_optimizer.nominal_evals()`` evaluations per control step. ``overrides`` replace fields.
    """
    c = mppi_optimizer.config
    per_iter = c.n_candidates + int(c.include_mean)
    kw = {"num_samples": per_iter, "iterations": c.iterations, "horizon": horizon, "sigma": c.sigma, **overrides}
    return PyTorchMPPIConfig(**kw)


class PyTorchMPPIController(Controller):
    """Receding-horizon control with ``pytorch_mppi.MPPI`` on a planning model (see the module doc).

    Args:
        model: a :class:`~planners.mpc.PlanningModel` with ``make_objective`` over ``[N, H, 2]``
            search coordinates (and optionally ``decode``, ``applied``, ``nominal_action``).
        config: the library's settings.
        generator: the controller's random generator (its state at construction is restored by
            :meth:`reset`); a fresh one seeded with ``seed`` if omitted.
        dtype, device: of the sampled sequences (the model's).
    """

    def __init__(self, model, config: PyTorchMPPIConfig | None = None, generator: torch.Generator | None = None,
                 seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 name: str = "pytorch-mppi") -> None:
        for method in ("reset", "observe", "make_objective"):
            if not callable(getattr(model, method, None)):
                raise ValueError(f"model {type(model).__name__} has no {method}(); it must follow PlanningModel")
        import pytorch_mppi  # noqa: F401  (fail at construction, not at the first step, if it is missing)

        self.model = model
        self.config = config if config is not None else PyTorchMPPIConfig()
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._gen_state = self.generator.get_state()
        self.dtype, self.device = dtype, torch.device(device)
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.model.reset()
        self.generator.set_state(self._gen_state)
        self._mppi = None
        self._objective = None
        self._offset: torch.Tensor | None = None
        self._evals = 0
        self.latencies: list[float] = []
        self.evals: list[int] = []

    def _terminal_cost(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The library's terminal cost: the planning objective on the sampled sequences ``[1, K, T, A]``."""
        u = actions[0] + self._offset  # the library's deviations -> search coordinates
        with torch.no_grad():
            c = self._objective(u)
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        self._evals += u.shape[0]
        # A non-finite cost gets no weight in the library's exponential average.
        return torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))

    def _build(self) -> None:
        from pytorch_mppi import MPPI

        c = self.config
        u0 = torch.zeros(2, dtype=self.dtype, device=self.device)  # hold the applied action
        self._mppi = MPPI(
            dynamics=lambda state, u: state,
            running_cost=lambda state, u: torch.zeros(state.shape[0], dtype=self.dtype, device=self.device),
            nx=1, noise_sigma=(c.sigma**2) * torch.eye(2, dtype=self.dtype, device=self.device),
            num_samples=c.num_samples, horizon=c.horizon, device=self.device,
            terminal_state_cost=self._terminal_cost, lambda_=c.temperature,
            u_min=-torch.ones(2, dtype=self.dtype), u_max=torch.ones(2, dtype=self.dtype),
            u_init=u0.clone(), U_init=u0.expand(c.horizon, 2).clone(),
        )

    def act(self, obs: np.ndarray) -> np.ndarray:
        o = one_plant_observation(obs, "PyTorchMPPIController")
        t0 = time.perf_counter()
        self.model.observe(o)
        first_step = self._mppi is None
        nominal = getattr(self.model, "nominal_action", None)
        hold = nominal() if callable(nominal) else None
        offset = torch.zeros(2, dtype=self.dtype, device=self.device) if hold is None else torch.as_tensor(
            np.asarray(hold, dtype=np.float64), dtype=self.dtype, device=self.device).reshape(2).clamp(-1.0, 1.0)
        if first_step:
            self._build()
        else:
            # Re-express the nominal sequence as deviations from the action applied now.
            self._mppi.U = self._mppi.U + (self._offset - offset)
        self._offset = offset
        self._mppi.u_min, self._mppi.u_max = -1.0 - offset, 1.0 - offset
        self._objective = self.model.make_objective(o)
        self._evals = 0
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        state0 = torch.zeros(1, dtype=self.dtype, device=self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for it in range(self.config.iterations):
                shift = it == 0 and not first_step
                if shift:
                    self._mppi.u_init = self._mppi.U[-1].clone()  # the shift repeats the last action
                u = self._mppi.command(state0, shift_nominal_trajectory=shift)
        first = (u + offset).detach().cpu().numpy().astype(np.float64).reshape(2)
        decode = getattr(self.model, "decode", None)
        action = np.clip(decode(first) if callable(decode) else first, -1.0, 1.0)
        if callable(getattr(self.model, "applied", None)):
            self.model.applied(action)
        self._objective = None
        self.evals.append(self._evals)
        self.latencies.append(time.perf_counter() - t0)
        return action[None].astype(np.float32)

    def stats(self) -> dict[str, Any]:
        """Planner diagnostics of the episode so far (namespaced ``planner/``)."""
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        return {"planner/latency_ms_mean": float(lat.mean() * 1e3),
                "planner/latency_ms_p95": float(np.percentile(lat, 95) * 1e3),
                "planner/evals_per_step": float(np.mean(self.evals)) if self.evals else 0.0}
