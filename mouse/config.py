"""Run configuration: frozen dataclasses, one comment per field.

Every hyperparameter lives in exactly one place; the CLI (``mouse.cli``) is
generated from these classes by tyro, and a run's config is saved as JSON in
its run directory so the learner and every actor start from the same values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# torch-free modules only: the command builds its help and parses flags before any torch import
from mouse.models.config import ModelConfig
from mouse.replay.config import ReplayConfig
from mouse.train_config import TrainConfig

MAX_CHUNK_RECORDS = 65_536  # mouse.wire.DEFAULT_MAX_RECORDS (tests/test_config.py checks they agree)


ALE_NAMESPACE = "ALE/"  # ids of ale-py's Atari envs (v5), which get the Atari preset (mouse.atari)


@dataclass(frozen=True)
class EnvConfig:
    env_id: str = "CartPole-v1"
    """Any gymnasium id with a Discrete action space."""
    env_kwargs: str = "{}"
    """JSON object of keyword arguments for gymnasium.make, e.g. '{"map_name": "8x8"}'."""
    num_envs: int = 8
    """Sub-environments (streams) per actor process."""
    vector: Literal["gymnasium", "envpool"] = "gymnasium"
    """The actors' vector env: gymnasium's (every id), or EnvPool's C++ envs (pip install envpool;
    ids both know, no env_kwargs, no Atari preset) where gymnasium's Python stepping is slow."""
    num_actions: int = 0
    """Size of the model's action head; 0 = the env's action count. Larger pads with masked actions."""
    reward_transform: Literal["auto", "identity", "sign", "symlog"] = "auto"
    """Reward transform recorded as xformed_reward (see train.dqn.use-xformed-reward); auto: sign for Atari."""
    q_star: Literal["auto", "on", "off"] = "auto"
    """Attach exact q_star (value iteration on the env's transition table): auto = when the env has one."""
    q_star_gamma: float = 0.99
    """Discount of the exact q_star annotation (its own setting: the TD loss's gamma may differ)."""
    atari_preset: bool = True
    """ALE/ ids: standard Atari preprocessing (84x84 grayscale, frame skip 4 with max-pooling, up to
    atari_noop_max no-op starts, v5 sticky actions, reward clipping); see mouse/atari.py."""
    atari_noop_max: int = 30
    """Atari preset: at most this many no-op actions after each reset (0 = none)."""
    atari_terminal_on_life_loss: bool = False
    """Atari preset: a lost life ends the episode as terminal (the next episode is a new game)."""
    atari_frame_stack: int = 1
    """Atari preset: frames per observation on the channel axis; 1 = none (the transformer's window is
    the history; stack e.g. 4 for the mlp backbone, which sees one record)."""

    @property
    def atari_preset_applies(self) -> bool:
        return self.atari_preset and self.env_id.startswith(ALE_NAMESPACE)

    def kwargs(self) -> dict:
        try:
            kw = json.loads(self.env_kwargs)
        except json.JSONDecodeError as e:
            raise ValueError(f"env_kwargs must be a JSON object, got {self.env_kwargs!r}: {e}") from None
        if not isinstance(kw, dict):
            raise ValueError(f"env_kwargs must be a JSON object, got {self.env_kwargs!r}")
        return kw

    def __post_init__(self):
        if self.num_envs < 1:
            raise ValueError(f"env.num_envs must be >= 1, got {self.num_envs}")
        if not 0 <= self.q_star_gamma < 1:
            raise ValueError(f"env.q_star_gamma must be in [0, 1), got {self.q_star_gamma}")
        if self.atari_noop_max < 0 or self.atari_frame_stack < 1:
            raise ValueError(f"env.atari_noop_max must be >= 0 and env.atari_frame_stack >= 1, got "
                             f"{self.atari_noop_max}, {self.atari_frame_stack}")
        self.kwargs()
        if self.vector == "envpool" and (self.kwargs() or self.atari_preset_applies):
            raise ValueError("env.vector=envpool takes no env.env_kwargs and no Atari preset "
                             "(env.atari_preset false): EnvPool configures its envs its own way")


@dataclass(frozen=True)
class ActorConfig:
    policy: Literal["dqn", "sp", "vec_dqn"] = "dqn"
    """Acting head: greedy on dqn, sampling from sp, greedy on vec_dqn scores; with Ape-X epsilon on top."""
    epsilon: float = 0.4
    """Ape-X base epsilon: stream i of N gets epsilon**(1 + alpha * i / (N - 1))."""
    epsilon_alpha: float = 7.0
    """Ape-X exponent spread across streams (0 gives every stream the base epsilon)."""
    chunk_steps: int = 16
    """Vector-env steps per record chunk sent to the learner (chunk = chunk_steps * num_envs records)."""
    heartbeat_s: float = 1.0
    """Seconds between heartbeats to the learner."""
    learner_timeout_s: float = 0.0
    """Stop once the learner has not answered for this long (0 = never: a silent learner is
    waited for, with bounded memory, and joined again when it comes back)."""
    seed: int = 0
    """Base seed; actor k seeds its envs and sampling with seed + 1000 * k."""


@dataclass(frozen=True)
class LearnerConfig:
    host: str = "127.0.0.1"
    """Address the learner binds (0.0.0.0 on a cluster); actors connect to it."""
    advertise_host: str = ""
    """Host name actors reach the learner by, written to RUN_DIR/learner.address once bound;
    "" = host, or this machine's fully qualified name when host is 0.0.0.0."""
    port: int = 0
    """Records port (control port+1, weights port+2); 0 = free ports (logged, and in status.json)."""
    auth: Literal["auto", "on", "off"] = "auto"
    """CurveZMQ encryption and authentication: only actors whose public key is in KEYS_DIR/actors/
    may join. auto = on unless host is loopback (127.0.0.0/8, ::1, localhost); inproc needs none."""
    keys_dir: str = ""
    """Keys of `mouse keys`: learner.key, learner.key_secret, actors/*.key (allowed actors).
    "" = RUN_DIR/keys, created there when auth is on and it holds no keys."""
    device: str = "auto"
    """Learner device: auto (cuda if available), cpu, cuda, cuda:N."""
    warmup_steps: int = 2_000
    """Stored steps before the first update."""
    replay_ratio: float = 0.1
    """Target updates per inserted env step: the learner waits for data when ahead of it, and
    holds back actors' send credits when more than max_ahead_steps behind it."""
    max_ahead_steps: int = 2_000
    """Env steps the actors may run ahead of replay_ratio before backpressure (0 = never throttle)."""
    credits_per_actor: int = 8
    """Record chunks an actor may have in flight: bounds memory and policy lag."""
    publish_every: int = 10
    """Updates between weight broadcasts."""
    checkpoint_every_s: float = 120.0
    """Seconds between checkpoints (one is always written at shutdown)."""
    save_replay: bool = False
    """Save the replay buffer to RUN_DIR/replay with every checkpoint (only the rows new since the
    last save) and restore it when resuming; the directory holds about capacity steps."""
    log_every_s: float = 5.0
    """Seconds between metric logs (W&B and console)."""
    prefetch: int = 4
    """Batches the PrefetchBatchifier keeps ready."""
    batch_workers: int = 1
    """Background threads building batches."""
    actor_timeout_s: float = 10.0
    """An actor silent for this long counts as disconnected (and its id may be given to another)."""
    max_actors: int = 1024
    """Actor ids are 0 .. max_actors-1: bounds the actors (and streams) a learner keeps track of."""
    max_abs_obs: float = 1e6
    """Records whose continuous observations exceed this magnitude are rejected (finite but absurd
    values overflow the losses)."""
    max_abs_reward: float = 1e6
    """Records whose rewards exceed this magnitude are rejected (also bounds episode returns per
    step and exact q_star by max_abs_reward / (1 - env.q_star_gamma))."""
    seed: int = 0
    """Torch seed of the learner."""

    def __post_init__(self):
        positive = {"replay_ratio": self.replay_ratio, "publish_every": self.publish_every,
                    "credits_per_actor": self.credits_per_actor, "prefetch": self.prefetch,
                    "batch_workers": self.batch_workers, "log_every_s": self.log_every_s,
                    "actor_timeout_s": self.actor_timeout_s, "checkpoint_every_s": self.checkpoint_every_s,
                    "max_actors": self.max_actors, "max_abs_obs": self.max_abs_obs,
                    "max_abs_reward": self.max_abs_reward}
        bad = [f"learner.{k}={v} (must be > 0)" for k, v in positive.items() if not v > 0]
        bad += [f"learner.{k}={v} (must be >= 0)" for k, v in
                {"warmup_steps": self.warmup_steps, "max_ahead_steps": self.max_ahead_steps}.items() if v < 0]
        if not 0 <= self.port <= 65533:
            bad.append(f"learner.port={self.port} (0 = pick free ports, else 1..65533: it uses port..port+2)")
        if self.auth not in ("auto", "on", "off"):  # a JSON config is not checked by the CLI
            bad.append(f"learner.auth={self.auth!r} (auto, on or off)")
        if bad:
            raise ValueError("invalid learner config: " + ", ".join(bad))


@dataclass(frozen=True)
class EvalConfig:
    every_s: float = 20.0
    """Seconds between greedy evaluations of the learner's current weights (0 = only at the end)."""
    episodes: int = 20
    """Episodes per evaluation (run in parallel as a vector env)."""
    max_steps: int = 10_000
    """Safety cap on steps of one evaluation."""
    seed: int = 12345
    """Seed of the evaluation envs and of sampling (the same episodes every evaluation)."""

    def __post_init__(self):
        if self.episodes < 1 or self.max_steps < 1:
            raise ValueError(f"eval.episodes and eval.max_steps must be >= 1, got {self.episodes}, "
                             f"{self.max_steps}")


@dataclass(frozen=True)
class WandbConfig:
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto = online when WANDB_API_KEY is set, offline otherwise."""
    project: str = "mouse"
    """W&B project."""
    entity: str = ""
    """W&B entity (team or user); "" = your default."""
    run_name: str = ""
    """Run name; "" = the run directory's name."""
    group: str = ""
    """W&B group of the run; "" = the run directory's name (every start of a run directory in one group)."""
    tags: tuple[str, ...] = ()
    """W&B tags."""
    actor_metrics: bool = False
    """Also log actors/<id>/env_steps_per_s and actors/<id>/policy_lag for every connected actor
    (from the learner's own bookkeeping: no W&B run per actor)."""


@dataclass(frozen=True)
class BudgetConfig:
    max_env_steps: int = 300_000
    """Stop after this many env steps have reached the learner (0 = no limit)."""
    max_minutes: float = 20.0
    """Stop after this many minutes of this learner process (0 = no limit; a resume starts anew)."""
    solved_return: float = math.nan
    """Stop when an evaluation's mean return reaches this; nan = the env's reward_threshold, inf = never."""


@dataclass(frozen=True)
class RunConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    num_actors: int = 2
    """Actor processes started by `mouse run` (and the N of the Ape-X epsilon schedule)."""
    run_dir: str = ""
    """Run directory (checkpoints, W&B files, logs); "" = runs/<env>-<timestamp>."""

    def __post_init__(self):
        if self.num_actors < 0:
            raise ValueError(f"num_actors must be >= 0, got {self.num_actors}")
        if self.actor.chunk_steps < 1:
            raise ValueError(f"actor.chunk_steps must be >= 1, got {self.actor.chunk_steps}")
        if self.env.num_envs * self.actor.chunk_steps > MAX_CHUNK_RECORDS:
            raise ValueError(f"env.num_envs x actor.chunk_steps = {self.env.num_envs * self.actor.chunk_steps} "
                             f"records per chunk; the wire takes at most {MAX_CHUNK_RECORDS}")
        if self.train.seq_len > self.model.max_seq_len:
            raise ValueError(f"train.seq_len={self.train.seq_len} exceeds model.max_seq_len="
                             f"{self.model.max_seq_len}")
        if self.env.reward_transform == "auto" and self.env.atari_preset_applies:
            self._clip_rewards()

    def _clip_rewards(self) -> None:
        """The Atari preset's reward clipping: xformed_reward = sign(reward), read by the TD losses.
        Resolved here, not in EnvConfig, because the losses' switch lives in TrainConfig; "auto" stays
        auto elsewhere so that `--env.env-id ALE/...` still resolves from the default config."""
        t = self.train
        object.__setattr__(self, "env", dataclasses.replace(self.env, reward_transform="sign"))
        object.__setattr__(self, "train", dataclasses.replace(
            t, dqn=dataclasses.replace(t.dqn, use_xformed_reward=True),
            vec_dqn=dataclasses.replace(t.vec_dqn, use_xformed_reward=True)))

    @property
    def acting_context(self) -> int:
        """Records of context an actor feeds the model: the window positions the losses train
        (a transition pairs t with t+1, so the last of S positions is never a state)."""
        return max(1, self.train.seq_len - 1)


# --- JSON round trip ------------------------------------------------------------------

def _json_safe(x):
    """JSON has no inf/nan: write them as the strings "inf", "-inf", "nan" (from_dict reads them)."""
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def to_dict(cfg) -> dict:
    return _json_safe(dataclasses.asdict(cfg))


def from_dict(cls, d: dict):
    """Rebuild a (nested) frozen dataclass from ``to_dict`` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kw = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            kw[k] = from_dict(t, v)
        elif isinstance(v, list):
            kw[k] = tuple(v)
        elif t is float and isinstance(v, str):
            # "inf" / "nan", see _json_safe; nan as math.nan itself, so that a loaded config
            # equals one built with the nan default (nan != nan, but tuples compare identity first)
            kw[k] = math.nan if v == "nan" else float(v)
        else:
            kw[k] = v
    return cls(**kw)


def save_config(cfg: RunConfig, path: Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2))


def load_config(path: Path) -> RunConfig:
    try:
        return from_dict(RunConfig, json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
