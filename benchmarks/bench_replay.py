"""Replay throughput and memory: PrefetchBatchifier vs TorchRL's SliceSampler on the same storage.

    python benchmarks/bench_replay.py [--size 1000000] [--streams 64] [--batch 256] [--seq 16]
                                      [--seconds 3] [--workers 2] [--train-steps 80] [--threads 1]

A buffer of ``--size`` CartPole-sized records (64 bytes) from ``--streams``
streams, written in chunks of 32 steps per stream. Measured in one run:

1. windows/s of ``PrefetchBatchifier`` (``--workers`` threads) and of a plain
   ``replay.sample`` loop, vs TorchRL ``SliceSampler(traj_key="stream_id")``
   through ``ReplayBuffer.sample`` on the same storage; the SliceSampler's
   indices with our gather are shown too, to separate index time from gather time;
2. the same while another thread ingests at ``--ingest-rate`` steps/s (the rate
   it reached is printed);
3. ingest steps/s alone (validation, grouping, write, index update; buffer full,
   so every write evicts);
4. buffer bytes per stored step (storage + sampler index) vs the raw record bytes;
5. the ``mlp`` model with a dqn head training on ``--device`` from the batchifier
   (on CUDA: batches gathered into pinned memory and copied on the workers' own
   streams): the fraction of step time spent waiting in ``next(batchifier)``.
   ``--only-train`` fills the buffer and runs this row alone.

Ratios compare numbers from this run only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import torch
from torchrl.data import ReplayBuffer
from torchrl.data.replay_buffers.samplers import SliceSampler

from mouse.records import TERMINAL, RecordSpec
from mouse.replay import PrefetchBatchifier, ReplayConfig, make_replay_buffer

SPEC = RecordSpec("continuous", (4,), 2)  # CartPole


class VecActor:
    """Vectorised record source: streams in lock step, CartPole-like episode lengths."""

    def __init__(self, num_streams: int, steps_per_chunk: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.sid = torch.arange(num_streams)
        self.ep_len = torch.randint(10, 500, (num_streams,), generator=g)
        self.phase = torch.randint(0, 500, (num_streams,), generator=g)
        self.k, self.step = steps_per_chunk, 0

    def chunk(self):
        k, n = self.k, len(self.sid)
        step = (self.step + torch.arange(k))[:, None].expand(k, n)  # [K, N] time-major
        self.step += k
        time_ = (step + self.phase) % self.ep_len
        first = time_ == 0
        td = SPEC.empty(k * n)
        td["obs_continuous"] = torch.randn(k * n, 4)
        td["action"] = torch.where(first, 0, step % 2).reshape(-1)
        td["reward"] = (~first).float().reshape(-1)
        td["xformed_reward"] = td["reward"].clone()
        td["done"] = torch.where(time_ == self.ep_len - 1, TERMINAL, 0).reshape(-1)
        td["time"] = time_.reshape(-1)
        td["stream_id"] = self.sid.expand(k, n).reshape(-1)
        td["policy_version"] = (step // 1000).reshape(-1)
        return td


def interleaved_rates(contenders: dict, seconds: float, burst: float = 0.25) -> dict[str, float]:
    """Calls/s of each function; they take turns in ``burst``-second runs until each has had
    ``seconds``, so load from other processes falls on all of them alike."""
    calls = {k: 0 for k in contenders}
    spent = {k: 0.0 for k in contenders}
    for fn in contenders.values():
        fn()  # warm-up
    while min(spent.values()) < seconds:
        for k, fn in contenders.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < burst:
                fn()
                n += 1
            spent[k] += time.perf_counter() - t0
            calls[k] += n
    return {k: calls[k] / spent[k] for k in contenders}


class Ingester(threading.Thread):
    """Ingests pre-built chunks at ``target`` steps/s until stopped; ``achieved`` = steps/s reached."""

    def __init__(self, replay, chunks, target: float):
        super().__init__(daemon=True)
        self.replay, self.chunks, self.target = replay, chunks, target
        self.stop, self.steps, self.achieved = threading.Event(), 0, 0.0

    def run(self):
        t0, i = time.perf_counter(), 0
        while not self.stop.is_set():
            self.steps += self.replay.ingest(self.chunks[i % len(self.chunks)])
            i += 1
            ahead = self.steps / self.target - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        self.achieved = self.steps / (time.perf_counter() - t0)


def sampling_rates(replay, baseline, args, label):
    B, S = args.batch, args.seq

    def torchrl():
        with replay.lock:  # the baseline reads the same storage; keep it consistent with ingest
            baseline.sample(B * S)

    def slice_index_our_gather():
        with replay.lock:
            index, _ = baseline.sampler.sample(replay.storage, B * S)
            index = (index[0] if isinstance(index, tuple) else index).reshape(-1)  # [B * S]
            replay.storage[:].apply(lambda x: x.index_select(0, index), batch_size=[B * S])

    with PrefetchBatchifier(replay, batch_size=B, seq_len=S, prefetch=4, num_workers=args.workers,
                            device="cpu") as batches:
        out = interleaved_rates({
            "PrefetchBatchifier": lambda: next(batches),
            "replay.sample (1 thread)": lambda: replay.sample(B, S),
            "TorchRL SliceSampler (rb.sample)": torchrl,
            "SliceSampler index + index_select": slice_index_our_gather,
        }, args.seconds)
    out = {k: B * v for k, v in out.items()}  # windows/s
    print(f"\n{label}")
    base = out["TorchRL SliceSampler (rb.sample)"]
    for k, v in out.items():
        print(f"  {k:<36} {v:>12,.0f} windows/s   {v / base:7.2f}x")
    return out


def train_wait_fraction(replay, args) -> tuple[float, float]:
    from mouse.components import resolve_device
    from mouse.models import ModelConfig, MouseModel
    from mouse.train import TrainConfig, make_optimizer, train_step

    device = resolve_device(args.device)
    tcfg = TrainConfig(batch_size=args.batch, seq_len=args.seq)
    torch.manual_seed(0)
    model = MouseModel(ModelConfig(backbone="mlp"), SPEC, tcfg.active_heads()).to(device)
    opt = make_optimizer(model, tcfg)
    with PrefetchBatchifier(replay, batch_size=args.batch, seq_len=args.seq, prefetch=4,
                            num_workers=args.workers, device=device,
                            pin_memory=device.type == "cuda") as batches:
        for _ in range(5):  # warm-up, and let the workers fill the queue once
            train_step(model, opt, next(batches), tcfg)
        wait, t0 = 0.0, time.perf_counter()
        for _ in range(args.train_steps):
            w0 = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - w0
            train_step(model, opt, batch, tcfg)  # returns floats: synced with the device
        total = time.perf_counter() - t0
    return wait / total, args.train_steps / total


def only_train(replay, args, train_threads: int) -> None:
    torch.set_num_threads(train_threads)
    wait_frac, ups = train_wait_fraction(replay, args)
    print(f"mlp/dqn training on {args.device}: {ups:.1f} updates/s, waiting for a batch "
          f"{100 * wait_frac:.1f}% of step time   (goal < 5%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "updates_per_s": ups, "batch_wait_fraction": wait_frac,
                       "batch": args.batch, "seq": args.seq}, f, indent=2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1_000_000, help="buffer capacity, filled completely")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0, help="per contender and sampling measurement")
    p.add_argument("--workers", type=int, default=2, help="PrefetchBatchifier threads")
    p.add_argument("--ingest-rate", type=float, default=120_000, help="steps/s of the concurrent ingest")
    p.add_argument("--train-steps", type=int, default=80)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads while sampling and ingesting (training uses all cores)")
    p.add_argument("--device", default="cpu", help="training row: cpu | cuda[:N] | auto")
    p.add_argument("--only-train", action="store_true", help="fill the buffer, then the training row only")
    p.add_argument("--json", default="", help="--only-train: also write its figures to this JSON file")
    args = p.parse_args()
    train_threads = torch.get_num_threads()
    # on a loaded machine OpenMP wake-ups swamp small parallel gathers (tensor[idx] in
    # rb.sample took 8 ms instead of 0.1 ms here), which would flatter us: compare single-threaded
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {args.threads} intra-op thread(s) for sampling/ingest, "
          f"{train_threads} for training; buffer {args.size:,} steps, {args.streams} streams, "
          f"B={args.batch}, S={args.seq}")

    replay = make_replay_buffer(ReplayConfig(capacity=args.size), SPEC, seq_len=args.seq)
    actor = VecActor(args.streams)
    t0 = time.perf_counter()
    while len(replay) < args.size:
        replay.ingest(actor.chunk())
    print(f"filled in {time.perf_counter() - t0:.1f} s: {len(replay):,} steps, "
          f"{replay.num_windows:,} windows")
    if args.only_train:
        return only_train(replay, args, train_threads)

    # ingest alone, buffer full (every write evicts); chunks built beforehand
    chunks = [actor.chunk() for _ in range(max(8, min(200, args.size // (32 * args.streams))))]
    t0 = time.perf_counter()
    for c in chunks:
        replay.ingest(c)
    ingest_rate = sum(len(c) for c in chunks) / (time.perf_counter() - t0)
    more = [actor.chunk() for _ in range(len(chunks))]  # continues the streams: no restarts

    baseline = ReplayBuffer(storage=replay.storage,
                            sampler=SliceSampler(slice_len=args.seq, traj_key="stream_id"))
    idle = sampling_rates(replay, baseline, args, "sampling, no ingest")
    ingester = Ingester(replay, more, args.ingest_rate)
    ingester.start()
    busy = sampling_rates(replay, baseline, args, "sampling while another thread ingests")
    ingester.stop.set()
    ingester.join()
    print(f"  (concurrent ingest reached {ingester.achieved:,.0f} steps/s)")

    nbytes = replay.nbytes()
    raw = sum(f.dtype.itemsize * max(1, torch.Size(f.shape).numel()) for f in SPEC.fields().values())
    per_step = (nbytes["storage"] + nbytes["index"]) / args.size
    torch.set_num_threads(train_threads)
    wait_frac, ups = train_wait_fraction(replay, args)

    print("\nsummary")
    base, base_busy = idle["TorchRL SliceSampler (rb.sample)"], busy["TorchRL SliceSampler (rb.sample)"]
    print(f"  PrefetchBatchifier vs SliceSampler     {idle['PrefetchBatchifier'] / base:12.2f}x   (goal >= 3x)")
    print(f"  ... while ingesting {ingester.achieved:>9,.0f} steps/s "
          f"{busy['PrefetchBatchifier'] / base_busy:12.2f}x")
    print(f"  ingest alone                           {ingest_rate:>12,.0f} steps/s")
    print(f"  buffer bytes per step                  {per_step:>12.1f}   raw record {raw} B: "
          f"{per_step / raw:.3f}x   (goal <= 1.1x)")
    print(f"  mlp/dqn training on {args.device}: {ups:.1f} updates/s, waiting for a batch "
          f"{100 * wait_frac:.1f}% of step time   (goal < 5%)")


if __name__ == "__main__":
    main()
