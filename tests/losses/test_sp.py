"""sp_loss: all six loss types, label smoothing, temperature, masking, no NaN.

Base window (B=2, S=3, A=3); "allowed" = finite q_star and action_mask:
  row 0 t0: q_star [ln3, 0, -inf], logits [0, ln3, 7]  -> P = [3/4, 1/4], Q = [1/4, 3/4]
  row 0 t1: q_star [0, 0, 0],      logits [0, 0, 0]    -> P = Q = uniform over 3
  row 0 t2: q_star all -inf                             -> excluded (nothing allowed)
  row 1 t0: q_star [-inf, ln4, 0], logits [9, 0, 0]    -> P = [4/5, 1/5], Q = [1/2, 1/2] (a1, a2)
  row 1 t1: valid False                                 -> excluded (padding)
  row 1 t2: mask [T, T, F], q_star [0, ln3, 5], logits [ln3, 0, -2]
                                                        -> P = [1/4, 3/4], Q = [3/4, 1/4] (a0, a1)
The loss is the mean over the 4 real rows.
"""

import math

import pytest
import torch

from mouse.losses import SpLossConfig, sp_loss
from mouse.losses.sp import LOSS_TYPES

from .cases import NEG_INF as NI
from .cases import nan_free_backward, stream

L = math.log
R3 = 3**0.5
T, F = True, False

Q_STAR = [
    [[L(3), 0.0, NI], [0.0, 0.0, 0.0], [NI, NI, NI]],
    [[NI, L(4), 0.0], [1.0, 2.0, 3.0], [0.0, L(3), 5.0]],
]
LOGITS = [
    [[0.0, L(3), 7.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]],
    [[9.0, 0.0, 0.0], [1.0, 2.0, 3.0], [L(3), 0.0, -2.0]],
]
FIELDS = dict(
    q_star=Q_STAR,
    valid=[[T, T, T], [T, F, T]],
    action_mask=[[[T, T, T]] * 3, [[T, T, T], [T, T, T], [T, T, F]]],
)


def inputs(**extra):
    td = stream(**{**FIELDS, **extra})
    logits = torch.tensor(LOGITS, requires_grad=True)
    return td, logits


def kl(p, q):
    return sum(pi * L(pi / qi) for pi, qi in zip(p, q, strict=True))


def js(p, q):
    return sum(0.5 * pi * L(pi / ((pi + qi) / 2)) + 0.5 * qi * L(qi / ((pi + qi) / 2))
               for pi, qi in zip(p, q, strict=True))


CASES = [
    # (id, cfg, expected) ; rows in order r00, r01, r10, r12
    ("ce", dict(loss_type="ce"), (L(4) + L(3) + L(2) + L(4)) / 4),
    ("ce_ignores_temperature", dict(loss_type="ce", temperature=5.0), (L(4) + L(3) + L(2) + L(4)) / 4),
    ("ce-soft-fwd", dict(loss_type="ce-soft-fwd"),
     (-(3 / 4 * L(1 / 4) + 1 / 4 * L(3 / 4)) + L(3) - (4 / 5 * L(1 / 2) + 1 / 5 * L(1 / 2))
      - (1 / 4 * L(3 / 4) + 3 / 4 * L(1 / 4))) / 4),
    ("ce-soft-bwd", dict(loss_type="ce-soft-bwd"),
     (-(1 / 4 * L(3 / 4) + 3 / 4 * L(1 / 4)) + L(3) - (1 / 2 * L(4 / 5) + 1 / 2 * L(1 / 5))
      - (3 / 4 * L(1 / 4) + 1 / 4 * L(3 / 4))) / 4),
    ("kl-fwd", dict(loss_type="kl-fwd"),
     ((3 / 4 * L(3) + 1 / 4 * L(1 / 3)) + 0 + (4 / 5 * L(8 / 5) + 1 / 5 * L(2 / 5))
      + (1 / 4 * L(1 / 3) + 3 / 4 * L(3))) / 4),
    ("kl-bwd", dict(loss_type="kl-bwd"),
     ((1 / 4 * L(1 / 3) + 3 / 4 * L(3)) + 0 + (1 / 2 * L(5 / 8) + 1 / 2 * L(5 / 2))
      + (3 / 4 * L(3) + 1 / 4 * L(1 / 3))) / 4),
    # JS with M = (P + Q) / 2: r00 M = [1/2, 1/2], r10 M = [13/20, 7/20]
    ("js", dict(loss_type="js"),
     ((0.5 * (3 / 4 * L(3 / 2) + 1 / 4 * L(1 / 2)) + 0.5 * (1 / 4 * L(1 / 2) + 3 / 4 * L(3 / 2)))
      + 0
      + (0.5 * (4 / 5 * L(16 / 13) + 1 / 5 * L(4 / 7)) + 0.5 * (1 / 2 * L(10 / 13) + 1 / 2 * L(10 / 7)))
      + (0.5 * (1 / 4 * L(1 / 2) + 3 / 4 * L(3 / 2)) + 0.5 * (3 / 4 * L(3 / 2) + 1 / 4 * L(1 / 2)))) / 4),
    # smoothing 0.2 over allowed actions: one-hot -> 0.8 * onehot + 0.2 / n_allowed
    ("ce_label_smoothing", dict(loss_type="ce", label_smoothing=0.2),
     (-(0.9 * L(1 / 4) + 0.1 * L(3 / 4)) + L(3) + L(2) - (0.1 * L(3 / 4) + 0.9 * L(1 / 4))) / 4),
    # P -> 0.8 P + 0.1: r00 [0.7, 0.3], r10 [0.74, 0.26], r12 [0.3, 0.7]; student untouched
    ("kl-fwd_label_smoothing", dict(loss_type="kl-fwd", label_smoothing=0.2),
     ((0.7 * L(0.7 / 0.25) + 0.3 * L(0.3 / 0.75)) + 0 + (0.74 * L(0.74 / 0.5) + 0.26 * L(0.26 / 0.5))
      + (0.3 * L(0.3 / 0.75) + 0.7 * L(0.7 / 0.25))) / 4),
    # T = 2: P ∝ exp(q_star / 2): r00 [√3, 1], r10 [2, 1], r12 [1, √3]
    ("kl-fwd_temperature", dict(loss_type="kl-fwd", temperature=2.0),
     (kl([R3 / (1 + R3), 1 / (1 + R3)], [1 / 4, 3 / 4]) + 0 + kl([2 / 3, 1 / 3], [1 / 2, 1 / 2])
      + kl([1 / (1 + R3), R3 / (1 + R3)], [3 / 4, 1 / 4])) / 4),
    # smoothing 0.5 over 2 allowed actions: P -> 0.5 P + 0.25
    ("js_temperature_smoothing", dict(loss_type="js", temperature=2.0, label_smoothing=0.5),
     (js([0.5 * R3 / (1 + R3) + 0.25, 0.5 / (1 + R3) + 0.25], [1 / 4, 3 / 4])
      + 0 + js([0.5 * 2 / 3 + 0.25, 0.5 / 3 + 0.25], [1 / 2, 1 / 2])
      + js([0.5 / (1 + R3) + 0.25, 0.5 * R3 / (1 + R3) + 0.25], [3 / 4, 1 / 4])) / 4),
]


@pytest.mark.parametrize("name,cfg,expected", CASES, ids=[c[0] for c in CASES])
def test_sp_loss_values(name, cfg, expected):
    td, logits = inputs()
    loss, m = sp_loss(td, logits, SpLossConfig(**cfg))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert set(m) == {"sp_loss"} and m["sp_loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_every_loss_type_has_a_case():
    assert {c[1]["loss_type"] for c in CASES} == set(LOSS_TYPES)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradients_masked_and_finite(loss_type):
    td, logits = inputs()
    loss, _ = sp_loss(td, logits, SpLossConfig(loss_type=loss_type, label_smoothing=0.1))
    loss.backward()
    g = logits.grad
    assert torch.isfinite(g).all()
    assert g[0, 0, 0] != 0  # a real row with P != Q
    assert g[0, 0, 2] == 0  # q_star -inf
    assert not g[0, 2].any()  # no finite q_star in the row
    assert not g[1, 1].any()  # padding
    assert g[1, 2, 2] == 0  # action_mask False


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_no_nan_with_underflow_and_inf(loss_type, smoothing):
    # T = 0.01 makes the teacher underflow to exact 0 on allowed actions (and
    # -3e38 / 0.01 overflows to a -inf teacher logit); logits 100 vs -100 make the
    # student underflow; -inf q_star and a row with no finite entry on top.
    # Values and gradients must stay finite.
    td = stream(q_star=[[[0.0, -3e38, NI], [NI, NI, NI]], [[NI, 50.0, -50.0], [1.0, 1.0, 1.0]]])
    logits = torch.tensor([[[100.0, -100.0, 5.0], [0.0, 0.0, 0.0]], [[-1e4, 1e4, -1e4], [3.0, -3.0, 0.0]]],
                          requires_grad=True)
    with nan_free_backward():  # raises on any NaN produced in backward
        loss, m = sp_loss(td, logits, SpLossConfig(loss_type=loss_type, temperature=0.01,
                                                   label_smoothing=smoothing))
        loss.backward()
    assert math.isfinite(loss.item()) and math.isfinite(m["sp_loss"])
    assert torch.isfinite(logits.grad).all()
    assert not logits.grad[0, 1].any()


def test_teacher_log_prob_floor():
    # log P(a1) = -1000 is floored at log(smallest normal float32) ~ -87.3, so that an
    # underflowed teacher gives a large finite -Q log P instead of inf
    td = stream(q_star=[[[0.0, -1000.0]]])
    loss, _ = sp_loss(td, torch.zeros(1, 1, 2), SpLossConfig(loss_type="ce-soft-bwd"))
    assert loss.item() == pytest.approx(-0.5 * math.log(torch.finfo(torch.float32).tiny), rel=1e-5)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_all_rows_masked(loss_type):
    # q_star without a finite entry, or one whose finite entries are all masked
    td = stream(q_star=[[[NI, NI]], [[1.0, NI]]], action_mask=[[[T, T]], [[F, T]]])
    logits = torch.zeros(2, 1, 2, requires_grad=True)
    with nan_free_backward():
        loss, m = sp_loss(td, logits, SpLossConfig(loss_type=loss_type, label_smoothing=0.1))
        loss.backward()
    assert loss.item() == 0.0 and m == {"sp_loss": 0.0}
    assert not logits.grad.any()


def test_inputs_not_mutated():
    td, logits = inputs()
    before = (td.clone(), logits.detach().clone())
    sp_loss(td, logits, SpLossConfig(loss_type="js", label_smoothing=0.1))
    assert (td == before[0]).all() and torch.equal(logits.detach(), before[1])


def test_config_defaults():
    cfg = SpLossConfig()
    assert (cfg.weight, cfg.loss_type, cfg.temperature, cfg.label_smoothing) == (1.0, "ce", 1.0, 0.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"loss_type": "kl"}, r"loss_type must be one of \('ce', 'ce-soft-fwd', 'ce-soft-bwd', 'js', "
                          r"'kl-fwd', 'kl-bwd'\), got 'kl'"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\)"),
    ({"weight": -1.0}, "weight must be >= 0"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpLossConfig(**kwargs)


def test_bad_inputs():
    td, logits = inputs()
    with pytest.raises(KeyError, match=r"no \['q_star'\].*enable q_star"):
        sp_loss(td.exclude("q_star"), logits, SpLossConfig())
    with pytest.raises(ValueError, match=r"logits \(out\['sp'\]\) has shape \(2, 3, 4\)"):
        sp_loss(td, torch.zeros(2, 3, 4), SpLossConfig())
    bad = stream(q_star=[[1.0, 2.0], [3.0, 4.0]])  # [B, S] without the action dim
    with pytest.raises(ValueError, match=r"q_star'\] must be \[B, S, A\]"):
        sp_loss(bad, torch.zeros(2, 2), SpLossConfig())
