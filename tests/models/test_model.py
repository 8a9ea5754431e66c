"""MouseModel: shapes, target heads, Polyak updates, gradient flow, causality."""

from __future__ import annotations

import pytest
import torch

from mouse.models import HEADS, ModelConfig, MouseModel

try:
    from tests.model_fakes import NUM_OBS_STATES, make_batch, spec_for
except ModuleNotFoundError:  # tests/ itself on sys.path (pytest rootdir insertion)
    from model_fakes import NUM_OBS_STATES, make_batch, spec_for

KINDS = ("continuous", "discrete", "image")
BACKBONES = ("mlp", "transformer")
A, D, B, S = 3, 4, 2, 6


def small_cfg(backbone: str = "transformer", **kw) -> ModelConfig:
    base = dict(backbone=backbone, hidden_dim=16, num_layers=2, num_attention_heads=2,
                vec_dim=D, max_time=10, max_seq_len=16, conv_channels=(4, 8))
    return ModelConfig(**{**base, **kw})


def make_model(kind: str = "continuous", backbone: str = "transformer", heads=HEADS,
               seed: int = 0, **kw) -> MouseModel:
    torch.manual_seed(seed)
    return MouseModel(small_cfg(backbone, **kw), spec_for(kind, A), heads,
                      num_obs_states=NUM_OBS_STATES)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("kind", KINDS)
def test_output_keys_and_shapes(kind, backbone):
    model = make_model(kind, backbone)
    out = model(make_batch(spec_for(kind, A), B, S))
    assert out.batch_size == torch.Size([B, S])
    assert set(out.keys()) == {"dqn", "dqn_target", "vec_dqn", "vec_dqn_target", "sp", "sv"}
    for k in ("dqn", "dqn_target", "sp", "sv"):
        assert out[k].shape == (B, S, A) and out[k].dtype == torch.float32
    for k in ("vec_dqn", "vec_dqn_target"):
        assert out[k].shape == (B, S, A, D)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("heads,keys", [
    (("sp",), {"sp"}),
    (("sv", "dqn"), {"dqn", "dqn_target", "sv"}),
    (("vec_dqn",), {"vec_dqn", "vec_dqn_target"}),
])
def test_only_configured_heads(heads, keys):
    model = make_model(heads=heads)
    assert set(model(make_batch(spec_for("continuous", A), B, S)).keys()) == keys


def test_last_only_matches_full_forward_and_skips_targets():
    model = make_model().eval()
    batch = make_batch(spec_for("continuous", A), B, S)
    full, last = model(batch), model(batch, last_only=True)
    assert last.batch_size == torch.Size([B])
    assert set(last.keys()) == {"dqn", "vec_dqn", "sp", "sv"}
    for k in last.keys():
        torch.testing.assert_close(last[k], full[k][:, -1])


@pytest.mark.parametrize("bad,err", [
    (dict(vec_dim=5), "even"),
    (dict(backbone="rnn"), "backbone"),
    (dict(hidden_dim=10, num_attention_heads=4), "divide"),
    (dict(dropout=1.0), "dropout"),
    (dict(max_time=-1), "max_time"),
])
def test_config_validation(bad, err):
    with pytest.raises(ValueError, match=err):
        small_cfg(**bad)


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown heads"):
        MouseModel(small_cfg(), spec_for("continuous", A), ("dqn", "ppo"))
    with pytest.raises(ValueError, match="num_obs_states"):
        MouseModel(small_cfg(), spec_for("discrete", A), ("dqn",))


def test_missing_observation_key_names_it():
    model = make_model("image")
    batch = make_batch(spec_for("continuous", A), B, S)
    with pytest.raises(KeyError, match="obs_image"):
        model(batch)


def test_window_longer_than_max_seq_len():
    model = make_model(max_seq_len=4)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(make_batch(spec_for("continuous", A), B, 5))


# --- target heads and Polyak -----------------------------------------------------------

def _pairs(model, name):
    return list(zip(model.online_heads[name].parameters(), model.target_heads[name].parameters()))


def _perturb_online(model):
    with torch.no_grad():
        for name in ("dqn", "vec_dqn"):
            for p in model.online_heads[name].parameters():
                p.add_(torch.randn_like(p))


def test_targets_start_equal_and_frozen():
    model = make_model()
    for name in ("dqn", "vec_dqn"):
        for o, t in _pairs(model, name):
            assert torch.equal(o, t) and o.data_ptr() != t.data_ptr()
            assert o.requires_grad and not t.requires_grad
    out = model(make_batch(spec_for("continuous", A), B, S))
    torch.testing.assert_close(out["dqn_target"], out["dqn"])
    torch.testing.assert_close(out["vec_dqn_target"], out["vec_dqn"])


def test_polyak_quarter_step_exact_values():
    model = make_model()
    _perturb_online(model)
    before = {n: [(o.detach().clone(), t.detach().clone()) for o, t in _pairs(model, n)]
              for n in ("dqn", "vec_dqn")}
    model.polyak_update(dqn_tau=0.25)
    for (o0, t0), (o, t) in zip(before["dqn"], _pairs(model, "dqn")):
        torch.testing.assert_close(t, 0.25 * o0 + 0.75 * t0, rtol=1e-6, atol=1e-7)
        assert not torch.equal(t, t0)
        assert torch.equal(o, o0)  # online untouched
    for (_, t0), (_, t) in zip(before["vec_dqn"], _pairs(model, "vec_dqn")):
        assert torch.equal(t, t0)  # vec_dqn_tau defaulted to 0


def test_polyak_tau_one_copies_and_zero_leaves():
    model = make_model()
    _perturb_online(model)
    model.polyak_update(dqn_tau=0.0, vec_dqn_tau=-1.0)
    assert all(not torch.equal(o, t) for o, t in _pairs(model, "dqn") + _pairs(model, "vec_dqn"))
    model.polyak_update(dqn_tau=1.0, vec_dqn_tau=1.0)
    assert all(torch.equal(o, t) for o, t in _pairs(model, "dqn") + _pairs(model, "vec_dqn"))
    with pytest.raises(ValueError, match="tau"):
        model.polyak_update(dqn_tau=1.5)


def test_polyak_device_tau_and_unknown_heads():
    model = make_model()
    _perturb_online(model)
    before = {n: [(o.detach().clone(), t.detach().clone()) for o, t in _pairs(model, n)]
              for n in ("dqn", "vec_dqn")}
    # 0-dim tensors (the train step's τ·keep): 0 holds exactly, 1 copies exactly
    model.polyak_update(dqn_tau=torch.tensor(0.0), vec_dqn_tau=torch.tensor(1.0))
    assert all(torch.equal(t, t0) for (_, t0), (_, t) in zip(before["dqn"], _pairs(model, "dqn")))
    assert all(torch.equal(o, t) for o, t in _pairs(model, "vec_dqn"))
    model.polyak_update(dqn_tau=torch.tensor(0.25))
    for (o0, t0), (_, t) in zip(before["dqn"], _pairs(model, "dqn")):
        torch.testing.assert_close(t, 0.25 * o0 + 0.75 * t0, rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="sp_tau"):  # sp keeps no target
        model.polyak_update(sp_tau=0.5)
    with pytest.raises(TypeError, match="dqn"):
        model.polyak_update(dqn=0.5)
    make_model(heads=("sp",)).polyak_update(dqn_tau=0.5)  # a head the model lacks is left


def test_gradients_reach_online_not_target():
    model = make_model(heads=HEADS)
    out = model(make_batch(spec_for("continuous", A), B, S))
    assert not out["dqn_target"].requires_grad and not out["vec_dqn_target"].requires_grad
    # a surrogate that mixes every output (the real losses are tested in test_train)
    loss = sum((v ** 2).mean() for v in out.values())
    loss.backward()
    for p in model.target_heads.parameters():
        assert p.grad is None or not p.grad.any()
    for name, head in model.online_heads.items():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters()), name
    for mod in (model.embed, model.backbone):
        grads = [p.grad for p in mod.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0


def test_no_backbone_gradient_through_targets():
    model = make_model(heads=("dqn",))
    out = model(make_batch(spec_for("continuous", A), B, S))
    # target outputs carry no graph at all, so only the online path can train the backbone
    assert out["dqn_target"].grad_fn is None
    out["dqn"].sum().backward()
    assert all(p.grad is None for p in model.target_heads.parameters())


# --- causality and context -----------------------------------------------------------------

def _change_step(batch, t):
    b = batch.clone()
    b["obs_continuous"][:, t] += 1.0
    b["reward"][:, t] += 1.0
    return b


@pytest.mark.parametrize("t", [0, 2, S - 2])
def test_transformer_is_causal(t):
    model = make_model(backbone="transformer").eval()
    batch = make_batch(spec_for("continuous", A), B, S)
    base = model(batch)["dqn"]
    later = model(_change_step(batch, t + 1))["dqn"]  # change after t
    torch.testing.assert_close(later[:, : t + 1], base[:, : t + 1])
    assert not torch.allclose(later[:, t + 1:], base[:, t + 1:])
    now = model(_change_step(batch, t))["dqn"]  # change at t: t and later move
    assert not torch.allclose(now[:, t], base[:, t])
    assert not torch.allclose(now[:, -1], base[:, -1])  # context reaches later steps


def test_mlp_has_no_context():
    model = make_model(backbone="mlp").eval()
    batch = make_batch(spec_for("continuous", A), B, S)
    base = model(batch)["dqn"]
    out = model(_change_step(batch, 2))["dqn"]
    torch.testing.assert_close(out[:, :2], base[:, :2])
    torch.testing.assert_close(out[:, 3:], base[:, 3:])
    assert not torch.allclose(out[:, 2], base[:, 2])


def test_padding_steps_are_not_attended():
    model = make_model(backbone="transformer").eval()
    batch = make_batch(spec_for("continuous", A), B, S)
    batch["valid"] = torch.ones(B, S, dtype=torch.bool)
    batch["valid"][:, :2] = False
    base = model(batch)["dqn"]
    out = model(_change_step(_change_step(batch, 0), 1))["dqn"]
    torch.testing.assert_close(out[:, 2:], base[:, 2:])
    assert torch.isfinite(out).all()


def test_time_is_clamped_to_max_time():
    model = make_model(max_time=10).eval()
    batch = make_batch(spec_for("continuous", A), B, S)
    batch["time"][:] = 10
    at_max = model(batch)["dqn"]
    batch["time"][:] = 500
    torch.testing.assert_close(model(batch)["dqn"], at_max)
