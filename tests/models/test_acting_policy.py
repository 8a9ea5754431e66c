"""ActingPolicy: a rolling context whose step embeddings are kept, checked against the model
run on the whole window, including across weight loads (the cache must never act on stale
embeddings)."""

from __future__ import annotations

import pytest
import torch

from mouse.acting import ActingPolicy, acting_state, load_acting_state

from .test_model import A, make_model

try:
    from tests.model_fakes import make_batch, spec_for
except ModuleNotFoundError:  # tests/ itself on sys.path
    from model_fakes import make_batch, spec_for

N, K, STEPS = 3, 4, 10


def _stream(kind: str):
    """A [N, STEPS] record stream; the policy sees one step of it at a time."""
    batch = make_batch(spec_for(kind, A), N, STEPS, seed=1)
    return batch, [k for k in batch.keys() if k.startswith("obs_") or k in ("action", "reward", "done", "time")]


def _expected(model, batch, keys, t):
    window = batch[:, max(0, t + 1 - K): t + 1].select(*keys)
    with torch.inference_mode():
        return model(window, last_only=True)


@pytest.mark.parametrize("kind", ["image", "continuous"])
def test_cached_embeddings_give_the_heads_of_the_whole_window(kind):
    model = make_model(kind, "transformer").eval()
    batch, keys = _stream(kind)
    policy = ActingPolicy(model, "dqn", context_len=K)
    for t in range(STEPS):
        policy.act_step({k: batch[k][:, t] for k in keys})
        torch.testing.assert_close(policy.out["dqn"], _expected(model, batch, keys, t)["dqn"])
    assert policy.embedded.shape == (N, K, model.cfg.hidden_dim)


def test_new_weights_re_embed_the_whole_context():
    model = make_model("image", "transformer").eval()
    other = make_model("image", "transformer", seed=7)
    batch, keys = _stream("image")
    policy = ActingPolicy(model, "dqn", context_len=K)
    embedded, seen = [], []
    hook = model.embed.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    for t in range(STEPS):
        if t == 6:  # what an actor does with a weights broadcast: an in-place copy
            load_acting_state(model, acting_state(other))
        seen.clear()
        policy.act_step({k: batch[k][:, t] for k in keys})
        embedded += seen  # steps the policy embedded at this act
        torch.testing.assert_close(policy.out["dqn"], _expected(model, batch, keys, t)["dqn"])
    hook.remove()
    # one step embedded per act, except right after the load: the whole context of K steps
    assert embedded == [1, 1, 1, 1, 1, 1, K, 1, 1, 1]
    with torch.inference_mode():  # the load changed what the model computes (else this tests nothing)
        assert not torch.allclose(_expected(model, batch, keys, 9)["dqn"],
                                  _expected(make_model("image", "transformer"), batch, keys, 9)["dqn"])


def test_reset_starts_a_new_context():
    model = make_model("continuous", "transformer").eval()
    batch, keys = _stream("continuous")
    policy = ActingPolicy(model, "dqn", context_len=K)
    for t in range(5):
        policy.act_step({k: batch[k][:, t] for k in keys})
    policy.reset()
    policy.act_step({k: batch[k][:, 5] for k in keys})
    window = batch[:, 5:6].select(*keys)
    with torch.inference_mode():
        torch.testing.assert_close(policy.out["dqn"], model(window, last_only=True)["dqn"])


def test_mlp_acts_on_the_newest_step_alone():
    model = make_model("continuous", "mlp").eval()
    batch, keys = _stream("continuous")
    policy = ActingPolicy(model, "dqn", context_len=K)
    for t in range(3):
        policy.act_step({k: batch[k][:, t] for k in keys})
    assert policy.embedded is None
    with torch.inference_mode():
        torch.testing.assert_close(policy.out["dqn"], model(batch[:, 2:3].select(*keys), last_only=True)["dqn"])
