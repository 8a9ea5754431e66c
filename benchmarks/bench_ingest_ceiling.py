"""The most any ingest that stores records can reach, against raw pyzmq, in the same run.

    python benchmarks/bench_ingest_ceiling.py [--kinds cartpole image84] [--seconds 1.5] [--rounds 5]

Raw pyzmq only receives (``recv_multipart(copy=False)``); an ingest must also copy each
record frame into replay storage at least once. This receives the same chunk messages
(one per actor step of ``bench_scale``'s kinds, from a sender process over TCP loopback)
both ways, in alternating rounds, and prints the ratio: the ceiling of the issue's
"ingest / raw" goals on this machine. Where it is below a goal, that goal needs a receive
that lands in storage without the copy, not a faster ingest. Beside it, the receiving
thread's CPU per chunk: where it is well below the wall time per chunk, the receiver waits
for the sender (which shares this machine's cores), and the ratio measures the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import numpy as np
import zmq

from mouse import wire
from mouse.config import ActorConfig, EnvConfig, RunConfig

from bench_scale import KINDS, ChunkSource
from bench_wire import sender

WARMUP = 10
SLOTS = 64  # storage rows per frame: a ring, like the replay's


def receive(frames: list[bytes], messages: int, copy_into_storage: bool) -> tuple[float, float]:
    """(MB/s, receiving thread's CPU us per chunk) receiving ``messages`` chunks (and, with
    ``copy_into_storage``, copying each once into preallocated rows)."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    storage = [np.empty((SLOTS, len(f)), np.uint8) for f in frames[1:]]
    proc = mp.get_context("spawn").Process(target=sender, args=(f"tcp://127.0.0.1:{port}", [frames],
                                                                 messages + WARMUP))
    proc.start()
    pull.setsockopt(zmq.RCVTIMEO, 30_000)  # a sender that died fails the benchmark, not hangs it
    try:
        for _ in range(WARMUP):
            pull.recv_multipart(copy=False)
        start, cpu = time.perf_counter(), time.thread_time()
        for i in range(messages):
            msg = pull.recv_multipart(copy=False)
            if copy_into_storage:
                for rows, frame in zip(storage, msg[1:]):
                    rows[i % SLOTS] = np.frombuffer(frame.buffer, np.uint8)
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
    except zmq.Again:
        proc.join(1)
        raise SystemExit(f"no chunk in 30 s: the sender process ended with exit code {proc.exitcode}") from None
    proc.join()
    pull.close(0)
    ctx.term()
    return messages * sum(map(len, frames)) / elapsed / 1e6, cpu / messages * 1e6


def chunk_frames(kind: str) -> list[bytes]:
    """One chunk as an actor of ``bench_scale`` sends it: 8 envs x 32 steps."""
    cfg = RunConfig(env=EnvConfig(env_id=KINDS[kind], num_envs=8), actor=ActorConfig(chunk_steps=32))
    chunk, episodes = ChunkSource(cfg, 0, 0, ring=1).chunks[0]
    return [bytes(f) for f in wire.encode_chunk(chunk, 0, "0" * wire.TOKEN_HEX, 0, episodes=episodes)]


def listed(values: list[float]) -> str:
    return f"(rounds: {', '.join(f'{v:.2f}' for v in values)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--seconds", type=float, default=1.5,
                   help="about how long each measurement receives (sized from a first, short one)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of both modes (median)")
    args = p.parse_args()
    for kind in args.kinds:
        frames = chunk_frames(kind)
        mb = sum(map(len, frames)) / 1e6
        probe, _ = receive(frames, 200, False)
        messages = max(200, round(args.seconds * probe / mb))
        raw, copied = [], []
        for _ in range(args.rounds):
            raw.append(receive(frames, messages, False))
            copied.append(receive(frames, messages, True))
        ratios = [c[0] / r[0] for r, c in zip(raw, copied)]
        print(f"{kind}: chunk of 256 records, {mb:.3f} MB; {messages} chunks per measurement, "
              f"median of {args.rounds} alternating rounds")
        for label, rows in (("raw pyzmq", raw), ("raw + one copy into storage", copied)):
            rate, cpu = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
            wall = mb / rate * 1e6  # us per chunk
            print(f"  {label:<28} {rate:8.0f} MB/s {wall:8.1f} us/chunk, receiving thread busy "
                  f"{cpu:7.1f} us ({min(1.0, cpu / wall):4.0%})")
        print(f"  ratio to raw {statistics.median(ratios):.2f} {listed(ratios)}")
    print("the ratio is the ceiling of any ingest that stores the records (goal in issue 10: 0.8)")


if __name__ == "__main__":
    main()
