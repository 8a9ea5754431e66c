"""Actor throughput: env steps/s of the actor loop against the bare vector env, in one run.

    python benchmarks/bench_actor.py [--env CartPole-v1] [--num-envs 8 64] [--steps 1500] [--rounds 3]
                                     [--vector gymnasium|envpool]

Rows, per sub-env count (mlp policy, one torch thread like an actor process):

- ``vector env, random actions``: the same vector env (gymnasium's, or EnvPool's with
  ``--vector envpool``) stepped with random actions drawn in numpy: what the env alone
  allows (the baseline, 1.00);
- ``per-step TensorDict loop``: the actor loop's former shape (a TensorDict of records
  per step from ``StreamRecorder``, ``ActingPolicy.act`` on it, chunks stacked), on
  today's recorder and policy: for comparison;
- ``actor loop, no sockets``: ``actors.stepper.Stepper`` (acting, recording into the
  chunk arrays, chunks, episode statistics) — goal >= 0.5x the env (moonshot 0.7x);
- ``actor streaming over TCP``: the real ``actors.actor.Actor`` (chunks, wire encoding,
  PUSH over TCP loopback, credits, heartbeats) against a sink process that answers
  hello and returns one credit per chunk, like a learner that keeps up — goal >= 0.95x
  the loop without sockets.

Every loop starts measuring after ``WARM_STEPS`` steps (an actor's first step traces
the model once, about 0.2 s). The loops take turns for ``--rounds`` rounds, so background load falls on all of
them alike; each figure is the median of the rounds, with their spread, by the
wall clock and per CPU second of this process (on a machine shared with other
work, the CPU-time ratios are the steadier ones). Then where one vector step's
time goes (thread CPU time), and what taking a weights message costs the actor
(decode, then load: the former ``load_state_dict`` vs the in-place copy). Nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import statistics
import time

import numpy as np
import torch
import zmq

from actors.actor import Actor
from actors.join import connect
from actors.stepper import Stepper
from mouse import wire
from mouse.acting import ActingPolicy, acting_state, load_acting_state
from mouse.components import build_model
from mouse.config import EnvConfig, RunConfig, from_dict, to_dict
from mouse.envs import describe_env, make_vector_env
from mouse.records import StreamRecorder
from mouse.transport import free_port_base, learner_sockets


class Clock:
    """Wall time and this process's CPU time (all its threads, ZeroMQ's I/O thread included)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, env_steps: int) -> tuple[float, float]:
        """(env steps per wall second, env steps per CPU second of this process)."""
        return (env_steps / (time.perf_counter() - self.wall),
                env_steps / max(time.process_time() - self.cpu, 1e-9))


def same_model(cfg: RunConfig, info) -> torch.nn.Module:
    """The model every row acts with, the streaming actor's too (its weights come from the sink):
    the same weights everywhere, so every row plays the same episodes (how often envs reset
    moves the rates by several percent)."""
    torch.manual_seed(0)
    return build_model(cfg, info).eval()


def random_actions(cfg: RunConfig, steps: int) -> tuple[float, float]:
    env = make_vector_env(cfg.env)
    env.reset(seed=0)
    rng, n = np.random.default_rng(0), cfg.env.num_envs
    actions = rng.integers(0, env.single_action_space.n, (steps, n))
    clock = Clock()
    for a in actions:
        env.step(a)
    rates = clock.rates(steps * n)
    env.close()
    return rates


def tensordict_loop(cfg: RunConfig, steps: int) -> tuple[float, float]:
    """The actor loop before the chunk arrays: one TensorDict of records per step, stacked per chunk."""
    info = describe_env(cfg.env)
    env = make_vector_env(cfg.env)
    policy = ActingPolicy(same_model(cfg, info), cfg.actor.policy, cfg.acting_context, 0.1)
    rec = StreamRecorder(info.spec, torch.arange(cfg.env.num_envs))
    obs, _ = env.reset(seed=0)
    last = rec.reset(obs)
    pending = [last]
    clock = Clock()
    for _ in range(steps):
        action = policy.act(last)
        obs, reward, term, trunc, _ = env.step(action.numpy())
        last = rec.step(action, obs, reward, term, trunc)
        pending.append(last)
        if len(pending) >= cfg.actor.chunk_steps:
            torch.stack(pending, dim=1).reshape(-1)
            pending = []
    rates = clock.rates(steps * cfg.env.num_envs)
    env.close()
    return rates


WARM_STEPS = 3  # the first step traces the model, the next the TorchScript executor optimizes


def warm_up(stepper: Stepper) -> int:
    """Take the actor's one-off start (about 0.2 s: tracing the model) out of the steady state
    measured here; its records are dropped. Returns the env steps it made."""
    for _ in range(WARM_STEPS):
        stepper.step()
    stepper.take()
    return WARM_STEPS * stepper.num_envs


def stepper_loop(cfg: RunConfig, steps: int) -> tuple[float, float]:
    info = describe_env(cfg.env)
    stepper = Stepper(cfg, 0, info, same_model(cfg, info))
    warm_up(stepper)
    clock = Clock()
    for _ in range(steps):
        stepper.step()
        if stepper.ready():
            stepper.take()
    rates = clock.rates(steps * cfg.env.num_envs)
    stepper.close()
    return rates


def sink(pull, router, cfg: RunConfig, weights, stop) -> None:
    """A learner that keeps up: welcome + weights on hello, one credit back per chunk received."""
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(router, zmq.POLLIN)
    actor, granted, taken = None, cfg.learner.credits_per_actor, 0
    session = {"incarnation": "0" * wire.INCARNATION_HEX}
    while not stop.is_set():
        ready = dict(poller.poll(50))
        if router in ready:
            ident, *frames = router.recv_multipart()
            kind, body = wire.decode_control(frames)
            if kind == "hello":
                actor = ident
                welcome = {"actor_id": 0, "token": "1" * wire.TOKEN_HEX, "config": to_dict(cfg),
                           "credits": granted, **session}
                router.send_multipart([ident, *wire.encode_control("welcome", welcome)])
                router.send_multipart([ident, *weights])
        if pull in ready:
            while True:
                try:
                    frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if wire.peek_kind(frames) == "chunk":
                    granted, taken = granted + 1, taken + 1  # acks carry the session's totals
                    ack = {"version": 1, "credits": granted, "received": taken, **session}
                    router.send_multipart([actor, *wire.encode_control("ack", ack)])


def sink_process(port: int, cfg_dict: dict, stop) -> None:
    """The learner side in its own process (as in a real run: no GIL shared with the actor)."""
    cfg = from_dict(RunConfig, cfg_dict)
    pull, router, pub = learner_sockets(zmq.Context.instance(), f"tcp://127.0.0.1:{port}")
    weights = wire.encode_weights(1, acting_state(same_model(cfg, describe_env(cfg.env))),
                                  incarnation="0" * wire.INCARNATION_HEX)
    sink(pull, router, cfg, weights, stop)
    for s in (pull, router, pub):
        s.close(0)


class Sink:
    """A sink process for the streaming rows (started once, reused by every round)."""

    def __init__(self, cfg: RunConfig):
        self.port = free_port_base()
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=sink_process, args=(self.port, to_dict(cfg), self.stop), daemon=True)
        self.proc.start()

    def close(self) -> None:
        self.stop.set()
        self.proc.join(timeout=10)


def streaming(cfg: RunConfig, steps: int, port: int) -> tuple[float, float]:
    actor = Actor(*connect(f"tcp://127.0.0.1:{port}", 0))  # (cfg, id, sockets, weights, welcome)
    warm = warm_up(actor.stepper)  # run() starts from a reset
    clock = Clock()
    counters = actor.run(max_steps=steps)
    return clock.rates(counters["env_steps"] - warm)


def breakdown(cfg: RunConfig, steps: int) -> dict[str, float]:
    """Thread CPU microseconds per vector step of the Stepper's parts."""
    info = describe_env(cfg.env)
    st = Stepper(cfg, 0, info, same_model(cfg, info))
    warm_up(st)
    clock, parts = time.thread_time, np.zeros(4)
    for _ in range(steps):
        t0 = clock()
        action = st.policy.act_step(st.recorder.newest, st.recorder.action_mask).numpy()
        t1 = clock()
        obs, reward, term, trunc, _ = st.env.step(action)
        t2 = clock()
        st.recorder.step(action, obs, reward, term, trunc, st.version)
        t3 = clock()
        if st.recorder.steps == cfg.actor.chunk_steps:
            st.recorder.take()
        parts += (t1 - t0, t2 - t1, t3 - t2, clock() - t3)
    st.close()
    return dict(zip(("act (model + select)", "env.step", "record", "take chunk"), parts / steps * 1e6))


INCARNATION = "0" * wire.INCARNATION_HEX  # any learner incarnation id


def weights_load_us(cfg: RunConfig, n: int = 200) -> dict[str, float]:
    """Thread CPU microseconds per weights message an actor takes (median of n)."""
    info = describe_env(cfg.env)
    learner_model, model = build_model(cfg, info), build_model(cfg, info).eval()
    full = [bytes(f) for f in wire.encode_weights(1, learner_model.state_dict(), incarnation=INCARNATION)]
    acting = [bytes(f) for f in wire.encode_weights(1, acting_state(learner_model), incarnation=INCARNATION)]
    _, _, full_state = wire.decode_weights(full)
    _, _, acting_tensors = wire.decode_weights(acting)

    def median_us(fn) -> float:
        times = []
        for _ in range(n):
            t0 = time.thread_time()
            fn()
            times.append(time.thread_time() - t0)
        return 1e6 * statistics.median(times)

    return {"decode (whole state, before)": median_us(lambda: wire.decode_weights(full)),
            "load_state_dict (before)": median_us(lambda: model.load_state_dict(full_state)),
            "decode (acting tensors)": median_us(lambda: wire.decode_weights(acting)),
            "load_acting_state, in place": median_us(lambda: load_acting_state(model, acting_tensors))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--num-envs", type=int, nargs="+", default=[8, 64])
    p.add_argument("--steps", type=int, default=1500, help="vector steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="turns of every loop (median, spread)")
    p.add_argument("--vector", choices=("gymnasium", "envpool"), default="gymnasium",
                   help="the vector env of every row (env.vector)")
    a = p.parse_args()
    torch.set_num_threads(1)  # like an actor process (actors.main)
    print(f"actor throughput, {a.env} ({a.vector}), mlp policy, {a.steps} vector steps per measurement, "
          f"median of {a.rounds} rounds (min-max)")
    for n in a.num_envs:
        cfg = RunConfig(env=EnvConfig(env_id=a.env, num_envs=n, vector=a.vector), num_actors=1)
        cfg = dataclasses.replace(cfg, actor=dataclasses.replace(cfg.actor, epsilon=0.1))
        sink_proc = Sink(cfg)
        rows = {"vector env, random actions": lambda: random_actions(cfg, a.steps),
                "per-step TensorDict loop": lambda: tensordict_loop(cfg, a.steps),
                "actor loop, no sockets": lambda: stepper_loop(cfg, a.steps),
                "actor streaming over TCP": lambda: streaming(cfg, a.steps, sink_proc.port)}
        rates: dict[str, list[tuple[float, float]]] = {k: [] for k in rows}
        for _ in range(a.rounds):
            for name, fn in rows.items():
                rates[name].append(fn())
        sink_proc.close()
        print(f"\n{n} sub-envs (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        for col, label in ((0, "wall clock"), (1, "CPU time")):
            med = {k: statistics.median(r[col] for r in v) for k, v in rates.items()}
            env_rate, loop = med["vector env, random actions"], med["actor loop, no sockets"]
            unit = "env steps/s" if col == 0 else "steps/CPU-s"
            print(f"{label + ':':<30}{unit:>12}{'min-max':>20}{'vs env':>8}{'vs loop':>8}")
            for name, v in rates.items():
                spread = f"{min(r[col] for r in v):,.0f}-{max(r[col] for r in v):,.0f}"
                print(f"  {name:<28}{med[name]:>12,.0f}{spread:>20}{med[name] / env_rate:>8.2f}"
                      f"{med[name] / loop:>8.2f}")
            print(f"  goals: actor loop >= 0.50x env (moonshot 0.70x): {loop / env_rate:.2f}x; "
                  f"streaming >= 0.95x loop: {med['actor streaming over TCP'] / loop:.2f}x")
        parts = breakdown(cfg, min(a.steps, 1000))
        print("per vector step (thread CPU us): "
              + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()))
    print("\nper weights message (thread CPU us, default model): "
          + ", ".join(f"{k} {v:.0f}" for k, v in weights_load_us(cfg).items()))


if __name__ == "__main__":
    main()
