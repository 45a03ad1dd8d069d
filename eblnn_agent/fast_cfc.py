"""A fused CfC cell: the maths of ``ncps.torch.CfCCell`` (mode "default", with backbone) in fewer ops.

The stock cell runs, per step, a concatenation, the backbone and four separate linear
heads (``ff1``, ``ff2``, ``time_a``, ``time_b``). Here the four heads are stacked into one
matrix (with ``ts = 1`` the two time heads only ever appear summed, so they merge into
one block), every tanh is evaluated as ``2 sigmoid(2x) - 1`` (an identity; sigmoid is
several times cheaper than tanh on CPUs), the backbone's input projection of the whole input sequence (or of the whole
action sequence, in a closed-loop rollout) is computed in one matmul before the loop,
and constant scales (LeCun tanh's 0.666 and 1.7159, the input normalisation) are folded
into the weights. The weights are read from the ncps module at every call, so the
module stays the single owner of the parameters and gradients flow back into it.

For planning on a CPU the cost of a rollout is the per-op overhead of a few hundred tiny
kernels, so fewer ops is what makes it fast (see ``evaluate/bench_rollout.py``).

Cell equations (Hasani et al., "Closed-form continuous-time neural networks", Nature
Machine Intelligence 2022), with ``ts = 1``::

    z = backbone([x, h]);  f1 = tanh(ff1(z));  f2 = tanh(ff2(z))
    g = sigmoid(time_a(z) * ts + time_b(z));  h' = f1 * (1 - g) + g * f2
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from ncps.torch import CfCCell
from torch import Tensor

__all__ = ["FusedCfCWeights", "fuse_cell", "check_cell_supported", "cfc_sequence", "fused_step",
           "cell_from_preactivation", "rollout_loop",
           "RolloutWeights", "rollout_fused"]

_LECUN_IN, _LECUN_OUT = 0.666, 1.7159


class FusedCfCWeights(NamedTuple):
    """Weights of one CfC cell in fused form (products of the ncps parameters, differentiable)."""

    w_in: Tensor
    """First backbone layer, input columns ``[U, I]`` (activation's input scale folded in)."""
    w_h: Tensor
    """First backbone layer, hidden-state columns ``[U, H]`` (scale folded in)."""
    b_in: Tensor
    """First backbone layer bias ``[U]`` (scale folded in)."""
    deeper: list[tuple[Tensor, Tensor]]
    """Further backbone layers ``(W, b)`` (scales and shifts folded in)."""
    w3: Tensor
    """Stacked heads ``[3H, U]``: 2 ff1, 2 ff2 (for tanh as a sigmoid) and time_a + time_b (ts = 1)."""
    b3: Tensor
    """Stacked head biases ``[3H]``."""
    act: str
    """Backbone activation as evaluated: ``sigmoid`` for the tanh family, else its own name."""


def check_cell_supported(cell: CfCCell) -> None:
    """Raise ``ValueError`` unless the cell is one the fused path reproduces exactly."""
    if cell.mode != "default":
        raise ValueError(f"fused CfC supports mode='default' only, got mode={cell.mode!r}")
    if cell.backbone_layers < 1:
        raise ValueError("fused CfC needs backbone_layers >= 1")
    if cell.sparsity_mask is not None:
        raise ValueError("fused CfC does not support a sparsity mask (wired CfC)")
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in cell.backbone):
        raise ValueError("fused CfC does not support backbone dropout")


# Activation -> (evaluated as, input scale, output scale, output shift): act(x) = shift + out * f(in * x).
# tanh(x) = 2 sigmoid(2x) - 1, and sigmoid is much cheaper than tanh on CPUs.
_ACT_FORMS = {
    "LeCun": ("sigmoid", 2 * _LECUN_IN, 2 * _LECUN_OUT, -_LECUN_OUT),
    "Tanh": ("sigmoid", 2.0, 2.0, -1.0),
    "SiLU": ("silu", 1.0, 1.0, 0.0),
    "ReLU": ("relu", 1.0, 1.0, 0.0),
    "GELU": ("gelu", 1.0, 1.0, 0.0),
}


def fuse_cell(cell: CfCCell, input_size: int) -> FusedCfCWeights:
    """Read a cell's weights into fused form (differentiable w.r.t. the cell's parameters).

    Scales are folded so that the per-step work is: one matmul and one activation per
    backbone layer, one matmul and one sigmoid for the three gates, and three element-wise ops.
    """
    act, s_in, s_out, shift = _ACT_FORMS[type(cell.backbone[1]).__name__]
    lin = [m for m in cell.backbone if isinstance(m, torch.nn.Linear)]
    w0, b0 = lin[0].weight * s_in, lin[0].bias * s_in

    def consume(w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        # A layer reading act(x) = shift + s_out f(.): fold the scale and the shift.
        return w * s_out, b + shift * w.sum(dim=1)

    deeper = []
    for m in lin[1:]:
        w, b = consume(m.weight, m.bias)
        deeper.append((w * s_in, b * s_in))
    w_ff1, b_ff1 = consume(cell.ff1.weight, cell.ff1.bias)
    w_ff2, b_ff2 = consume(cell.ff2.weight, cell.ff2.bias)
    w_ta, b_ta = consume(cell.time_a.weight, cell.time_a.bias)
    w_tb, b_tb = consume(cell.time_b.weight, cell.time_b.bias)
    w3 = torch.cat([2.0 * w_ff1, 2.0 * w_ff2, w_ta + w_tb], 0)
    b3 = torch.cat([2.0 * b_ff1, 2.0 * b_ff2, b_ta + b_tb], 0)
    return FusedCfCWeights(w0[:, :input_size], w0[:, input_size:], b0, deeper, w3, b3, act)


def _activate(x: Tensor, act: str) -> Tensor:
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "silu":
        return torch.nn.functional.silu(x)
    if act == "relu":
        return torch.relu(x)
    return torch.nn.functional.gelu(x)


def cell_from_preactivation(pre: Tensor, fw: FusedCfCWeights) -> Tensor:
    """The cell from the full first backbone pre-activation ``[B, U]`` (input and hidden parts summed)."""
    z = _activate(pre, fw.act)
    for w, b in fw.deeper:
        z = _activate(torch.addmm(b, z, w.t()), fw.act)
    s1, s2, gate = torch.sigmoid(torch.addmm(fw.b3, z, fw.w3.t())).chunk(3, dim=-1)
    # tanh(a) = 2 sigmoid(2a) - 1:  h' = f1 + gate (f2 - f1) = 2 s1 - 1 + 2 gate (s2 - s1).
    return torch.addcmul(2.0 * s1 - 1.0, gate, s2 - s1, value=2.0)


def fused_step(pre_in: Tensor, h: Tensor, fw: FusedCfCWeights) -> Tensor:
    """One cell step given the input part of the first backbone pre-activation ``pre_in [B, U]``."""
    return cell_from_preactivation(torch.addmm(pre_in, h, fw.w_h.t()), fw)


def cfc_sequence(cell: CfCCell, x: Tensor, h0: Tensor) -> Tensor:
    """Teacher-forced sequence ``x [B, T, I]`` from ``h0 [B, H]``: hidden states ``[B, T, H]``.

    Same result as ``ncps.torch.CfC(...)(x, h0)[0]`` (mode default, no mixed memory, ts = 1).
    """
    fw = fuse_cell(cell, x.shape[-1])
    pre_all = torch.addmm(fw.b_in, x.reshape(-1, x.shape[-1]), fw.w_in.t()).view(x.shape[0], x.shape[1], -1)
    h = h0
    out = []
    for t in range(x.shape[1]):
        h = fused_step(pre_all[:, t], h, fw)
        out.append(h)
    return torch.stack(out, dim=1)


_ACT_CODES = {"sigmoid": 0, "silu": 1, "relu": 2, "gelu": 3}


def _act_code(x: Tensor, code: int) -> Tensor:
    if code == 0:
        return torch.sigmoid(x)
    if code == 1:
        return torch.nn.functional.silu(x)
    if code == 2:
        return torch.relu(x)
    return torch.nn.functional.gelu(x)


def rollout_loop(c: Tensor, obs0: Tensor, pre_act: Tensor, corr: Tensor, lower: Tensor, w_big: Tensor,
                 deeper_w: list[Tensor], deeper_b: list[Tensor], w3: Tensor, b3: Tensor,
                 phys_w: list[Tensor], phys_b: list[Tensor], w_last: Tensor, act: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """The closed-loop part of a fused rollout (see ``EBLNN._rollout_fast``).

    (Compiled with ``torch.jit.script`` it was no faster here: the cost is in the kernels.)

    ``c`` is the CfC state after step 0. Returns (predicted obs, CfC states, input obs), each ``[B, T, .]``.
    """
    obs_prev = obs0
    obs = obs0
    outs: list[Tensor] = []
    cs: list[Tensor] = []
    ins: list[Tensor] = [obs0]
    for t in range(pre_act.shape[1]):
        if t > 0:
            z = _act_code(torch.addmm(pre_act[:, t], torch.cat([obs, obs - obs_prev, c], 1), w_big), act)
            for i in range(len(deeper_w)):
                z = _act_code(torch.addmm(deeper_b[i], z, deeper_w[i].t()), act)
            s1, s2, gate = torch.sigmoid(torch.addmm(b3, z, w3.t())).chunk(3, dim=-1)
            c = torch.addcmul(2.0 * s1 - 1.0, gate, s2 - s1, value=2.0)
        p = c
        for i in range(len(phys_w)):
            p = torch.nn.functional.silu(torch.nn.functional.linear(p, phys_w[i], phys_b[i]))
        nxt = torch.maximum(torch.addmm(obs + corr[:, t], p, w_last), lower)
        obs_prev = obs
        obs = nxt
        outs.append(obs)
        cs.append(c)
        ins.append(obs)
    ins.pop()
    return torch.stack(outs, 1), torch.stack(cs, 1), torch.stack(ins, 1)



class RolloutWeights(NamedTuple):
    """Frozen weights of a closed-loop rollout, arranged for :func:`rollout_fused` (see ``EBLNN._rollout_fast``).

    Inside the loop the CfC state is carried as ``c' = (c + 1) / 2 = s1 + gate (s2 - s1)`` (the
    ``2 c' - 1`` is folded into the weights that read it), which saves two ops per step.
    """

    w_x: Tensor
    """``[2n + H, U]``: first backbone layer on ``[obs_t, obs_t - obs_{t-1}, c'_t]`` (normalisation folded in)."""
    w_back: Tensor
    """``[U, 2n + H]``: the same layer for the backward pass, as gradients to ``[obs_t, obs_{t-1}, c'_t]``."""
    bias_shift: Tensor
    """``[U]``: added to the action pre-activation (the ``-1`` of ``c = 2 c' - 1``)."""
    deeper: list[tuple[Tensor, Tensor]]
    """Further backbone layers ``(W^T [in, out], b)``."""
    w3t: Tensor
    """Stacked heads ``[U, 3H]``."""
    b3: Tensor
    """Stacked head biases ``[3H]``."""
    phys: list[tuple[Tensor, Tensor]]
    """Physics-head hidden layers ``(W^T, b)`` (SiLU after each); the first reads ``c'``."""
    w_last: Tensor
    """``[P, n]``: the physics head's last layer (de-normalisation folded in)."""
    lower: Tensor
    """``[n]``: lower clamp of the predicted observation (``-inf`` where unclamped)."""
    act: int
    """Backbone activation code (``_ACT_CODES``)."""


def _act_grad(g: Tensor, pre: Tensor, out: Tensor, code: int) -> Tensor:
    """Gradient through a backbone activation, from its input ``pre`` and output ``out``."""
    if code == 0:
        return torch.ops.aten.sigmoid_backward(g, out)
    if code == 1:
        return torch.ops.aten.silu_backward(g, pre)
    if code == 2:
        return torch.ops.aten.threshold_backward(g, out, 0)
    return torch.ops.aten.gelu_backward(g, pre)


class _FusedRollout(torch.autograd.Function):
    """The closed loop of :func:`rollout_loop` as one autograd node, with a hand-written backward.

    At planning sizes (32 candidates, 64 units) autograd's per-node bookkeeping costs more
    than the arithmetic; here the forward saves what the backward needs (activations, gates,
    physics pre-activations) and the backward is ~20 ops per step. Time-major buffers keep every
    per-step operand contiguous. Gradients flow to ``c1, obs0, pre_act, corr``; the weights are
    constants (the caller uses :func:`rollout_loop` when a weight needs a gradient).
    """

    @staticmethod
    def forward(ctx, c1: Tensor, obs0: Tensor, pre_act: Tensor, corr: Tensor, rw: RolloutWeights):  # noqa: D102
        b, t_len, _ = pre_act.shape
        n, hs = obs0.shape[1], c1.shape[1]
        # x[t] = [obs_t, obs_t - obs_{t-1}, c'_t], time-major; x[t + 1, :, 2n:] is the state after step t.
        x = obs0.new_empty(t_len + 1, b, 2 * n + hs)
        xo, xq, xc = x[..., :n].unbind(0), x[..., n:2 * n].unbind(0), x[..., 2 * n:].unbind(0)
        xs = x.unbind(0)
        xo[0].copy_(obs0)
        torch.add(c1, 1.0, out=xc[1]).mul_(0.5)
        pre_t = (pre_act.transpose(0, 1) + rw.bias_shift).unbind(0)
        corr_t = corr.transpose(0, 1).contiguous().unbind(0)
        saved_cell, saved_phys = [None] * t_len, [None] * t_len
        for t in range(t_len):
            if t > 0:
                pre = torch.addmm(pre_t[t], xs[t], rw.w_x)
                z = _act_code(pre, rw.act)
                layers = [(pre, z)]
                for w, bb in rw.deeper:
                    pre = torch.addmm(bb, z, w)
                    z = _act_code(pre, rw.act)
                    layers.append((pre, z))
                s3 = torch.sigmoid(torch.addmm(rw.b3, z, rw.w3t))
                s1, s2, gate = s3.split(hs, 1)
                d = s2 - s1
                torch.addcmul(s1, gate, d, out=xc[t + 1])
                saved_cell[t] = (layers, s3, gate, d)
            p = xc[t + 1]
            pres = []
            for w, bb in rw.phys:
                pre = torch.addmm(bb, p, w)
                pres.append(pre)
                p = torch.nn.functional.silu(pre)
            saved_phys[t] = pres
            torch.maximum(torch.addmm(xo[t] + corr_t[t], p, rw.w_last), rw.lower, out=xo[t + 1])
            if t + 1 < t_len:
                torch.sub(xo[t + 1], xo[t], out=xq[t + 1])
        ctx.rw, ctx.x, ctx.cell, ctx.phys = rw, x, saved_cell, saved_phys
        obs_seq = x[1:, :, :n].transpose(0, 1)
        cs = x[1:, :, 2 * n:].transpose(0, 1) * 2.0 - 1.0
        ins = x[:-1, :, :n].transpose(0, 1)
        return obs_seq.contiguous(), cs, ins.contiguous()

    @staticmethod
    def backward(ctx, g_obs: Tensor, g_cs: Tensor, g_ins: Tensor):  # noqa: D102
        rw, x = ctx.rw, ctx.x
        t_len, b = x.shape[0] - 1, x.shape[1]
        n = g_obs.shape[-1]
        hs = g_cs.shape[-1]
        # External gradient on obs_t (t = 0..T): as an input of step t, and as the output of step t - 1.
        e = g_obs.new_zeros(t_len + 1, b, n)
        e[:-1] += g_ins.transpose(0, 1)
        e[1:] += g_obs.transpose(0, 1)
        e = e.unbind(0)
        gc_ext = (g_cs.transpose(0, 1) * 2.0).unbind(0)  # d/dc' = 2 d/dc
        mask = (x[1:, :, :n] > rw.lower).unbind(0)
        g_pre = [None] * t_len
        g_corr = [None] * t_len
        go = e[t_len]       # gradient on obs_{t+1}
        gc = None           # gradient on c'_{t+1} from step t + 1's input
        g_prev = None       # gradient on obs_t from step t + 1's difference input
        g_c1 = None
        for t in range(t_len - 1, -1, -1):
            g_nxt = go * mask[t]
            g_corr[t] = g_nxt
            gp = g_nxt.mm(rw.w_last.t())
            pres = ctx.phys[t]
            for i in range(len(rw.phys) - 1, 0, -1):
                gp = torch.ops.aten.silu_backward(gp, pres[i]).mm(rw.phys[i][0].t())
            base = gc_ext[t] if gc is None else gc_ext[t] + gc
            gcp = torch.addmm(base, torch.ops.aten.silu_backward(gp, pres[0]), rw.phys[0][0].t())
            go = e[t] + g_nxt if g_prev is None else e[t] + g_nxt + g_prev
            if t == 0:
                g_c1 = gcp * 0.5
                break
            layers, s3, gate, d = ctx.cell[t]
            g3 = torch.empty_like(s3)
            torch.mul(gcp, gate, out=g3[:, hs:2 * hs])
            torch.sub(gcp, g3[:, hs:2 * hs], out=g3[:, :hs])
            torch.mul(gcp, d, out=g3[:, 2 * hs:])
            gz = torch.ops.aten.sigmoid_backward(g3, s3).mm(rw.w3t.t())
            for i in range(len(layers) - 1, 0, -1):
                gz = _act_grad(gz, *layers[i], rw.act).mm(rw.deeper[i - 1][0].t())
            gpre = _act_grad(gz, *layers[0], rw.act)
            g_pre[t] = gpre
            gx = gpre.mm(rw.w_back)
            go = go + gx[:, :n]
            g_prev, gc = gx[:, n:2 * n], gx[:, 2 * n:]
        g_pre[0] = torch.zeros_like(g_pre[1]) if t_len > 1 else x.new_zeros(b, rw.w_x.shape[1])
        return g_c1, go, torch.stack(g_pre, 1), torch.stack(g_corr, 1), None


def rollout_fused(c1: Tensor, obs0: Tensor, pre_act: Tensor, corr: Tensor, rw: RolloutWeights
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Same as :func:`rollout_loop` (frozen weights in :class:`RolloutWeights`), one autograd node."""
    return _FusedRollout.apply(c1, obs0, pre_act, corr, rw)
