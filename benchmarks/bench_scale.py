"""Scale-out load test: how many actors can one learner feed?

    python benchmarks/bench_scale.py [--kinds cartpole image84] [--actors 1 2 4 8] [--seconds 4]
                                     [--num-envs 8] [--no-training-row]

One real ``learner.learner.Learner`` on TCP loopback (device auto) receives from
N synthetic actor processes. A synthetic actor is the real ``actors.actor.Actor``
(handshake via ``connect``, credits, heartbeats, weights, bye, and
``wire.encode_chunk`` with whatever the chunk header needs) whose stepper hands
out pre-built chunks instead of stepping envs: chunks leave as fast as the
learner returns credits. Records: ``cartpole`` (obs float32[4], 64 B/record) and
``image84`` (obs uint8[84, 84, 1], ~7 KB/record, from a registered stand-in
env). Rows, each with the learner's ingest in steps/s and MB/s of record bytes:

- N = 1, 2, 4, 8 actors, training off (``warmup_steps`` beyond reach: the learner
  only decodes, validates and stores), beside raw pyzmq: N processes PUSHing the
  same encoded chunks to one PULL that only counts them (no decode, no credits);
- training on (``--no-training-row`` leaves it out): N = max, warm-up 2,000 steps,
  then training as fast as it can beside the ingest (backpressure off, so the row
  shows how ingest and training share the learner): ingest steps/s and updates/s;
  with backpressure a run takes 1 / replay_ratio env steps per update;
- one real actor (the real Stepper: env, model, chunks) alone against the learner:
  its env steps/s; "actors one learner can feed" = the ingest ceiling (the best
  training-off row) / that rate.

Every figure is from this run, on this machine: actors, learner and the raw
senders share its cores. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import multiprocessing as mp
import os
import queue
import tempfile
import threading
import time

import gymnasium as gym
import numpy as np
import torch
import zmq

from actors.actor import Actor
from actors.join import connect
from learner.learner import Learner
from mouse import wire
from mouse.components import resolve_device
from mouse.config import (BudgetConfig, EnvConfig, EvalConfig, LearnerConfig, RunConfig, WandbConfig,
                          from_dict, to_dict)
from mouse.envs import describe_env
from mouse.records import ChunkRecorder, episode_ends
from mouse.replay import ReplayConfig
from mouse.transport import free_port_base

IMAGE_ENV = "MouseBench/Image84-v0"
KINDS = {"cartpole": "CartPole-v1", "image84": IMAGE_ENV}


class Image84(gym.Env):
    """An Atari-sized stand-in: uint8 [84, 84, 1] frames, 4 actions, episodes of 50-500 steps."""

    observation_space = gym.spaces.Box(0, 255, (84, 84, 1), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def __init__(self):
        self.frames = np.random.default_rng(0).integers(0, 256, (8, 84, 84, 1), dtype=np.uint8)
        self.rng, self.t, self.length = np.random.default_rng(), 0, 1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.length = 0, int(self.rng.integers(50, 500))
        return self.frames[0], {}

    def step(self, action):
        self.t += 1
        return self.frames[self.t % 8], 1.0, self.t >= self.length, False, {}


if IMAGE_ENV not in gym.registry:  # at import: spawned workers register it too
    gym.register(IMAGE_ENV, entry_point=Image84)


# --- the actor side (worker processes) ---------------------------------------------------------

class ChunkSource:
    """Stands in for ``actors.stepper.Stepper``: a ring of pre-built, valid chunks of this
    actor's streams (consecutive within the ring) with the episodes they end (``chunks``:
    [(records, episodes)]), one handed out per ``take()``."""

    def __init__(self, cfg: RunConfig, actor_id: int, version: int, ring: int = 8):
        info, n, k = describe_env(cfg.env), cfg.env.num_envs, cfg.actor.chunk_steps
        spec, rng = info.spec, np.random.default_rng(actor_id)
        rec = ChunkRecorder(spec, np.arange(n) + actor_id * n, k, info.num_env_actions,
                            q_star_table=info.q_star_table)

        def obs():
            if spec.obs_kind == "image":
                return rng.integers(0, 256, (n, *spec.obs_shape), dtype=np.uint8)
            return rng.standard_normal((n, *spec.obs_shape)).astype(np.float32)

        rec.reset(obs(), version)
        self.chunks = []
        for _ in range(ring):
            while rec.steps < k:
                term = rng.random(n) < 0.01
                rec.step(rng.integers(0, info.num_env_actions, n), obs(), np.ones(n), term,
                         np.zeros(n, bool), version)
            chunk = rec.take()
            self.chunks.append((chunk, [{"stream_id": s, "return": float(t), "length": t, "policy_version": version}
                                        for s, t in episode_ends(chunk["stream_id"], chunk["time"], chunk["done"])]))
        self.version, self.env_steps, self.i = version, 0, 0
        self.record_bytes = sum(v.element_size() * v[0].numel() for v in self.chunks[0][0].values())

    def reset(self) -> None:
        pass

    def step(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def take(self):
        chunk, episodes = self.chunks[self.i % len(self.chunks)]
        self.i += 1
        self.env_steps += len(chunk)
        return chunk, episodes  # the episodes its records end (rewards of 1: returns = lengths)

    def close(self) -> None:
        pass


def run_actor(kind: str, address: str, stop) -> dict:
    """One actor against ``address`` until ``stop`` is set: synthetic chunks or the real Stepper."""
    handshake = connect(address, -1)
    actor = Actor(*handshake)  # the real transport, whatever the handshake carries
    if kind == "synthetic":
        actor.stepper.close()
        actor.stepper = ChunkSource(actor.cfg, actor.actor_id, actor.stepper.version)

    def watch():
        stop.wait()
        actor.stop("benchmark round over")

    threading.Thread(target=watch, daemon=True).start()
    t0 = time.perf_counter()
    counters = actor.run()
    return {"env_steps_per_s": counters["env_steps"] / (time.perf_counter() - t0), **counters}


def run_raw(endpoint: str, cfg_dict: dict, stop) -> dict:
    """PUSH the same encoded chunks as a synthetic actor, no credits, until ``stop`` is set."""
    cfg = from_dict(RunConfig, cfg_dict)
    source = ChunkSource(cfg, 0, 0)
    messages = [[bytes(f) for f in wire.encode_chunk(c, 0, "0" * wire.TOKEN_HEX, 0, episodes=e)]
                for c, e in source.chunks]
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 64)
    push.connect(endpoint)
    sent = 0
    while not stop.is_set():
        if push.poll(50, zmq.POLLOUT):
            push.send_multipart(messages[sent % len(messages)], copy=False)
            sent += 1
    push.close(0)
    return {"sent": sent}


def worker(tasks, results, stop) -> None:
    torch.set_num_threads(1)  # like an actor process
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    results.put({"ready": True})  # imports done
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            if task[0] == "raw":
                results.put(run_raw(task[1], task[2], stop))
            else:
                results.put(run_actor(task[0], task[1], stop))
        except BaseException as e:  # reported by the main process
            results.put({"error": repr(e)})


# --- the learner side (this process) -------------------------------------------------------------

def run_config(env_id: str, num_envs: int, training: bool, capacity: int) -> RunConfig:
    return RunConfig(
        env=EnvConfig(env_id=env_id, num_envs=num_envs),
        replay=ReplayConfig(capacity=capacity),
        learner=LearnerConfig(warmup_steps=2_000 if training else 10 ** 15, max_ahead_steps=0,
                              log_every_s=3600.0, checkpoint_every_s=3600.0),
        eval=EvalConfig(every_s=0.0, episodes=1, max_steps=20),
        wandb=WandbConfig(mode="disabled"),
        budget=BudgetConfig(max_env_steps=0, max_minutes=0.0, solved_return=float("inf")),
    )


class Pool:
    """Worker processes (torch imported once) that take actor or raw-sender tasks."""

    def __init__(self, size: int):
        ctx = mp.get_context("spawn")
        self.tasks, self.results, self.stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.procs = [ctx.Process(target=worker, args=(self.tasks, self.results, self.stop), daemon=True)
                      for _ in range(size)]
        for p in self.procs:
            p.start()
        for _ in self.procs:  # spawned workers import torch first: minutes on a loaded machine
            self.result(timeout=900)

    def result(self, timeout: float) -> dict:
        r = self.results.get(timeout=timeout)
        if "error" in r:
            raise RuntimeError(f"worker failed: {r['error']}")
        return r

    def failed(self) -> None:
        """Raise at once if a worker reported an error (nothing else is waiting in results)."""
        try:
            r = self.results.get_nowait()
        except queue.Empty:
            return
        raise RuntimeError(f"worker failed: {r.get('error', r)}")

    def start(self, tasks: list) -> None:
        self.stop.clear()
        for t in tasks:
            self.tasks.put(t)

    def finish(self, count: int, timeout: float = 120.0) -> list[dict]:
        self.stop.set()
        return [self.result(timeout) for _ in range(count)]

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        for p in self.procs:
            p.join(timeout=10)


def learner_round(pool: Pool, cfg: RunConfig, kind: str, n: int, args, seconds: float | None = None) -> dict:
    """A fresh learner, ``n`` actors of ``kind``; the learner's ingest over the measured window."""
    learner = Learner(cfg, tempfile.mkdtemp(prefix="mouse-bench-scale-"))
    address = learner.bind(f"tcp://127.0.0.1:{free_port_base()}")
    thread = threading.Thread(target=learner.run, name="bench-learner", daemon=True)
    thread.start()
    pool.start([(kind, address)] * n)
    deadline = time.monotonic() + 120
    while len(learner.ingest.actors) < n or learner.ingest.steps == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(learner.ingest.actors)} of {n} actors connected")
        pool.failed()
        time.sleep(0.1)
    time.sleep(args.settle)
    s0, u0, t0 = learner.ingest.steps, learner.loop.updates, time.perf_counter()
    time.sleep(seconds or args.seconds)
    s1, u1, t1 = learner.ingest.steps, learner.loop.updates, time.perf_counter()
    actors = pool.finish(n)
    learner.request_stop("benchmark round over")
    with contextlib.redirect_stdout(io.StringIO()):  # the learner's final console lines
        thread.join(timeout=60)
    return {"steps_per_s": (s1 - s0) / (t1 - t0), "updates_per_s": (u1 - u0) / (t1 - t0),
            "actor_rate": actors[0]["env_steps_per_s"] if n == 1 else None,
            "rejected": dict(learner.ingest.rejected)}


def raw_round(pool: Pool, cfg: RunConfig, n: int, args) -> float:
    """Records/s that one PULL socket receives from ``n`` PUSH processes (no decode)."""
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 256)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    pool.start([("raw", f"tcp://127.0.0.1:{port}", to_dict(cfg))] * n)
    records = cfg.env.num_envs * cfg.actor.chunk_steps
    pull.recv_multipart(copy=False)
    count, t0, settle_until = 0, None, time.perf_counter() + args.settle
    while True:
        if not pull.poll(1000):
            break
        pull.recv_multipart(copy=False)
        now = time.perf_counter()
        if t0 is None and now >= settle_until:
            t0, count = now, 0
        count += 1
        if t0 is not None and now - t0 >= args.seconds:
            break
    pool.finish(n)
    pull.close(0)
    return count * records / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per row")
    p.add_argument("--settle", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--train-seconds", type=float, default=10.0, help="measured seconds of the training row")
    p.add_argument("--num-envs", type=int, default=8, help="streams per actor (chunk = num_envs x 16)")
    p.add_argument("--no-training-row", action="store_true")
    p.add_argument("--image-capacity", type=int, default=20_000, help="replay steps for image84")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    pool = Pool(max(args.actors))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    summary = []
    try:
        for kind in args.kinds:
            summary.append(run_kind(pool, kind, args))
    finally:
        pool.close()
    print("\nactors one learner can feed (ingest ceiling / one real actor's env steps/s):")
    for kind, ceiling, rate in summary:
        print(f"  {kind:<9} {ceiling:>12,.0f} / {rate:>9,.0f} = {ceiling / rate:6.1f} actors"
              f" of {args.num_envs} envs")


def run_kind(pool: Pool, kind: str, args) -> tuple[str, float, float]:
    env_id = KINDS[kind]
    capacity = args.image_capacity if kind == "image84" else 1_000_000
    cfg = run_config(env_id, args.num_envs, training=False, capacity=capacity)
    record_bytes = ChunkSource(cfg, 0, 0, ring=1).record_bytes
    chunk_kb = record_bytes * args.num_envs * cfg.actor.chunk_steps / 1e3
    print(f"\n{kind}: {record_bytes:,} B/record, chunks of {args.num_envs} x {cfg.actor.chunk_steps} "
          f"records ({chunk_kb:,.0f} KB); learner on {resolve_device(cfg.learner.device)}; "
          f"{args.seconds:g} s per row ({args.train_seconds:g} s with training)")
    print(f"{'row':<34}{'steps/s':>12}{'MB/s':>9}{'raw steps/s':>13}{'raw MB/s':>10}{'ingest/raw':>11}"
          f"{'updates/s':>10}")
    ceiling = 0.0
    for n in args.actors:
        r = learner_round(pool, cfg, "synthetic", n, args)
        raw = raw_round(pool, cfg, n, args)
        ceiling = max(ceiling, r["steps_per_s"])
        print(f"{f'{n} actor(s), training off':<34}{r['steps_per_s']:>12,.0f}"
              f"{r['steps_per_s'] * record_bytes / 1e6:>9,.1f}{raw:>13,.0f}{raw * record_bytes / 1e6:>10,.1f}"
              f"{r['steps_per_s'] / raw:>11.2f}{'':>10}" + (f"  rejected {r['rejected']}" if r["rejected"] else ""))
    if not args.no_training_row:
        n = max(args.actors)
        train_cfg = run_config(env_id, args.num_envs, training=True, capacity=capacity)
        r = learner_round(pool, train_cfg, "synthetic", n, args, args.train_seconds)
        ratio = train_cfg.learner.replay_ratio
        print(f"{f'{n} actor(s), training on':<34}{r['steps_per_s']:>12,.0f}"
              f"{r['steps_per_s'] * record_bytes / 1e6:>9,.1f}{'':>13}{'':>10}{'':>11}{r['updates_per_s']:>10.1f}"
              f"  (at replay ratio {ratio:g}: {r['updates_per_s'] / ratio:,.0f} env steps/s)")
    real = learner_round(pool, dataclasses.replace(cfg, num_actors=1), "real", 1, args)
    rate = real["actor_rate"]
    print(f"{'1 real actor (env + model)':<34}{real['steps_per_s']:>12,.0f}"
          f"{real['steps_per_s'] * record_bytes / 1e6:>9,.1f}   (the actor: {rate:,.0f} env steps/s)")
    return kind, ceiling, rate


if __name__ == "__main__":
    main()
