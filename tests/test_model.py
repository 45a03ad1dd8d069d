"""EB-LNN model: shapes, state convention, fused vs stock CfC, losses, checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from eblnn_agent.checkpoint import CheckpointError, content_digest, load_checkpoint, save_checkpoint
from eblnn_agent.config import ModelConfig, WorldModelRunConfig
from eblnn_agent.losses import cd_loss, energy_auroc, hard_negative_loss, masked_mse
from eblnn_agent.model import EBLNN, RolloutOut

H = 16
S = H + 9  # state: CfC units + last observation + flag


def _model(**kw) -> EBLNN:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"hidden_size": H, "backbone_units": 16, "physics_hidden_dims": [16], "ebm_hidden_dims": [16, 8],
                         **kw})
    m = EBLNN(cfg)
    m.set_norm_stats(torch.tensor([900.0, 900, 3, 50, 100, 2000, 0, 0]), torch.tensor([100.0, 50, 2, 100, 40, 800, 0.5, 0.5]),
                     torch.zeros(8), torch.tensor([5.0, 1, 0.3, 30, 10, 200, 0.2, 0.2]))
    return m


def _obs(b: int, t: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (b, 8) if t is None else (b, t, 8)
    base = torch.tensor([900.0, 900, 3, 50, 100, 2000, 0, 0])
    return base + torch.randn(shape, generator=g) * torch.tensor([50.0, 0, 1, 20, 20, 300, 0.3, 0.3])


@pytest.mark.parametrize("b", [1, 5])
def test_shapes_single_step_and_batched(b):
    m = _model()
    h = m.initial_state(b)
    assert h.shape == (b, S)
    obs, a = _obs(b), torch.zeros(b, 2)
    h1 = m.step(obs, a, h)
    assert h1.shape == (b, S)
    assert m.predict_next(obs, h1, a).shape == (b, 8)
    assert m.energy(h1).shape == (b,)
    out = m.rollout(obs, h1, torch.zeros(b, 7, 2))
    assert isinstance(out, RolloutOut)
    assert out.obs.shape == (b, 7, 8) and out.hidden.shape == (b, 7, S) and out.energy.shape == (b, 7)
    assert m.sequence_energy(out.hidden).shape == (b,)
    assert m.filter(_obs(b, 4), torch.zeros(b, 4, 2)).shape == (b, 4, S)


def test_rollout_convention_matches_step_and_predict_next():
    """rollout = repeated step + predict_next, setpoint held, commands copied from the actions."""
    m = _model()
    obs0, h0 = _obs(3), m.step(_obs(3) + 5.0, torch.zeros(3, 2), m.initial_state(3))
    acts = torch.rand(3, 4, 2) * 2 - 1
    out = m.rollout(obs0, h0, acts, fast=False)
    obs, h = obs0, h0
    for t in range(4):
        h = m.step(obs, acts[:, t], h)
        obs = m.predict_next(obs, h, acts[:, t])
        torch.testing.assert_close(out.hidden[:, t], h)
        torch.testing.assert_close(out.obs[:, t], obs)
    assert torch.equal(out.obs[..., 6:8], acts)
    assert torch.equal(out.obs[..., 1], obs0[:, 1:2].expand(-1, 4))
    assert (out.obs[..., [0, 2, 3, 4, 5]] >= 0).all()


@pytest.mark.parametrize("act", ["lecun_tanh", "silu", "tanh"])
@pytest.mark.parametrize("layers", [1, 2])
def test_fast_path_matches_stock_ncps(act, layers):
    m = _model(backbone_activation=act, backbone_layers=layers)
    obs0, acts = _obs(6), torch.rand(6, 9, 2) * 2 - 1
    h0 = m.step(obs0 - 3.0, torch.zeros(6, 2), m.initial_state(6))
    fast, stock = m.rollout(obs0, h0, acts, fast=True), m.rollout(obs0, h0, acts, fast=False)
    torch.testing.assert_close(fast.hidden, stock.hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.obs, stock.obs, atol=1e-3, rtol=1e-5)
    seq, sa = _obs(6, 9), torch.rand(6, 9, 2) * 2 - 1
    torch.testing.assert_close(m.filter(seq, sa, h0, fast=True), m.filter(seq, sa, h0, fast=False), atol=1e-5, rtol=1e-5)


def test_rollout_is_differentiable_wrt_actions_and_gradients_agree():
    m = _model()
    obs0, h0 = _obs(4), m.initial_state(4)
    grads = []
    for fast in (True, False):
        a = torch.zeros(4, 5, 2, requires_grad=True)
        out = m.rollout(obs0, h0, a, fast=fast)
        (out.obs[..., 0].sum() + m.sequence_energy(out.hidden).sum()).backward()
        assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
        grads.append(a.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-3, rtol=1e-3)


def _frozen64(**kw) -> EBLNN:
    m = _model(**kw).double().eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.mark.parametrize("act", ["lecun_tanh", "silu", "relu", "gelu"])
@pytest.mark.parametrize("layers,phys", [(1, [16]), (2, [16, 12])])
def test_frozen_fused_rollout_backward_matches_autograd_through_stock(act, layers, phys):
    """With frozen weights the fused rollout is one autograd node with a hand-written backward."""
    m = _frozen64(backbone_activation=act, backbone_layers=layers, physics_hidden_dims=phys)
    obs0, acts = _obs(5).double(), (torch.rand(5, 7, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1).double()
    h0 = m.step(obs0 - 3.0, torch.zeros(5, 2, dtype=torch.float64), m.initial_state(5))
    res = []
    for fast in (True, False):
        a, o, h = (x.clone().requires_grad_(True) for x in (acts, obs0, h0))
        out = m.rollout(o, h, a, fast=fast)
        # Every output enters: obs, all parts of the hidden state, the per-step energy.
        loss = (1e-4 * out.obs.pow(2).sum() + m.sequence_energy(out.hidden).sum() + out.hidden.pow(3).sum()
                + out.energy.sum())
        res.append((out.obs, out.hidden, out.energy, *torch.autograd.grad(loss, (a, o, h))))
    for x, y in zip(*res, strict=True):
        torch.testing.assert_close(x, y, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("b,t", [(1, 1), (4, 1), (1, 3)])
def test_frozen_fused_rollout_edge_sizes(b, t):
    m = _frozen64()
    obs0 = _obs(b).double()
    h0 = m.step(obs0 - 2.0, torch.zeros(b, 2, dtype=torch.float64), m.initial_state(b))
    acts = (torch.rand(b, t, 2, generator=torch.Generator().manual_seed(5)) * 2 - 1).double()
    res = []
    for fast in (True, False):
        a, o = acts.clone().requires_grad_(True), obs0.clone().requires_grad_(True)
        out = m.rollout(o, h0, a, fast=fast)
        res.append((out.obs, out.hidden, *torch.autograd.grad(out.obs.sum() + out.hidden.pow(2).sum(), (a, o))))
    for x, y in zip(*res, strict=True):
        torch.testing.assert_close(x, y, atol=1e-9, rtol=1e-9)


def test_frozen_fused_rollout_passes_gradcheck():
    m = _frozen64(physics_hidden_dims=[8, 8])
    obs0 = _obs(2).double()
    h0 = m.step(obs0 - 3.0, torch.zeros(2, 2, dtype=torch.float64), m.initial_state(2))
    acts = (torch.rand(2, 4, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1).double()

    def f(a, o, h):
        out = m.rollout(o, h, a, fast=True)
        return out.obs, out.hidden

    inputs = tuple(x.clone().requires_grad_(True) for x in (acts, obs0, h0))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, fast_mode=True)


def test_frozen_fused_rollout_is_as_accurate_as_stock_in_float32():
    """Against a float64 reference the fused float32 rollout loses no more digits than the stock one."""
    m = _frozen64(physics_hidden_dims=[64, 64])
    with torch.no_grad():
        m.physics[-1].weight.mul_(10.0)
    g = torch.Generator().manual_seed(4)
    obs0 = _obs(64).double()
    h0 = m.step(obs0, torch.zeros(64, 2, dtype=torch.float64), m.initial_state(64))
    acts = (torch.rand(64, 10, 2, generator=g) * 2 - 1).double()
    # Compared in the model's space: both paths share the CO transform after the loop, whose
    # exp would amplify the loop's float32 rounding of a wild (x10) model's CO by itself.
    ref = m.to_model_space(m.rollout(obs0, h0, acts, fast=False).obs)
    m32 = copy.deepcopy(m).float()
    err = {fast: float((m.to_model_space(m32.rollout(obs0.float(), h0.float(), acts.float(), fast=fast).obs.double())
                        - ref).abs().max())
           for fast in (True, False)}
    assert err[True] <= 3.0 * err[False] + 1e-6, err


def test_frozen_rollout_weights_follow_in_place_updates():
    """The fused path caches its folded weights; any change of a parameter or statistic rebuilds them."""
    m = _frozen64()
    obs0, acts = _obs(3).double(), torch.zeros(3, 4, 2, dtype=torch.float64)
    h0 = m.step(obs0, acts[:, 0], m.initial_state(3))
    before = m.rollout(obs0, h0, acts).obs
    with torch.no_grad():
        m.physics[0].weight.mul_(1.5)
        m.cfc.rnn_cell.ff1.bias.add_(0.3)
    m.set_norm_stats(m.obs_mean + 1.0, m.obs_std, m.delta_mean, m.delta_std)
    after, stock = m.rollout(obs0, h0, acts).obs, m.rollout(obs0, h0, acts, fast=False).obs
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, stock, atol=1e-9, rtol=1e-9)
    f32 = m.float()
    torch.testing.assert_close(f32.rollout(obs0.float(), h0.float(), acts.float()).obs, stock.float(),
                               atol=1e-2, rtol=1e-4)


def test_rollout_rejects_bad_shapes():
    m = _model()
    with pytest.raises(ValueError, match="actions must be"):
        m.rollout(_obs(2), m.initial_state(2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="do not match"):
        m.rollout(_obs(2), m.initial_state(3), torch.zeros(2, 3, 2))


def test_multiscale_and_spectral_norm_options():
    m = _model(multiscale=True, spectral_norm=True).eval()  # eval: no power iteration per call
    hid = torch.randn(2, 5, H)
    expected = m.energy(hid).mean(1) + m.coarse_energy(hid.mean(1))
    torch.testing.assert_close(m.sequence_energy(hid), expected)
    single = _model(multiscale=False, spectral_norm=False)
    assert single.coarse_head is None
    torch.testing.assert_close(single.sequence_energy(hid), single.energy(hid).mean(1))
    # Spectral norm: every energy-layer weight has largest singular value <= ~1.
    for lin in (x for x in m.energy_head.net if isinstance(x, torch.nn.Linear)):
        assert torch.linalg.matrix_norm(lin.weight, ord=2) <= 1.05


def test_cd_loss_sign_and_regulariser():
    real, fant = torch.tensor([-1.0, -1.0]), torch.tensor([2.0, 2.0])
    t = cd_loss(real, fant, l2_reg=0.0)
    assert float(t.loss) == pytest.approx(-3.0) and float(t.gap) == pytest.approx(3.0)
    t = cd_loss(real, fant, l2_reg=0.1)
    assert float(t.loss) == pytest.approx(-3.0 + 0.1 * (1.0 + 4.0))
    # Gradient descent on the loss lowers real energies and raises fantasy energies.
    r, f = real.clone().requires_grad_(), fant.clone().requires_grad_()
    cd_loss(r, f, 0.0).loss.backward()
    assert (r.grad > 0).all() and (f.grad < 0).all()
    assert float(hard_negative_loss(torch.zeros(3), torch.full((3,), 2.0), margin=1.0)) == 0.0
    assert float(hard_negative_loss(torch.zeros(3), torch.zeros(3), margin=1.0)) == pytest.approx(1.0)


def test_masked_mse_ignores_padding():
    pred, tgt = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [1.0, 1.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert float(masked_mse(pred, tgt, mask)) == pytest.approx(1.0)
    assert float(masked_mse(pred, tgt, mask, torch.tensor([3.0, 1.0]))) == pytest.approx(2.0)


def test_energy_auroc():
    assert energy_auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert energy_auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert energy_auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    with pytest.raises(ValueError):
        energy_auroc([], [1.0])


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    m = _model()
    cfg = WorldModelRunConfig(model=m.cfg)
    p = save_checkpoint(tmp_path / "best.pt", m, cfg, {"env_steps": 123})
    m2, cfg2, meta = load_checkpoint(p, device="cpu")
    assert meta["env_steps"] == 123 and "torch" in meta["versions"]
    assert cfg2.model == m.cfg
    m.eval()
    obs0, acts = _obs(3), torch.rand(3, 6, 2) * 2 - 1
    h0 = m.step(obs0, acts[:, 0], m.initial_state(3))
    a, b = m.rollout(obs0, h0, acts), m2.rollout(obs0, h0, acts)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.energy, b.energy)
    assert torch.equal(m.obs_std, m2.obs_std)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    m = _model()
    p = save_checkpoint(tmp_path / "ok.pt", m, WorldModelRunConfig(model=m.cfg))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an EB-LNN"):
        load_checkpoint(foreign)
    payload = torch.load(p, weights_only=True)
    payload["config"]["model"]["hidden_size"] = H * 2  # architecture no longer matches the weights
    payload["sha256"] = content_digest(payload)  # a consistent file, only of another architecture
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(bad)
    payload["format_version"] = 99
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(bad)


def test_bad_norm_stats_rejected():
    m = _model()
    with pytest.raises(ValueError, match="obs_std"):
        m.set_norm_stats(torch.zeros(8), torch.zeros(8), torch.zeros(8), torch.ones(8))


def _tiny_trainer(tmp_path, **overrides):
    import numpy as np

    from eblnn_agent.data import TransitionData, compute_norm_stats, split_episodes
    from eblnn_agent.logger import MetricLogger
    from eblnn_agent.trainer import Trainer

    rng = np.random.default_rng(0)
    obs = (np.array([900.0, 900, 3, 50, 100, 2000, 0, 0]) + rng.normal(size=(9, 25, 8)) * 10).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(9, 24, 2)).astype(np.float32)
    data = TransitionData(obs, acts, np.full(9, 24), np.zeros(9, dtype=np.int8), {})
    split = split_episodes(data, 0.2, 0.2, 0)
    base = dict(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8], window=8,
                batch_size=4, max_windows_per_epoch=8, n_steps=2, cd_batch=16, buffer_capacity=32, epochs=1,
                progress=False)
    cfg = WorldModelRunConfig().with_overrides(**{**base, **overrides})
    torch.manual_seed(0)
    m = EBLNN(cfg.model)
    m.set_norm_stats(*compute_norm_stats(split.train, co_log_scale=m.cfg.co_log_scale))
    return Trainer(m, cfg, split, MetricLogger(quiet=True), torch.device("cpu"), 1, tmp_path), split


@pytest.mark.parametrize("opt", [
    {}, {"hard_negatives": False}, {"action_negative_weight": 0.0}, {"multiscale": False},
    {"spectral_norm": True}, {"detach_hidden": False}, {"rollout_weight": 1.0},
])
def test_trainer_options_switch_their_loss_terms(tmp_path, opt):
    import numpy as np

    from eblnn_agent.data import sample_windows

    tr, split = _tiny_trainer(tmp_path, **opt)
    logs = tr.train_step(sample_windows(split.train, 4, 8, np.random.default_rng(0)))
    assert ("hard_neg" in logs) == opt.get("hard_negatives", True)
    assert ("action_neg" in logs) == (opt.get("action_negative_weight", 1.0) > 0)
    assert ("coarse_cd_gap" in logs) == opt.get("multiscale", True)
    assert ("open_loop" in logs) == (opt.get("rollout_weight", 0.0) > 0)
    assert all(np.isfinite(v) for v in logs.values()) and logs["langevin_nonfinite"] == 0
    assert len(tr.buffer) == 16  # fantasies written back


def test_open_loop_loss_is_the_error_of_the_models_own_rollout(tmp_path):
    import numpy as np

    from eblnn_agent.data import sample_windows
    from eblnn_agent.losses import masked_mse

    tr, split = _tiny_trainer(tmp_path, rollout_weight=1.0, rollout_steps=3)
    m, w = tr.model, sample_windows(split.train, 4, 8, np.random.default_rng(1))
    hidden = m.filter(w.obs[:, :-1], w.actions)
    loss = tr._open_loop_loss(w, hidden, train=False)
    # By hand: the same starts (the validation generator), rollouts on the stock path.
    s = torch.randint(1, 8 - 3 + 1, (4,), generator=torch.Generator().manual_seed(1357))
    errs = []
    for i in range(4):
        j = int(s[i])
        with torch.no_grad():
            out = m.rollout(w.obs[i:i + 1, j], hidden[i:i + 1, j - 1], w.actions[i:i + 1, j:j + 3], fast=False)
        z = m._norm(m.to_model_space(out.obs)) - m._norm(m.to_model_space(w.obs[i:i + 1, j + 1:j + 4]))
        z = z[..., [0, 2, 3, 4, 5, 6, 7]]  # channel 1 (the setpoint) is held, not predicted
        errs.append(masked_mse(z, torch.zeros_like(z), w.mask[i:i + 1, j:j + 3]))
    # Every window here is fully valid, so the mean over windows is the mean over all steps.
    assert w.mask.all()
    torch.testing.assert_close(loss, torch.stack(errs).mean(), rtol=1e-4, atol=1e-6)
    # It trains the whole model (the filter through h_s, the cell and the physics head).
    loss.backward()
    assert m.cfc.rnn_cell.ff1.weight.grad.abs().sum() > 0 and m.physics[0].weight.grad.abs().sum() > 0
    # Windows too short for a segment contribute nothing; bad settings are rejected.
    assert float(tr._open_loop_loss(w._replace(obs=w.obs[:, :2], actions=w.actions[:, :1], mask=w.mask[:, :1]),
                                    hidden[:, :1], train=False)) == 0.0
    for bad in ({"rollout_weight": -1.0}, {"rollout_steps": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            WorldModelRunConfig().with_overrides(**bad).validate()


def test_trainer_clips_body_and_energy_gradients_separately(tmp_path):
    import numpy as np

    from eblnn_agent.data import sample_windows

    tr, split = _tiny_trainer(tmp_path, grad_clip=1e-3, lr=1e-3)
    tr.train_step(sample_windows(split.train, 4, 8, np.random.default_rng(0)))
    for params in (tr._body_params, tr._energy_params):
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        assert total <= 1e-3 * 1.001


def test_co_transform_round_trips_and_is_linear_below_its_scale():
    from eblnn_agent.transforms import obs_from_model, obs_to_model

    obs = np.tile(np.arange(8, dtype=np.float64), (5, 1)) * 10.0
    obs[:, 3] = [0.0, 1.0, 100.0, 5000.0, 1e4]
    z = obs_to_model(obs, 10.0)
    np.testing.assert_array_equal(np.delete(z, 3, axis=1), np.delete(obs, 3, axis=1))
    np.testing.assert_allclose(z[:, 3], 10.0 * np.log1p(obs[:, 3] / 10.0))
    assert z[1, 3] == pytest.approx(1.0, rel=0.06)  # ~linear well below 10 ppm
    np.testing.assert_allclose(obs_from_model(z, 10.0), obs, rtol=1e-12, atol=1e-9)
    zt = obs_to_model(torch.as_tensor(obs), 10.0)
    torch.testing.assert_close(zt, torch.as_tensor(z))
    torch.testing.assert_close(obs_from_model(zt, 10.0), torch.as_tensor(obs))
    assert obs_to_model(obs, 0.0) is obs and obs_from_model(z, 0.0) is z
    # Wild imagined states stay finite.
    assert np.isfinite(obs_from_model(np.full((1, 8), 1e6), 10.0)).all()


def test_model_interface_stays_in_ppm_with_log_co():
    """Predictions come back in ppm, and the physics target is the delta in the model's space."""
    torch.manual_seed(0)
    m = EBLNN(ModelConfig(hidden_size=8, backbone_units=8, physics_hidden_dims=[8], ebm_hidden_dims=[8],
                          co_log_scale=10.0))
    obs = torch.tensor([[900.0, 900.0, 3.0, 400.0, 100.0, 1800.0, 0.0, 0.0]])
    nxt = obs.clone()
    nxt[0, 3] = 40.0
    d = m.normalized_delta(obs, nxt)
    assert d[0, 3].item() == pytest.approx(10.0 * (np.log1p(4.0) - np.log1p(40.0)))
    with torch.no_grad():
        h = m.step(obs, torch.zeros(1, 2), m.initial_state(1))
        zero = m.predict_next(obs, h, torch.zeros(1, 2))
        m.physics[-1].weight.zero_()
        m.physics[-1].bias.zero_()
        same = m.predict_next(obs, h, torch.zeros(1, 2))
    assert zero.shape == (1, 8)
    # A zero delta in the model's space is no change in ppm.
    torch.testing.assert_close(same[0, :6], obs[0, :6])
    out = m.rollout(obs, m.initial_state(1), torch.zeros(1, 3, 2))
    torch.testing.assert_close(out.obs[0, :, 3], torch.full((3,), 400.0), rtol=1e-5, atol=1e-3)


def _tampered_checkpoint(tmp_path, edit):
    """A default checkpoint whose saved model state ``edit`` has changed."""
    cfg = WorldModelRunConfig()
    path = tmp_path / "tampered.pt"
    save_checkpoint(path, EBLNN(cfg.model), cfg)
    payload = torch.load(path, weights_only=False)
    edit(payload["model_state"])
    payload["sha256"] = content_digest(payload)  # a consistent file of another layout, not a damaged one
    torch.save(payload, path)
    return path


def test_checkpoint_from_before_the_co_transform_fails_clearly(tmp_path):
    path = _tampered_checkpoint(tmp_path, lambda state: state.pop("co_log_scale"))
    with pytest.raises(CheckpointError, match="re-train"):
        load_checkpoint(path, device="cpu")


def test_checkpoint_whose_co_space_disagrees_with_its_config_fails(tmp_path):
    path = _tampered_checkpoint(tmp_path, lambda state: state.update(co_log_scale=torch.tensor(0.0)))
    with pytest.raises(CheckpointError, match="co_log_scale"):
        load_checkpoint(path, device="cpu")


@pytest.mark.parametrize("setpoint_input", [False, True])
def test_setpoint_input_switch_on_every_path(setpoint_input):
    """Without setpoint input the setpoint changes no prediction (filter, step, stock, fused and
    frozen-fused rollouts alike); with it, it does."""
    m = _model(setpoint_input=setpoint_input)
    obs, acts = _obs(3, 6), torch.rand(3, 6, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    moved = obs.clone()
    moved[..., 1] += 60.0

    def outputs(o):
        h = m.filter(o[:, :4], acts[:, :4])
        step = m.step(o[:, 4], acts[:, 4], h[:, -1])
        outs = [m.cfc_state(h), m.cfc_state(step)]
        for fast in (False, True):
            outs.append(m.rollout(o[:, 4], h[:, -1], acts[:, 4:], fast=fast).obs[..., [0, 2, 3]])
        with torch.no_grad():  # the frozen-weight fused node
            outs.append(m.rollout(o[:, 4], h[:, -1], acts[:, 4:]).obs[..., [0, 2, 3]])
        return outs

    for a, b in zip(outputs(obs), outputs(moved), strict=True):
        if setpoint_input:
            assert (a - b).abs().max() > 1e-4
        else:
            torch.testing.assert_close(a, b)


def test_setpoint_input_follows_the_checkpoints_config(tmp_path):
    cfg = WorldModelRunConfig().with_overrides(setpoint_input=False)
    save_checkpoint(tmp_path / "x.pt", EBLNN(cfg.model), cfg)
    m, loaded, _ = load_checkpoint(tmp_path / "x.pt")
    assert loaded.model.setpoint_input is False and m.input_mask.tolist() == [1, 0, 1, 1, 1, 1, 1, 1]
    assert "input_mask" not in m.state_dict()  # derived from the config, not a second copy
    assert EBLNN(ModelConfig()).input_mask.all()  # the default reads every channel
    with pytest.raises(Exception, match="setpoint_input"):
        ModelConfig(setpoint_input="yes").validate()


def test_setpoint_sensitivity_metric():
    from eblnn_agent.data import Windows
    from eblnn_agent.metrics import setpoint_sensitivity

    obs, acts = _obs(4, 13), torch.rand(4, 12, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1
    w = Windows(obs, acts, torch.ones(4, 12, dtype=torch.bool))
    assert setpoint_sensitivity(_model(setpoint_input=False), w, burn_in=4) == 0.0
    assert setpoint_sensitivity(_model(setpoint_input=True), w, burn_in=4) > 1e-4
