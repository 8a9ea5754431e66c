"""Learner weight broadcasts: what a publish costs the training thread, before and after.

    python benchmarks/bench_publish.py [--hidden 128 512] [--turn-publishes 5] [--publish-every 10]
                                       [--device auto] [--subscribers 2]

The default run's model (CartPole, mlp, dqn head with its target) at each
``--hidden`` width trains on a fixed batch of the default shape (B=64, S=8) on
``--device``, publishing every ``--publish-every`` updates to ``--subscribers``
SUB processes that receive and drop the weights (actors). Modes, taking turns:

- ``none``: no publish (the baseline);
- ``before``: the former publish on the training thread: a CPU copy of the whole
  state (target heads too), encoding, and the send;
- ``after``: ``learner.publish.WeightsPublisher``: the training thread only
  snapshots the acting tensors (flat copy; on CUDA a non_blocking copy into pinned
  memory); its own thread encodes and sends.

The modes take turns of ``--turn-publishes`` publishes each (``none`` runs as many
updates), ``--rounds`` turns per mode.

Printed per mode: training-thread CPU milliseconds per publish (median; thread CPU
time, so other load on the machine does not count), the same per update
(/ publish_every), bytes per broadcast, and updates/s (wall clock) with its ratio
to ``none``; then the publisher thread's own share (views, encode, send). Nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

import torch
import zmq
from tensordict import TensorDict

from learner.learner import cpu_state
from learner.publish import WeightsPublisher
from mouse import wire
from mouse.components import build_model, resolve_device
from mouse.config import RunConfig
from mouse.envs import describe_env
from mouse.models import ModelConfig
from mouse.train import make_optimizer, train_step


INCARNATION = "0" * wire.INCARNATION_HEX  # any learner incarnation id


def subscriber(port: int, stop) -> None:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    while not stop.is_set():
        if sub.poll(100):
            sub.recv_multipart(copy=False)
    sub.close(0)


def batch_for(cfg: RunConfig, spec, device: torch.device) -> TensorDict:
    b, s = cfg.train.batch_size, cfg.train.seq_len
    g = torch.Generator().manual_seed(0)
    time_ = (torch.randint(0, 50, (b, 1), generator=g) + torch.arange(s)) % 50  # [B, S]
    first = time_ == 0
    td = TensorDict({
        spec.obs_key: torch.randn(b, s, *spec.obs_shape, generator=g),
        "action": torch.randint(0, spec.num_actions, (b, s), generator=g).masked_fill(first, 0),
        "reward": torch.ones(b, s).masked_fill(first, 0.0),
        "done": (time_ == 49).long(),
        "time": time_,
    }, batch_size=[b, s])
    td["xformed_reward"] = td["reward"].clone()
    return td.to(device)


class Mode:
    def __init__(self, name: str, model, pub: zmq.Socket):
        self.name, self.model, self.pub = name, model, pub
        self.publisher = WeightsPublisher(model, pub, 0) if name == "after" else None
        self.publish_s: list[float] = []
        self.rates: list[float] = []
        self.version = 0

    def publish(self) -> None:
        self.version += 1
        t0 = time.thread_time()  # the training thread's own work, whatever else runs on the machine
        if self.name == "before":  # the former Learner.publish, inline
            frames = wire.encode_weights(self.version, cpu_state(self.model), incarnation=INCARNATION)
            self.pub.send_multipart(frames, copy=False)
        else:
            self.publisher.publish(self.version)
        self.publish_s.append(time.thread_time() - t0)


def sender_cpu_ms(model, pub: zmq.Socket, n: int = 20) -> float:
    """The publisher thread's share: views, encode and send of one snapshot, thread CPU ms (median of n)."""
    publisher = WeightsPublisher(model, pub, 0)
    publisher.close()
    times = []
    for v in range(1, n + 1):
        flats, event = publisher._snapshot()
        t0 = time.thread_time()
        pub.send_multipart(wire.encode_weights(v, publisher._unflatten(flats, event), incarnation=INCARNATION),
                           copy=False)
        times.append(time.thread_time() - t0)
    return 1e3 * statistics.median(times)


def run_width(hidden: int, args, device: torch.device, port: int, pub: zmq.Socket) -> list[dict]:
    cfg = RunConfig(model=ModelConfig(hidden_dim=hidden))
    info = describe_env(cfg.env)
    torch.manual_seed(0)
    model = build_model(cfg, info).to(device)
    opt = make_optimizer(model, cfg.train)
    batch = batch_for(cfg, info.spec, device)
    modes = [Mode(name, model, pub) for name in ("none", "before", "after")]
    for _ in range(3):
        train_step(model, opt, batch, cfg.train)
    updates = args.turn_publishes * args.publish_every
    for _ in range(args.rounds):
        for m in modes:
            t0 = time.perf_counter()
            for n in range(1, updates + 1):
                train_step(model, opt, batch, cfg.train)  # returns floats: synced with the device
                if m.name != "none" and n % args.publish_every == 0:
                    m.publish()
            m.rates.append(updates / (time.perf_counter() - t0))
    for m in modes:
        if m.publisher is not None:
            m.publisher.close()
    full = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    acting = sum(len(f) if isinstance(f, bytes) else memoryview(f).nbytes
                 for f in modes[2].publisher.frames[1:])
    base = statistics.median(modes[0].rates)
    print(f"\nhidden_dim {hidden}: {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"broadcast {full / 1e6:.2f} MB before (whole state), {acting / 1e6:.2f} MB after (acting tensors)")
    print(f"{'mode':<8}{'ms/publish':>12}{'ms/update':>11}{'updates/s':>11}{'min-max':>16}{'vs none':>9}")
    rows = []
    for m in modes:
        per = 1e3 * statistics.median(m.publish_s) if m.publish_s else 0.0
        rate = statistics.median(m.rates)
        print(f"{m.name:<8}{per:>12.3f}{per / args.publish_every:>11.4f}{rate:>11.1f}"
              f"{f'{min(m.rates):.1f}-{max(m.rates):.1f}':>16}{rate / base:>9.3f}")
        rows.append({"hidden": hidden, "mode": m.name, "ms_per_publish": per,
                     "ms_per_update": per / args.publish_every, "updates_per_s": rate, "vs_none": rate / base})
    sender = sender_cpu_ms(model, pub)
    print(f"publisher thread (after): {sender:.3f} ms CPU per broadcast (views, encode, send), off the training thread")
    rows.append({"hidden": hidden, "mode": "after, publisher thread", "ms_per_publish": sender,
                 "ms_per_update": sender / args.publish_every, "updates_per_s": 0.0, "vs_none": 0.0})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    p.add_argument("--turn-publishes", type=int, default=5, help="publishes per turn of a mode")
    p.add_argument("--rounds", type=int, default=3, help="turns of each mode (median, spread)")
    p.add_argument("--publish-every", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--subscribers", type=int, default=2, help="SUB processes receiving the weights")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = p.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    pub = zmq.Context.instance().socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    subs = [ctx.Process(target=subscriber, args=(port, stop), daemon=True) for _ in range(args.subscribers)]
    for s in subs:
        s.start()
    time.sleep(1.0)  # PUB drops what it sends before the subscriptions arrive
    print(f"publish cost on {device} (torch threads {torch.get_num_threads()}), B=64 S=8, publish every "
          f"{args.publish_every} updates to {args.subscribers} subscribers; modes take turns of "
          f"{args.turn_publishes} publishes, median of {args.rounds}; load average {os.getloadavg()[0]:.1f}")
    rows = [row for hidden in args.hidden for row in run_width(hidden, args, device, port, pub)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "publish_every": args.publish_every, "rows": rows}, f, indent=2)
    stop.set()
    for s in subs:
        s.join(timeout=5)
    pub.close(0)


if __name__ == "__main__":
    main()
