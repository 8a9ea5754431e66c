"""Record-chunk builders and window checks for replay tests.

``FakeActor`` behaves like an actor's vector env: its streams step in lock step,
episodes last ``episode_len`` steps (the last one terminal, or truncated every
other episode), and a chunk is time-major like a vector env's outputs. Every
record carries its stream's step counter in ``policy_version`` and in
``obs[1]`` (with the stream id in ``obs[0]``): a ground truth that a window
skipped nothing, joined nothing, and was not torn by a concurrent write.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from mouse.records import ALIVE, TERMINAL, TRUNCATED, RecordSpec

CARTPOLE = RecordSpec("continuous", (4,), 2)  # 64 bytes a record


class FakeActor:
    def __init__(self, stream_ids, episode_len: int = 4, spec: RecordSpec = CARTPOLE):
        self.spec = spec
        self.stream_ids = list(stream_ids)
        self.episode_len = episode_len
        self.step = {s: 0 for s in self.stream_ids}  # steps produced or skipped
        self.time = {s: 0 for s in self.stream_ids}
        self.episode = {s: 0 for s in self.stream_ids}

    def _advance(self, s: int) -> tuple[int, int, int]:
        step, t = self.step[s], self.time[s]
        last = t == self.episode_len - 1
        done = (TRUNCATED if self.episode[s] % 2 else TERMINAL) if last else ALIVE
        self.step[s] += 1
        self.time[s] = 0 if last else t + 1
        self.episode[s] += last
        return step, t, done

    def records(self, n_steps: int, streams=None) -> TensorDict:
        """``n_steps`` steps of each stream, time-major: ``[n_steps * len(streams)]``."""
        streams = self.stream_ids if streams is None else list(streams)
        rows = [(s, *self._advance(s)) for _ in range(n_steps) for s in streams]
        sid, step, time, done = (torch.tensor([r[i] for r in rows], dtype=torch.int64) for i in range(4))
        return make_records(self.spec, sid, step, time, done)

    def skip(self, n_steps: int, streams=None) -> None:
        """Lose ``n_steps`` steps (a missing chunk). A loss of whole episodes that keeps the
        episode phase would look like a real reset, so it is refused here."""
        if n_steps % self.episode_len == 0:
            raise ValueError("a gap of whole episodes is indistinguishable from an episode boundary")
        for s in self.stream_ids if streams is None else streams:
            for _ in range(n_steps):
                self._advance(s)

    def restart(self, streams=None) -> None:
        """The actor restarts: the next record is a fresh episode (time 0) without a done before it."""
        for s in self.stream_ids if streams is None else streams:
            self.time[s] = 0


def make_records(spec: RecordSpec, sid, step, time, done) -> TensorDict:
    """Records obeying the contract; ``obs = [stream, step, time, 0]``, ``policy_version = step``."""
    n = len(sid)
    first = time == 0
    reward = torch.where(first, 0.0, 1.0)
    td = spec.empty(n)
    td[spec.obs_key] = torch.stack([sid.float(), step.float(), time.float(), torch.zeros(n)], 1)
    td["action"] = torch.where(first, 0, step % spec.num_actions)
    td["reward"] = reward
    td["xformed_reward"] = 2 * reward
    td["done"], td["time"], td["stream_id"], td["policy_version"] = done, time, sid, step
    return td


def window_problems(batch: TensorDict) -> list[str]:
    """Every way a ``[B, S]`` batch breaks "S consecutive records of one stream"."""
    problems = []
    sid, step, time, done = (batch[k] for k in ("stream_id", "policy_version", "time", "done"))
    obs = batch[CARTPOLE.obs_key]
    if not bool((sid == sid[:, :1]).all()):
        problems.append("a window joins two streams")
    if not bool((step[:, 1:] == step[:, :-1] + 1).all()):
        problems.append("a window skips or repeats steps")
    expected = torch.where(done[:, :-1] != ALIVE, torch.zeros_like(time[:, :-1]), time[:, :-1] + 1)
    if not bool((time[:, 1:] == expected).all()):
        problems.append("a window breaks the time/done sequence (restart inside a window)")
    if not bool((obs[..., 0] == sid.float()).all() and (obs[..., 1] == step.float()).all()):
        problems.append("a record's fields come from different writes (torn window)")
    return problems


def window_ids(batch: TensorDict) -> list[tuple[int, int]]:
    """(stream, first step) of each window of a ``[B, S]`` batch."""
    return list(zip(batch["stream_id"][:, 0].tolist(), batch["policy_version"][:, 0].tolist()))


def stored_windows(replay) -> set[tuple[int, int]]:
    """The windows the sampler's index holds, read back from storage."""
    starts = replay.sampler.starts()
    if not len(starts):
        return set()
    idx = replay.sampler.window_index(starts)  # [W, S]
    batch = replay.storage[:][idx.reshape(-1)].reshape(*idx.shape)
    assert not window_problems(batch), window_problems(batch)
    return set(window_ids(batch))


def oracle_windows(replay, seq_len: int) -> set[tuple[int, int]]:
    """Brute force from the stored records alone: (stream, step) windows whose S records are
    present, steps consecutive and the time/done sequence unbroken (no restart)."""
    if not len(replay):
        return set()
    rows = replay.storage[:]
    by_step = {(s, k): (t, d) for s, k, t, d in zip(*(rows[key].tolist() for key in
               ("stream_id", "policy_version", "time", "done")))}
    out = set()
    for (s, k) in by_step:
        ok = True
        for j in range(k, k + seq_len - 1):
            nxt = by_step.get((s, j + 1))
            t, d = by_step[(s, j)]
            if nxt is None or nxt[0] != (0 if d != ALIVE else t + 1):
                ok = False
                break
        if ok:
            out.add((s, k))
    return out
