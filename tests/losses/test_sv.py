"""sv_loss: MSE / MAE over finite q_star entries of real steps (and allowed actions)."""

import pytest
import torch

from mouse.losses import SvLossConfig, sv_loss

from .cases import NEG_INF as NI
from .cases import stream

T, F = True, False

Q_STAR = [
    [[1.0, NI, 3.0], [0.0, 0.0, 0.0], [NI, NI, NI]],
    [[2.0, 2.0, NI], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]],
]
VALUES = [
    [[2.0, 100.0, 1.0], [1.0, -1.0, 0.5], [9.0, 9.0, 9.0]],
    [[2.0, 4.0, 7.0], [0.0, 0.0, 0.0], [0.0, 4.0, 100.0]],
]
MASKS = dict(valid=[[T, T, T], [T, F, T]],
             action_mask=[[[T, T, T]] * 3, [[T, T, T], [T, T, T], [T, T, F]]])
# values - q_star over the entries that count, with valid and action_mask:
#   row 0: t0 (1, -2), t1 (1, -1, 0.5); row 1: t0 (0, 2), t2 (-1, 2)  -> 9 entries
# without them, row 1 t1 adds (-5, -5, -5) and row 1 t2 adds 97  -> 13 entries
CASES = [
    ("mse_masked", "mse", MASKS, (1 + 4 + 1 + 1 + 0.25 + 0 + 4 + 1 + 4) / 9),
    ("mae_masked", "mae", MASKS, (1 + 2 + 1 + 1 + 0.5 + 0 + 2 + 1 + 2) / 9),
    ("mse_finite_only", "mse", {}, (1 + 4 + 1 + 1 + 0.25 + 0 + 4 + 3 * 25 + 1 + 4 + 97**2) / 13),
    ("mae_finite_only", "mae", {}, (1 + 2 + 1 + 1 + 0.5 + 0 + 2 + 3 * 5 + 1 + 2 + 97) / 13),
]


@pytest.mark.parametrize("name,loss_type,extra,expected", CASES, ids=[c[0] for c in CASES])
def test_sv_loss_values(name, loss_type, extra, expected):
    td = stream(q_star=Q_STAR, **extra)
    loss, m = sv_loss(td, torch.tensor(VALUES), SvLossConfig(loss_type=loss_type))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert set(m) == {"sv_loss"} and m["sv_loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("loss_type", ["mse", "mae"])
def test_gradients_only_on_counted_entries(loss_type):
    td = stream(q_star=Q_STAR, **MASKS)
    values = torch.tensor(VALUES, requires_grad=True)
    loss, _ = sv_loss(td, values, SvLossConfig(loss_type=loss_type))
    loss.backward()
    g = values.grad
    assert torch.isfinite(g).all()
    expected_00 = 2 * (2.0 - 1.0) / 9 if loss_type == "mse" else 1 / 9
    assert g[0, 0, 0].item() == pytest.approx(expected_00)
    assert g[0, 0, 1] == 0 and not g[0, 2].any()  # -inf targets
    assert not g[1, 1].any()  # padding
    assert g[1, 2, 2] == 0  # action not allowed


def test_all_masked_is_zero():
    td = stream(q_star=[[[NI, NI]], [[NI, NI]]])
    values = torch.ones(2, 1, 2, requires_grad=True)
    loss, m = sv_loss(td, values, SvLossConfig())
    loss.backward()
    assert loss.item() == 0.0 and m == {"sv_loss": 0.0} and not values.grad.any()


def test_config():
    assert (SvLossConfig().weight, SvLossConfig().loss_type) == (1.0, "mse")
    with pytest.raises(ValueError, match=r"loss_type must be one of \('mse', 'mae'\), got 'huber'"):
        SvLossConfig(loss_type="huber")
    with pytest.raises(ValueError, match="weight must be >= 0"):
        SvLossConfig(weight=-0.5)


def test_bad_inputs():
    td = stream(q_star=Q_STAR)
    with pytest.raises(KeyError, match=r"no \['q_star'\].*enable q_star"):
        sv_loss(stream(action=[[0, 0]]), torch.zeros(1, 2, 3), SvLossConfig())
    with pytest.raises(ValueError, match=r"values \(out\['sv'\]\) has shape \(2, 3\), expected"):
        sv_loss(td, torch.zeros(2, 3), SvLossConfig())
