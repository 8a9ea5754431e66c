"""Actor throughput: env steps/s while streaming to a learner vs the same loop with no sockets.

    python benchmarks/bench_actor.py [--env CartPole-v1] [--num-envs 8] [--steps 3000]

Baseline (same run): vector env + recorder + ActingPolicy, nothing else. Streaming:
the real ``mouse.actor.Actor`` (records, chunks, wire encoding, PUSH over TCP
loopback, credits, heartbeats) against a sink process that answers hello, drains
the records and returns one credit per chunk, like a learner that keeps up.
Goal: streaming >= 0.9x baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import threading
import time

import torch
import zmq

from mouse import wire
from mouse.acting import ActingPolicy
from actors.actor import Actor, connect
from mouse.components import build_model
from mouse.config import EnvConfig, RunConfig, from_dict, to_dict
from mouse.envs import describe_env, make_vector_env
from mouse.transport import free_port_base, learner_sockets


def baseline(cfg: RunConfig, steps: int) -> float:
    torch.set_num_threads(1)
    info = describe_env(cfg.env)
    env = make_vector_env(cfg.env)
    model = build_model(cfg, info).eval()
    policy = ActingPolicy(model, cfg.actor.policy, cfg.acting_context, 0.1)
    from mouse.records import StreamRecorder

    rec = StreamRecorder(info.spec, torch.arange(cfg.env.num_envs))
    obs, _ = env.reset(seed=0)
    td = rec.reset(obs)  # acting needs the record's fields; building them counts as policy input
    t0 = time.perf_counter()
    for _ in range(steps):
        action = policy.act(td)
        obs, reward, term, trunc, _ = env.step(action.numpy())
        td = rec.step(action, obs, reward, term, trunc)
    return steps * cfg.env.num_envs / (time.perf_counter() - t0)


def sink(pull, router, cfg: RunConfig, weights, stop: threading.Event, count: list) -> None:
    """A learner that keeps up: welcome + weights on hello, one credit back per chunk received."""
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(router, zmq.POLLIN)
    actor, granted = None, cfg.learner.credits_per_actor
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
                    count[0] += 1
                    granted += 1  # acks carry the session's total grant
                    ack = {"version": 1, "credits": granted, **session}
                    router.send_multipart([actor, *wire.encode_control("ack", ack)])


def sink_process(port: int, cfg_dict: dict, stop) -> None:
    """The learner side in its own process (as in a real run: no GIL shared with the actor)."""
    cfg = from_dict(RunConfig, cfg_dict)
    pull, router, pub = learner_sockets(zmq.Context.instance(), f"tcp://127.0.0.1:{port}")
    info = describe_env(cfg.env)
    weights = wire.encode_weights(1, build_model(cfg, info).state_dict(), incarnation="0" * wire.INCARNATION_HEX)
    sink(pull, router, cfg, weights, stop, [0])
    for s in (pull, router, pub):
        s.close(0)


def streaming(cfg: RunConfig, steps: int) -> float:
    port = free_port_base()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=sink_process, args=(port, to_dict(cfg), stop), daemon=True)
    proc.start()
    cfg2, actor_id, sockets, w, welcome = connect(f"tcp://127.0.0.1:{port}", 0)
    actor = Actor(cfg2, actor_id, sockets, w, welcome)
    t0 = time.perf_counter()
    counters = actor.run(max_steps=steps)
    rate = counters["env_steps"] / (time.perf_counter() - t0)
    stop.set()
    proc.join(timeout=10)
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000, help="vector steps per measurement")
    a = p.parse_args()
    cfg = RunConfig(env=EnvConfig(env_id=a.env, num_envs=a.num_envs), num_actors=1)
    cfg = dataclasses.replace(cfg, actor=dataclasses.replace(cfg.actor, epsilon=0.1))
    base = baseline(cfg, a.steps)
    stream = streaming(cfg, a.steps)
    print(f"actor throughput, {a.env} x{a.num_envs} sub-envs, {a.steps} vector steps, mlp policy")
    print(f"{'loop':<34}{'env steps/s':>14}{'ratio':>8}")
    print(f"{'env + policy, no sockets':<34}{base:>14,.0f}{1.0:>8.2f}")
    print(f"{'actor streaming over TCP':<34}{stream:>14,.0f}{stream / base:>8.2f}   (goal >= 0.90)")


if __name__ == "__main__":
    main()
