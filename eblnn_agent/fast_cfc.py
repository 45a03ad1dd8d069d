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
from torch.autograd.function import once_differentiable

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
    """Frozen weights and constants of a closed-loop rollout, arranged for :func:`rollout_fused`.

    Built by ``EBLNN._rollout_weights`` (and cached there while the weights do not change).
    Shapes: ``n`` observation channels, ``H`` CfC units, ``U`` backbone units, ``P`` physics width.
    """

    w0: Tensor
    """``[2n + H, U]``: step 0's first backbone layer on ``[norm(obs_0), scaled diff, c_0]`` (as the cell's features)."""
    b0: Tensor
    """``[U]``: step 0's extra bias (added to ``b_act``)."""
    w_act: Tensor
    """``[A, U]``: the action columns of the first backbone layer."""
    b_act: Tensor
    """``[U]``: the first layer's bias for steps ``t >= 1`` (the normalisation folded in)."""
    w_x: Tensor
    """``[2n + H, U]``: first backbone layer on ``[obs_t, obs_t - obs_{t-1}, c_t]`` for steps ``t >= 1``."""
    w_back: Tensor
    """``[U, 2n + H]``: the same layer for the backward pass, as gradients to ``[obs_t, obs_{t-1}, c_t]``."""
    deeper: list[tuple[Tensor, Tensor]]
    """Further backbone layers ``(W^T [in, out], b)``."""
    w3t: Tensor
    """Stacked heads ``[U, 3H]`` (see :func:`fuse_cell`)."""
    b3: Tensor
    """Stacked head biases ``[3H]``."""
    w3_back: Tensor
    """``[3H, U]``: the heads for the backward pass, times the 2 of ``c = 2 s1 - 1 + 2 gate (s2 - s1)``."""
    phys: list[tuple[Tensor, Tensor]]
    """Physics-head hidden layers ``(W^T, b)``, SiLU after each (at least one)."""
    w_last: Tensor
    """``[P, n]``: the physics head's last layer, de-normalised, rows of held channels zeroed."""
    b_last: Tensor
    """``[n]``: its bias (de-normalised, zero on held channels)."""
    lower: Tensor
    """``[n]``: lower clamp of a predicted observation (``-inf`` where unclamped)."""
    obs_mean: Tensor
    """``[n]``: observation normalisation mean."""
    obs_std: Tensor
    """``[n]``: observation normalisation scale."""
    diff_scale: Tensor
    """``[n]``: ``obs_std / delta_std``, the scale of the difference feature."""
    act_channel: int
    """First of the observation channels that copy the action (the last ``A`` channels)."""
    act: int
    """Backbone activation code (``_ACT_CODES``)."""


_SIGMOID_BWD = torch.ops.aten.sigmoid_backward.default
_SILU_BWD = torch.ops.aten.silu_backward.default


def _act_grad(g: Tensor, pre: Tensor, out: Tensor, code: int) -> Tensor:
    """Gradient through a backbone activation, from its input ``pre`` and output ``out``."""
    if code == 0:
        return _SIGMOID_BWD(g, out)
    if code == 1:
        return _SILU_BWD(g, pre)
    if code == 2:
        return torch.ops.aten.threshold_backward(g, out, 0)
    return torch.ops.aten.gelu_backward(g, pre)


class _FusedRollout(torch.autograd.Function):
    """A whole closed-loop rollout (``EBLNN.rollout`` with frozen weights) as one autograd node.

    At planning sizes (32 candidates, 64 units) autograd's per-node bookkeeping and Python's
    per-op cost exceed the arithmetic, so the forward saves what the backward needs (activations,
    gates, physics pre-activations) and the backward is written out: about 20 ops per step
    instead of autograd's ~60 nodes. Time-major buffers keep every per-step operand contiguous.
    Gradients flow to ``obs0``, ``h0`` and ``actions``; the weights are constants.
    """

    @staticmethod
    def forward(ctx, obs0: Tensor, h0: Tensor, actions: Tensor, rw: RolloutWeights):  # noqa: D102
        b, t_len, n_act = actions.shape
        n, hs = obs0.shape[1], rw.w3t.shape[1] // 3
        ac = rw.act_channel
        # Step 0 reads the previous observation from h0, as EBLNN.step does.
        c0, last0, valid0 = h0[:, :hs], h0[:, hs:hs + n], h0[:, hs + n:]
        norm0 = (obs0 - rw.obs_mean) / rw.obs_std
        dn0 = norm0 - last0
        x0 = torch.cat([norm0, valid0 * dn0 * rw.diff_scale, c0], 1)
        a_tm = actions.transpose(0, 1).contiguous()
        pre_t = torch.addmm(rw.b_act, a_tm.view(-1, n_act), rw.w_act).view(t_len, b, -1).unbind(0)
        # Additive part of each predicted observation: the bias, and a_t - a_{t-1} on the copied channels.
        corr = rw.b_last.repeat(t_len, b, 1)
        corr[..., ac:] += a_tm
        corr[1:, :, ac:] -= a_tm[:-1]
        corr[0, :, ac:] -= obs0[:, ac:]
        corr_t = corr.unbind(0)
        # x[t] = [obs_t, obs_t - obs_{t-1}, c_t]; x[t + 1, :, 2n:] is the CfC state after step t.
        x = obs0.new_empty(t_len + 1, b, 2 * n + hs)
        xo, xq, xc = x[..., :n].unbind(0), x[..., n:2 * n].unbind(0), x[..., 2 * n:].unbind(0)
        xs = x.unbind(0)
        xo[0].copy_(obs0)
        # Gates [s1, s2, gate] of every step, and views of them made once (a split per step costs more).
        s3 = obs0.new_empty(t_len, b, 3 * hs)
        s3_t, s1_t, s2_t, gate_t = (v.unbind(0) for v in (s3, s3[..., :hs], s3[..., hs:2 * hs], s3[..., 2 * hs:]))
        neg_one, two = obs0.new_full((1,), -1.0), obs0.new_full((1,), 2.0)
        saved_cell, saved_phys = [None] * t_len, [None] * t_len
        # Weights as locals: the loop is dispatch-bound.
        w_x, b3, w3t, w_last, lower, act = rw.w_x, rw.b3, rw.w3t, rw.w_last, rw.lower, rw.act
        deeper, phys, silu = rw.deeper, rw.phys, torch.nn.functional.silu
        for t in range(t_len):
            pre = torch.addmm(pre_t[0] + rw.b0, x0, rw.w0) if t == 0 else torch.addmm(pre_t[t], xs[t], w_x)
            z = _act_code(pre, act)
            layers = [(pre, z)]
            for w, bb in deeper:
                pre = torch.addmm(bb, z, w)
                z = _act_code(pre, act)
                layers.append((pre, z))
            torch.addmm(b3, z, w3t, out=s3_t[t]).sigmoid_()
            # tanh(a) = 2 sigmoid(2a) - 1:  c = f1 + gate (f2 - f1) = 2 s1 - 1 + 2 gate (s2 - s1).
            d = s2_t[t] - s1_t[t]
            torch.addcmul(torch.addcmul(neg_one, s1_t[t], two), gate_t[t], d, value=2.0, out=xc[t + 1])
            saved_cell[t] = (layers, d)
            p = xc[t + 1]
            pres = []
            for w, bb in phys:
                pre = torch.addmm(bb, p, w)
                pres.append(pre)
                p = silu(pre)
            saved_phys[t] = pres
            torch.maximum(torch.addmm(xo[t] + corr_t[t], p, w_last), lower, out=xo[t + 1])
            if t + 1 < t_len:
                torch.sub(xo[t + 1], xo[t], out=xq[t + 1])
        ctx.rw, ctx.x, ctx.cell, ctx.phys, ctx.gates = rw, x, saved_cell, saved_phys, (s3_t, gate_t)
        ctx.step0 = (valid0, dn0)
        # Hidden states [c, norm(obs_t), 1] (the observation each state consumed), batch-major.
        hid = obs0.new_empty(b, t_len, hs + n + 1)
        hid[..., :hs] = x[1:, :, 2 * n:].transpose(0, 1)
        torch.sub(x[:-1, :, :n].transpose(0, 1), rw.obs_mean, out=hid[..., hs:hs + n]).div_(rw.obs_std)
        hid[..., -1] = 1.0
        return x[1:, :, :n].transpose(0, 1).contiguous(), hid

    @staticmethod
    @once_differentiable
    def backward(ctx, g_obs: Tensor, g_hid: Tensor):  # noqa: D102
        rw, x = ctx.rw, ctx.x
        t_len, b = x.shape[0] - 1, x.shape[1]
        need_state = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        n, hs, ac = g_obs.shape[-1], rw.w3t.shape[1] // 3, rw.act_channel
        g_tm = g_hid.transpose(0, 1)
        # External gradient on obs_t (t = 0..T): as the input of step t, and as the output of step t - 1.
        e = g_obs.new_zeros(t_len + 1, b, n)
        torch.div(g_tm[..., hs:hs + n], rw.obs_std, out=e[:-1])
        e[1:] += g_obs.transpose(0, 1)
        e = e.unbind(0)
        gc_ext = g_tm[..., :hs].contiguous().unbind(0)
        mask = (x[1:, :, :n] > rw.lower).to(x.dtype).unbind(0)
        # Per-step gradient buffers, and views of them made once (slicing per step costs more).
        g_corr = x.new_empty(t_len, b, n)
        g3 = x.new_empty(t_len, b, 3 * hs)
        gx = x.new_empty(t_len, b, 2 * n + hs)
        g_corr_t, g3_t, gx_t = g_corr.unbind(0), g3.unbind(0), gx.unbind(0)
        g1_t, g2_t, gg_t = (g3[..., i * hs:(i + 1) * hs].unbind(0) for i in range(3))
        gxo_t, gxq_t, gxc_t = gx[..., :n].unbind(0), gx[..., n:2 * n].unbind(0), gx[..., 2 * n:].unbind(0)
        g_pre = [None] * t_len
        # Transposed weights and saved tensors as locals: the loop is dispatch-bound.
        w_last_b, w3_b, w_back, act = rw.w_last.t(), rw.w3_back, rw.w_back, rw.act
        phys_b = [w.t() for w, _ in rw.phys]
        deeper_b = [w.t() for w, _ in rw.deeper]
        saved_phys, saved_cell = ctx.phys, ctx.cell
        s3_t, gate_t = ctx.gates
        go = e[t_len]       # gradient on obs_{t+1}
        gx0 = None
        for t in range(t_len - 1, -1, -1):
            g_nxt = torch.mul(go, mask[t], out=g_corr_t[t])
            gp = g_nxt.mm(w_last_b)
            pres = saved_phys[t]
            for i in range(len(phys_b) - 1, 0, -1):
                gp = _SILU_BWD(gp, pres[i]).mm(phys_b[i])
            # From the physics head, the external gradient on c_{t+1}, and step t + 1's input.
            base = gc_ext[t] if t == t_len - 1 else gc_ext[t] + gxc_t[t + 1]
            gc_t = torch.addmm(base, _SILU_BWD(gp, pres[0]), phys_b[0])
            go = e[t] + g_nxt if t == t_len - 1 else e[t] + g_nxt + gxq_t[t + 1]
            layers, d = saved_cell[t]
            # Gradients on [s1, s2, gate] (halved: w3_back holds the 2), then through their sigmoid.
            torch.mul(gc_t, gate_t[t], out=g2_t[t])
            torch.sub(gc_t, g2_t[t], out=g1_t[t])
            torch.mul(gc_t, d, out=gg_t[t])
            gz = _SIGMOID_BWD(g3_t[t], s3_t[t]).mm(w3_b)
            for i in range(len(layers) - 1, 0, -1):
                gz = _act_grad(gz, *layers[i], act).mm(deeper_b[i - 1])
            gpre = _act_grad(gz, *layers[0], act)
            g_pre[t] = gpre
            if t == 0:
                gx0 = gpre.mm(rw.w0.t()) if need_state else None
                break
            torch.mm(gpre, w_back, out=gx_t[t])
            go = go + gxo_t[t]
        g_obs0 = g_h0 = g_a = None
        gc_a = g_corr[..., ac:]
        if need_state:  # step 0's features [norm0, valid0 (norm0 - last0) scale, c0] back to obs0 and h0
            valid0, dn0 = ctx.step0
            g_diff = gx0[:, n:2 * n] * rw.diff_scale
            g_dn = g_diff * valid0
            g_obs0 = go + (gx0[:, :n] + g_dn) / rw.obs_std
            g_obs0[:, ac:] -= gc_a[0]
            g_h0 = torch.cat([gx0[:, 2 * n:], -g_dn, (g_diff * dn0).sum(1, keepdim=True)], 1)
        if ctx.needs_input_grad[2]:  # through the action columns and the copied channels' a_t - a_{t-1}
            g_a = torch.stack(g_pre, 0).view(t_len * b, -1).mm(rw.w_act.t()).view(t_len, b, -1) + gc_a
            g_a[:-1] -= gc_a[1:]
            g_a = g_a.transpose(0, 1)
        return g_obs0, g_h0, g_a, None


def rollout_fused(obs0: Tensor, h0: Tensor, actions: Tensor, rw: RolloutWeights) -> tuple[Tensor, Tensor]:
    """Closed-loop rollout with frozen weights: ``(obs [B, T, n], hidden [B, T, H + n + 1])``, one autograd node.

    The same function as ``EBLNN.rollout`` (see ``EBLNN._rollout_fast``), differentiable w.r.t.
    ``obs0``, ``h0`` and ``actions``.
    """
    return _FusedRollout.apply(obs0, h0, actions, rw)
