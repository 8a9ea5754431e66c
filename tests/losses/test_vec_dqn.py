"""rope_rotate, vec_dqn_scores and vec_dqn_loss on D=2 vectors at known angles."""

import math

import pytest
import torch

from mouse.losses import VecDqnLossConfig, rope_rotate, vec_dqn_loss, vec_dqn_scores

from .cases import stream

PI = math.pi
T, F = True, False


def vecs(angles, norms=None):
    """[..., 2] unit (or given-norm) vectors at the given angles (radians)."""
    a = torch.tensor(angles, dtype=torch.float32)
    n = torch.ones_like(a) if norms is None else torch.tensor(norms, dtype=torch.float32)
    return torch.stack([a.cos(), a.sin()], -1) * n[..., None]


# ------------------------------------------------------------------ rope_rotate


@pytest.mark.parametrize("x,theta,expected", [
    ([1.0, 0.0], PI / 2, [0.0, 1.0]),
    ([1.0, 0.0], PI / 3, [0.5, math.sqrt(3) / 2]),
    ([0.0, 2.0], -PI / 2, [2.0, 0.0]),
    ([1.0, 0.0, 0.0, 2.0], PI / 2, [0.0, 1.0, -2.0, 0.0]),  # every pair by the same angle
])
def test_rope_rotate_known_angles(x, theta, expected):
    out = rope_rotate(torch.tensor(x), theta)
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)


def test_rope_rotate_broadcasts_theta_over_leading_dims():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]])  # [2, D=2]
    out = rope_rotate(x, torch.tensor([0.0, PI]))  # theta [2] ~ x[..., 0]
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [-1.0, -2.0]]), atol=1e-6, rtol=0)


def test_rope_rotate_odd_dim():
    with pytest.raises(ValueError, match="must be even"):
        rope_rotate(torch.zeros(3), 0.1)


# --------------------------------------------------------------- vec_dqn_scores


@pytest.mark.parametrize("angles,norms,expected", [
    # a0: (0 - pi/3) + (0 + pi/2); a1: pi/3 + (pi/3 + pi/2); a2: -pi/2 + (-pi/2 - pi/3)
    ([0, PI / 3, -PI / 2], [2.0, 0.5, 3.0], [PI / 6, 7 * PI / 6, -4 * PI / 3]),
    # wrap into (-pi, pi]: a1 - a2 = 3pi/2 counts as -pi/2, a2 - a1 as +pi/2
    ([0, 3 * PI / 4, -3 * PI / 4], None, [0.0, 3 * PI / 4 - PI / 2, -3 * PI / 4 + PI / 2]),
])
def test_scores_known_angles(angles, norms, expected):
    got = vec_dqn_scores(vecs(angles, norms))
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=0)


def test_scores_d4_equals_d2_when_second_pair_zero():
    v2 = vecs([0, PI / 3, -PI / 2])  # [3, 2]
    v4 = torch.cat([v2, torch.zeros(3, 2)], -1)  # [3, 4]
    torch.testing.assert_close(vec_dqn_scores(v4), vec_dqn_scores(v2), atol=1e-5, rtol=0)


def test_scores_action_mask_drops_action_from_sum_and_argmax():
    got = vec_dqn_scores(vecs([0, PI / 3, -PI / 2]), torch.tensor([T, F, T]))
    assert got[1] == float("-inf")
    # a0: 0 - (-pi/2); a2: -pi/2 - 0  (a1 no longer in the sum)
    torch.testing.assert_close(got[[0, 2]], torch.tensor([PI / 2, -PI / 2]), atol=1e-5, rtol=0)


# ----------------------------------------------------------------- vec_dqn_loss
# Pairs (b, t -> t+1), D=2. online angle of the taken action, greedy target angle:
#   (0,0): taken a1 @ pi/2 (norm 2); target t1 [0, pi/3, -pi/2] -> greedy pi/3; r 0.5
#   (0,1): taken a0 @ 0;            target t2 [0, 3pi/4, -3pi/4] -> greedy 3pi/4; r -1
#   (1,0): taken a2 @ -pi/4;        target t1 [pi/2, 0, pi/4] (scores 3pi/4, -3pi/4, 0)
#                                   -> greedy pi/2; r 0.25
#   (1,1): taken a1 @ pi;           target t2 [0, pi/3, -pi/2] -> greedy pi/3; r 0
# loss per pair = 1 - cos(online angle - (greedy angle + theta)).
ONLINE = [
    [[0, PI / 2, PI], [0, 1.0, 2.0], [0, PI / 3, -PI / 2]],
    [[0, 1.0, -PI / 4], [0, PI, 2.0], [0, 3 * PI / 4, -3 * PI / 4]],
]
ONLINE_NORMS = [[[1, 2, 1], [1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]]]
TARGET = [
    [[1.0, 2.0, 3.0], [0, PI / 3, -PI / 2], [0, 3 * PI / 4, -3 * PI / 4]],
    [[1.0, 2.0, 3.0], [PI / 2, 0, PI / 4], [0, PI / 3, -PI / 2]],
]
FIELDS = dict(
    action=[[0, 1, 0], [0, 2, 1]],
    reward=[[0.0, 0.5, -1.0], [0.0, 0.25, 0.0]],
    xformed_reward=[[0.0, 0.1, 0.2], [0.0, 0.3, -0.4]],
    done=[[0, 0, 1], [0, 0, 2]],
)


def loss_of(theta):
    """Hand formula for the four pairs given their rotation angles [[t00, t01], [t10, t11]]."""
    return [[1 - math.cos(PI / 2 - (PI / 3 + theta[0][0])), 1 - math.cos(0 - (3 * PI / 4 + theta[0][1]))],
            [1 - math.cos(-PI / 4 - (PI / 2 + theta[1][0])), 1 - math.cos(PI - (PI / 3 + theta[1][1]))]]


def mean_of(losses, keep=((0, 0), (0, 1), (1, 0), (1, 1))):
    return sum(losses[b][t] for b, t in keep) / len(keep)


def inputs(requires_grad=False, **extra):
    td = stream(**{**FIELDS, **extra})
    online = vecs(ONLINE, ONLINE_NORMS).requires_grad_(requires_grad)  # [2, 3, 3, 2]
    target = vecs(TARGET).requires_grad_(requires_grad)
    return td, online, target


CASES = [
    ("plain", {}, {}, mean_of(loss_of([[0.5, -1.0], [0.25, 0.0]]))),
    ("scale_shift", {"reward_scale": 2.0, "reward_shift": 0.1}, {},
     mean_of(loss_of([[2 * 0.5 + 0.1, 2 * -1.0 + 0.1], [2 * 0.25 + 0.1, 0.1]]))),
    ("xformed_reward", {"use_xformed_reward": True}, {}, mean_of(loss_of([[0.1, 0.2], [0.3, -0.4]]))),
    # row means -0.25 and 0.125
    ("normalize_mean", {"normalize_reward_mean": True}, {},
     mean_of(loss_of([[0.75, -0.75], [0.125, -0.125]]))),
    ("episode_start_mid_window", {}, {"time": [[5, 6, 7], [4, 0, 1]]},
     mean_of(loss_of([[0.5, -1.0], [0.25, 0.0]]), keep=((0, 0), (0, 1), (1, 1)))),
    ("padding", {}, {"valid": [[T, T, F], [T, T, T]]},
     mean_of(loss_of([[0.5, -1.0], [0.25, 0.0]]), keep=((0, 0), (1, 0), (1, 1)))),
]


@pytest.mark.parametrize("name,cfg,extra,expected", CASES, ids=[c[0] for c in CASES])
def test_vec_dqn_loss_values(name, cfg, extra, expected):
    td, online, target = inputs(**extra)
    loss, m = vec_dqn_loss(td, online, target, VecDqnLossConfig(**cfg))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert m["vec_dqn_loss"] == pytest.approx(expected, rel=1e-5)


def test_action_mask_changes_greedy_target():
    # at row 0, t1 action 1 is not allowed: greedy becomes a0 (angle 0) instead of a1 (pi/3)
    mask = torch.ones(2, 3, 3, dtype=torch.bool)
    mask[0, 1, 1] = False
    td, online, target = inputs(action_mask=mask)
    loss, _ = vec_dqn_loss(td, online, target, VecDqnLossConfig())
    per = loss_of([[0.5, -1.0], [0.25, 0.0]])
    per[0][0] = 1 - math.cos(PI / 2 - (0 + 0.5))
    assert loss.item() == pytest.approx(mean_of(per), rel=1e-5)


def test_metrics_keys_and_score_stats():
    td, online, target = inputs()
    _, m = vec_dqn_loss(td, online, target, VecDqnLossConfig())
    assert set(m) == {"vec_dqn_loss", "vec_dqn_score_abs_min", "vec_dqn_score_abs_max",
                      "vec_dqn_score_abs_mean"}
    # |scores| / pi at the last step: row 0 [1/6, 7/6, 4/3], row 1 [0, 1/4, 1/4]
    assert m["vec_dqn_score_abs_min"] == pytest.approx(0.0, abs=1e-6)
    assert m["vec_dqn_score_abs_max"] == pytest.approx(4 / 3, rel=1e-5)
    assert m["vec_dqn_score_abs_mean"] == pytest.approx((1 / 6 + 7 / 6 + 4 / 3 + 0 + 1 / 4 + 1 / 4) / 6,
                                                        rel=1e-5)
    # padding at the last step of row 1 and a1 not allowed there in row 0
    mask = torch.ones(2, 3, 3, dtype=torch.bool)
    mask[0, 2, 1] = False
    td, online, target = inputs(valid=[[T, T, T], [T, T, F]], action_mask=mask)
    _, m = vec_dqn_loss(td, online, target, VecDqnLossConfig())
    # row 0 over {a0 @ 0, a2 @ -pi/2}: scores pi/2, -pi/2 -> |.|/pi = 1/2, 1/2
    assert m["vec_dqn_score_abs_min"] == pytest.approx(0.5, rel=1e-5)
    assert m["vec_dqn_score_abs_max"] == pytest.approx(0.5, rel=1e-5)
    assert m["vec_dqn_score_abs_mean"] == pytest.approx(0.5, rel=1e-5)


def test_gradients_online_only():
    td, online, target = inputs(requires_grad=True)
    loss, _ = vec_dqn_loss(td, online, target, VecDqnLossConfig())
    loss.backward()
    assert target.grad is None or not target.grad.any()
    assert torch.isfinite(online.grad).all() and online.grad.abs().sum() > 0
    assert not online.grad[:, -1].any()  # the last state has no outgoing transition
    assert not online.grad[0, 0, [0, 2]].any()  # only the taken action (a1) is trained


def test_inputs_not_mutated():
    td, online, target = inputs()
    before = (td.clone(), online.clone(), target.clone())
    vec_dqn_loss(td, online, target, VecDqnLossConfig(normalize_reward_mean=True))
    assert (td == before[0]).all()
    assert torch.equal(online, before[1]) and torch.equal(target, before[2])


def test_config_fields_and_defaults():
    cfg = VecDqnLossConfig()
    doc = dict(weight=1.0, tau=0.005, reward_scale=1.0, reward_shift=0.0,
               normalize_reward_mean=False, normalize_reward_std=False, use_xformed_reward=False)
    for k, v in doc.items():
        assert getattr(cfg, k) == v, k
    with pytest.raises(ValueError, match="normalize_reward_eps must be > 0"):
        VecDqnLossConfig(normalize_reward_eps=-1.0)


def test_bad_inputs():
    td, online, target = inputs()
    cfg = VecDqnLossConfig()
    with pytest.raises(ValueError, match=r"vector dim D must be even.*got D=3"):
        vec_dqn_loss(td, torch.zeros(2, 3, 3, 3), torch.zeros(2, 3, 3, 3), cfg)
    with pytest.raises(ValueError, match=r"must be \[B, S, A, D\]"):
        vec_dqn_loss(td, torch.zeros(2, 3, 3), target, cfg)
    with pytest.raises(ValueError, match=r"target \(out\['vec_dqn_target'\]\) has shape \(2, 3, 4, 2\)"):
        vec_dqn_loss(td, online, torch.zeros(2, 3, 4, 2), cfg)
    with pytest.raises(ValueError, match=r"online \(out\['vec_dqn'\]\) has shape \(2, 4, 3, 2\)"):
        vec_dqn_loss(td, torch.zeros(2, 4, 3, 2), online, cfg)
    with pytest.raises(ValueError, match=r"S >= 2"):
        vec_dqn_loss(td[:, :1], online[:, :1], target[:, :1], cfg)
    with pytest.raises(KeyError, match=r"no \['action'\]"):
        vec_dqn_loss(td.exclude("action"), online, target, cfg)
    with pytest.raises(KeyError, match=r"no \['xformed_reward'\]"):
        vec_dqn_loss(td.exclude("xformed_reward"), online, target,
                     VecDqnLossConfig(use_xformed_reward=True))
