"""Masks, masked reductions, reward normalisation and input checks of losses.common."""

import math

import pytest
import torch

from mouse.losses.common import (
    masked_logsumexp,
    masked_max,
    masked_mean,
    masked_stats,
    metrics_dict,
    normalize_reward,
    pair_mask,
    step_mask,
    window_shape,
)

from .cases import nan_free_backward, stream

T, F = True, False


@pytest.mark.parametrize("fields,expected", [
    ({}, [[T, T], [T, T]]),
    # record t+1 with time 0 starts an episode: the pair (t, t+1) is not a transition
    ({"time": [[0, 1, 2], [5, 0, 1]]}, [[T, T], [F, T]]),
    ({"time": [[7, 0, 0], [1, 2, 3]]}, [[F, F], [T, T]]),
    # a padding record kills both pairs it is part of
    ({"valid": [[T, T, F], [F, T, T]]}, [[T, F], [F, T]]),
    ({"valid": [[T, F, T], [T, T, T]], "time": [[1, 2, 3], [1, 2, 0]]}, [[F, F], [T, F]]),
])
def test_pair_mask(fields, expected):
    td = stream(action=[[0, 0, 0], [0, 0, 0]], **fields)
    assert pair_mask(td).tolist() == expected


def test_step_mask():
    assert step_mask(stream(action=[[0, 0]])).tolist() == [[T, T]]
    assert step_mask(stream(action=[[0, 0]], valid=[[T, F]])).tolist() == [[T, F]]


def test_masked_mean_and_empty_mask():
    x = torch.tensor([[1.0, float("nan"), 3.0]], requires_grad=True)
    m = torch.tensor([[T, F, T]])
    out = masked_mean(x, m)
    assert out.item() == 2.0  # (1 + 3) / 2, the NaN is selected away
    out.backward()
    assert x.grad.tolist() == [[0.5, 0.0, 0.5]]

    y = torch.tensor([1.0, 2.0], requires_grad=True)
    out = masked_mean(y, torch.tensor([F, F]))
    assert out.item() == 0.0 and out.requires_grad  # still part of the graph
    out.backward()
    assert y.grad.tolist() == [0.0, 0.0]


def test_masked_mean_broadcasts_mask():
    x = torch.tensor([[1.0, 2.0], [30.0, 40.0]])
    assert masked_mean(x, torch.tensor([[T], [F]])).item() == 1.5


def test_masked_stats():
    s = masked_stats(torch.tensor([3.0, 5.0, -1.0, 100.0]), torch.tensor([T, T, T, F]))
    assert s["mean"].item() == pytest.approx(7 / 3)
    assert s["std"].item() == pytest.approx(math.sqrt(((3 - 7 / 3) ** 2 + (5 - 7 / 3) ** 2
                                                        + (-1 - 7 / 3) ** 2) / 3))
    assert (s["min"].item(), s["max"].item()) == (-1.0, 5.0)
    empty = masked_stats(torch.tensor([1.0]), torch.tensor([F]))
    assert [v.item() for v in empty.values()] == [0.0, 0.0, 0.0, 0.0]


def test_masked_max_and_logsumexp():
    x = torch.tensor([[1.0, 3.0, 2.0], [4.0, 0.0, -1.0], [5.0, 6.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[T, F, T], [T, T, T], [F, F, F]])
    assert masked_max(x).tolist() == [3.0, 4.0, 7.0]
    assert masked_max(x, mask).tolist() == [2.0, 4.0, 0.0]  # no allowed action -> 0
    lse = masked_logsumexp(x, mask)
    expected = [math.log(math.exp(1) + math.exp(2)),
                math.log(math.exp(4) + math.exp(0) + math.exp(-1)), 0.0]
    torch.testing.assert_close(lse, torch.tensor(expected))
    torch.testing.assert_close(masked_logsumexp(x), torch.logsumexp(x, -1))
    with nan_free_backward():  # the all-disallowed row must not give NaN grads
        lse.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 1] == 0 and not x.grad[2].any()


def test_normalize_reward_uses_real_pairs_only():
    r = torch.tensor([[1.0, 2.0, 100.0], [4.0, 4.0, 4.0]])
    mask = torch.tensor([[T, T, F], [T, T, T]])
    out = normalize_reward(r, mask, mean=True, std=False, eps=1e-6, target_std=1.0)
    torch.testing.assert_close(out, torch.tensor([[-0.5, 0.5, 98.5], [0.0, 0.0, 0.0]]))
    # row 0: std 0.5 -> (r - 1.5) / 0.5 * 3; row 1: std 0 -> 0 / eps = 0 (no inf, no NaN)
    out = normalize_reward(r, mask, mean=True, std=True, eps=1e-6, target_std=3.0)
    torch.testing.assert_close(out[0, :2], torch.tensor([-3.0, 3.0]), rtol=1e-5, atol=1e-5)
    assert out[1].tolist() == [0.0, 0.0, 0.0]
    assert normalize_reward(r, mask, mean=False, std=False, eps=1e-6, target_std=1.0) is r


def test_metrics_dict_floats():
    m = metrics_dict({"a": torch.tensor(1.5), "b": torch.tensor([2.0]), "c": torch.tensor(3)})
    assert m == {"a": 1.5, "b": 2.0, "c": 3.0} and all(type(v) is float for v in m.values())


def test_window_shape_errors():
    assert window_shape(stream(action=[[0, 0, 0]]), "x", min_len=2) == (1, 3)
    with pytest.raises(ValueError, match=r"x: windows must hold at least 2 steps"):
        window_shape(stream(action=[[0]]), "x", min_len=2)
    with pytest.raises(ValueError, match=r"batch dims \[B, S\]"):
        window_shape({"action": torch.zeros(3)}, "x")


def test_mask_field_shapes_checked():
    td = stream(action=[[0, 0]])
    td["valid"] = torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"valid'\] has shape \(1, 2, 2\), expected \[B, S\]"):
        step_mask(td)
