"""Learner-side ingest throughput against raw ZeroMQ, measured in the same run.

    python benchmarks/bench_wire.py [--kind cartpole|image84] [--chunks 3000] [--rounds 3] [--copy]
                                    [--burst 64] [--cold]

A sender process PUSHes the same pre-encoded chunks (256 records from 8 streams; ``cartpole``:
obs float32[4], 16 KB a chunk; ``image84``: obs uint8[84, 84, 1], 1.8 MB) over tcp loopback. Receivers, each
timed from its first message:

- raw: pyzmq only receives them (the baseline);
- one-by-one: per chunk ``wire.decode_chunk`` (copy + checks) and
  ``StreamReplay.ingest(checked=True)``, the ingest path before bursts;
- burst: what the ingest thread does per burst, without its sockets and sessions:
  drain up to ``--burst`` queued chunks, ``wire.open_chunk`` each (checked frame views),
  ``learner.chunks.check_chunks`` (one pass over all of them) and one
  ``StreamReplay.ingest_arrays`` (one copy from the frames into the storage);
- thread: the real ``learner.ingest.IngestServer`` on the learner's sockets (the sender
  says hello first and ignores its credits): sessions, bookkeeping and one ack per actor and burst.

The replay is filled once around its ring before timing (``--cold``: a new, empty one), as
in a learner that has run a while: the first lap over the storage also pays the kernel's
first touch of its pages, for image records several times the copy itself.

Prints steps/s for each, the ratios to raw (goal >= 0.8), the receiving thread's CPU time
per chunk (the ingest thread's in thread mode: when it is busy all the time, it is the limit),
and where the time of one chunk goes. Never asserts a time.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import statistics
import struct
import time

import torch
import zmq

from learner.chunks import Received, check_chunks
from learner.ingest import IngestServer
from mouse import wire
from mouse.records import RecordSpec, StreamRecorder, continuity_problems, episode_ends, record_problems
from mouse.replay import ReplayConfig, make_replay_buffer
from mouse.transport import endpoints, free_port_base, learner_sockets

KINDS = {"cartpole": RecordSpec("continuous", (4,), 2), "image84": RecordSpec("image", (84, 84, 1), 4)}
CAPACITY = {"cartpole": 1_000_000, "image84": 50_000}  # replay records (image84: 355 MB)
RING = {"cartpole": 64, "image84": 8}  # distinct chunks a sender cycles through (image84: 15 MB)
STREAMS, STEPS = 8, 32  # 256 records per chunk


def make_chunks(count: int, seed: int = 0, token: str = "0" * wire.TOKEN_HEX,
                kind: str = "cartpole") -> list[list[bytes]]:
    """Encoded chunks like an actor sends them: stream-major, episodes ending at random."""
    g, spec = torch.Generator().manual_seed(seed), KINDS[kind]

    def obs():
        if spec.obs_kind == "image":
            return torch.randint(0, 256, (STREAMS, *spec.obs_shape), dtype=torch.uint8, generator=g)
        return torch.randn(STREAMS, *spec.obs_shape, generator=g)

    rec = StreamRecorder(spec, torch.arange(STREAMS))
    last = rec.reset(obs())
    chunks = []
    for _ in range(count):
        steps = [last]
        for _ in range(STEPS - 1):
            term = torch.rand(STREAMS, generator=g) < 0.05
            steps.append(rec.step(torch.randint(0, spec.num_actions, (STREAMS,), generator=g),
                                  obs(), torch.ones(STREAMS), term,
                                  torch.zeros(STREAMS, dtype=torch.bool)))
        last = steps[-1]
        td = torch.stack(steps, dim=1).reshape(-1)  # [8, 32] -> [256], stream-major
        episodes = [{"stream_id": s, "return": float(t), "length": t, "policy_version": 0}  # rewards of 1
                    for s, t in episode_ends(td["stream_id"], td["time"], td["done"])]
        chunks.append([bytes(f) for f in wire.encode_chunk(td, 0, token, 0, spec=spec, episodes=episodes)])
    return chunks


def numbered(head: bytes, seq: int) -> bytes:
    """A chunk's frame 0 as chunk number ``seq`` of its session: the learner takes a session's
    chunks in order (its seq is the 8 bytes after the prefix, ``mouse.wire``)."""
    return head[:8] + struct.pack("<Q", seq) + head[16:]


@functools.cache
def _fill_arrays(kind: str) -> list[dict]:
    """The chunks that fill a replay before timing, opened (made once per kind and process)."""
    return [wire.open_chunk(f, KINDS[kind])[1] for f in make_chunks(RING[kind], seed=1, kind=kind)]


def replay(kind: str, cold: bool = False):
    """The replay the receivers store into; unless ``cold``, filled once around its ring first, as
    in a learner that has run a while (the first lap also pays the kernel's first touch of each
    storage page: for image records several times the copy itself)."""
    rb = make_replay_buffer(ReplayConfig(capacity=CAPACITY[kind]), KINDS[kind])
    if not cold:
        arrays = _fill_arrays(kind)
        written = 0
        while written < CAPACITY[kind]:
            written += rb.ingest_arrays(arrays)
    return rb


def sender(address: str, chunks, total: int, kind: str = "cartpole") -> None:
    """PUSH ``total`` chunks; with ``chunks`` None, say hello on the control socket first and
    send ``kind`` chunks of the session it gets (credits are ignored: the learner's side is measured)."""
    ctx = zmq.Context()
    if chunks is None:
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(endpoints(address).control)
        dealer.send_multipart(wire.encode_control("hello", {"actor_id": -1, "token": "", "pid": 1,
                                                            "host": "bench", "version": -1}))
        _, welcome = wire.decode_control(dealer.recv_multipart())
        chunks = make_chunks(RING[kind], token=welcome["token"], kind=kind)
        dealer.close(0)  # its acks go unread
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoints(address).records)
    for i in range(total):
        head, *frames = chunks[i % len(chunks)]
        push.send_multipart([numbered(head, i), *frames])
    push.close(linger=-1)  # deliver everything before exiting
    ctx.term()


def drain(pull: zmq.Socket, first, burst: int, copy: bool) -> list:
    """``first`` and whatever else is queued, up to ``burst`` messages (never waits)."""
    out = [first]
    while len(out) < burst:
        try:
            out.append(pull.recv_multipart(zmq.NOBLOCK, copy=copy))
        except zmq.Again:
            break
    return out


def store_burst(batch, rb, spec: RecordSpec) -> int:
    received = []
    for frames in batch:
        header, arrays = wire.open_chunk(frames, spec)
        received.append(Received(None, 0, header["n"], arrays, header["episodes"]))
    verdicts = check_chunks(received, spec, STREAMS)
    return rb.ingest_arrays([c.arrays for c, v in zip(received, verdicts) if v is None])


def receive(mode: str, kind: str, chunks, total: int, copy: bool, burst: int,
            cold: bool) -> tuple[float, float]:
    """Steps/s over ``total`` chunks, timed from the first message received, and the receiving
    thread's CPU microseconds per chunk meanwhile."""
    if mode == "thread":
        return receive_thread(kind, total, cold)
    spec = KINDS[kind]
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    rb = replay(kind, cold) if mode != "raw" else None  # before the sender starts filling the queue
    proc = mp.get_context("spawn").Process(target=sender, args=(f"tcp://127.0.0.1:{port}", chunks, total + 1, kind))
    proc.start()
    pull.recv_multipart(copy=copy)  # the sender is up; start the clock
    steps, received = 0, 0
    start, cpu0 = time.perf_counter(), time.thread_time()
    while received < total:
        frames = pull.recv_multipart(copy=copy)
        if mode == "raw":
            steps += STREAMS * STEPS
            received += 1
        elif mode == "one-by-one":
            header, td = wire.decode_chunk(frames, spec)
            steps += rb.ingest(td, checked=True)
            received += 1
        else:
            batch = drain(pull, frames, min(burst, total - received), copy)
            steps += store_burst(batch, rb, spec)
            received += len(batch)
    elapsed, cpu_us = time.perf_counter() - start, (time.thread_time() - cpu0) / total * 1e6
    proc.join()
    pull.close(0)
    ctx.term()
    return steps / elapsed, cpu_us


def receive_thread(kind: str, total: int, cold: bool) -> tuple[float, float]:
    """The real ingest thread: steps/s from its first stored chunk to its last, and that
    thread's CPU microseconds per chunk meanwhile."""
    ctx = zmq.Context()
    address = f"tcp://127.0.0.1:{free_port_base()}"
    spec = KINDS[kind]
    pull, router, pub = learner_sockets(ctx, address, records_max_bytes=wire.max_frame_bytes(spec, 4096))
    rb = replay(kind, cold)
    server = IngestServer(pull, router, spec, rb.ingest_arrays, current_version=lambda: 0,
                          current_weights=lambda: wire.encode_weights(0, {}, incarnation="0" * 16),
                          incarnation="0" * 16, config={}, num_envs=STREAMS, max_records=4096)
    server.start()
    proc = mp.get_context("spawn").Process(target=sender, args=(address, None, total + 1, kind))
    proc.start()
    cpu_clock = time.pthread_getcpuclockid(server.ident)
    while server.chunks < 1:
        time.sleep(0.001)
    start, steps0, cpu0 = time.perf_counter(), server.steps, time.clock_gettime(cpu_clock)
    while server.chunks < total + 1 and server.error is None and not server.rejected:
        time.sleep(0.002)
    elapsed, steps = time.perf_counter() - start, server.steps - steps0
    cpu_us = (time.clock_gettime(cpu_clock) - cpu0) / (server.chunks - 1) * 1e6
    server.stop()
    server.join()
    proc.join()
    if server.error is not None or server.rejected:
        raise RuntimeError(f"ingest thread failed or rejected: {server.error!r} {dict(server.rejected)}")
    for s in (pull, router, pub):
        s.close(0)
    ctx.term()
    return steps / elapsed, cpu_us


def per_chunk_us(fn, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def breakdown(chunks, burst: int, kind: str, cold: bool) -> None:
    import mouse.wire as w

    frames, spec = chunks[0], KINDS[kind]
    _, td = wire.decode_chunk(frames, spec)
    rb = replay(kind, cold)
    total = per_chunk_us(lambda: wire.decode_chunk(frames, spec))
    validate = w.validate_records
    w.validate_records = lambda td, _spec: td
    try:
        decode_only = per_chunk_us(lambda: wire.decode_chunk(frames, spec))
    finally:
        w.validate_records = validate
    print("per chunk of 256 records (in memory, no socket):")
    print("  one-by-one (before bursts)")
    print(f"    decode_chunk total             {total:8.1f} us")
    print(f"      wire checks + copies + TD    {decode_only:8.1f} us")
    print(f"      records.record_problems      {per_chunk_us(lambda: record_problems(td, spec)):8.1f} us")
    print(f"      records.continuity_problems  {per_chunk_us(lambda: continuity_problems(td)):8.1f} us")
    print(f"    replay ingest (checked)        {per_chunk_us(lambda: rb.ingest(td, checked=True)):8.1f} us")
    for k in sorted({1, burst}):
        batch = [chunks[i % len(chunks)] for i in range(k)]
        opened = [Received(None, 0, STREAMS * STEPS, wire.open_chunk(f, spec)[1], []) for f in batch]
        arrays = [c.arrays for c in opened]
        print(f"  bursts of {k} chunk(s), per chunk")
        print(f"    wire.open_chunk                {per_chunk_us(lambda: wire.open_chunk(frames, spec)):8.1f} us")
        print(f"    check_chunks                   {per_chunk_us(lambda: check_chunks(opened, spec, STREAMS), 2000 // k) / k:8.1f} us")
        print(f"    replay ingest_arrays           {per_chunk_us(lambda: rb.ingest_arrays(arrays), 2000 // k) / k:8.1f} us")
        print(f"    whole burst (store_burst)      {per_chunk_us(lambda: store_burst(batch, rb, spec), 2000 // k) / k:8.1f} us")


MODES = ("raw", "one-by-one", "burst", "thread")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=list(KINDS), default="cartpole", help="records")
    p.add_argument("--chunks", type=int, default=3000, help="chunks received per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of every mode (median)")
    p.add_argument("--copy", action="store_true", help="recv_multipart(copy=True) in raw/one-by-one/burst")
    p.add_argument("--burst", type=int, default=64, help="burst: chunks drained per storage write at most")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--cold", action="store_true",
                   help="store into a new, empty replay (its first lap) rather than one filled once")
    args = p.parse_args()
    torch.set_num_threads(1)
    chunks = make_chunks(RING[args.kind], kind=args.kind)
    rates, cpu = {m: [] for m in args.modes}, {m: [] for m in args.modes}
    for _ in range(args.rounds):
        for m in args.modes:
            rate, cpu_us = receive(m, args.kind, chunks, args.chunks, args.copy, args.burst, args.cold)
            rates[m].append(rate)
            cpu[m].append(cpu_us)
    med = {m: statistics.median(r) for m, r in rates.items()}
    spec, nbytes = KINDS[args.kind], sum(len(f) for f in chunks[0])
    print(f"records ({args.kind}): {spec.obs_key} {spec.obs_shape}, {STREAMS * STEPS} per chunk from {STREAMS} "
          f"streams, {nbytes:,} bytes in {len(chunks[0])} frames per chunk; "
          f"recv copy={args.copy}; bursts of at most {args.burst} chunks; "
          f"{'a new, empty replay' if args.cold else 'a replay filled once'}; "
          f"median of {args.rounds} rounds x {args.chunks} chunks")
    for m in args.modes:
        ratio = f"  ratio to raw {med[m] / med['raw']:6.3f}" if "raw" in med and m != "raw" else ""
        print(f"{m:11s}: {med[m]:12,.0f} steps/s {med[m] / (STREAMS * STEPS) * nbytes / 1e6:8,.0f} MB/s{ratio}  "
              "(rounds: " + ", ".join(f"{x:,.0f}" for x in rates[m]) + ")")
    print("goal: ingest / raw >= 0.8")
    print("receiving thread's CPU per chunk (the sender and both zmq I/O threads share the other core):")
    for m in args.modes:
        med_us = statistics.median(cpu[m])  # 0 when a short run was all taken before the clock read
        full = f"{STREAMS * STEPS / med_us * 1e6:12,.0f}" if med_us > 0 else f"{'n/a':>12}"
        print(f"  {m:11s}: {med_us:7.1f} us  (at 100% of a core: {full} "
              f"steps/s; rounds: " + ", ".join(f"{x:.1f}" for x in cpu[m]) + ")")
    breakdown(chunks, args.burst, args.kind, args.cold)


if __name__ == "__main__":
    main()
