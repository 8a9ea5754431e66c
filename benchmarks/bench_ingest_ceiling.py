"""The most any ingest that stores records can reach, against raw pyzmq, in the same run.

    python benchmarks/bench_ingest_ceiling.py [--kinds cartpole image84] [--messages 600] [--rounds 3]

Raw pyzmq only receives (``recv_multipart(copy=False)``); an ingest must also copy each
record frame into replay storage at least once. This receives the same chunk messages
(one per actor step of ``bench_scale``'s kinds, from a sender process over TCP loopback)
both ways and prints the ratio: the ceiling of the issue's "ingest / raw" goals on this
machine. Where it is below a goal, that goal needs a receive that lands in storage
without the copy, not a faster ingest.
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


def receive(frames: list[bytes], messages: int, copy_into_storage: bool) -> float:
    """MB/s received (and, with ``copy_into_storage``, copied once into preallocated rows)."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    storage = [np.empty((SLOTS, len(f)), np.uint8) for f in frames[1:]]
    proc = mp.get_context("spawn").Process(target=sender, args=(f"tcp://127.0.0.1:{port}", [frames],
                                                                 messages + WARMUP))
    proc.start()
    for _ in range(WARMUP):
        pull.recv_multipart(copy=False)
    start = time.perf_counter()
    for i in range(messages):
        msg = pull.recv_multipart(copy=False)
        if copy_into_storage:
            for rows, frame in zip(storage, msg[1:]):
                rows[i % SLOTS] = np.frombuffer(frame.buffer, np.uint8)
    elapsed = time.perf_counter() - start
    proc.join()
    pull.close(0)
    ctx.term()
    return messages * sum(map(len, frames)) / elapsed / 1e6


def chunk_frames(kind: str) -> list[bytes]:
    """One chunk as an actor of ``bench_scale`` sends it: 8 envs x 32 steps."""
    cfg = RunConfig(env=EnvConfig(env_id=KINDS[kind], num_envs=8), actor=ActorConfig(chunk_steps=32))
    chunk = ChunkSource(cfg, 0, 0, ring=1).chunks[0]
    return [bytes(f) for f in wire.encode_chunk(chunk, 0, "0" * wire.TOKEN_HEX, 0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--messages", type=int, default=600, help="chunks received per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of both modes (median)")
    args = p.parse_args()
    for kind in args.kinds:
        frames = chunk_frames(kind)
        raw, copied = [], []
        for _ in range(args.rounds):
            raw.append(receive(frames, args.messages, False))
            copied.append(receive(frames, args.messages, True))
        ratios = [c / r for r, c in zip(raw, copied)]
        print(f"{kind}: chunk of 256 records, {sum(map(len, frames)) / 1e6:.3f} MB")
        print(f"  raw pyzmq                       {statistics.median(raw):8.0f} MB/s  "
              f"(rounds: {', '.join(f'{x:.0f}' for x in raw)})")
        print(f"  raw + one copy into storage     {statistics.median(copied):8.0f} MB/s  "
              f"ratio to raw {statistics.median(ratios):.2f}  (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    print("the ratio is the ceiling of any ingest that stores the records (goal in issue 10: 0.8)")


if __name__ == "__main__":
    main()
