"""The energy's training options and dynamically wrong negatives: each switches its own loss term, and only it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model import _model, _obs, _tiny_trainer

from eblnn_agent.config import ConfigError, WorldModelRunConfig
from eblnn_agent.data import TransitionData, sample_windows
from eblnn_agent.losses import pair_hinge
from eblnn_agent.negatives import (
    HELD_OUT_PLANTS,
    NEGATIVE_PLANTS,
    perturbed_next_pairs,
    plant_params,
    rollout_pairs,
    spliced_pairs,
)

#: Log keys of each new negative type.
_KEYS = {
    "next_obs_negative_weight": {"next_obs_neg"},
    "other_plant_weight": {"other_plant_neg"},
    "rollout_negative_weight": {"rollout_neg", "rollout_neg_fraction"},
}
#: Keys whose values follow from the total loss (they change with any term).
_TOTALS = {"cd", "loss"}


def _other_plants() -> TransitionData:
    rng = np.random.default_rng(5)
    obs = (np.array([950.0, 900, 4, 80, 120, 2200, 0.1, 0.1]) + rng.normal(size=(4, 25, 8)) * 15).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(4, 24, 2)).astype(np.float32)
    return TransitionData(obs, acts, np.full(4, 24), np.zeros(4, dtype=np.int8), {})


def _losses(tmp_path, **opt):
    tr, split = _tiny_trainer(tmp_path, other_plants=_other_plants(), **opt)
    w = sample_windows(split.train, 4, 8, np.random.default_rng(0))
    _, logs = tr.losses(w, train=True)
    return logs


@pytest.mark.parametrize("name", sorted(_KEYS))
def test_each_negative_type_switches_its_term_and_only_it(tmp_path, name):
    base = _losses(tmp_path)
    on = _losses(tmp_path, **{name: 1.0})
    assert set(on) - set(base) == _KEYS[name] and set(base) <= set(on)
    for k in set(base) - _TOTALS:
        assert on[k] == pytest.approx(base[k], rel=1e-6, abs=1e-7), k
    term = sum(on[k] for k in _KEYS[name] if not k.endswith("fraction"))
    assert on["cd"] == pytest.approx(base["cd"] + term, rel=1e-5, abs=1e-4)


def test_other_plant_negatives_need_their_data(tmp_path):
    with pytest.raises(ValueError, match="other_plant_weight"):
        _tiny_trainer(tmp_path, other_plant_weight=1.0)


def test_l2_regulariser_changes_the_cd_loss_only(tmp_path):
    base, off = _losses(tmp_path), _losses(tmp_path, l2_reg=0.0)
    assert set(base) == set(off)
    for k in set(base) - _TOTALS:
        assert off[k] == pytest.approx(base[k], rel=1e-6, abs=1e-7), k
    assert off["cd"] != pytest.approx(base["cd"])


def test_langevin_negatives_switch_the_fantasy_contrast(tmp_path):
    base, off = _losses(tmp_path), _losses(tmp_path, langevin_negatives=False)
    fantasy = {"cd_gap", "e_neg", "langevin_nonfinite", "langevin_grad_norm", "langevin_fresh", "coarse_cd_gap"}
    assert set(base) - set(off) == fantasy
    assert off["physics"] == base["physics"] and off["e_pos"] == pytest.approx(base["e_pos"])


def test_replay_buffer_reinit_probability_reaches_the_chains(tmp_path):
    tr, split = _tiny_trainer(tmp_path, buffer_prob=0.0)
    for _ in range(2):
        logs = tr.train_step(sample_windows(split.train, 4, 8, np.random.default_rng(0)))
    assert logs["langevin_fresh"] == 1.0  # never from the buffer, although it holds fantasies
    tr, split = _tiny_trainer(tmp_path)  # default: 0.95 from the buffer once it is filled
    for _ in range(2):
        logs = tr.train_step(sample_windows(split.train, 4, 8, np.random.default_rng(0)))
    assert logs["langevin_fresh"] < 0.5


def test_hard_negative_probability(tmp_path):
    never, off = _losses(tmp_path, hard_negative_prob=0.0), _losses(tmp_path, hard_negatives=False)
    assert never == off  # probability 0 is the switch off
    always = _losses(tmp_path, hard_negative_prob=1.0)
    assert always == _losses(tmp_path)  # probability 1 replays the always-on default exactly
    tr, split = _tiny_trainer(tmp_path, hard_negative_prob=0.5)
    real = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    hits = sum("hard_neg" in tr._cd_terms(tr.model.energy, real, tr.buffer, train=True) for _ in range(40))
    assert 8 <= hits <= 32
    # Validation weights the hinge by the probability instead of drawing.
    assert "hard_neg" in tr._cd_terms(tr.model.energy, real, tr.buffer, train=False)
    with pytest.raises(ConfigError, match="hard_negative_prob"):
        WorldModelRunConfig().with_overrides(hard_negative_prob=1.5)


def test_latent_l2_enters_the_energy_everywhere():
    plain, reg = _model(latent_l2=0.0), _model(latent_l2=0.05)
    reg.load_state_dict(plain.state_dict())
    h = torch.randn(3, 5, plain.state_size)
    c = plain.cfc_state(h)
    torch.testing.assert_close(reg.energy(h) - plain.energy(h), 0.05 * c.pow(2).sum(-1))
    obs0, acts = _obs(3), torch.rand(3, 4, 2) * 2 - 1
    h0 = plain.initial_state(3)
    for m in (plain, reg):
        m.requires_grad_(False)
    for fast in (True, False):
        a, b = plain.rollout(obs0, h0, acts, fast=fast), reg.rollout(obs0, h0, acts, fast=fast)
        torch.testing.assert_close(b.energy - a.energy, 0.05 * plain.cfc_state(a.hidden).pow(2).sum(-1),
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="latent_l2"):
        WorldModelRunConfig().with_overrides(latent_l2=-1.0)


def _window_batch(b=3, t=10):
    obs = _obs(b, t + 1)
    obs[..., 6:8] = obs[..., 6:8].clamp(-1, 1)
    acts = torch.rand(b, t, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    from eblnn_agent.data import Windows

    return Windows(obs, acts, torch.ones(b, t, dtype=torch.bool))


def test_perturbed_next_pairs_are_the_real_state_without_noise_and_move_with_it():
    m, w = _model(), _window_batch()
    hidden = m.filter(w.obs[:, :-1], w.actions)
    p = perturbed_next_pairs(m, w.obs[:, :-1], w.actions, hidden, w.mask, 50, 0.0, torch.Generator().manual_seed(0))
    assert p.pos.shape == (27, m.hidden_size)  # all valid steps but the first of each window
    torch.testing.assert_close(p.neg, p.pos, rtol=1e-5, atol=1e-5)
    p = perturbed_next_pairs(m, w.obs[:, :-1], w.actions, hidden, w.mask, 10, 3.0, torch.Generator().manual_seed(0))
    assert p.pos.shape[0] == 10 and ((p.neg - p.pos).abs().amax(-1) > 1e-4).all()
    assert ((p.scale >= 0) & (p.scale <= 1)).all()


def test_spliced_pairs_on_the_same_plant_are_the_real_continuation():
    m, w = _model(), _window_batch()
    hidden = m.filter(w.obs[:, :-1], w.actions)
    # "Another plant" that is this plant's own second half: the splice is seamless.
    s = w.actions.shape[1] // 2
    from eblnn_agent.data import Windows

    same = Windows(torch.cat([w.obs[:, s:], w.obs[:, :s]], 1), torch.cat([w.actions[:, s:], w.actions[:, :s]], 1),
                   w.mask)
    p = spliced_pairs(m, w, hidden, same, skip=2, n=100, generator=torch.Generator().manual_seed(0))
    assert p.pos.shape[0] == 3 * (10 - s - 2)
    torch.testing.assert_close(p.neg, p.pos, rtol=1e-5, atol=1e-5)
    other = Windows(w.obs.flip(0), w.actions.flip(0), w.mask)
    p = spliced_pairs(m, w, hidden, other, skip=0, n=100, generator=torch.Generator().manual_seed(0))
    assert (p.neg - p.pos).abs().amax() > 1e-3


def test_rollout_pairs_select_by_the_prediction_error():
    m, w = _model(), _window_batch()
    hidden = m.filter(w.obs[:, :-1], w.actions)
    g = torch.Generator().manual_seed(0)
    p, frac = rollout_pairs(m, w, hidden, 5, -1.0, g)
    assert p.pos.shape == (3 * 4, m.hidden_size) and frac == 1.0
    p, frac = rollout_pairs(m, w, hidden, 5, float("inf"), g)
    assert p.pos.shape[0] == 0 and frac == 0.0
    assert float(pair_hinge(m.energy(p.pos), m.energy(p.neg), 20.0)) == 0.0


def test_pair_hinge_grades_its_margin():
    e = torch.zeros(2)
    assert float(pair_hinge(e, e, 10.0, torch.tensor([0.0, 1.0]))) == pytest.approx(5.0)
    assert float(pair_hinge(e, e + 20.0, 10.0)) == 0.0


def test_plant_sets_are_valid_and_disjoint():
    for p in (*NEGATIVE_PLANTS, *HELD_OUT_PLANTS):
        plant_params(p)
    assert not {tuple(sorted(p.items())) for p in NEGATIVE_PLANTS} & {tuple(sorted(p.items())) for p in HELD_OUT_PLANTS}
    with pytest.raises(ValueError, match="unknown FurnaceParams"):
        plant_params({"heat_capacityy": 1.0})
