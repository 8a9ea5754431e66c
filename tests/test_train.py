"""train_step / combined_loss / make_optimizer / MetricMeans with the real losses and a small
MouseModel."""

from __future__ import annotations

import math

import pytest
import torch

from mouse.losses import DqnLossConfig, SpLossConfig, SvLossConfig, VecDqnLossConfig
from mouse.models import ModelConfig, MouseModel
from mouse.train import MetricMeans, TrainConfig, combined_loss, make_optimizer, train_step

try:
    from tests.model_fakes import make_batch, spec_for
except ModuleNotFoundError:  # tests/ itself on sys.path (pytest rootdir insertion)
    from model_fakes import make_batch, spec_for

A, B, S = 3, 8, 6
SPEC = spec_for("continuous", A, q_star=True, action_mask=True)


def all_heads_cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-3, seq_len=S, batch_size=B,
                dqn=DqnLossConfig(weight=1.0, tau=0.05),
                vec_dqn=VecDqnLossConfig(weight=0.5, tau=0.05),
                sp=SpLossConfig(weight=2.0), sv=SvLossConfig(weight=0.25))
    return TrainConfig(**{**base, **kw})


def make_model(heads=("dqn", "vec_dqn", "sp", "sv"), backbone="transformer", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone=backbone, hidden_dim=32, num_layers=1, num_attention_heads=2,
                      vec_dim=4, max_time=8, max_seq_len=S)
    return MouseModel(cfg, SPEC, heads)


def test_train_config_defaults_and_validation():
    cfg = TrainConfig()
    # the one set of training defaults (the default run's): small windows for CartPole on a CPU
    assert (cfg.lr, cfg.grad_clip, cfg.batch_size, cfg.seq_len) == (1e-3, 10.0, 64, 8)
    assert cfg.dqn.gamma_truncated == cfg.dqn.gamma == 0.99  # time limits are not terminal
    assert cfg.active_heads() == ("dqn",)
    assert (cfg.vec_dqn.weight, cfg.sp.weight, cfg.sv.weight) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="weight"):
        TrainConfig(dqn=DqnLossConfig(weight=0.0))
    with pytest.raises(ValueError, match="seq_len"):
        TrainConfig(seq_len=1)


def test_make_optimizer_skips_target_heads():
    model = make_model()
    opt = make_optimizer(model, all_heads_cfg())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) not in in_opt for p in model.target_heads.parameters())
    assert all(id(p) in in_opt for p in model.online_heads.parameters())
    assert len(in_opt) == sum(p.requires_grad for p in model.parameters())


def floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: v.item() for k, v in metrics.items()}


def test_total_is_weighted_sum_and_metrics_are_namespaced():
    model, cfg = make_model(), all_heads_cfg()
    m = floats(train_step(model, make_optimizer(model, cfg), make_batch(SPEC, B, S), cfg))
    expected = (1.0 * m["loss/dqn/dqn_loss"] + 0.5 * m["loss/vec_dqn/vec_dqn_loss"]
                + 2.0 * m["loss/sp/sp_loss"] + 0.25 * m["loss/sv/sv_loss"])
    assert m["loss/total"] == pytest.approx(expected, rel=1e-5)
    for k in ("loss/dqn/q_values_mean", "loss/dqn/q_values_target",
              "loss/vec_dqn/vec_dqn_score_abs_mean", "loss/grad_norm"):
        assert k in m
    assert all(math.isfinite(v) for v in m.values())
    assert m["train/skipped_nonfinite"] == 0.0


def test_inactive_heads_are_not_computed():
    model = make_model(heads=("dqn", "sp"))  # sp head present only for acting
    cfg = TrainConfig(seq_len=S)
    m = floats(train_step(model, make_optimizer(model, cfg), make_batch(SPEC, B, S), cfg))
    assert not any(k.startswith(("loss/sp/", "loss/sv/", "loss/vec_dqn/")) for k in m)
    assert m["loss/total"] == pytest.approx(m["loss/dqn/dqn_loss"], rel=1e-6)


@pytest.mark.parametrize("backbone", ["mlp", "transformer"])
def test_train_step_reduces_loss_on_a_fixed_batch(backbone):
    model, cfg = make_model(backbone=backbone), all_heads_cfg()
    opt, batch = make_optimizer(model, cfg), make_batch(SPEC, B, S, seed=1)
    totals = [train_step(model, opt, batch, cfg)["loss/total"].item() for _ in range(50)]
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-5:]) / 5 < 0.5 * totals[0], totals[::10]


def test_combined_loss_gradients_skip_targets():
    model, cfg = make_model(), all_heads_cfg()
    batch = make_batch(SPEC, B, S)
    total, _ = combined_loss(batch, model(batch), cfg)
    total.backward()
    assert all(p.grad is None for p in model.target_heads.parameters())
    for name, head in model.online_heads.items():
        assert sum(p.grad.abs().sum() for p in head.parameters()) > 0, name
    assert sum(p.grad.abs().sum() for p in model.backbone.parameters()) > 0
    assert sum(p.grad.abs().sum() for p in model.embed.parameters()) > 0


def test_train_step_applies_polyak_after_the_optimizer_step():
    model = make_model()
    cfg = all_heads_cfg(dqn=DqnLossConfig(tau=0.25), vec_dqn=VecDqnLossConfig(weight=1.0, tau=0.0))
    targets_before = [p.clone() for p in model.target_heads["dqn"].parameters()]
    vec_before = [p.clone() for p in model.target_heads["vec_dqn"].parameters()]
    train_step(model, make_optimizer(model, cfg), make_batch(SPEC, B, S), cfg)
    for t0, t, o in zip(targets_before, model.target_heads["dqn"].parameters(),
                        model.online_heads["dqn"].parameters()):
        torch.testing.assert_close(t, 0.25 * o + 0.75 * t0, rtol=1e-6, atol=1e-7)
        assert not torch.equal(o, t0)  # the online head did move
    assert all(torch.equal(a, b) for a, b in zip(vec_before, model.target_heads["vec_dqn"].parameters()))


def test_grad_clip_bounds_the_applied_gradient():
    model = make_model()
    cfg = all_heads_cfg(grad_clip=1e-3)
    m = train_step(model, make_optimizer(model, cfg), make_batch(SPEC, B, S), cfg)
    clipped = torch.linalg.vector_norm(torch.stack(
        [p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert m["loss/grad_norm"] > 1e-3  # the logged norm is the one before clipping
    assert clipped.item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("head", ["sp", "sv"])
def test_missing_q_star_is_a_clear_error(head):
    model = make_model()
    cfg = TrainConfig(seq_len=S, **{head: (SpLossConfig if head == "sp" else SvLossConfig)(weight=1.0)})
    batch = make_batch(SPEC, B, S).exclude("q_star")
    with pytest.raises(KeyError, match=f"{head}.*q_star"):
        train_step(model, make_optimizer(model, cfg), batch, cfg)


def test_missing_head_output_is_a_clear_error():
    model = make_model(heads=("dqn",))
    cfg = all_heads_cfg()
    with pytest.raises(KeyError, match="vec_dqn.*heads_for"):
        train_step(model, make_optimizer(model, cfg), make_batch(SPEC, B, S), cfg)


# --- no host sync per update ---------------------------------------------------------------

SYNCING = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def count_host_reads(monkeypatch) -> list[str]:
    """Record every Python-side read of a tensor's value (each is a sync on a GPU)."""
    calls: list[str] = []
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


def test_train_step_returns_device_tensors_and_reads_no_value(monkeypatch):
    model, cfg = make_model(), all_heads_cfg()
    opt, batch = make_optimizer(model, cfg), make_batch(SPEC, B, S)
    train_step(model, opt, batch, cfg)  # the first step also creates the Adam state
    calls = count_host_reads(monkeypatch)
    m = train_step(model, opt, batch, cfg)
    assert calls == []
    monkeypatch.undo()
    for k, v in m.items():
        assert isinstance(v, torch.Tensor) and v.shape == () and v.dtype == torch.float32, k
        assert v.device == model.device and not v.requires_grad, k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_step_makes_no_cuda_sync():
    model, cfg = make_model().cuda(), all_heads_cfg()
    opt, batch = make_optimizer(model, cfg), make_batch(SPEC, B, S, device="cuda")
    train_step(model, opt, batch, cfg)  # the first step creates the Adam state
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(model, opt, batch, cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_metric_means_hand_computed_with_one_read(monkeypatch):
    means = MetricMeans()
    assert means.flush() == {}
    calls = count_host_reads(monkeypatch)
    means.add({"a": torch.tensor(1.0), "b": torch.tensor(10.0)})
    means.add({"a": torch.tensor(2.0), "b": torch.tensor(20.0)})
    means.add({"a": torch.tensor(6.0)})  # another name set: a is averaged over 3 adds, b over 2
    assert calls == []
    out = means.flush()
    assert calls == ["tolist"]
    monkeypatch.undo()
    assert out == {"a": pytest.approx(3.0), "b": pytest.approx(15.0)}
    assert means.flush() == {}  # flush starts a new interval
    means.add({"a": torch.tensor(4.0)})
    assert means.flush() == {"a": 4.0}


def test_metric_means_of_train_steps_match_their_values():
    model, cfg = make_model(), all_heads_cfg()
    opt, means, seen = make_optimizer(model, cfg), MetricMeans(), []
    for seed in range(3):
        m = train_step(model, opt, make_batch(SPEC, B, S, seed=seed), cfg)
        means.add(m)
        seen.append(floats(m))
    out = means.flush()
    assert set(out) == set(seen[0])
    for k in out:
        assert out[k] == pytest.approx(sum(s[k] for s in seen) / 3, rel=1e-5, abs=1e-6), k


# --- fused Adam, and non-finite steps skipped on the device --------------------------------

def test_fused_adam_matches_unfused_adam_on_finite_steps():
    cfg = all_heads_cfg()
    fused_model, ref_model = make_model(seed=3), make_model(seed=3)
    fused, ref = make_optimizer(fused_model, cfg), torch.optim.Adam(
        [p for p in ref_model.parameters() if p.requires_grad], lr=cfg.lr, eps=cfg.adam_eps,
        foreach=False)
    assert all(g["fused"] for g in fused.param_groups)
    for seed in range(3):  # several steps: the bias corrections depend on the step count
        for model, opt in ((fused_model, fused), (ref_model, ref)):
            opt.zero_grad()
            batch = make_batch(SPEC, B, S, seed=seed)
            combined_loss(batch, model(batch), cfg)[0].backward()
            opt.step()
    for (name, p), q in zip(fused_model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def snapshot(model, opt):
    params = {k: v.clone() for k, v in model.state_dict().items()}  # online and target
    state = {k: {n: t.clone() for n, t in s.items()} for k, s in opt.state_dict()["state"].items()}
    return params, state


def assert_same(a, b):
    assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    for k in a[1]:
        for n in a[1][k]:
            assert torch.equal(a[1][k][n], b[1][k][n]), (k, n)


@pytest.mark.parametrize("grad_clip", [10.0, 0.0])
def test_nonfinite_step_changes_nothing_and_is_counted(grad_clip):
    model, cfg = make_model(), all_heads_cfg(grad_clip=grad_clip)
    opt = make_optimizer(model, cfg)
    m = train_step(model, opt, make_batch(SPEC, B, S, seed=1), cfg)  # Adam state exists now
    assert m["train/skipped_nonfinite"].item() == 0.0
    before = snapshot(model, opt)

    bad = make_batch(SPEC, B, S, seed=2)
    bad["obs_continuous"][0, 2, 0] = float("nan")  # one real step of one window
    m = train_step(model, opt, bad, cfg)
    assert m["train/skipped_nonfinite"].item() == 1.0
    assert not math.isfinite(m["loss/total"].item())
    assert_same(snapshot(model, opt), before)  # params, targets, exp_avg(_sq) and step

    m = train_step(model, opt, make_batch(SPEC, B, S, seed=3), cfg)
    assert m["train/skipped_nonfinite"].item() == 0.0
    after, state = snapshot(model, opt)
    for name in ("online_heads.dqn.net.0.weight", "target_heads.dqn.net.0.weight"):
        assert not torch.equal(after[name], before[0][name]), name
    # the skipped step did not count: bias correction resumes at step 2
    assert all(s["step"].item() == 2.0 for s in state.values())


def test_optimizer_from_an_unfused_checkpoint_is_fused_and_still_skips():
    model, cfg = make_model(), all_heads_cfg()
    old = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           eps=cfg.adam_eps)  # as saved before Adam was fused on CPU
    batch = make_batch(SPEC, B, S)
    combined_loss(batch, model(batch), cfg)[0].backward()
    old.step()
    opt = make_optimizer(model, cfg)
    opt.load_state_dict(old.state_dict())
    assert all(g["fused"] for g in opt.param_groups)
    before = snapshot(model, opt)
    bad = batch.clone()
    bad["reward"][:, 1:] = float("inf")
    assert train_step(model, opt, bad, cfg)["train/skipped_nonfinite"].item() == 1.0
    assert_same(snapshot(model, opt), before)
    train_step(model, opt, batch, cfg)
    assert all(s["step"].item() == 2.0 for s in opt.state.values())
