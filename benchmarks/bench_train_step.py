"""Training-step throughput: all four heads vs a plain single-head DQN, per backbone.

    python benchmarks/bench_train_step.py [--seconds 10] [--batch 256] [--seq 16]

Every config trains on one fixed synthetic batch (continuous obs, q_star attached)
on the auto device (cuda if available). Each gets warm-up updates; then the
configs take turns (``--burst`` seconds each) until each has had ``--seconds``, so
background load falls on all of them alike, and updates/s is 1 / the median step
time. The ratio compares a config with the single-head DQN step of the same
backbone measured in the same run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from tensordict import TensorDict

from mouse.losses.sp import SpLossConfig
from mouse.losses.sv import SvLossConfig
from mouse.losses.vec_dqn import VecDqnLossConfig
from mouse.models import ModelConfig, MouseModel
from mouse.records import RecordSpec
from mouse.train import TrainConfig, make_optimizer, train_step

OBS_DIM, NUM_ACTIONS = 8, 6


def synthetic_batch(spec: RecordSpec, b: int, s: int, device: torch.device) -> TensorDict:
    g = torch.Generator().manual_seed(0)
    time_ = (torch.randint(0, 50, (b, 1), generator=g) + torch.arange(s)) % 50  # episodes of 50
    first = time_ == 0
    td = TensorDict({
        spec.obs_key: torch.randn(b, s, OBS_DIM, generator=g),
        "action": torch.randint(0, NUM_ACTIONS, (b, s), generator=g).masked_fill(first, 0),
        "reward": torch.randn(b, s, generator=g).masked_fill(first, 0.0),
        "done": (time_ == 49).long(),
        "time": time_,
        "q_star": torch.randn(b, s, NUM_ACTIONS, generator=g),
    }, batch_size=[b, s])
    td["xformed_reward"] = td["reward"].clone()
    return td.to(device)


def train_cfgs(b: int, s: int) -> dict[str, TrainConfig]:
    return {
        "dqn (1 head)": TrainConfig(batch_size=b, seq_len=s),
        "all 4 heads": TrainConfig(batch_size=b, seq_len=s,
                                   vec_dqn=VecDqnLossConfig(weight=1.0),
                                   sp=SpLossConfig(weight=1.0), sv=SvLossConfig(weight=1.0)),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One (backbone, loss config) pair: its own model and optimizer, timed step by step."""

    def __init__(self, backbone: str, label: str, tcfg: TrainConfig, batch: TensorDict,
                 device: torch.device):
        spec = RecordSpec("continuous", (OBS_DIM,), NUM_ACTIONS, q_star=True)
        torch.manual_seed(0)
        self.backbone, self.label, self.tcfg, self.batch = backbone, label, tcfg, batch
        self.model = MouseModel(ModelConfig(backbone=backbone), spec, tcfg.active_heads()).to(device)
        self.opt = make_optimizer(self.model, tcfg)
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # process CPU time: less sensitive to other load

    def run(self, seconds: float, device: torch.device, record: bool = True) -> None:
        start = time.perf_counter()
        while True:
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(self.model, self.opt, self.batch, self.tcfg)  # no host sync inside
            sync(device)
            t1, c1 = time.perf_counter(), time.process_time()
            if record:
                self.times.append(t1 - t0)
                self.cpu_times.append(c1 - c0)
            if t1 - start >= seconds:
                return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="timed seconds per config")
    ap.add_argument("--warmup", type=int, default=3, help="untimed updates per config")
    ap.add_argument("--burst", type=float, default=1.0,
                    help="seconds per turn: configs take turns so background load hits all alike")
    ap.add_argument("--batch", type=int, default=256, help="windows per batch (B)")
    ap.add_argument("--seq", type=int, default=16, help="steps per window (S)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") \
        if args.device == "auto" else torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" \
        else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {device} ({name}); B={args.batch} S={args.seq} "
          f"obs={OBS_DIM} A={NUM_ACTIONS}; default ModelConfig; ~{args.seconds:g} s per config "
          f"in {args.burst:g} s turns")
    batch = synthetic_batch(RecordSpec("continuous", (OBS_DIM,), NUM_ACTIONS, q_star=True),
                            args.batch, args.seq, device)
    runners = [Runner(bb, label, tcfg, batch, device) for bb in ("mlp", "transformer")
               for label, tcfg in train_cfgs(args.batch, args.seq).items()]
    for r in runners:
        for _ in range(args.warmup):
            r.run(0.0, device, record=False)
    for _ in range(max(1, round(args.seconds / args.burst))):
        for r in runners:
            r.run(args.burst, device)

    print(f"{'backbone':<12} {'config':<14} {'updates/s':>10} {'ms/update':>10} "
          f"{'p90 ms':>8} {'cpu ms':>8} {'updates':>8} {'vs dqn':>7}")
    base: dict[str, float] = {}
    rows = []
    for r in runners:
        t = torch.tensor(r.times, dtype=torch.float64)
        cpu_ms = 1000 * torch.tensor(r.cpu_times, dtype=torch.float64).median().item()
        median = t.median().item()  # the median resists bursts of background load
        ups = 1.0 / median
        base.setdefault(r.backbone, ups)
        print(f"{r.backbone:<12} {r.label:<14} {ups:>10.1f} {1000 * median:>10.2f} "
              f"{1000 * t.quantile(0.9).item():>8.2f} {cpu_ms:>8.1f} {len(t):>8d} {ups / base[r.backbone]:>6.2f}x")
        rows.append({"backbone": r.backbone, "config": r.label, "updates_per_s": ups,
                     "ms_per_update": 1000 * median, "vs_dqn": ups / base[r.backbone]})
    print("updates/s = 1 / median wall time per update; cpu ms = median process CPU time per "
          "update (all threads);\nvs dqn = updates/s ratio to the single-head DQN step of the "
          "same backbone, measured in the same run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "device_name": name, "batch": args.batch, "seq": args.seq,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
