"""The step-record contract: schema, validator and the vector-env recorder's alignment."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import dataclasses
import math

from mouse.records import (
    MAX_VERSION,
    RecordError,
    RecordSpec,
    StreamRecorder,
    continuity_problems,
    episode_problems,
    record_problems,
    record_spec_for_env,
    validate_records,
)

SPEC = RecordSpec("continuous", (4,), 2)


def episode_records(n=5, stream=0, done_last=1):
    """n consecutive records of one episode of one stream (time 0..n-1)."""
    td = SPEC.empty(n)
    td["time"] = torch.arange(n)
    td["action"] = torch.tensor([0] + [1] * (n - 1))
    td["reward"] = torch.tensor([0.0] + [1.0] * (n - 1))
    td["xformed_reward"] = td["reward"].clone()
    td["done"][-1] = done_last
    td["stream_id"][:] = stream
    return td


def test_valid_records_pass_unchanged():
    td = episode_records()
    assert validate_records(td, SPEC) is td


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda td: td.del_("reward"), "reward: missing"),
        (lambda td: td.set("extra", torch.zeros(5)), "extra: unknown field"),
        (lambda td: td.set("done", td["done"].int()), "done: dtype"),
        (lambda td: td.set("obs_continuous", torch.zeros(5, 3)), "per-step shape"),
        (lambda td: td["reward"].__setitem__(2, float("nan")), "reward: contains NaN"),
        (lambda td: td["obs_continuous"].__setitem__((1, 0), float("inf")), "obs_continuous: contains NaN or inf"),
        (lambda td: td["done"].__setitem__(2, 3), "outside {0, 1, 2}"),
        (lambda td: td["time"].__setitem__(3, 7), "not consecutive"),
        (lambda td: td["done"].__setitem__(0, 1), "time 0"),
        (lambda td: td["action"].__setitem__(0, 1), "must be 0 at the first step"),
        (lambda td: td["action"].__setitem__(2, 5), "action: outside"),
        (lambda td: td["action"].__setitem__(2, -1), r"action: outside \[0, 2\)"),
        (lambda td: td["done"].__setitem__(2, -1), r"done: values \[-1, 0, 1\] outside \{0, 1, 2\}"),
        (lambda td: td["time"].__setitem__(3, -1), "time: negative step index"),
    ],
)
def test_bad_records_name_the_problem(mutate, message):
    td = episode_records()
    mutate(td)
    with pytest.raises(RecordError, match=message):
        validate_records(td, SPEC)


def test_every_problem_is_listed_at_once():
    td = episode_records()
    td.del_("reward")
    td.del_("time")
    with pytest.raises(RecordError) as e:
        validate_records(td, SPEC)
    assert len(e.value.problems) == 2


def test_q_star_allows_minus_inf_only():
    spec = RecordSpec("discrete", (), 3, q_star=True)
    td = spec.empty(2)
    td["q_star"][:, 2] = float("-inf")
    validate_records(td, spec, consecutive=False)
    td["q_star"][0, 0] = float("inf")
    with pytest.raises(RecordError, match=r"q_star: contains NaN or \+inf"):
        validate_records(td, spec, consecutive=False)


def test_two_streams_interleaved_are_each_consecutive():
    a, b = episode_records(4, stream=0), episode_records(4, stream=1)
    both = torch.stack([a, b], 1).reshape(-1)  # interleaved: a0 b0 a1 b1 ...
    validate_records(both, SPEC)


def test_spec_for_env_kinds_and_padding():
    cart = gym.make("CartPole-v1")
    s = record_spec_for_env(cart.observation_space, cart.action_space)
    assert (s.obs_kind, s.obs_shape, s.num_actions, s.action_mask) == ("continuous", (4,), 2, False)
    lake = gym.make("FrozenLake-v1")
    s = record_spec_for_env(lake.observation_space, lake.action_space, num_actions=6)
    assert (s.obs_kind, s.obs_shape, s.num_actions, s.action_mask) == ("discrete", (), 6, True)
    with pytest.raises(ValueError, match="discrete action space"):
        record_spec_for_env(cart.observation_space, gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="head has 1 actions"):
        record_spec_for_env(lake.observation_space, lake.action_space, num_actions=1)


def test_recorder_alignment_across_episode_end():
    """Record t = obs_t with the action/reward/done that produced it; reset step has 0s."""
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    spec = record_spec_for_env(env.single_observation_space, env.single_action_space)
    rec = StreamRecorder(spec, [7, 8], reward_transform=lambda r: 2 * r)
    obs, _ = env.reset(seed=0)
    records = [rec.reset(obs)]
    actions = []
    for t in range(200):
        a = np.array([t % 2, 1])  # env 1 always pushes right: falls within ~10 steps
        actions.append(a)
        obs, r, term, trunc, _ = env.step(a)
        records.append(rec.step(a, obs, r, term, trunc, policy_version=3))
        np.testing.assert_allclose(records[-1]["obs_continuous"].numpy(), obs)
    td = torch.stack(records, 1)  # [2, T]
    validate_records(td.reshape(-1), spec)
    s1 = td[1]
    end = int((s1["done"] == 1).nonzero()[0])
    assert s1["action"][end] == 1 and s1["reward"][end] == 1.0  # the step that fell
    assert s1["time"][end] == end and s1["time"][end + 1] == 0  # next record is the reset
    assert s1["action"][end + 1] == 0 and s1["reward"][end + 1] == 0 and s1["done"][end + 1] == 0
    assert s1["time"][end + 2] == 1
    assert torch.equal(td["xformed_reward"], 2 * td["reward"])
    assert set(td["stream_id"][0].tolist()) == {7} and set(td["stream_id"][1].tolist()) == {8}
    assert td["policy_version"][:, 1:].eq(3).all() and td["policy_version"][:, 0].eq(0).all()
    # the action stored at t+1 is the one chosen after seeing obs_t (unless t+1 is a reset)
    live = s1["time"][1:] != 0
    chosen = torch.tensor(np.stack(actions))[:, 1]
    assert torch.equal(s1["action"][1:][live], chosen[live])


def test_recorder_attaches_q_star_and_mask():
    spec = RecordSpec("discrete", (), 4, q_star=True, action_mask=True)
    table = torch.arange(8.0).reshape(2, 4)
    rec = StreamRecorder(spec, [0, 1], num_env_actions=3, q_star_table=table)
    td = rec.reset(np.array([1, 0]))
    assert torch.equal(td["q_star"], table[[1, 0]])
    assert td["action_mask"].tolist() == [[True, True, True, False]] * 2
    with pytest.raises(ValueError, match="q_star_table"):
        StreamRecorder(spec, [0])


def test_problem_messages_are_exact():
    """The learner logs these strings: they stay the same whatever the checks' implementation."""
    td = episode_records()
    td["done"][1], td["action"][3] = 7, 2
    td["obs_continuous"][0, 0] = float("nan")
    td.del_("policy_version")
    assert record_problems(td, SPEC) == [
        "obs_continuous: contains NaN or inf",
        "policy_version: missing (dtype torch.int64, per-step shape ())",
    ]
    td["obs_continuous"][0, 0] = 0.0
    td["policy_version"] = torch.zeros(5, dtype=torch.int64)
    assert record_problems(td, SPEC) == [
        "done: values [0, 1, 7] outside {0, 1, 2}",
        "action: outside [0, 2)",
    ]


@pytest.mark.parametrize("interleave", [False, True], ids=["grouped", "interleaved"])
def test_continuity_messages_name_each_stream_first_break(interleave):
    a, b = episode_records(6, stream=0), episode_records(6, stream=3, done_last=2)
    a["time"][4:] += 1  # stream 0: 0 1 2 3 5 6
    b["time"][2] = 0  # stream 3: 0 1 0 3 4 5 (a restart without a done, then a jump)
    td = torch.stack([a, b], 1).reshape(-1) if interleave else torch.cat([a, b])
    assert continuity_problems(td) == [
        "stream 0: time 5 follows time 3 with done 0 (expected 4): steps are not consecutive",
        "stream 3: time 0 follows time 1 with done 0 (expected 2): steps are not consecutive",
    ]
    assert continuity_problems(torch.cat([b[:2], a[:3], b[3:]])) == [  # stream 3 out of order
        "stream 3: time 3 follows time 1 with done 0 (expected 2): steps are not consecutive",
    ]


def test_discrete_observation_must_be_a_valid_state():
    lake = gym.make("FrozenLake-v1")
    spec = record_spec_for_env(lake.observation_space, lake.action_space)
    assert spec.num_obs_states == 16
    td = spec.empty(3)
    td["obs_discrete"] = torch.tensor([0, 15, 16])
    with pytest.raises(RecordError, match=r"obs_discrete: outside \[0, 16\)"):
        validate_records(td, spec, consecutive=False)
    td["obs_discrete"] = torch.tensor([0, -1, 3])
    with pytest.raises(RecordError, match="obs_discrete: outside"):
        validate_records(td, spec, consecutive=False)


# --- magnitude and range bounds --------------------------------------------------------------

BOUNDED = dataclasses.replace(SPEC, max_abs_obs=100.0, max_abs_reward=10.0)


@pytest.mark.parametrize("mutate, message", [
    (lambda td: td["obs_continuous"].__setitem__((1, 2), 3e38), "obs_continuous: magnitude above 100"),
    (lambda td: td["obs_continuous"].__setitem__((1, 2), -100.5), "obs_continuous: magnitude above 100"),
    (lambda td: td["reward"].__setitem__(2, 11.0), "reward: magnitude above 10"),
    (lambda td: td["xformed_reward"].__setitem__(2, -1e30), "xformed_reward: magnitude above 10"),
    (lambda td: td["policy_version"].__setitem__(2, MAX_VERSION + 1), r"policy_version: outside \[-1, 2\*\*53\]"),
    (lambda td: td["policy_version"].__setitem__(2, -2), r"policy_version: outside \[-1, 2\*\*53\]"),
])
def test_finite_but_absurd_values_are_rejected(mutate, message):
    """3e38 passes an isfinite check, then overflows the squared TD error: the spec bounds it."""
    td = episode_records()
    td["obs_continuous"][:] = 100.0  # at the bound: fine
    td["reward"][1:] = -10.0
    td["policy_version"][:] = MAX_VERSION
    td["policy_version"][0] = -1  # before the first weights
    validate_records(td, BOUNDED)
    mutate(td)
    with pytest.raises(RecordError, match=message):
        validate_records(td, BOUNDED)
    assert record_problems(td, SPEC) == [] or "policy_version" in message  # unbounded spec: magnitudes pass


def test_q_star_bound_spares_minus_inf():
    spec = RecordSpec("discrete", (), 3, q_star=True, max_abs_q_star=50.0)
    td = spec.empty(2)
    td["q_star"] = torch.tensor([[-50.0, 50.0, -math.inf], [1.0, 2.0, 3.0]])
    validate_records(td, spec, consecutive=False)
    td["q_star"][1, 0] = -51.0
    with pytest.raises(RecordError, match="q_star: finite entries of magnitude above 50"):
        validate_records(td, spec, consecutive=False)


def test_unbounded_keeps_the_layout_and_drops_the_bounds():
    assert BOUNDED.unbounded() == SPEC and BOUNDED != SPEC


def test_episode_returns_are_bounded_by_reward_per_step():
    ok = [{"stream_id": 0, "return": 30.0, "length": 3, "policy_version": 2},
          {"stream_id": 1, "return": -10.0, "length": 1, "policy_version": -1}]
    assert episode_problems(ok, BOUNDED) == []
    assert episode_problems([{**ok[0], "return": 1e300}], SPEC) == []  # no bound: finite is enough
    assert episode_problems([{**ok[0], "return": 1e300}], BOUNDED) == [
        "episode return 1e+300 over 3 steps exceeds max_abs_reward 10 per step"]
    assert episode_problems([{**ok[0], "return": 0.5, "length": 0}], BOUNDED) != []
