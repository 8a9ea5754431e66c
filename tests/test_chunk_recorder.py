"""ChunkRecorder: records written into a chunk's arrays step by step, handed over as one chunk."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mouse.records import ChunkRecorder, RecordSpec, StreamRecorder, record_spec_for_env, validate_records


def cartpole_steps(steps: int, num_envs: int = 3, seed: int = 0):
    """(reset obs, [(action, obs, reward, term, trunc)]) of a real CartPole vector env."""
    env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync")
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        a = rng.integers(0, 2, num_envs)
        out.append((a, *env.step(a)[:4]))
    env.close()
    return obs, out, record_spec_for_env(env.single_observation_space, env.single_action_space)


def test_chunks_equal_the_per_step_records_stacked_stream_major():
    """The array recorder and the per-step one (stacked [N, K] -> [N*K]) give the same chunks,
    across episode ends (random CartPole falls within 40 steps) and chunk boundaries."""
    obs0, steps, spec = cartpole_steps(40)
    chunked = ChunkRecorder(spec, [4, 5, 6], chunk_steps=10, reward_transform=lambda r: 3 * r)
    single = StreamRecorder(spec, [4, 5, 6], reward_transform=lambda r: 3 * r)
    chunked.reset(obs0, policy_version=1)
    per_step, chunks = [single.reset(obs0, policy_version=1)], []
    for i, (a, o, r, term, trunc) in enumerate(steps):
        if chunked.steps == 10:
            chunks.append(chunked.take())
        chunked.step(a, o, r, term, trunc, policy_version=2 + i // 7)  # versions change mid-chunk
        per_step.append(single.step(a, o, r, term, trunc, policy_version=2 + i // 7))
    chunks.append(chunked.take())  # 41 records per stream: 4 full chunks and one of 1 step
    assert [len(c) for c in chunks] == [30, 30, 30, 30, 3]
    assert chunked.take() is None
    assert any(bool((c["done"] != 0).any()) for c in chunks), "an episode should end in 40 steps"
    for j, chunk in enumerate(chunks):
        k = len(chunk) // 3
        expected = torch.stack(per_step[10 * j:10 * j + k], dim=1).reshape(-1)  # [N, k] -> [N*k]
        assert chunk.keys() == expected.keys()
        for key in expected.keys():
            assert torch.equal(chunk[key], expected[key]), (j, key)
        validate_records(chunk, spec)


def test_a_taken_chunk_is_never_written_again():
    """Chunks travel zero-copy: the next steps write fresh arrays, not the chunk handed over."""
    obs0, steps, spec = cartpole_steps(8)
    rec = ChunkRecorder(spec, [0, 1, 2], chunk_steps=4)
    rec.reset(obs0)
    for s in steps[:3]:
        rec.step(*s)
    chunk = rec.take()
    before = chunk.clone()
    newest_obs = rec.newest["obs_continuous"].clone()
    for s in steps[3:7]:
        rec.step(*s)
    assert all(torch.equal(chunk[k], before[k]) for k in before.keys())
    assert not torch.equal(rec.newest["obs_continuous"], newest_obs)
    with pytest.raises(RuntimeError, match="take"):  # 4 steps pending: the chunk is full
        rec.step(*steps[7])


def test_newest_follows_the_last_step_and_the_episode_state():
    spec = RecordSpec("discrete", (), 4, q_star=True, action_mask=True)
    table = torch.arange(16.0).reshape(4, 4)
    rec = ChunkRecorder(spec, [10, 11], chunk_steps=3, num_env_actions=3, q_star_table=table)
    rec.reset(np.array([0, 1]), policy_version=5)
    no, yes = np.array([False, False]), np.array([True, False])
    rec.step(np.array([2, 1]), np.array([3, 2]), np.array([1.0, 0.5]), yes, no, policy_version=6)
    assert rec.newest["action"].tolist() == [2, 1] and rec.newest["obs_discrete"].tolist() == [3, 2]
    assert rec.done.tolist() == [1, 0] and rec.time.tolist() == [1, 1]
    # the step after a terminal one is the reset record: its action and reward are dropped
    rec.step(np.array([1, 1]), np.array([0, 3]), np.array([9.0, 1.0]), no, no, policy_version=6)
    assert rec.newest["action"].tolist() == [0, 1] and rec.newest["reward"].tolist() == [0.0, 1.0]
    assert rec.time.tolist() == [0, 2] and rec.done.tolist() == [0, 0]
    chunk = rec.take()
    assert chunk["stream_id"].tolist() == [10, 10, 10, 11, 11, 11]
    assert chunk["policy_version"].tolist() == [5, 6, 6] * 2
    assert torch.equal(chunk["q_star"], table[chunk["obs_discrete"]])
    assert chunk["action_mask"].tolist() == [[True, True, True, False]] * 6
    assert rec.action_mask.shape == (2, 4)
    validate_records(chunk, spec)
