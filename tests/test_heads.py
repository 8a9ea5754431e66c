"""The head registry: the derived tables match it, and one entry is enough for a new head."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import torch
from tensordict import TensorDict

from mouse import heads as registry
from mouse.heads import HeadSpec
from mouse.losses import (
    DqnLossConfig,
    SpLossConfig,
    SvLossConfig,
    VecDqnLossConfig,
    dqn_loss,
    sp_loss,
    sv_loss,
    vec_dqn_loss,
)
from mouse.models import HEADS, POLICIES, TARGET_HEADS, ModelConfig, MouseModel, heads_for
from mouse.models import select_action
from mouse.train import LOSS_HEADS, NEEDS_Q_STAR, TrainConfig, make_optimizer, train_step

try:
    from tests.model_fakes import make_batch, spec_for
except ModuleNotFoundError:  # tests/ itself on sys.path (pytest rootdir insertion)
    from model_fakes import make_batch, spec_for

A, B, S = 3, 4, 5
SPEC = spec_for("continuous", A)


def test_derived_tables_match_the_builtin_registry():
    assert HEADS == LOSS_HEADS == registry.head_names() == ("dqn", "vec_dqn", "sp", "sv")
    assert TARGET_HEADS == registry.target_head_names() == ("dqn", "vec_dqn")
    assert POLICIES == registry.policy_names() == ("dqn", "vec_dqn", "sp")
    assert NEEDS_Q_STAR == ("sp", "sv")
    cfg = TrainConfig()
    for head in registry.all_heads():  # every built-in head has its config on TrainConfig
        hcfg = registry.loss_config(cfg, head)
        assert hcfg is not None and hcfg.weight >= 0, head.name
        assert hasattr(hcfg, "tau") == head.has_target, head.name


def test_builtin_adapters_call_the_contract_losses():
    spec = spec_for("continuous", A, q_star=True, action_mask=True)
    torch.manual_seed(0)
    model = MouseModel(ModelConfig(hidden_dim=16, num_layers=1, vec_dim=4), spec, HEADS)
    with torch.no_grad():  # online != target, so a swapped argument changes the result
        for p in model.online_heads.parameters():
            p.add_(torch.randn_like(p))
    batch = make_batch(spec, B, S)
    out = model(batch)
    cfg = TrainConfig(vec_dqn=VecDqnLossConfig(), sp=SpLossConfig(loss_type="js"),
                      sv=SvLossConfig())
    contract = {  # the calls as losses-api.txt writes them
        "dqn": lambda: dqn_loss(batch, out, cfg.dqn),
        "vec_dqn": lambda: vec_dqn_loss(batch, out["vec_dqn"], out["vec_dqn_target"], cfg.vec_dqn),
        "sp": lambda: sp_loss(batch, out["sp"], cfg.sp),
        "sv": lambda: sv_loss(batch, out["sv"], cfg.sv),
    }
    for head in registry.all_heads():
        loss, metrics = head.loss(batch, out, registry.loss_config(cfg, head))
        want_loss, want_metrics = contract[head.name]()
        assert torch.equal(loss, want_loss), head.name
        assert all(v.shape == () and not v.requires_grad for v in metrics.values()), head.name
        assert {k: v.item() for k, v in metrics.items()} == want_metrics, head.name


def test_register_refuses_clashing_names():
    toy = HeadSpec("dqn", lambda a, c: (a,), config="dqn", loss=lambda b, o, c: None)
    with pytest.raises(ValueError, match="clash"):
        registry.register(toy)
    with pytest.raises(ValueError, match="clash"):  # its output would shadow dqn's target
        registry.register(HeadSpec("dqn_target", lambda a, c: (a,), config="x", loss=toy.loss))
    assert registry.head_names() == HEADS


# --- a toy head, registered for the length of a test ----------------------------------------

@dataclass(frozen=True)
class ToyLossConfig:
    weight: float = 0.5
    tau: float = 0.25


def toy_loss(batch, out, cfg: ToyLossConfig):
    """Pull every entry of the toy head towards the reward stored at its step."""
    err = out["toy"] - batch["reward"][..., None]  # [B, S, A]
    loss = (err ** 2).mean()
    return loss, {"toy_mse": loss.detach()}


TOY = HeadSpec("toy", lambda num_actions, model_cfg: (num_actions,), config="toy",
               loss=toy_loss, has_target=True, act="greedy",
               scores=lambda out, action_mask: -out)  # acts on the smallest entry


@dataclass(frozen=True)
class ToyTrainConfig(TrainConfig):
    toy: ToyLossConfig = field(default_factory=ToyLossConfig)
    """The toy head's loss (a real head adds its field to TrainConfig the same way)."""


@contextmanager
def registered(spec: HeadSpec):
    registry.register(spec)
    try:
        yield spec
    finally:
        registry.unregister(spec.name)


@pytest.fixture
def toy_head():
    with registered(TOY):
        yield TOY


def test_one_registry_entry_builds_trains_and_acts_with_a_new_head(toy_head):
    cfg = ToyTrainConfig(lr=1e-2, seq_len=S, batch_size=B, dqn=DqnLossConfig(tau=0.0))
    assert cfg.active_heads() == ("dqn", "toy")
    torch.manual_seed(0)
    model = MouseModel(ModelConfig(hidden_dim=16, num_layers=1, num_attention_heads=2),
                       SPEC, heads_for(cfg, "toy"))
    batch = make_batch(SPEC, B, S)
    out = model(batch)
    assert set(out.keys()) == {"dqn", "dqn_target", "toy", "toy_target"}
    assert out["toy"].shape == out["toy_target"].shape == (B, S, A)

    opt = make_optimizer(model, cfg)
    online0 = [p.detach().clone() for p in model.online_heads["toy"].parameters()]
    target0 = [p.detach().clone() for p in model.target_heads["toy"].parameters()]
    m = {k: v.item() for k, v in train_step(model, opt, batch, cfg).items()}
    assert m["loss/total"] == pytest.approx(m["loss/dqn/dqn_loss"] + 0.5 * m["loss/toy/toy_mse"],
                                            rel=1e-5)
    online = list(model.online_heads["toy"].parameters())
    assert all(not torch.equal(o, o0) for o, o0 in zip(online, online0))  # it trained
    for t, t0, o in zip(model.target_heads["toy"].parameters(), target0, online):
        torch.testing.assert_close(t, 0.25 * o + 0.75 * t0)  # Polyak at ToyLossConfig.tau
    mse = [train_step(model, opt, batch, cfg)["loss/toy/toy_mse"].item() for _ in range(30)]
    assert mse[-1] < 0.5 * m["loss/toy/toy_mse"]

    last = TensorDict({"toy": torch.tensor([[3.0, -1.0, 2.0], [0.0, 5.0, -4.0]])}, batch_size=[2])
    assert select_action(last, "toy").tolist() == [1, 2]
    mask = torch.tensor([[True, False, True], [True, True, True]])
    assert select_action(last, "toy", action_mask=mask).tolist() == [2, 2]


def test_unregistering_leaves_the_registry_as_it_was():
    before = registry.all_heads()
    with registered(TOY):
        assert registry.head_names() == HEADS + ("toy",)
        assert "toy" in registry.policy_names()
    assert registry.all_heads() == before
    with pytest.raises(ValueError, match="unknown heads"):
        MouseModel(ModelConfig(), SPEC, ("dqn", "toy"))
    with pytest.raises(ValueError, match="policy"):
        heads_for(ToyTrainConfig(), "toy")
    # a config field without a registered head is just unused
    assert ToyTrainConfig().active_heads() == ("dqn",)
