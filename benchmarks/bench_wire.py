"""Learner-side ingest throughput against raw ZeroMQ, measured in the same run.

    python benchmarks/bench_wire.py [--chunks 3000] [--rounds 3] [--copy] [--extend-every K]

A sender process PUSHes the same pre-encoded chunks (CartPole-sized records,
obs float32[4], 256 records from 8 streams) over tcp loopback. The receiver either
only receives them (raw pyzmq, the baseline) or receives, decodes + validates
(``mouse.wire.decode_chunk``) and stores them in the learner's replay buffer
(``mouse.replay``: TorchRL LazyTensorStorage + stream-window sampler), exactly the
learner's ingest path (ingest). Prints steps/s for both, their ratio (goal >= 0.8), and where the time
of one chunk goes. Never asserts a time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch
import zmq

from mouse import wire
from mouse.records import RecordSpec, StreamRecorder, continuity_problems, record_problems
from mouse.replay import ReplayConfig, make_replay_buffer

SPEC = RecordSpec("continuous", (4,), 2)
STREAMS, STEPS = 8, 32  # 256 records per chunk


def make_chunks(count: int, seed: int = 0) -> list[list[bytes]]:
    """Encoded chunks like an actor sends them: stream-major, episodes ending at random."""
    g = torch.Generator().manual_seed(seed)
    rec = StreamRecorder(SPEC, torch.arange(STREAMS))
    last = rec.reset(torch.randn(STREAMS, 4, generator=g))
    chunks = []
    for _ in range(count):
        steps = [last]
        for _ in range(STEPS - 1):
            term = torch.rand(STREAMS, generator=g) < 0.05
            steps.append(rec.step(torch.randint(0, 2, (STREAMS,), generator=g),
                                  torch.randn(STREAMS, 4, generator=g), torch.ones(STREAMS), term,
                                  torch.zeros(STREAMS, dtype=torch.bool)))
        last = steps[-1]
        td = torch.stack(steps, dim=1).reshape(-1)  # [8, 32] -> [256], stream-major
        chunks.append([bytes(f) for f in wire.encode_chunk(td, 0, "0" * wire.TOKEN_HEX, spec=SPEC)])
    return chunks


def sender(port: int, chunks: list[list[bytes]], total: int) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    for i in range(total):
        push.send_multipart(chunks[i % len(chunks)])
    push.close(linger=-1)  # deliver everything before exiting
    ctx.term()


def receive(mode: str, chunks, total: int, copy: bool, extend_every: int = 1) -> float:
    """Steps/s over ``total`` chunks, timed from the first message received."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    proc = mp.get_context("spawn").Process(target=sender, args=(port, chunks, total + 1))
    proc.start()
    rb = make_replay_buffer(ReplayConfig(capacity=1_000_000), SPEC) if mode == "ingest" else None
    pull.recv_multipart(copy=copy)  # the sender is up; start the clock
    steps, pending = 0, []
    start = time.perf_counter()
    for i in range(total):
        frames = pull.recv_multipart(copy=copy)
        if rb is None:
            steps += STREAMS * STEPS
            continue
        header, td = wire.decode_chunk(frames, SPEC)
        steps += header["n"]
        pending.append(td)
        if len(pending) == extend_every or i == total - 1:
            rb.ingest(pending[0] if len(pending) == 1 else torch.cat(pending), checked=True)
            pending = []
    elapsed = time.perf_counter() - start
    proc.join()
    pull.close(0)
    ctx.term()
    return steps / elapsed


def per_chunk_us(fn, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def breakdown(chunks) -> None:
    import mouse.wire as w

    frames = chunks[0]
    _, td = wire.decode_chunk(frames, SPEC)
    rb = make_replay_buffer(ReplayConfig(capacity=1_000_000), SPEC)
    total = per_chunk_us(lambda: wire.decode_chunk(frames, SPEC))
    validate = w.validate_records
    w.validate_records = lambda td, spec: td
    try:
        decode_only = per_chunk_us(lambda: wire.decode_chunk(frames, SPEC))
    finally:
        w.validate_records = validate
    print("per chunk of 256 records (in memory, no socket):")
    print(f"  decode_chunk total             {total:8.1f} us")
    print(f"    wire checks + copies + TD    {decode_only:8.1f} us")
    print(f"    records.record_problems      {per_chunk_us(lambda: record_problems(td, SPEC)):8.1f} us")
    print(f"    records.continuity_problems  {per_chunk_us(lambda: continuity_problems(td)):8.1f} us")
    print(f"  replay ingest (checked)        {per_chunk_us(lambda: rb.ingest(td, checked=True)):8.1f} us")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=3000, help="chunks received per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating raw/ingest rounds (median)")
    p.add_argument("--copy", action="store_true", help="recv_multipart(copy=True) in both modes")
    p.add_argument("--extend-every", type=int, default=1,
                   help="ingest: extend the replay buffer once per K decoded chunks (torch.cat)")
    args = p.parse_args()
    torch.set_num_threads(1)
    chunks = make_chunks(64)
    raw, ingest = [], []
    for _ in range(args.rounds):
        raw.append(receive("raw", chunks, args.chunks, args.copy))
        ingest.append(receive("ingest", chunks, args.chunks, args.copy, args.extend_every))
    raw_sps, ingest_sps = statistics.median(raw), statistics.median(ingest)
    print(f"records: obs float32[4], {STREAMS * STEPS} per chunk from {STREAMS} streams, "
          f"{sum(len(f) for f in chunks[0])} bytes in {len(chunks[0])} frames per chunk; "
          f"recv copy={args.copy}; RB extend every {args.extend_every} chunk(s); "
          f"median of {args.rounds} rounds x {args.chunks} chunks")
    print(f"raw pyzmq PUSH/PULL receive : {raw_sps:12,.0f} steps/s  (rounds: "
          + ", ".join(f"{x:,.0f}" for x in raw) + ")")
    print(f"ingest (decode+validate+RB) : {ingest_sps:12,.0f} steps/s  (rounds: "
          + ", ".join(f"{x:,.0f}" for x in ingest) + ")")
    print(f"ratio ingest / raw          : {ingest_sps / raw_sps:12.3f}   (goal >= 0.8)")
    breakdown(chunks)


if __name__ == "__main__":
    main()
