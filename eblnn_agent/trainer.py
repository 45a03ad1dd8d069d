"""Training of the EB-LNN: joint physics + contrastive-divergence loss, validation, early stopping.

One gradient step on a batch of real windows:

1. filter the windows through the CfC body (teacher forcing): hidden states ``h_{1..W}``;
2. physics loss: MSE of the predicted normalised deltas (all channels but the setpoint);
3. fine CD: ``cd_batch`` real hidden states against as many Langevin fantasies (chains from
   the replay buffer), plus two hinges: against Gaussian-perturbed real states (hard
   negatives) and against the states the cell reaches from the same real ``(obs_t, h_t)``
   under uniformly random actions (action negatives);
4. coarse CD (multi-scale): the time-pooled hidden state of each window against fantasies
   of a second sampler/buffer, with its own hinge;
5. ``L = L_physics + alpha * L_CD``; clip the gradient norm; Adam; cosine learning rate.

The Trainer gets everything it needs from its caller (model, config, data split, logger,
device) and owns only the optimisation state; ``train/world_model.py`` wires them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eblnn_agent.checkpoint import CheckpointError, save_checkpoint
from eblnn_agent.config import WorldModelRunConfig
from eblnn_agent.data import DataSplit, Windows, sample_windows, tile_windows
from eblnn_agent.logger import MetricLogger
from eblnn_agent.losses import cd_loss, hard_negative_loss, masked_mse
from eblnn_agent.metrics import ood_aurocs
from eblnn_agent.model import EBLNN, PHYSICS_CHANNELS
from eblnn_agent.sampler import LangevinSampler, ReplayBuffer, uniform_init
from eblnn_agent.utils import atomic_write, remove_stale_temps

__all__ = ["Trainer", "FitResult", "config_differences", "RESUME_MAY_CHANGE"]

_PHYS = list(PHYSICS_CHANNELS)


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`."""

    best_val_loss: float
    best_epoch: int
    epochs_run: int
    steps: int
    train_seconds: float
    sequences_per_s: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Fits an :class:`EBLNN` on a :class:`DataSplit` (see module docstring)."""

    def __init__(self, model: EBLNN, cfg: WorldModelRunConfig, split: DataSplit, logger: MetricLogger,
                 device: torch.device, env_steps: int, out_dir: str | Path | None = None,
                 episode_weights: np.ndarray | None = None) -> None:
        """``episode_weights``: probabilities of drawing each training episode for a window (None: uniform)."""
        self.model, self.cfg, self.split, self.logger = model.to(device), cfg, split, logger
        self.episode_weights = episode_weights
        self.device, self.env_steps = device, int(env_steps)
        self.out_dir = Path(out_dir if out_dir is not None else cfg.train.out_dir)
        tc, ec = cfg.train, cfg.energy
        self.opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        energy_names = ("energy_head.", "coarse_head.")
        self._energy_params = [p for n, p in model.named_parameters() if n.startswith(energy_names)]
        self._body_params = [p for n, p in model.named_parameters() if not n.startswith(energy_names)]
        self.steps_per_epoch = max(1, tc.max_windows_per_epoch // tc.batch_size)
        total = tc.epochs * self.steps_per_epoch
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
        h = model.hidden_size
        self.sampler = LangevinSampler(ec.n_steps, ec.step_size, ec.noise_scale, ec.langevin_grad_clip,
                                       ec.sample_clamp)
        clamp = ec.sample_clamp or 1.0
        self.buffer = ReplayBuffer(ec.buffer_capacity, h, ec.buffer_prob, clamp, device)
        self.coarse_buffer = ReplayBuffer(ec.buffer_capacity, h, ec.buffer_prob, clamp, device)
        # Explicit generators: one for torch sampling (Langevin, buffer, perturbations), one for windows.
        self.gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
        self.rng = np.random.default_rng(tc.seed + 2)
        self.val_windows = tile_windows(split.val, cfg.data.window, device)
        self.epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []

    # -- losses -------------------------------------------------------------------------
    def _subsample(self, x: Tensor, n: int) -> Tensor:
        if x.shape[0] <= n:
            return x
        idx = torch.randperm(x.shape[0], generator=self.gen, device=x.device)[:n]
        return x[idx]

    def _cd_terms(self, e_fn, real: Tensor, buffer: ReplayBuffer, train: bool) -> dict[str, Any]:
        """CD (+ hard negatives) of energy ``e_fn`` on ``real`` states against Langevin fantasies."""
        ec = self.cfg.energy
        # Chains run with the energy heads in eval mode: spectral norm then skips its power
        # iteration (one per training step is enough), which is most of a Langevin step's cost.
        modes = [(m, m.training) for m in (self.model.energy_head, self.model.coarse_head) if m is not None]
        for m, _ in modes:
            m.eval()
        if train:
            fant, st = self.sampler.sample(e_fn, buffer, real.shape[0], self.gen)
        else:
            # Validation: chains from fixed noise with a fixed generator, nothing written back, so
            # val/loss depends on the model only (buffer starts would add epoch-to-epoch noise).
            g = torch.Generator(device=real.device).manual_seed(12345)
            x0 = uniform_init(real.shape[0], real.shape[1], buffer.init_scale, g, real.device, real.dtype)
            fant, st = self.sampler.run(e_fn, x0, g)
        for m, was in modes:
            m.train(was)
        e_real, e_fant = e_fn(real), e_fn(fant)
        terms = cd_loss(e_real, e_fant, ec.l2_reg)
        loss = terms.loss
        out: dict[str, Any] = {"cd": terms, "langevin": st}
        if ec.hard_negatives:
            g = self.gen if train else torch.Generator(device=real.device).manual_seed(54321)
            pert = real + ec.hard_negative_noise * torch.randn(real.shape, generator=g, device=real.device,
                                                               dtype=real.dtype)
            hn = hard_negative_loss(e_real, e_fn(pert), ec.hard_negative_margin)
            loss = loss + ec.hard_negative_weight * hn
            out["hard_neg"] = hn.detach()
        out["loss"] = loss
        return out

    def _open_loop_loss(self, w: Windows, hidden: Tensor, train: bool) -> Tensor:
        """Squared error of ``rollout_steps``-step open-loop predictions, one random start per window.

        Each rollout starts from a real observation ``obs_s`` and the filtered state ``h_s`` that
        precedes it (so gradients also reach the filter), and runs the window's real actions on
        its own predictions, as a plan does. Errors in the model's normalised space.
        """
        m = self.model
        b, w_len = w.actions.shape[:2]
        k = min(self.cfg.train.rollout_steps, w_len - 1)
        if k < 1:
            return hidden.new_zeros(())
        g = self.gen if train else torch.Generator(device=hidden.device).manual_seed(1357)
        s = torch.randint(1, w_len - k + 1, (b,), generator=g, device=hidden.device)
        rows = torch.arange(b, device=hidden.device)
        idx = s[:, None] + torch.arange(k, device=hidden.device)
        out = m.rollout(w.obs[rows, s], hidden[rows, s - 1], w.actions[rows[:, None], idx],
                        fast=self.cfg.train.fast_cell)
        pred = m._norm(m.to_model_space(out.obs))[..., _PHYS]
        target = m._norm(m.to_model_space(w.obs[rows[:, None], idx + 1]))[..., _PHYS]
        return masked_mse(pred, target, w.mask[rows[:, None], idx])

    def losses(self, w: Windows, train: bool = True) -> tuple[Tensor, dict[str, float]]:
        """Joint loss of a batch of windows and its parts (namespace-free keys)."""
        m, ec = self.model, self.cfg.energy
        obs_in = w.obs[:, :-1]
        hidden = m.filter(obs_in, w.actions, fast=self.cfg.train.fast_cell)
        pred = m.predict_delta(hidden)[..., _PHYS]
        target = m.normalized_delta(obs_in, w.obs[:, 1:])[..., _PHYS]
        phys = masked_mse(pred, target, w.mask)
        h_src = m.cfc_state(hidden.detach() if ec.detach_hidden else hidden)
        b_idx, t_idx = self._subsample(w.mask.nonzero(), ec.cd_batch).unbind(1)
        real = h_src[b_idx, t_idx]
        fine = self._cd_terms(m.energy, real, self.buffer, train)
        cd_total = fine["loss"]
        if ec.action_negative_weight > 0:
            # The state the cell would reach from the same real (obs_t, h_t) under a random action.
            h_prev = torch.cat([m.initial_state(hidden.shape[0])[:, None], hidden[:, :-1]], dim=1)
            g = self.gen if train else torch.Generator(device=hidden.device).manual_seed(2468)
            a_rand = torch.rand(b_idx.shape[0], m.act_dim, generator=g, device=hidden.device) * 2.0 - 1.0
            with torch.no_grad():
                h_neg = m.step(obs_in[b_idx, t_idx], a_rand, h_prev[b_idx, t_idx].detach())
            an = hard_negative_loss(m.energy(real), m.energy(h_neg), ec.hard_negative_margin)
            cd_total = cd_total + ec.action_negative_weight * an
        logs = {"physics": float(phys.detach()), "cd_gap": float(fine["cd"].gap), "e_pos": float(fine["cd"].e_pos),
                "e_neg": float(fine["cd"].e_neg), "langevin_nonfinite": fine["langevin"].nonfinite,
                "langevin_grad_norm": fine["langevin"].grad_norm,
                "langevin_fresh": fine["langevin"].fresh_fraction}
        if "hard_neg" in fine:
            logs["hard_neg"] = float(fine["hard_neg"])
        if ec.action_negative_weight > 0:
            logs["action_neg"] = float(an.detach())
        if m.coarse_head is not None:
            msk = w.mask.to(h_src.dtype).unsqueeze(-1)
            pooled = (h_src * msk).sum(1) / msk.sum(1).clamp_min(1.0)
            coarse = self._cd_terms(m.coarse_energy, pooled, self.coarse_buffer, train)
            cd_total = cd_total + coarse["loss"]
            logs["coarse_cd_gap"] = float(coarse["cd"].gap)
            logs["langevin_nonfinite"] += coarse["langevin"].nonfinite
        loss = phys + ec.alpha * cd_total
        tc = self.cfg.train
        if tc.rollout_weight > 0:
            open_loop = self._open_loop_loss(w, hidden, train)
            loss = loss + tc.rollout_weight * open_loop
            logs["open_loop"] = float(open_loop.detach())
        logs["cd"] = float(cd_total.detach())
        logs["loss"] = float(loss.detach())
        return loss, logs

    # -- loop ---------------------------------------------------------------------------
    def train_step(self, w: Windows) -> dict[str, float]:
        """One optimiser step on a batch; returns its logs."""
        self.model.train()
        loss, logs = self.losses(w, train=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {self.step}: {logs}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        tc = self.cfg.train
        if tc.grad_clip > 0:
            # Clipped separately: large CD gradients of the energy heads must not shrink the
            # physics update (one global norm would couple them).
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self._body_params, tc.grad_clip))
            logs["energy_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self._energy_params, tc.grad_clip))
        self.opt.step()
        self.sched.step()
        self.step += 1
        return logs

    def evaluate(self) -> dict[str, float]:
        """Validation metrics on the fixed tiling of the validation episodes."""
        self.model.eval()
        with torch.no_grad():
            loss, logs = self.losses(self.val_windows, train=False)
        g = torch.Generator(device=self.device).manual_seed(777)
        logs.update(ood_aurocs(self.model, self.val_windows, g))
        return logs

    def fit(self) -> FitResult:
        """Train until ``epochs`` or early stopping; writes best.pt and last.pt to ``out_dir``."""
        tc, dc = self.cfg.train, self.cfg.data
        t_start = time.perf_counter()
        n_seq = 0
        bar = None
        if tc.progress:
            from tqdm import tqdm

            bar = tqdm(total=(tc.epochs - self.epoch) * self.steps_per_epoch, desc="train", unit="batch",
                       leave=False, mininterval=1.0)
        # Files of a save that was killed half-way are of no use to anyone.
        remove_stale_temps(self.out_dir, ("best.pt", "last.pt"))
        # A resumed run that had stopped early (or finished) trains no more and keeps its best.pt.
        while self.epoch < tc.epochs and self.bad_epochs < tc.patience:
            acc: dict[str, list[float]] = {}
            for _ in range(self.steps_per_epoch):
                w = sample_windows(self.split.train, tc.batch_size, dc.window, self.rng, self.device,
                                   self.episode_weights)
                logs = self.train_step(w)
                n_seq += tc.batch_size
                for k, v in logs.items():
                    acc.setdefault(k, []).append(v)
                if self.step % tc.log_every == 0:
                    self.logger.log(_namespaced(logs, "train"), step=self.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(phys=f"{logs['physics']:.3g}", gap=f"{logs['cd_gap']:.3g}", refresh=False)
            self.epoch += 1
            val = self.evaluate()
            epoch_logs = {**_namespaced({k: float(np.mean(v)) for k, v in acc.items()}, "train"),
                          **_namespaced(val, "val"), "train/epoch": self.epoch,
                          "train/lr": self.opt.param_groups[0]["lr"]}
            self.history.append(epoch_logs)
            self.logger.log(epoch_logs, step=self.step)
            if val["loss"] < self.best_val:
                self.best_val, self.best_epoch, self.bad_epochs = val["loss"], self.epoch, 0
                self.save_best(val)
            else:
                self.bad_epochs += 1
            self.save_last()
        stopped = self.bad_epochs >= tc.patience
        if bar is not None:
            bar.close()
        secs = time.perf_counter() - t_start
        return FitResult(self.best_val, self.best_epoch, self.epoch, self.step, secs,
                         n_seq / max(secs, 1e-9), stopped, self.history)

    # -- checkpoints ----------------------------------------------------------------------
    def save_best(self, val: dict[str, float]) -> Path:
        return save_checkpoint(self.out_dir / "best.pt", self.model, self.cfg, {
            "env_steps": self.env_steps, "epoch": self.epoch, "step": self.step,
            "val": {k: float(v) for k, v in val.items()}, "data_provenance": self.split.train.provenance,
        })

    def save_last(self) -> Path:
        """Everything needed to resume (model, optimiser, schedule, buffers, generators, counters)."""
        state = {
            "format": "eblnn-world-model-resume", "format_version": 1, "config": self.cfg.to_dict(),
            "model_state": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "buffer": self.buffer.state_dict(), "coarse_buffer": self.coarse_buffer.state_dict(),
            "gen": self.gen.get_state(), "rng": _rng_state(self.rng),
            "counters": {"epoch": self.epoch, "step": self.step, "best_val": self.best_val,
                         "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs},
            "history": self.history,
        }
        return atomic_write(self.out_dir / "last.pt", lambda tmp: torch.save(state, tmp))

    def resume(self, path: str | Path | None = None) -> None:
        """Restore the state written by :meth:`save_last` (the config must match the run's)."""
        path = Path(path) if path is not None else self.out_dir / "last.pt"
        if not path.exists():
            raise CheckpointError(f"--resume: no {str(path)!r} to resume from; run without --resume to start afresh")
        try:
            st = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with a clear message
            raise CheckpointError(f"--resume: {str(path)!r} is truncated or corrupt ({err}); "
                                  f"delete it and start afresh") from err
        if not isinstance(st, dict) or st.get("format") != "eblnn-world-model-resume":
            raise CheckpointError(f"--resume: {str(path)!r} is not a resume state (expected last.pt)")
        diffs = config_differences(st["config"], self.cfg.to_dict())
        if diffs:
            raise CheckpointError(f"--resume: the config differs from the run in {str(path)!r} in "
                                  f"{'; '.join(diffs)}; use the same settings (only "
                                  f"{', '.join(RESUME_MAY_CHANGE)} may change)")
        self.model.load_state_dict(st["model_state"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        self.buffer.load_state_dict(st["buffer"])
        self.coarse_buffer.load_state_dict(st["coarse_buffer"])
        self.gen.set_state(st["gen"])
        self.rng.bit_generator.state = st["rng"]
        c = st["counters"]
        self.epoch, self.step, self.best_val = c["epoch"], c["step"], c["best_val"]
        self.best_epoch, self.bad_epochs = c["best_epoch"], c["bad_epochs"]
        self.history = list(st["history"])
        self.logger.log({"train/resumed_epoch": self.epoch}, step=self.step)


#: Settings a ``--resume`` may change (they do not affect the optimisation).
RESUME_MAY_CHANGE = ("resume", "epochs", "wandb", "progress", "log_every", "device", "threads")
# Fields holding paths, compared after resolving (an absolute path or a trailing slash is the same run).
_PATH_FIELDS = ("out_dir", "data_path")


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"section.field: saved A, now B"`` for every field in which two run configs differ.

    Ignores :data:`RESUME_MAY_CHANGE`; paths are compared resolved.
    """
    def norm(key: str, v: Any) -> Any:
        return str(Path(v).expanduser().resolve()) if key in _PATH_FIELDS and isinstance(v, str) else v

    out = []
    for sec in sorted(set(saved) | set(now)):
        a, b = saved.get(sec), now.get(sec)
        if not (isinstance(a, dict) and isinstance(b, dict)):
            if a != b:
                out.append(f"{sec}: saved {a!r}, now {b!r}")
            continue
        for key in sorted(set(a) | set(b)):
            if sec == "train" and key in RESUME_MAY_CHANGE:
                continue
            va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
            if norm(key, va) != norm(key, vb):
                out.append(f"{sec}.{key}: saved {va!r}, now {vb!r}")
    return out


def _namespaced(d: dict[str, Any], ns: str) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if k.startswith("langevin_"):
            name = k[len("langevin_"):]
            out[f"langevin/{name}" if ns == "train" else f"{ns}/langevin_{name}"] = v
        elif k.endswith("auroc"):
            out[f"{ns}/energy_{k}"] = v
        else:
            out[f"{ns}/{k}"] = v
    return out


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state
