"""select_action, explore and heads_for: masks, greedy, uniform exploration, softmax sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from mouse.models import explore, heads_for, select_action

N, A = 4000, 4
# action 1 is the best by far, but masked out in every row
MASK = torch.tensor([True, False, True, True]).expand(N, A)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _q(n=N):
    return torch.tensor([0.0, 10.0, 2.0, 1.0]).expand(n, A).clone()


def _freqs(actions):
    return torch.bincount(actions, minlength=A).double() / len(actions)


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_dqn_is_greedy_and_masked_and_epsilon_zero_leaves_it():
    q = torch.randn(N, A, generator=_gen(1))
    out = TensorDict({"dqn": q}, batch_size=[N])
    assert torch.equal(select_action(out, "dqn", generator=_gen()), q.argmax(-1))
    masked = select_action(out, "dqn", MASK, _gen())
    assert torch.equal(masked, q.masked_fill(~MASK, -math.inf).argmax(-1))
    assert not (masked == 1).any()
    assert torch.equal(select_action(TensorDict({"dqn": _q()}, [N]), "dqn", MASK), torch.full((N,), 2))
    assert explore(masked, 0.0, _rng(), A, MASK) is masked
    assert explore(masked, torch.zeros(N), _rng(), A, MASK) is masked


def test_epsilon_one_is_uniform_over_allowed():
    greedy = torch.full((N,), 2)
    f = _freqs(explore(greedy, 1.0, _rng(3), A, MASK))
    assert f[1] == 0  # masked action never drawn, even at random
    # 3 allowed actions: 1/3 each; 4000 draws give std ~0.0075, so 0.03 is 4 sigma
    torch.testing.assert_close(f[[0, 2, 3]], torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03, rtol=0)
    f = _freqs(explore(greedy, 1.0, _rng(4), A))  # no mask: all A
    torch.testing.assert_close(f, torch.full((A,), 1 / A, dtype=torch.float64), atol=0.03, rtol=0)


def test_epsilon_mixture_and_per_row_epsilon():
    greedy = select_action(TensorDict({"dqn": _q()}, batch_size=[N]), "dqn", MASK)
    # ε = 0.3 over 3 allowed actions: greedy action 2 gets 0.7 + 0.1, the others 0.1
    a = explore(greedy, 0.3, _rng(4), A, MASK)
    assert a.dtype == torch.int64 and a.shape == (N,)
    torch.testing.assert_close(_freqs(a), torch.tensor([0.1, 0.0, 0.8, 0.1], dtype=torch.float64),
                               atol=0.03, rtol=0)
    # per-row ε: first half always greedy, second half always random
    eps = torch.cat([torch.zeros(N // 2), torch.ones(N // 2)])
    a = explore(greedy, eps, _rng(5), A, MASK)
    assert (a[: N // 2] == 2).all()
    assert (a[N // 2:] != 2).any() and not (a == 1).any()
    assert torch.equal(a, explore(greedy, eps, _rng(5), A, MASK))  # the rng's seed decides


def test_sp_frequencies_match_softmax_over_allowed():
    logits = torch.tensor([0.5, 3.0, 1.0, -0.5]).expand(N, A).clone()
    out = TensorDict({"sp": logits}, batch_size=[N])
    f = _freqs(select_action(out, "sp", generator=_gen(6)))
    torch.testing.assert_close(f, torch.softmax(logits[0].double(), -1), atol=0.03, rtol=0)
    f = _freqs(select_action(out, "sp", action_mask=MASK, generator=_gen(7)))
    expected = torch.softmax(logits[0].double().masked_fill(~MASK[0], -math.inf), -1)
    assert f[1] == 0
    torch.testing.assert_close(f, expected, atol=0.03, rtol=0)


def test_sp_is_reproducible_with_a_generator():
    out = TensorDict({"sp": torch.zeros(50, A)}, batch_size=[50])
    a1 = select_action(out, "sp", generator=_gen(8))
    a2 = select_action(out, "sp", generator=_gen(8))
    assert torch.equal(a1, a2) and len(a1.unique()) > 1


def test_vec_dqn_greedy_on_scores_and_masked():
    from mouse.losses.vec_dqn import vec_dqn_scores

    v = torch.randn(N, A, 6, generator=_gen(9))
    out = TensorDict({"vec_dqn": v}, batch_size=[N])
    scores = vec_dqn_scores(v)
    assert torch.equal(select_action(out, "vec_dqn"), scores.argmax(-1))
    a = select_action(out, "vec_dqn", MASK)
    assert not (a == 1).any()
    # disallowed actions leave the angle sum too (the loss's greedy rule)
    assert torch.equal(a, vec_dqn_scores(v, MASK).argmax(-1))
    a = explore(a, 1.0, _rng(10), A, MASK)
    assert not (a == 1).any() and len(a.unique()) == 3


def test_select_action_errors():
    out = TensorDict({"dqn": torch.zeros(3, A)}, batch_size=[3])
    with pytest.raises(ValueError, match="policy"):
        select_action(out, "ppo")
    with pytest.raises(KeyError, match="sp"):
        select_action(out, "sp")


@dataclass(frozen=True)
class _W:
    weight: float


@dataclass(frozen=True)
class _Train:
    dqn: _W = _W(1.0)
    vec_dqn: _W = _W(0.0)
    sp: _W = _W(0.5)
    sv: _W = _W(0.0)


def test_heads_for():
    assert heads_for(_Train(), "dqn") == ("dqn", "sp")
    assert heads_for(_Train(), "vec_dqn") == ("dqn", "vec_dqn", "sp")
    assert heads_for(_Train(dqn=_W(0.0), sv=_W(2.0)), "sp") == ("sp", "sv")
    with pytest.raises(ValueError):
        heads_for(_Train(), "sv")
