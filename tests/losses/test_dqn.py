"""dqn_loss against hand-computed values on the base window of cases.py.

Per pair (see cases.py): q_sa = [[3, 5], [-1, 3]], max_next = [[10, 5], [4, -1]],
reward = [[1, 2], [-1, 0.5]], done = [[alive, terminal], [alive, truncated]].
With G below: discount = [[0.5, 0.25], [0.5, 0.75]], so the TD targets are
[[1 + 0.5*10, 2 + 0.25*5], [-1 + 0.5*4, 0.5 + 0.75*-1]] = [[6, 3.25], [1, -0.25]].
"""

import dataclasses
import math

import pytest
import torch
from tensordict import TensorDict

from mouse.losses import DqnLossConfig, dqn_loss

from .cases import dqn_inputs, nan_free_backward, stream

G = dict(gamma=0.5, gamma_terminal=0.25, gamma_truncated=0.75)
T, F = True, False


def lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


CASES = [
    # (id, cfg kwargs, extra step fields, expected loss)
    ("plain", G, {},
     ((3 - 6) ** 2 + (5 - 3.25) ** 2 + (-1 - 1) ** 2 + (3 - -0.25) ** 2) / 4),
    ("default_gammas_zero_bootstrap_at_ends", {}, {},
     ((3 - (1 + 0.99 * 10)) ** 2 + (5 - 2) ** 2 + (-1 - (-1 + 0.99 * 4)) ** 2 + (3 - 0.5) ** 2) / 4),
    ("scale_shift", {**G, "reward_scale": 2.0, "reward_shift": 1.0}, {},  # r' = 2r + 1
     ((3 - (3 + 5)) ** 2 + (5 - (5 + 1.25)) ** 2 + (-1 - (-1 + 2)) ** 2 + (3 - (2 - 0.75)) ** 2) / 4),
    ("xformed_reward", {**G, "use_xformed_reward": True}, {},  # r = [[10, 20], [-10, 5]]
     ((3 - (10 + 5)) ** 2 + (5 - (20 + 1.25)) ** 2 + (-1 - (-10 + 2)) ** 2 + (3 - (5 - 0.75)) ** 2) / 4),
    # row means 1.5 and -0.25 -> r = [[-0.5, 0.5], [-0.75, 0.75]]
    ("normalize_mean", {**G, "normalize_reward_mean": True}, {},
     ((3 - (-0.5 + 5)) ** 2 + (5 - (0.5 + 1.25)) ** 2 + (-1 - (-0.75 + 2)) ** 2 + (3 - 0) ** 2) / 4),
    # row stds (population) 0.5 and 0.75, mean not subtracted -> r / std
    ("normalize_std", {**G, "normalize_reward_std": True}, {},
     ((3 - (1 / 0.5 + 5)) ** 2 + (5 - (2 / 0.5 + 1.25)) ** 2
      + (-1 - (-1 / 0.75 + 2)) ** 2 + (3 - (0.5 / 0.75 - 0.75)) ** 2) / 4),
    # (r - mean) / std * 2 = [[-2, 2], [-2, 2]]
    ("normalize_mean_std_target2", {**G, "normalize_reward_mean": True, "normalize_reward_std": True,
                                    "normalize_reward_target_std": 2.0}, {},
     ((3 - (-2 + 5)) ** 2 + (5 - (2 + 1.25)) ** 2 + (-1 - (-2 + 2)) ** 2 + (3 - (2 - 0.75)) ** 2) / 4),
    # normalise first ([[-1, 1], [-1, 1]]), then r * 0.5 + 1 = [[0.5, 1.5], [0.5, 1.5]]
    ("normalize_then_scale", {**G, "normalize_reward_mean": True, "normalize_reward_std": True,
                              "reward_scale": 0.5, "reward_shift": 1.0}, {},
     ((3 - (0.5 + 5)) ** 2 + (5 - (1.5 + 1.25)) ** 2 + (-1 - (0.5 + 2)) ** 2 + (3 - (1.5 - 0.75)) ** 2) / 4),
    # row 1 record 1 starts a new episode: pair (0, 1) of row 1 is not a transition
    ("episode_start_mid_window", G, {"time": [[3, 4, 5], [4, 0, 1]]},
     ((3 - 6) ** 2 + (5 - 3.25) ** 2 + (3 - -0.25) ** 2) / 3),
    # row 1 record 2 is padding: pair (1, 2) of row 1 is dropped
    ("padding", G, {"valid": [[T, T, T], [T, T, F]]},
     ((3 - 6) ** 2 + (5 - 3.25) ** 2 + (-1 - 1) ** 2) / 3),
    # next-state max over allowed actions only: max(0, 1) = 1 and max(-3, -2) = -2
    ("action_mask_max", G, {"action_mask": [[[T, T, T], [F, T, T], [T, T, T]],
                                            [[T, T, T], [T, T, T], [F, T, T]]]},
     ((3 - (1 + 0.5 * 1)) ** 2 + (5 - 3.25) ** 2 + (-1 - 1) ** 2 + (3 - (0.5 + 0.75 * -2)) ** 2) / 4),
    # + 0.5 * (|td_target| + 1) * (logsumexp q_t - q_sa)
    ("cql", {**G, "cql_weight": 0.5}, {},
     ((3 - 6) ** 2 + 0.5 * (6 + 1) * (lse(1, 2, 3) - 3)
      + (5 - 3.25) ** 2 + 0.5 * (3.25 + 1) * (lse(4, 5, 6) - 5)
      + (-1 - 1) ** 2 + 0.5 * (1 + 1) * (lse(0, -1, 2) - -1)
      + (3 - -0.25) ** 2 + 0.5 * (0.25 + 1) * (lse(3, 1, -2) - 3)) / 4),
    ("cql_scale_eps", {**G, "cql_weight": 1.0, "cql_scale_q_eps": 0.0}, {},
     ((3 - 6) ** 2 + 6 * (lse(1, 2, 3) - 3)
      + (5 - 3.25) ** 2 + 3.25 * (lse(4, 5, 6) - 5)
      + (-1 - 1) ** 2 + 1 * (lse(0, -1, 2) - -1)
      + (3 - -0.25) ** 2 + 0.25 * (lse(3, 1, -2) - 3)) / 4),
    # logsumexp over allowed actions of state t only: row 0 t0 drops a0, row 1 t1 drops a1
    ("cql_action_mask", {**G, "cql_weight": 0.5}, {
        "action_mask": [[[F, T, T], [T, T, T], [T, T, T]], [[T, T, T], [T, F, T], [T, T, T]]]},
     ((3 - 6) ** 2 + 0.5 * (6 + 1) * (lse(2, 3) - 3)
      + (5 - 3.25) ** 2 + 0.5 * (3.25 + 1) * (lse(4, 5, 6) - 5)
      + (-1 - 1) ** 2 + 0.5 * (1 + 1) * (lse(0, -1, 2) - -1)
      + (3 - -0.25) ** 2 + 0.5 * (0.25 + 1) * (lse(3, -2) - 3)) / 4),
]


@pytest.mark.parametrize("name,cfg,extra,expected", CASES, ids=[c[0] for c in CASES])
def test_dqn_loss_values(name, cfg, extra, expected):
    td, out, _, _ = dqn_inputs(**extra)
    loss, metrics = dqn_loss(td, out, DqnLossConfig(**cfg))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["dqn_loss"] == pytest.approx(expected, rel=1e-5)


def test_metrics_keys_and_values():
    td, out, _, _ = dqn_inputs()
    _, m = dqn_loss(td, out, DqnLossConfig(**G))
    assert set(m) == {"q_values_mean", "q_values_std", "q_values_min", "q_values_max",
                      "q_values_target", "dqn_loss"}
    assert all(type(v) is float for v in m.values())
    # over q_sa = [3, 5, -1, 3] and targets [6, 3.25, 1, -0.25]
    assert m["q_values_mean"] == pytest.approx(2.5)
    assert m["q_values_std"] == pytest.approx(math.sqrt((0.5**2 + 2.5**2 + 3.5**2 + 0.5**2) / 4))
    assert m["q_values_min"] == -1.0 and m["q_values_max"] == 5.0
    assert m["q_values_target"] == pytest.approx((6 + 3.25 + 1 - 0.25) / 4)

    _, m = dqn_loss(td, out, DqnLossConfig(**G, cql_weight=0.5))
    assert set(m) == {"q_values_mean", "q_values_std", "q_values_min", "q_values_max",
                      "q_values_target", "dqn_loss", "cql_penalty"}
    cql = 0.5 * (7 * (lse(1, 2, 3) - 3) + 4.25 * (lse(4, 5, 6) - 5)
                 + 2 * (lse(0, -1, 2) + 1) + 1.25 * (lse(3, 1, -2) - 3)) / 4
    assert m["cql_penalty"] == pytest.approx(cql, rel=1e-5)
    td_part = (9 + 1.75**2 + 4 + 3.25**2) / 4
    assert m["dqn_loss"] == pytest.approx(td_part + cql, rel=1e-5)


@pytest.mark.parametrize("cql_weight", [0.0, 0.5])
def test_gradients_online_only(cql_weight):
    td, out, q, qt = dqn_inputs(requires_grad=True)
    loss, _ = dqn_loss(td, out, DqnLossConfig(**G, cql_weight=cql_weight))
    loss.backward()
    assert qt.grad is None or not qt.grad.any()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert q.grad[:, :-1].abs().sum() > 0
    assert not q.grad[:, -1].any()  # the last state has no outgoing transition
    if cql_weight == 0:
        # d/dq_sa of mean((q_sa - y)^2) = 2 (q_sa - y) / 4, only at the taken actions
        expected = torch.zeros(2, 3, 3)
        expected[0, 0, 2] = 2 * (3 - 6) / 4
        expected[0, 1, 1] = 2 * (5 - 3.25) / 4
        expected[1, 0, 1] = 2 * (-1 - 1) / 4
        expected[1, 1, 0] = 2 * (3 + 0.25) / 4
        torch.testing.assert_close(q.grad, expected)


def test_all_pairs_masked_gives_zero_and_finite_grads():
    # padding everywhere, plus padding records whose action_mask allows nothing
    mask = torch.ones(2, 3, 3, dtype=torch.bool)
    mask[1] = False
    td, out, q, _ = dqn_inputs(requires_grad=True, valid=[[T, F, F], [F, F, F]], action_mask=mask)
    with nan_free_backward():
        loss, m = dqn_loss(td, out, DqnLossConfig(**G, cql_weight=1.0))
        loss.backward()
    assert loss.item() == 0.0 and all(v == 0.0 for v in m.values())
    assert torch.isfinite(q.grad).all() and not q.grad.any()


def test_inputs_not_mutated():
    td, out, _, _ = dqn_inputs(time=[[3, 4, 5], [4, 0, 1]])
    before_td, before_out = td.clone(), out.clone()
    dqn_loss(td, out, DqnLossConfig(**G, cql_weight=0.5, normalize_reward_mean=True,
                                    normalize_reward_std=True))
    assert (td == before_td).all() and (out == before_out).all()


def test_config_fields_and_defaults():
    cfg = DqnLossConfig()
    doc = dict(weight=1.0, gamma=0.99, gamma_terminal=0.0, gamma_truncated=0.0, tau=0.005,
               normalize_reward_mean=False, normalize_reward_std=False, cql_weight=0.0,
               reward_scale=1.0, reward_shift=0.0, use_xformed_reward=False)
    for k, v in doc.items():
        assert getattr(cfg, k) == v, k
    assert cfg.cql_scale_q_eps == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.gamma = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("kwargs,match", [
    ({"gamma": 1.5}, "gamma must be in"),
    ({"gamma_terminal": -0.1}, "gamma_terminal must be in"),
    ({"gamma_truncated": 2.0}, "gamma_truncated must be in"),
    ({"cql_weight": -1.0}, "cql_weight must be >= 0"),
    ({"cql_scale_q_eps": -1.0}, "cql_scale_q_eps must be >= 0"),
    ({"normalize_reward_eps": 0.0}, "normalize_reward_eps must be > 0"),
    ({"normalize_reward_target_std": 0.0}, "normalize_reward_target_std must be > 0"),
    ({"weight": -1.0}, "weight must be >= 0"),
    ({"tau": 1.5}, "tau must be <= 1"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DqnLossConfig(**kwargs)


def test_window_too_short():
    td = stream(action=[[0], [0]], reward=[[0.0], [0.0]], done=[[0], [0]])
    out = {"dqn": torch.zeros(2, 1, 3), "dqn_target": torch.zeros(2, 1, 3)}
    with pytest.raises(ValueError, match=r"at least 2 steps \(S >= 2\), got S=1"):
        dqn_loss(td, out, DqnLossConfig())


def test_not_a_window():
    td = TensorDict({"action": torch.zeros(4, dtype=torch.long)}, batch_size=[4])
    with pytest.raises(ValueError, match=r"batch dims \[B, S\]"):
        dqn_loss(td, {}, DqnLossConfig())


def test_missing_output_key():
    td, out, _, _ = dqn_inputs()
    with pytest.raises(KeyError, match=r"model output has no \['dqn_target'\].*enable the dqn head"):
        dqn_loss(td, {"dqn": out["dqn"]}, DqnLossConfig())


def test_missing_record_keys():
    td, out, _, _ = dqn_inputs()
    with pytest.raises(KeyError, match=r"step_stream has no \['done'\]"):
        dqn_loss(td.exclude("done"), out, DqnLossConfig())
    with pytest.raises(KeyError, match=r"no \['xformed_reward'\].*use_xformed_reward=False"):
        dqn_loss(td.exclude("xformed_reward"), out, DqnLossConfig(use_xformed_reward=True))


@pytest.mark.parametrize("which,shape,match", [
    ("dqn", (2, 4, 3), r"out\['dqn'\] has shape \(2, 4, 3\), expected \[B, S, A\] = \(2, 3, 3\)"),
    ("dqn", (2, 3), r"out\['dqn'\] has shape \(2, 3\)"),
    ("dqn_target", (2, 3, 4), r"out\['dqn_target'\] has shape \(2, 3, 4\)"),
])
def test_output_shape_mismatch(which, shape, match):
    td, out, _, _ = dqn_inputs()
    out = {**out.to_dict(), which: torch.zeros(shape)}
    with pytest.raises(ValueError, match=match):
        dqn_loss(td, out, DqnLossConfig())


def test_bad_action_and_mask():
    td, out, _, _ = dqn_inputs()
    bad = td.clone()
    bad["action"] = bad["action"].float()
    with pytest.raises(ValueError, match="must be int64 action indices"):
        dqn_loss(bad, out, DqnLossConfig())
    bad = td.clone()
    bad["action_mask"] = torch.ones(2, 3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"action_mask'\] has shape \(2, 3, 4\)"):
        dqn_loss(bad, out, DqnLossConfig())
