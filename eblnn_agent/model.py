"""The EB-LNN world model: a CfC body, a physics head and an energy head on the hidden state.

State convention (everything in physical units at the interface; inside, CO on a log scale
(:mod:`eblnn_agent.transforms`) and normalisation):

* ``h_t`` is the recurrent state *after* consuming ``(obs_{t-1}, a_{t-1})``; ``h_0`` is
  :meth:`EBLNN.initial_state`, the state before any observation. It holds the CfC state
  and the last observation consumed (see :class:`EBLNN`); the heads read the CfC part.
* ``h_{t+1} = step(obs_t, a_t, h_t)``; the physics head reads ``h_{t+1}`` and predicts
  ``obs_{t+1} = predict_next(obs_t, h_{t+1}, a_t)``.
* A controller filters real data with ``step`` (one call per control step) and plans from
  ``(obs_t, h_t)`` with :meth:`EBLNN.rollout` over candidate action sequences.

The hidden state is always passed in and returned, never stored on the module, so one call
rolls out hundreds of candidate sequences at once.

The energy ``E(h)`` (low = looks like real furnace behaviour) is trained by contrastive
divergence against Langevin fantasies (see :mod:`eblnn_agent.sampler`, :mod:`eblnn_agent.losses`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from ncps.torch import CfC
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from eblnn_agent.config import ModelConfig
from eblnn_agent.fast_cfc import (
    _ACT_CODES,
    RolloutWeights,
    cell_from_preactivation,
    cfc_sequence,
    check_cell_supported,
    fuse_cell,
    rollout_fused,
    rollout_loop,
)
from eblnn_agent.transforms import obs_from_model, obs_to_model

__all__ = ["EBLNN", "EnergyHead", "RolloutOut", "OBS_DIM", "ACT_DIM", "PHYSICS_CHANNELS",
           "NONNEG_CHANNELS", "SETPOINT_CHANNEL", "ACTION_CHANNELS"]

OBS_DIM, ACT_DIM = 8, 2
#: Channels the physics loss is computed on (all but the exogenous setpoint).
PHYSICS_CHANNELS = (0, 2, 3, 4, 5, 6, 7)
#: Channels clipped at zero in predictions (temperature, O2, CO, fuel flow, air flow).
NONNEG_CHANNELS = (0, 2, 3, 4, 5)
SETPOINT_CHANNEL = 1
#: The previous-command channels: a prediction copies the applied action there.
ACTION_CHANNELS = (6, 7)


class RolloutOut(NamedTuple):
    """Result of :meth:`EBLNN.rollout`."""

    obs: Tensor
    """Predicted next observations ``[B, T, 8]`` (``obs[:, t]`` follows action ``t``), physical units."""
    hidden: Tensor
    """Hidden states ``[B, T, H]`` (``hidden[:, t]`` is ``h_{t+1}``)."""
    energy: Tensor
    """Fine energy of each hidden state ``[B, T]``."""


def _linear_layout(w: Tensor) -> Tensor:
    """``w [in, out]`` stored as ``nn.Linear`` stores it (``[out, in]``, used transposed).

    MKL's small-matrix kernel for a row-major ``[in, out]`` operand adds each product straight
    onto the bias, which loses float32 digits when the bias is large (an observation of ~1000 K
    plus its small predicted change: 10x the error of the stock path); with the ``nn.Linear``
    layout it sums the products first, as the stock forward does.
    """
    return w.t().contiguous().t()


def _mlp(sizes: list[int], act: type[nn.Module], sn: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        layers.append(spectral_norm(lin) if sn else lin)
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class EnergyHead(nn.Module):
    """MLP ``h [..., H] -> E [...]`` with SiLU activations (smooth gradients for Langevin).

    ``spectral_norm`` bounds each layer's Lipschitz constant by one (Miyato et al. 2018), so
    the energy cannot grow cliffs that make Langevin steps explode.
    """

    def __init__(self, in_dim: int, hidden_dims: list[int], spectral: bool = True) -> None:
        super().__init__()
        self.net = _mlp([in_dim, *hidden_dims, 1], nn.SiLU, spectral)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h).squeeze(-1)


class EBLNN(nn.Module):
    """Energy-based liquid neural network world model of the furnace (see module docstring).

    The recurrent state ``h`` (size :attr:`state_size`) is the CfC state (the first
    ``hidden_size`` entries, which the heads read) followed by the last observation it
    consumed (normalised) and a flag that one was consumed. The cell is fed the observation,
    its change since the previous step (scaled by the delta statistics) and the action: the
    change is what the next step's delta depends on most (a linear ARX model on a few lags
    already predicts the temperature within 0.06x persistence), and a CfC that had to
    difference two normalised readings 0.005 apart itself learns it slowly.
    """

    def __init__(self, cfg: ModelConfig | None = None, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        cfg.validate()
        self.cfg = cfg
        self.obs_dim, self.act_dim, self.hidden_size = obs_dim, act_dim, cfg.hidden_size
        self.state_size = cfg.hidden_size + obs_dim + 1
        self.input_size = 2 * obs_dim + act_dim
        self.cfc = CfC(self.input_size, cfg.hidden_size, mode="default", activation=cfg.backbone_activation,
                       backbone_units=cfg.backbone_units, backbone_layers=cfg.backbone_layers,
                       batch_first=True, return_sequences=True)
        check_cell_supported(self.cfc.rnn_cell)
        self.physics = _mlp([cfg.hidden_size, *cfg.physics_hidden_dims, obs_dim], nn.SiLU)
        self.energy_head = EnergyHead(cfg.hidden_size, list(cfg.ebm_hidden_dims), cfg.spectral_norm)
        self.coarse_head = (EnergyHead(cfg.hidden_size, list(cfg.ebm_hidden_dims), cfg.spectral_norm)
                            if cfg.multiscale else None)
        # Normalisation statistics (from the training split), saved in the state dict.
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("delta_mean", torch.zeros(obs_dim))
        self.register_buffer("delta_std", torch.ones(obs_dim))
        # Saved with the weights, so a checkpoint trained in another CO space fails to load.
        self.register_buffer("co_log_scale", torch.tensor(float(cfg.co_log_scale)))
        # Which observation channels the cell reads (from the config, the single owner of the
        # choice): all, or all but the setpoint (``cfg.setpoint_input``).
        inputs = torch.ones(obs_dim)
        if not cfg.setpoint_input:
            inputs[SETPOINT_CHANNEL] = 0.0
        self.register_buffer("input_mask", inputs, persistent=False)
        mask = torch.zeros(obs_dim, dtype=torch.bool)
        mask[list(NONNEG_CHANNELS)] = True
        self.register_buffer("_nonneg", mask, persistent=False)

    # -- normalisation ----------------------------------------------------------------
    def set_norm_stats(self, obs_mean, obs_std, delta_mean, delta_std) -> None:
        """Install normalisation statistics (arrays or tensors of length ``obs_dim``)."""
        for name, v in (("obs_mean", obs_mean), ("obs_std", obs_std), ("delta_mean", delta_mean),
                        ("delta_std", delta_std)):
            t = torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=self.obs_mean.dtype)
            if t.shape != (self.obs_dim,) or not torch.isfinite(t).all():
                raise ValueError(f"{name} must be {self.obs_dim} finite values, got {v!r}")
            if name.endswith("std") and (t <= 0).any():
                raise ValueError(f"{name} must be > 0, got {v!r}")
            getattr(self, name).copy_(t)

    def to_model_space(self, obs: Tensor) -> Tensor:
        """Physical observations -> the model's space (CO on a log scale; see :mod:`eblnn_agent.transforms`)."""
        return obs_to_model(obs, self.cfg.co_log_scale)

    def from_model_space(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`to_model_space`."""
        return obs_from_model(z, self.cfg.co_log_scale)

    def _norm(self, obs: Tensor) -> Tensor:
        """Normalise observations already in the model's space."""
        return (obs - self.obs_mean) / self.obs_std

    def _features(self, norm: Tensor, last: Tensor, valid: Tensor, action: Tensor) -> Tensor:
        diff = valid * (norm - last) * (self.obs_std / self.delta_std * self.input_mask)
        return torch.cat([norm * self.input_mask, diff, action], dim=-1)

    def _input_weights(self, w_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The fused input matrix split into its observation, difference and action blocks, the
        channels the cell does not read zeroed (the fused paths' form of :meth:`_features`'s mask)."""
        n = self.obs_dim
        return w_in[:, :n] * self.input_mask, w_in[:, n:2 * n] * self.input_mask, w_in[:, 2 * n:]

    def normalized_delta(self, obs: Tensor, next_obs: Tensor) -> Tensor:
        """Target of the physics head: ``(next - obs - delta_mean) / delta_std`` in the model's space."""
        return (self.to_model_space(next_obs) - self.to_model_space(obs) - self.delta_mean) / self.delta_std

    def cfc_state(self, h: Tensor) -> Tensor:
        """The CfC part ``[..., hidden_size]`` of recurrent states ``[..., state_size]`` (what the heads read)."""
        return h[..., :self.hidden_size]

    def _split(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hs = self.hidden_size
        return h[..., :hs], h[..., hs:hs + self.obs_dim], h[..., hs + self.obs_dim:]

    # -- the body -----------------------------------------------------------------------
    def initial_state(self, batch: int) -> Tensor:
        """The state before any observation: zeros ``[batch, state_size]`` on the model's device."""
        return self.obs_mean.new_zeros(batch, self.state_size)

    def step(self, obs: Tensor, action: Tensor, h: Tensor) -> Tensor:
        """Filter one real step: ``h_{t+1} = cell(obs_t, a_t, h_t)`` (``obs [B, 8]``, ``action [B, 2]``)."""
        c, last, valid = self._split(h)
        norm = self._norm(self.to_model_space(obs))
        _, c_next = self.cfc.rnn_cell(self._features(norm, last, valid, action), c, 1.0)
        return torch.cat([c_next, norm, torch.ones_like(valid)], dim=-1)

    def filter(self, obs: Tensor, actions: Tensor, h0: Tensor | None = None, fast: bool = True) -> Tensor:
        """Teacher-forced states ``[B, T, state_size]`` over real ``obs [B, T, 8]`` and ``actions [B, T, 2]``.

        ``hidden[:, t]`` is ``h_{t+1}`` (after consuming step ``t``). ``fast`` uses the fused cell,
        else the stock ``ncps`` sequence forward; both compute the same function.
        """
        h0 = self.initial_state(obs.shape[0]) if h0 is None else h0
        c0, last0, valid0 = self._split(h0)
        norm = self._norm(self.to_model_space(obs))
        last = torch.cat([last0[:, None], norm[:, :-1]], dim=1)
        valid = torch.cat([valid0[:, None], torch.ones_like(norm[:, 1:, :1])], dim=1)
        x = self._features(norm, last, valid, actions)
        c = cfc_sequence(self.cfc.rnn_cell, x, c0) if fast else self.cfc(x, c0)[0]
        return torch.cat([c, norm, torch.ones_like(valid)], dim=-1)

    # -- heads --------------------------------------------------------------------------
    def predict_delta(self, h: Tensor) -> Tensor:
        """Normalised one-step observation delta ``[..., 8]`` predicted from ``h_{t+1}``."""
        return self.physics(self.cfc_state(h))

    def _compose(self, obs: Tensor, delta_n: Tensor, action: Tensor | None, setpoint: Tensor | None) -> Tensor:
        nxt = obs + delta_n * self.delta_std + self.delta_mean
        nxt = torch.where(self._nonneg, nxt.clamp_min(0.0), nxt)
        sp = obs[..., SETPOINT_CHANNEL:SETPOINT_CHANNEL + 1] if setpoint is None else setpoint
        act = nxt[..., 6:8] if action is None else action
        return torch.cat([nxt[..., :1], sp, nxt[..., 2:6], act], dim=-1)

    def predict_next(self, obs: Tensor, h: Tensor, action: Tensor | None = None) -> Tensor:
        """Next observation ``[B, 8]`` in physical units from ``obs_t`` and ``h_{t+1}``.

        ``obs + denormalised delta``; temperature, O2, CO and flows clipped at zero; the
        setpoint is held (future setpoints are unknown); channels 6, 7 (previous commands)
        are set to ``action`` exactly when it is given (else the head's prediction).
        """
        return self.from_model_space(self._compose(self.to_model_space(obs), self.predict_delta(h), action, None))

    def energy(self, h: Tensor) -> Tensor:
        """Fine energy ``[...]`` of states ``[..., state_size]`` or CfC states ``[..., hidden_size]``.

        Low energy = looks like real furnace behaviour.
        """
        return self.energy_head(self.cfc_state(h))

    def coarse_energy(self, pooled: Tensor) -> Tensor:
        """Coarse energy ``[B]`` of time-pooled (CfC) states ``[B, H]`` (0 without multi-scale)."""
        if self.coarse_head is None:
            return pooled.new_zeros(pooled.shape[:-1])
        return self.coarse_head(self.cfc_state(pooled))

    def sequence_energy(self, hidden: Tensor) -> Tensor:
        """Energy of state sequences ``[B, T, S] -> [B]``: mean fine energy + coarse energy of the mean."""
        c = self.cfc_state(hidden)
        e = self.energy_head(c).mean(dim=1)
        if self.coarse_head is not None:
            e = e + self.coarse_head(c.mean(dim=1))
        return e

    # -- imagination --------------------------------------------------------------------
    def rollout(self, obs0: Tensor, h0: Tensor, actions: Tensor, fast: bool = True) -> RolloutOut:
        """Closed-loop rollout of action sequences ``actions [B, T, 2]`` from ``(obs0 [B, 8], h0 [B, S])``.

        ``h_{t+1} = cell(obs_t, a_t, h_t)``, ``obs_{t+1} = predict_next(obs_t, h_{t+1}, a_t)``;
        the setpoint is held at ``obs0``'s. Differentiable w.r.t. ``actions`` (and ``obs0``,
        ``h0``). ``fast`` uses the fused cell (same maths as the stock ncps forward, fewer ops);
        when no weight needs a gradient (planning: frozen parameters, or under ``no_grad``) the
        whole loop is one autograd node with a hand-written backward
        (:func:`~eblnn_agent.fast_cfc.rollout_fused`).
        """
        if actions.dim() != 3 or actions.shape[-1] != self.act_dim:
            raise ValueError(f"actions must be [B, T, {self.act_dim}], got {tuple(actions.shape)}")
        b = actions.shape[0]
        if obs0.shape != (b, self.obs_dim) or h0.shape != (b, self.state_size):
            raise ValueError(f"obs0 {tuple(obs0.shape)} / h0 {tuple(h0.shape)} do not match a batch of {b}: "
                             f"expected ({b}, {self.obs_dim}) and ({b}, {self.state_size})")
        z0 = self.to_model_space(obs0)
        out = self._rollout_fast(z0, h0, actions) if fast else self._rollout_stock(z0, h0, actions)
        return out._replace(obs=self.from_model_space(out.obs))

    def _rollout_stock(self, obs0: Tensor, h0: Tensor, actions: Tensor) -> RolloutOut:
        obs, h = obs0, h0
        sp = obs0[:, SETPOINT_CHANNEL:SETPOINT_CHANNEL + 1]
        outs, hs = [], []
        for t in range(actions.shape[1]):
            a = actions[:, t]
            c, last, valid = self._split(h)
            norm = self._norm(obs)
            c = self.cfc(self._features(norm, last, valid, a).unsqueeze(1), c)[1]  # the stock ncps CfC
            h = torch.cat([c, norm, torch.ones_like(valid)], dim=-1)
            obs = self._compose(obs, self.predict_delta(h), a, sp)
            outs.append(obs)
            hs.append(h)
        hidden = torch.stack(hs, 1)
        return RolloutOut(torch.stack(outs, 1), hidden, self.energy(hidden))

    def _rollout_fast(self, obs0: Tensor, h0: Tensor, actions: Tensor) -> RolloutOut:
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            rw = self._rollout_weights()
            if rw is not None:  # frozen weights (planning): one autograd node, hand-written backward
                obs_seq, hidden = rollout_fused(obs0, h0, actions, rw)
                return RolloutOut(obs_seq, hidden, self.energy_head(hidden[..., :self.hidden_size]))
        return self._rollout_fused_autograd(obs0, h0, actions)

    def _rollout_weights(self) -> RolloutWeights | None:
        """The frozen rollout weights (see :class:`~eblnn_agent.fast_cfc.RolloutWeights`), cached.

        The cache is keyed on every parameter's and buffer's storage and version counter, so any
        update (an optimiser step, ``load_state_dict``, ``.to()``) rebuilds it. ``None`` where the
        fused loop does not apply (a physics head without hidden layers).
        """
        tensors = [*self.cfc.parameters(), *self.physics.parameters(), self.obs_mean, self.obs_std,
                   self.delta_mean, self.delta_std, self.input_mask]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        cache = self.__dict__.get("_rw_cache")
        if cache is not None and cache[0] == key:
            return cache[1]
        with torch.no_grad():
            rw = self._build_rollout_weights()
        self.__dict__["_rw_cache"] = (key, rw)
        return rw

    def _build_rollout_weights(self) -> RolloutWeights | None:
        n = self.obs_dim
        lins = [m for m in self.physics if isinstance(m, nn.Linear)]
        if len(lins) < 2 or ACTION_CHANNELS != tuple(range(n - self.act_dim, n)):
            return None
        fw = fuse_cell(self.cfc.rnn_cell, self.input_size)
        w_norm, w_diff, w_act = self._input_weights(fw.w_in)
        # Steps t >= 1 read raw observations: the normalisation folds into the weights and bias
        # (the difference is formed explicitly: folding it into two weight blocks would cancel
        # large numbers, e.g. air flows of thousands of kg/h, in float32).
        w_o, w_q, w_c = (w_norm / self.obs_std).t(), (w_diff / self.delta_std).t(), fw.w_h.t()
        b_rest = fw.b_in - (w_norm / self.obs_std) @ self.obs_mean
        w_last, b_last, lower = self._folded_head(lins[-1], self.obs_mean.dtype, self.obs_mean.device)
        phys = [(m.weight.t().contiguous(), m.bias) for m in lins[:-1]]
        return RolloutWeights(
            w0=torch.cat([w_norm, w_diff, fw.w_h], 1).t().contiguous(), b0=fw.b_in - b_rest, w_act=w_act.t().contiguous(),
            b_act=b_rest, w_x=_linear_layout(torch.cat([w_o, w_q, w_c], 0)),
            w_back=torch.cat([w_o + w_q, -w_q, w_c], 0).t().contiguous(),
            deeper=[(w.t().contiguous(), b) for w, b in fw.deeper], w3t=fw.w3.t().contiguous(), b3=fw.b3,
            w3_back=2.0 * fw.w3,
            phys=[(w.contiguous(), b) for w, b in phys], w_last=_linear_layout(w_last),
            b_last=b_last, lower=lower, obs_mean=self.obs_mean.clone(),
            obs_std=self.obs_std.clone(), diff_scale=self.obs_std / self.delta_std, act_channel=ACTION_CHANNELS[0],
            act=_ACT_CODES[fw.act])

    def _folded_head(self, last: nn.Linear, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The physics head's last layer with the de-normalisation folded in, ``(W^T, b, lower)``.

        The setpoint's and the commands' rows are zeroed (the setpoint is held; the commands copy the
        actions); ``lower`` is the clamp of the non-negative channels (-inf elsewhere).
        """
        n = self.obs_dim
        keep = torch.ones(n, dtype=dtype, device=device)
        keep[[SETPOINT_CHANNEL, *ACTION_CHANNELS]] = 0.0
        w_last = (last.weight * (self.delta_std * keep)[:, None]).t()
        b_last = (last.bias * self.delta_std + self.delta_mean) * keep
        lower = torch.full((n,), -torch.inf, dtype=dtype, device=device)
        lower[list(NONNEG_CHANNELS)] = 0.0
        return w_last, b_last, lower

    def _rollout_fused_autograd(self, obs0: Tensor, h0: Tensor, actions: Tensor) -> RolloutOut:
        # The fused maths through autograd: used when the weights need gradients.
        fw = fuse_cell(self.cfc.rnn_cell, self.input_size)
        w_norm, w_diff, w_act = self._input_weights(fw.w_in)
        # Step 0 reads the previous observation from h0; later steps from the rollout itself, so
        # the input layer folds into pre = [obs_t, obs_t - obs_{t-1}, c_t] @ W + (action part + bias).
        c0, last0, valid0 = self._split(h0)
        norm0 = self._norm(obs0)
        x0 = self._features(norm0, last0, valid0, actions[:, 0])
        w_first = torch.cat([fw.w_in, fw.w_h], 1).t()
        c = cell_from_preactivation(torch.addmm(fw.b_in, torch.cat([x0, c0], 1), w_first), fw)
        # The difference is formed explicitly (folding it into two weight blocks would cancel
        # large numbers, e.g. air flows of thousands of kg/h, in float32).
        w_big = torch.cat([w_norm / self.obs_std, w_diff / self.delta_std, fw.w_h], dim=1).t()  # [(8 + 8 + H), U]
        pre_act = torch.matmul(actions, w_act.t()) + (fw.b_in - (w_norm / self.obs_std) @ self.obs_mean)
        # The commands enter through a precomputed correction (a_t - a_{t-1} on channels 6, 7), so
        # a step is obs + C_t + head(c), then a clamp.
        lins = [m for m in self.physics if isinstance(m, nn.Linear)]
        w_last, b_last, lower = self._folded_head(lins[-1], obs0.dtype, obs0.device)
        prev_a = torch.cat([obs0[:, None, 6:8], actions[:, :-1]], dim=1)
        corr = torch.cat([b_last[:6].expand(*actions.shape[:2], 6), actions - prev_a + b_last[6:]], dim=-1)
        phys = lins[:-1]
        obs_seq, cfc, obs_in = rollout_loop(c, obs0, pre_act, corr, lower, w_big, [w for w, _ in fw.deeper],
                                            [b for _, b in fw.deeper], fw.w3, fw.b3, [m.weight for m in phys],
                                            [m.bias for m in phys], w_last, _ACT_CODES[fw.act])
        norm_in = self._norm(obs_in)
        hidden = torch.cat([cfc, norm_in, torch.ones_like(norm_in[..., :1])], dim=-1)
        return RolloutOut(obs_seq, hidden, self.energy_head(cfc))
