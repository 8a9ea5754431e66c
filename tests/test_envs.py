"""Envs as mouse makes them: a 2-D uint8 observation is a one-channel image, end to end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mouse.cli import parse_run_config
from mouse.components import build_model
from mouse.config import EnvConfig
from mouse.envs import describe_env, make_vector_env
from mouse.records import StreamRecorder, record_spec_for_env, validate_records

GRAY_ID = "mouse-test/Gray-v0"


class GrayFrames(gym.Env):
    """[6, 5] uint8 frames whose pixels all equal the step count (so each record can be checked)."""

    def __init__(self, dtype=np.uint8):
        high = 255 if dtype == np.uint8 else 1.0
        self.observation_space = gym.spaces.Box(0, high, (6, 5), dtype)
        self.action_space = gym.spaces.Discrete(2)
        self.dtype, self.t = dtype, 0

    def frame(self):
        return np.full((6, 5), self.t, self.dtype)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frame(), {}

    def step(self, action):
        self.t += 1
        return self.frame(), 1.0, self.t == 3, False, {}


if GRAY_ID not in gym.registry:
    gym.register(GRAY_ID, entry_point=GrayFrames)


@pytest.mark.parametrize("shape, kind, rec_shape", [
    ((6, 5), "image", (6, 5, 1)),  # grayscale frame: one channel, not 30 floats
    ((6, 5, 3), "image", (6, 5, 3)),
    ((4,), "continuous", (4,)),
])
def test_uint8_box_record_shapes(shape, kind, rec_shape):
    spec = record_spec_for_env(gym.spaces.Box(0, 255, shape, np.uint8), gym.spaces.Discrete(2))
    assert (spec.obs_kind, spec.obs_shape) == (kind, rec_shape)


def test_a_float_2d_box_is_still_flattened():
    spec = record_spec_for_env(gym.spaces.Box(0, 1, (6, 5), np.float32), gym.spaces.Discrete(2))
    assert (spec.obs_kind, spec.obs_shape) == ("continuous", (30,))


def test_grayscale_env_records_and_model():
    cfg = EnvConfig(env_id=GRAY_ID, num_envs=2)
    info = describe_env(cfg)
    assert (info.spec.obs_key, info.spec.obs_shape) == ("obs_image", (6, 5, 1))
    env = make_vector_env(cfg)
    rec = StreamRecorder(info.spec, [0, 1], info.num_env_actions)
    obs, _ = env.reset(seed=0)
    records = [rec.reset(obs)]
    for _ in range(4):
        action = torch.zeros(2, dtype=torch.int64)
        records.append(rec.step(action, *env.step(action.numpy())[:4]))
    env.close()
    chunk = torch.stack(records, dim=1).reshape(-1)  # [2 * 5], stream-major
    validate_records(chunk, info.spec)
    frames = chunk["obs_image"]
    assert frames.dtype == torch.uint8 and frames.shape == (10, 6, 5, 1)
    # each record holds its own step's frame (3 steps, then the reset frame 0 and step 1 again)
    assert frames[:5, 0, 0, 0].tolist() == [0, 1, 2, 3, 0]
    # the model embeds the one-channel frames (conv encoder over [H, W, 1])
    run = parse_run_config(["--env.env-id", GRAY_ID, "--model.hidden-dim", "16"])
    out = build_model(run, info)(chunk.reshape(2, 5))
    assert out["dqn"].shape == (2, 5, 2)
