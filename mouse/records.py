"""Step records: the one data contract between actors, wire, replay and losses.

One record per environment step, per stream (one sub-environment of one actor).
Record t holds the observation at t *and the action, reward and done that
produced it*, so the transition out of state t lives at t+1:

    t        0 (reset)   1            2            3 (reset)
    obs      o0          o1           o2           o0'
    action   0           a0           a1           0
    reward   0           r0           r1           0
    done     0           0            1 (terminal) 0
    time     0           1            2            0

A batch of records is a ``TensorDict`` whose batch dims are the record index
(``[N]`` for a chunk, ``[B, S]`` for a window batch); the shapes below are per
step and come after the batch dims.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from tensordict import TensorDict

ALIVE, TERMINAL, TRUNCATED = 0, 1, 2
OBS_KINDS = ("continuous", "discrete", "image")
MAX_VERSION = 1 << 53  # policy versions stay exact as float64 and JSON numbers


@dataclass(frozen=True)
class FieldSpec:
    dtype: torch.dtype
    shape: tuple[int, ...]
    # "finite": no NaN/inf; "no_nan_no_posinf": -inf allowed (q_star marks invalid actions);
    # "index": an integer in [0, num_obs_states) (an embedding row: out of range would crash training)
    check: str | None = None


@dataclass(frozen=True)
class RecordSpec:
    """What the records of one run look like: derived from the env and the model."""

    obs_kind: str  # "continuous" | "discrete" | "image"
    obs_shape: tuple[int, ...]  # (C,) | () | (H, W, C)
    num_actions: int  # the model's action head size A
    q_star: bool = False  # records carry a float32 [A] q_star annotation
    action_mask: bool = False  # records carry a bool [A] action mask
    num_obs_states: int = 0  # discrete observations lie in [0, num_obs_states) (0 = unchecked)
    # magnitude bounds (inf = finite is enough): finite but absurd values (3e38) overflow the
    # losses and poison every weight, so the learner sets these from its config
    max_abs_obs: float = math.inf  # continuous observations
    max_abs_reward: float = math.inf  # reward and xformed_reward, and episode returns per step
    max_abs_q_star: float = math.inf  # finite q_star entries

    def __post_init__(self):
        if self.obs_kind not in OBS_KINDS:
            raise ValueError(f"obs_kind must be one of {OBS_KINDS}, got {self.obs_kind!r}")
        if self.num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {self.num_actions}")

    @property
    def obs_key(self) -> str:
        return f"obs_{self.obs_kind}"

    def fields(self) -> dict[str, FieldSpec]:
        obs_dtype = {"continuous": torch.float32, "discrete": torch.int64, "image": torch.uint8}
        f = {
            self.obs_key: FieldSpec(
                obs_dtype[self.obs_kind],
                tuple(self.obs_shape),
                {"continuous": "finite", "discrete": "index", "image": None}[self.obs_kind],
            ),
            "action": FieldSpec(torch.int64, ()),
            "reward": FieldSpec(torch.float32, (), "finite"),
            "xformed_reward": FieldSpec(torch.float32, (), "finite"),
            "done": FieldSpec(torch.int64, ()),
            "time": FieldSpec(torch.int64, ()),
            "stream_id": FieldSpec(torch.int64, ()),
            "policy_version": FieldSpec(torch.int64, ()),
        }
        if self.q_star:
            f["q_star"] = FieldSpec(torch.float32, (self.num_actions,), "no_nan_no_posinf")
        if self.action_mask:
            f["action_mask"] = FieldSpec(torch.bool, (self.num_actions,))
        return f

    def record_nbytes(self) -> int:
        """Bytes of one record, all its fields (what the replay stores per step)."""
        return sum(math.prod(f.shape) * f.dtype.itemsize for f in self.fields().values())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RecordSpec":
        return cls(**{**d, "obs_shape": tuple(d["obs_shape"])})

    def unbounded(self) -> "RecordSpec":
        """The same layout without magnitude bounds (what a replay stores does not depend on them)."""
        return dataclasses.replace(self, max_abs_obs=math.inf, max_abs_reward=math.inf,
                                   max_abs_q_star=math.inf)

    def empty(self, n: int) -> TensorDict:
        """n zeroed records (useful as storage templates and in tests)."""
        return TensorDict(
            {k: torch.zeros((n, *s.shape), dtype=s.dtype) for k, s in self.fields().items()},
            batch_size=[n],
        )


class RecordError(ValueError):
    """Records that break the contract; ``problems`` lists every bad field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid step records:\n  - " + "\n  - ".join(problems))


_VALUE_CHECKED = ("done", "time", "action", "reward", "policy_version")  # range checks below


@functools.lru_cache(maxsize=64)
def _fields(spec: RecordSpec) -> dict[str, FieldSpec]:
    return spec.fields()  # RecordSpec is frozen: its fields never change (read only, never mutate)


def record_problems(td: TensorDict, spec: RecordSpec) -> list[str]:
    """Every way ``td`` (batch dims ``[N]``) breaks the per-record contract.

    Checks run on numpy views of the CPU tensors: a chunk is validated on every
    ingest, and a few numpy reductions cost far less than the same torch calls.
    """
    problems: list[str] = []
    if td.batch_dims != 1:
        return [f"records must have one batch dim [N], got batch_size {tuple(td.batch_size)}"]
    fields = _fields(spec)
    present = dict(td.items())  # one pass over the TensorDict: its per-key get costs more than a check
    for name in present:
        if name not in fields:
            problems.append(f"{name}: unknown field (expected only {sorted(fields)})")
    a = {}
    for name, fs in fields.items():
        if name not in present:
            problems.append(f"{name}: missing (dtype {fs.dtype}, per-step shape {fs.shape})")
            continue
        x = present[name]
        if x.dtype != fs.dtype:
            problems.append(f"{name}: dtype {x.dtype}, expected {fs.dtype}")
            continue
        if tuple(x.shape[1:]) != fs.shape:
            problems.append(f"{name}: per-step shape {tuple(x.shape[1:])}, expected {fs.shape}")
            continue
        if fs.check is not None or name in _VALUE_CHECKED:
            a[name] = v = x.numpy(force=True)  # detach().cpu().numpy() in one call
            problem = _field_problem(name, fs, v, spec)
            if problem:
                problems.append(problem)
    return problems or _range_problems(a, spec)


def value_problems(arrays: dict[str, np.ndarray], spec: RecordSpec) -> list[str]:
    """``record_problems`` of records whose fields are known to have the spec's dtypes and
    shapes (the wire checked them): ``arrays`` maps each field with a value check (``check``
    or ``_VALUE_CHECKED``; others are ignored) to its numpy array ``[N, ...]``. The checks are
    all reductions, so the records of several chunks concatenated have a problem exactly when
    one of the chunks has."""
    return _field_problems(arrays, spec) or _range_problems(arrays, spec)


def value_fields(spec: RecordSpec) -> tuple[str, ...]:
    """The fields ``value_problems`` reads."""
    return tuple(name for name, fs in _fields(spec).items() if fs.check is not None or name in _VALUE_CHECKED)


def _field_problems(a: dict[str, np.ndarray], spec: RecordSpec) -> list[str]:
    fields = _fields(spec)
    return [p for p in (_field_problem(name, fields[name], a[name], spec) for name in value_fields(spec)) if p]


def _field_problem(name: str, fs: FieldSpec, v: np.ndarray, spec: RecordSpec) -> str | None:
    """What a field's NaN/inf, magnitude or index check finds in ``v``, if anything."""
    bound = _bound(spec, name)
    if fs.check == "finite" and not np.isfinite(v).all():
        return f"{name}: contains NaN or inf"
    if fs.check == "finite" and bound < math.inf and np.abs(v).max(initial=0) > bound:
        return f"{name}: magnitude above {bound:g}"
    if fs.check == "no_nan_no_posinf" and (np.isnan(v).any() or np.isposinf(v).any()):
        return f"{name}: contains NaN or +inf (only -inf is allowed, for invalid actions)"
    if fs.check == "no_nan_no_posinf" and bound < math.inf and \
            ((v > bound) | ((v < -bound) & (v != -np.inf))).any():
        return f"{name}: finite entries of magnitude above {bound:g}"
    if fs.check == "index" and spec.num_obs_states and \
            v.view(np.uint64).max(initial=0) >= spec.num_obs_states:
        return f"{name}: outside [0, {spec.num_obs_states})"
    return None


def _range_problems(a: dict[str, np.ndarray], spec: RecordSpec) -> list[str]:
    """Ranges of the integer fields and the episode-start rules (every field present and typed)."""
    problems = []
    done, time, action = a["done"], a["time"], a["action"]
    # one reduction per range [0, hi]: viewed as uint64, a negative int64 is above any hi
    if done.view(np.uint64).max(initial=0) > 2:
        problems.append(f"done: values {sorted(set(done.tolist()))} outside {{0, 1, 2}}")
    if time.min(initial=0) < 0:
        problems.append("time: negative step index")
    if action.view(np.uint64).max(initial=0) >= spec.num_actions:
        problems.append(f"action: outside [0, {spec.num_actions})")
    if ((a["policy_version"] + 1).view(np.uint64).max(initial=0) > MAX_VERSION + 1):  # [-1, 2**53]
        problems.append("policy_version: outside [-1, 2**53]")
    first = time == 0
    if (first & (done != ALIVE)).any():
        problems.append("time/done: a record with time 0 (episode start) cannot end its episode")
    if (first & ((action != 0) | (a["reward"] != 0))).any():
        problems.append("action/reward: must be 0 at the first step of an episode (time 0)")
    return problems


def _bound(spec: RecordSpec, name: str) -> float:
    if name == spec.obs_key:
        return spec.max_abs_obs
    if name in ("reward", "xformed_reward"):
        return spec.max_abs_reward
    return spec.max_abs_q_star if name == "q_star" else math.inf


def episode_problems(episodes: list[dict], spec: RecordSpec) -> list[str]:
    """What is wrong with an actor's episode statistics (already typed by the wire: ints and
    finite numbers): a return that no rewards within the spec's bound add up to
    (|return| <= max_abs_reward * length)."""
    return [f"episode return {e['return']:g} over {e['length']} steps exceeds max_abs_reward "
            f"{spec.max_abs_reward:g} per step"
            for e in episodes
            if abs(e["return"]) > spec.max_abs_reward * e["length"] * (1 + 1e-6)]  # float32 sums: slack


def episode_ends(stream_id, time, done) -> list[tuple[int, int]]:
    """(stream_id, length) of every episode these records end, sorted: an episode ends at a
    record whose ``done`` is set, and its length is that record's ``time``. A chunk's episodes
    (``mouse.wire``) are exactly these (numpy arrays or CPU tensors)."""
    ends = np.flatnonzero(np.asarray(done) != ALIVE)
    return sorted(zip(np.asarray(stream_id)[ends].tolist(), np.asarray(time)[ends].tolist()))


def next_time(time, done):
    """The ``time`` a stream's next record must have: 0 after a finished episode, else time + 1.

    Works on numpy arrays and scalars alike; the one statement of the continuity rule.
    (Python ints skip np.where: the replay's index asks once per stream piece written.)
    """
    if type(time) is int and type(done) is int:
        return 0 if done != ALIVE else time + 1
    return np.where(done != ALIVE, 0, time + 1)


def continuity_problems(td: TensorDict) -> list[str]:
    """Records of each stream inside one chunk must be consecutive steps."""
    return stream_continuity_problems(*(td.get(k).numpy(force=True) for k in ("stream_id", "time", "done")))


def stream_continuity_problems(sid: np.ndarray, time: np.ndarray, done: np.ndarray) -> list[str]:
    """``continuity_problems`` of one chunk's stream_id, time and done arrays."""
    if (sid[1:] >= sid[:-1]).all():  # already grouped (actors send stream-major chunks)
        s, t, d = sid, time, done
    else:
        order = np.argsort(sid, kind="stable")  # each stream's records together, in chunk order
        s, t, d = sid[order], time[order], done[order]
    # after a finished episode the next record is a reset (time 0); otherwise time + 1
    expected = next_time(t[:-1], d[:-1])
    bad = np.flatnonzero((s[1:] == s[:-1]) & (t[1:] != expected))
    if not len(bad):
        return []
    problems = []
    for stream in dict.fromkeys(s[bad + 1].tolist()):  # first break of each stream
        i = int(bad[s[bad + 1] == stream][0])
        problems.append(
            f"stream {stream}: time {int(t[i + 1])} follows time {int(t[i])} with done {int(d[i])} "
            f"(expected {int(expected[i])}): steps are not consecutive"
        )
    return problems


def validate_records(td: TensorDict, spec: RecordSpec, *, consecutive: bool = True) -> TensorDict:
    """Raise ``RecordError`` naming every problem; return ``td`` unchanged when valid."""
    problems = record_problems(td, spec)
    if not problems and consecutive:
        problems = continuity_problems(td)
    if problems:
        raise RecordError(problems)
    return td


def record_spec_for_env(observation_space, action_space, num_actions: int | None = None,
                        q_star: bool = False) -> RecordSpec:
    """The record spec for a gymnasium env's single (not batched) spaces."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"mouse needs a discrete action space, got {action_space}")
    n = int(action_space.n)
    A = num_actions or n
    if A < n:
        raise ValueError(f"model head has {A} actions but the env has {n}")
    states = 0
    if isinstance(observation_space, spaces.Discrete):
        kind, shape, states = "discrete", (), int(observation_space.n)
    elif isinstance(observation_space, spaces.Box) and observation_space.dtype == np.uint8 \
            and len(observation_space.shape) in (2, 3):
        # a 2-D uint8 Box is a grayscale frame [H, W]: one channel, [H, W, 1], not H*W floats
        kind, shape = "image", tuple(observation_space.shape) + (1,) * (3 - len(observation_space.shape))
    elif isinstance(observation_space, spaces.Box):
        kind, shape = "continuous", (int(np.prod(observation_space.shape)),)
    else:
        raise ValueError(f"unsupported observation space {observation_space}: "
                         "use Box (flattened to float32 [C]), Box uint8 [H,W,C] or [H,W], or Discrete")
    return RecordSpec(kind, shape, A, q_star=q_star, action_mask=A > n, num_obs_states=states)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.uint8: np.uint8}
# the fields written at every step; the others follow from them (or from the run) at take()
_STEP_FIELDS = ("action", "reward", "done", "time")


class ChunkRecorder:
    """Writes a vector env's reset/step outputs as aligned records into one chunk's arrays.

    The vector env must use NEXT_STEP autoreset (gymnasium's default): the step
    after an episode ends returns the reset observation with reward 0 and
    ignores the action, which is exactly the record "time 0, action 0, reward 0".

    Each step writes one column of preallocated ``[N, K]`` arrays (``K =
    chunk_steps``); ``take()`` hands them over as one stream-major chunk
    ``TensorDict[N * K]`` that shares their memory (a full chunk is not copied),
    and the next step starts fresh arrays, so a chunk in flight is never written
    again. Fields that follow from the others (xformed_reward, stream_id,
    policy_version, q_star, action_mask) are filled once per chunk, not per step.
    ``newest`` holds the model inputs of each stream's newest record, ``[N, ...]``
    tensors for acting, overwritten in place at every step (copy what you keep);
    ``time`` and ``done`` its time and done (numpy ``[N]``).
    """

    def __init__(self, spec: RecordSpec, stream_ids, chunk_steps: int, num_env_actions: int | None = None,
                 reward_transform=None, q_star_table: torch.Tensor | None = None):
        if spec.q_star and q_star_table is None:
            raise ValueError("spec has q_star but no q_star_table was given")
        if chunk_steps < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
        self.spec, self.chunk_steps = spec, chunk_steps
        self.stream_ids = np.asarray(stream_ids, dtype=np.int64).reshape(-1)
        self.num_envs = n = len(self.stream_ids)
        self.reward_transform = reward_transform or (lambda r: r)
        self.q_star_table = q_star_table  # [num_states, A] for discrete-obs envs
        allowed = torch.arange(spec.num_actions) < (num_env_actions or spec.num_actions)
        # [N, A], constant: what acting needs; chunks get their own copy
        self.action_mask = allowed.expand(n, -1).clone() if spec.action_mask else None
        self.time = np.zeros(n, dtype=np.int64)
        self.done = np.zeros(n, dtype=np.int64)
        self.steps = 0  # records pending per stream (columns written)
        self._allocate()
        # the newest column's model inputs in arrays of their own, written at every step: a few
        # numpy copies cost less than making fresh tensor views of the chunk's column each step
        self._newest = {name: np.zeros(x.shape[:1] + x.shape[2:], dtype=x.dtype)  # [N, ...]
                        for name, x in self._arrays.items()}
        self.newest: dict[str, torch.Tensor] = {name: torch.from_numpy(x) for name, x in self._newest.items()}

    def _allocate(self) -> None:
        n, k, fields = self.num_envs, self.chunk_steps, _fields(self.spec)
        self._arrays = {name: np.empty((n, k, *fields[name].shape), dtype=_NUMPY_DTYPES[fields[name].dtype])
                        for name in (self.spec.obs_key, *_STEP_FIELDS)}
        self._versions = np.empty(k, dtype=np.int64)

    def reset(self, obs, policy_version: int = 0) -> None:
        """Every stream starts an episode at time 0: before the first step or right after a
        ``take()`` (pending records would not continue into a reset)."""
        self.time = np.zeros(self.num_envs, dtype=np.int64)
        self.done = np.zeros(self.num_envs, dtype=np.int64)
        zero = np.zeros(self.num_envs)
        self._write(obs, zero, zero, policy_version)

    def step(self, action, obs, reward, terminated, truncated, policy_version: int = 0) -> None:
        restarted = self.done != ALIVE  # these sub-envs were reset by this step (NEXT_STEP)
        self.time = next_time(self.time, self.done)
        terminated, truncated = np.asarray(terminated), np.asarray(truncated)
        self.done = np.where(restarted, ALIVE, np.where(terminated, TERMINAL,
                                                        np.where(truncated, TRUNCATED, ALIVE)))
        action = np.where(restarted, 0, np.asarray(action))
        reward = np.where(restarted, 0.0, np.asarray(reward))
        self._write(obs, action, reward, policy_version)

    def _write(self, obs, action, reward, policy_version: int) -> None:
        t = self.steps
        if t == self.chunk_steps:
            raise RuntimeError(f"chunk full ({t} steps per stream): take() it before stepping on")
        a, key = self._arrays, self.spec.obs_key
        a[key][:, t] = np.asarray(obs).reshape(self.num_envs, *self.spec.obs_shape)  # casts to the dtype
        a["action"][:, t], a["reward"][:, t] = action, reward
        a["done"][:, t], a["time"][:, t] = self.done, self.time
        self._versions[t] = policy_version
        self.steps = t + 1
        for name, x in self._newest.items():
            np.copyto(x, a[name][:, t])

    def pending(self) -> TensorDict | None:
        """The records not yet taken as ``TensorDict[N, k]`` (views, for inspection), None if none."""
        if not self.steps:
            return None
        return self._chunk(self.steps).reshape(self.num_envs, self.steps)

    def take(self) -> TensorDict | None:
        """The pending records as one chunk ``[N * k]``, stream-major (None when none are pending)."""
        if not self.steps:
            return None
        chunk = self._chunk(self.steps)
        self._allocate()
        self.steps = 0
        return chunk

    def _chunk(self, k: int) -> TensorDict:
        n, spec = self.num_envs, self.spec

        def flat(name):  # [N, k, ...] -> [N * k, ...]: a view when the chunk is full, else a copy
            x = self._arrays[name][:, :k]
            return torch.from_numpy(x.reshape(n * k, *x.shape[2:]))

        obs, reward = flat(spec.obs_key), flat("reward")
        td = {
            spec.obs_key: obs,
            "action": flat("action"),
            "reward": reward,
            "xformed_reward": self.reward_transform(reward.clone()).to(torch.float32),
            "done": flat("done"),
            "time": flat("time"),
            "stream_id": torch.from_numpy(np.repeat(self.stream_ids, k)),
            "policy_version": torch.from_numpy(np.tile(self._versions[:k], n)),
        }
        if spec.q_star:
            td["q_star"] = self.q_star_table[obs]
        if spec.action_mask:
            td["action_mask"] = self.action_mask[:1].expand(n * k, -1).clone()
        return TensorDict(td, batch_size=[n * k])


class StreamRecorder(ChunkRecorder):
    """One ``TensorDict[N]`` of records per reset/step (a chunk of one step; the evaluator, tests)."""

    def __init__(self, spec: RecordSpec, stream_ids, num_env_actions: int | None = None,
                 reward_transform=None, q_star_table: torch.Tensor | None = None):
        super().__init__(spec, stream_ids, 1, num_env_actions, reward_transform, q_star_table)

    def reset(self, obs, policy_version: int = 0) -> TensorDict:
        super().reset(obs, policy_version)
        return self.take()

    def step(self, action, obs, reward, terminated, truncated, policy_version: int = 0) -> TensorDict:
        super().step(action, obs, reward, terminated, truncated, policy_version)
        return self.take()
