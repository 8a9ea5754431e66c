"""The Atari preset on a real ALE env (ale-py is an optional extra: these tests skip without it)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from mouse.cli import main as mouse_main, parse_run_config
from mouse.config import EnvConfig
from mouse.envs import REWARD_TRANSFORMS, describe_env, make_env, make_vector_env
from mouse.launch import InprocRun
from mouse.records import StreamRecorder, validate_records
from mouse.replay import ReplayConfig, make_replay_buffer
from tests.run_helpers import small_run_flags

PONG = "ALE/Pong-v5"
MISSING = [m for m in ("ale_py", "cv2") if importlib.util.find_spec(m) is None]
needs_ale = pytest.mark.skipif(bool(MISSING), reason=f"{' and '.join(MISSING)} not installed: "
                               "the Atari extra, pip install 'mouse[atari]'")


def test_preset_clips_rewards_through_xformed_reward():
    cfg = parse_run_config(["--env.env-id", PONG])
    assert cfg.env.reward_transform == "sign"
    assert cfg.train.dqn.use_xformed_reward and cfg.train.vec_dqn.use_xformed_reward
    # an explicit transform, the preset turned off, or another env: rewards as they were
    for flags in (["--env.reward-transform", "identity"], ["--env.no-atari-preset"], []):
        cfg = parse_run_config(["--env.env-id", PONG if flags else "CartPole-v1", *flags])
        assert not cfg.train.dqn.use_xformed_reward
        assert REWARD_TRANSFORMS[cfg.env.reward_transform](torch.tensor([3.0])).item() == 3.0


def test_without_ale_py_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if not installed: importing it fails
    with pytest.raises(SystemExit, match=r"ALE/Pong-v5.*needs ale-py.*mouse\[atari\]"):
        mouse_main(["learner", "--env.env-id", PONG, "--run-dir", str(tmp_path), "--wandb.mode", "disabled"])


@needs_ale
def test_preset_env_frames_skip_noops_and_sticky_actions():
    env = make_env(EnvConfig(env_id=PONG))
    ale = env.unwrapped.ale
    assert env.observation_space.shape == (84, 84) and env.observation_space.dtype == np.uint8
    assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)  # v5 sticky actions
    starts = set()
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        starts.add(ale.getEpisodeFrameNumber())  # the no-op frames taken after the reset
        frame = ale.getEpisodeFrameNumber()
        env.step(0)
        assert ale.getEpisodeFrameNumber() - frame == 4  # one agent step = 4 emulator frames
    assert len(starts) > 1 and all(1 <= s <= 30 for s in starts), starts
    env.close()
    env = make_env(EnvConfig(env_id=PONG, atari_noop_max=0))
    env.reset(seed=0)
    assert env.unwrapped.ale.getEpisodeFrameNumber() == 0
    env.close()


@needs_ale
def test_preset_errors_and_switches():
    with pytest.raises(ValueError, match="frameskip"):
        describe_env(EnvConfig(env_id=PONG, env_kwargs='{"frameskip": 4}'))
    raw = describe_env(EnvConfig(env_id=PONG, atari_preset=False))
    assert (raw.spec.obs_kind, raw.spec.obs_shape) == ("image", (210, 160, 3))
    stacked = describe_env(EnvConfig(env_id=PONG, atari_frame_stack=4))
    assert stacked.spec.obs_shape == (84, 84, 4)
    env = make_vector_env(EnvConfig(env_id=PONG, num_envs=1, atari_frame_stack=4))
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        prev = obs
        obs = env.step(np.array([2]))[0]
    # the newest frame comes last and the older ones shift down the channel axis
    assert obs.shape == (1, 84, 84, 4) and np.array_equal(obs[..., :3], prev[..., 1:])
    env.close()


@needs_ale
def test_pong_records_and_replay_bytes():
    cfg = EnvConfig(env_id=PONG, num_envs=2)
    info = describe_env(cfg)
    spec = info.spec
    assert (spec.obs_kind, spec.obs_shape, spec.num_actions) == ("image", (84, 84, 1), 6)
    env = make_vector_env(cfg)
    recorder = StreamRecorder(spec, [0, 1], info.num_env_actions, REWARD_TRANSFORMS["sign"])
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    records = [recorder.reset(obs)]
    for _ in range(300):
        action = torch.as_tensor(rng.integers(0, 6, size=2))
        records.append(recorder.step(action, *env.step(action.numpy())[:4]))
    env.close()
    chunk = torch.stack(records, dim=1).reshape(-1)  # [2 * 301], stream-major
    validate_records(chunk, spec)
    frames = chunk["obs_image"]
    assert frames.dtype == torch.uint8 and frames.shape == (602, 84, 84, 1)
    assert len(torch.unique(frames.reshape(602, -1), dim=0)) > 100  # the picture moves
    assert torch.equal(chunk["xformed_reward"], torch.sign(chunk["reward"]))
    # the replay stores one frame per step and little else
    replay = make_replay_buffer(ReplayConfig(capacity=1000), spec, seq_len=8)
    replay.ingest(chunk)
    nbytes = replay.nbytes()
    per_step = (nbytes["storage"] + nbytes["index"]) / 1000
    assert per_step <= 1.05 * 84 * 84, per_step


@needs_ale
@pytest.mark.timeout(300)
def test_pong_trains_inproc(tmp_path):
    cfg = parse_run_config([
        "--run-dir", str(tmp_path / "run"), "--env.env-id", PONG, "--num-actors", "1",
        *small_run_flags(2), "--model.conv-channels", "8", "16", "--replay.capacity", "5000",
        "--learner.warmup-steps", "200", "--budget.max-env-steps", "600", "--eval.max-steps", "20"])
    run = InprocRun(cfg)
    s = run.run()
    assert not [e for e in run.actor_results.values() if isinstance(e, BaseException)], run.actor_results
    assert s["env_steps"] >= 600 and s["updates"] > 0 and s["rejected"] == {}, s
    assert s["final_eval_return"] is not None and -21 <= s["final_eval_return"] <= 21
