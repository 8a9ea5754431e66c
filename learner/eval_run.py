"""`mouse eval RUN_DIR`: play a run's saved weights and report how they do (and film them).

The weights come from RUN_DIR/best.pt (the best evaluation's weights) or
RUN_DIR/checkpoint.pt, loaded with ``weights_only=True``; the model, env and
acting settings from the config saved in that file. ``--video DIR`` films the
first episodes with gymnasium's RecordVideo (needs moviepy); without moviepy
the frames are written as PNG files.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import warnings
import zlib
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import describe_env, make_env, make_vector_env
from mouse.models import heads_for

from .checkpoint import load_checkpoint
from .evaluation import acting_heads, binary_goal_reward, play

CHECKPOINTS = {"best": "best.pt", "last": "checkpoint.pt"}
VIDEO_EPISODES = 3  # at most this many of the evaluated episodes are filmed


def load_run(run_dir: Path, checkpoint: str = "best"):
    """(state, cfg, info, model) of a run directory's checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir: {run_dir} is not a directory")
    path = run_dir / CHECKPOINTS[checkpoint]
    if not path.is_file():
        hint = (" (written when an evaluation beats the best so far); try --checkpoint last"
                if checkpoint == "best" else "")
        raise ValueError(f"checkpoint: {run_dir} has no {path.name}{hint}")
    state = load_checkpoint(path)
    cfg = from_dict(RunConfig, state["config"])
    info = describe_env(cfg.env)
    model = build_model(cfg, info).eval()
    model.load_state_dict(state["model"])
    return state, cfg, info, model


def eval_run(run_dir, episodes: int = 100, head: str = "acting", checkpoint: str = "best",
             video: str = "", seed: int = 0) -> dict:
    """Play ``episodes`` episodes with ``head``; prints and returns the metrics."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    state, cfg, info, model = load_run(Path(run_dir), checkpoint)
    trained = acting_heads(heads_for(cfg.train, cfg.actor.policy), cfg.actor.policy)
    h = cfg.actor.policy if head == "acting" else head
    if h not in trained:
        raise ValueError(f"head: this run has no {h} head; the heads that can act are {', '.join(trained)}")
    goal = binary_goal_reward(cfg.env)
    torch.manual_seed(seed)
    m = play(model, h, cfg.env, info, cfg.acting_context, episodes, cfg.eval.max_steps, seed, goal)
    path = Path(run_dir) / CHECKPOINTS[checkpoint]
    print(f"{path}: {cfg.env.env_id} {cfg.env.env_kwargs if cfg.env.kwargs() else ''}".rstrip()
          + f", weights of {state['env_steps']:,} env steps / {state['updates']:,} updates")
    print(f"head {h}, {int(m['episodes'])} episodes, epsilon 0"
          + (" (sp samples from its softmax)" if h == "sp" else ""))
    print(f"return   mean {m['return']:.3f}  min {m['return_min']:.3f}  max {m['return_max']:.3f}")
    print(f"length   mean {m['length']:.1f}")
    if "success_rate" in m:
        print(f"success  {m['success_rate']:.1%} of episodes reached the goal")
    if "q_star_agreement" in m:
        print(f"q_star   argmax {h} is an optimal action at {m['q_star_agreement']:.1%} of "
              f"{int(m['q_star_steps']):,} visited steps")
    if video:
        files = record_video(model, cfg, info, h, Path(video), min(episodes, VIDEO_EPISODES), seed)
        print(f"video    {len(files)} file(s) in {video}: " + ", ".join(p.name for p in files[:5])
              + (" ..." if len(files) > 5 else ""))
    return m


# --- video --------------------------------------------------------------------------------------

def record_video(model, cfg: RunConfig, info, head: str, directory: Path, episodes: int,
                 seed: int) -> list[Path]:
    """Film ``episodes`` episodes (one per sub-env) into ``directory``: mp4 via gymnasium's
    RecordVideo when moviepy is installed, else a folder of PNG frames per episode."""
    # renderers built on pygame need no display for rgb_array frames: keep SDL quiet about it
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    probe = make_env(cfg.env)
    modes = probe.metadata.get("render_modes", [])
    probe.close()
    if "rgb_array" not in modes:
        raise ValueError(f"video: {cfg.env.env_id} does not render frames (its render modes: {modes})")
    if importlib.util.find_spec("moviepy") is not None:
        counter = iter(range(episodes))
        wrap = lambda env: gym.wrappers.RecordVideo(  # noqa: E731 (one per sub-env)
            env, str(directory), episode_trigger=lambda ep: ep == 0,
            name_prefix=f"{head}-{next(counter)}")
        before = set(directory.glob("*.mp4"))
    else:
        counter = iter(range(episodes))
        wrap = lambda env: _PngFrames(env, directory / f"{head}-episode-{next(counter)}")  # noqa: E731
        before = set()
    try:
        with warnings.catch_warnings():  # RecordVideo warns that its sub-envs share the folder
            warnings.simplefilter("ignore")
            env = make_vector_env(cfg.env, num_envs=episodes, render_mode="rgb_array", wrappers=[wrap])
        play(model, head, cfg.env, info, cfg.acting_context, episodes, cfg.eval.max_steps, seed, env=env)
    except gym.error.DependencyNotInstalled as e:
        raise ValueError(f"video: {cfg.env.env_id} cannot render: {e}") from None
    if importlib.util.find_spec("moviepy") is None:
        print("video    moviepy is not installed (pip install moviepy): wrote PNG frames instead")
        return sorted(directory.glob(f"{head}-episode-*"))
    return sorted(set(directory.glob("*.mp4")) - before)


class _PngFrames(gym.Wrapper):
    """Keeps the frames of the env's first episode and writes them as PNG files when it ends."""

    def __init__(self, env, folder: Path):
        super().__init__(env)
        self.folder, self.frames, self.episode = folder, [], -1

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        self.episode += 1
        self._capture()
        return out

    def step(self, action):
        out = self.env.step(action)
        self._capture()
        if out[2] or out[3]:
            self._write()
        return out

    def _capture(self):
        if self.episode == 0:
            self.frames.append(np.asarray(self.env.render()))

    def _write(self):
        if self.episode != 0 or not self.frames:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(self.frames):
            (self.folder / f"frame-{i:05d}.png").write_bytes(png_bytes(frame))
        self.frames = []

    def close(self):
        self._write()
        super().close()


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB image [H, W, 3] as PNG (zlib only: no imaging library needed)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) \
        + chunk(b"IEND", b"")
