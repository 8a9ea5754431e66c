"""The learner: ingest → replay → PrefetchBatchifier → train_step → publish weights.

Learning starts after ``warmup_steps`` stored steps; ``replay_ratio`` caps the
updates per inserted env step (the learner waits for data when ahead), and
weights go out every ``publish_every`` updates with a version that only rises.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path

import torch
import zmq

from mouse import wire
from mouse.checkpoint import load_checkpoint, save_checkpoint
from mouse.components import build_model, make_batchifier, make_replay, resolve_device
from mouse.config import RunConfig, to_dict
from mouse.envs import describe_env
from mouse.evaluate import evaluate
from mouse.ingest import IngestServer
from mouse.monitor import Monitor
from mouse.train import make_optimizer, train_step
from mouse.transport import learner_sockets

log = logging.getLogger("mouse.learner")


def check_config(cfg: RunConfig, info) -> None:
    t = cfg.train
    if (t.sp.weight > 0 or t.sv.weight > 0) and info.q_star_table is None:
        raise ValueError(
            f"train.sp.weight={t.sp.weight} / train.sv.weight={t.sv.weight} need q_star, but "
            f"{cfg.env.env_id!r} has no exact q_star (supported: FrozenLake, CliffWalking, Taxi); "
            "set those weights to 0 or pick such an env")
    if cfg.actor.policy == "sp" and t.sp.weight <= 0:
        log.warning("actor.policy=sp but train.sp.weight=0: actors will sample from an untrained head")


class Learner:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = resolve_device(cfg.learner.device)
        torch.manual_seed(cfg.learner.seed)
        self.info = describe_env(cfg.env, cfg.train.dqn.gamma)
        check_config(cfg, self.info)
        self.model = build_model(cfg, self.info).to(self.device)
        self.eval_model = build_model(cfg, self.info).eval()
        self.optimizer = make_optimizer(self.model, cfg.train)
        self.replay, self.insert = make_replay(cfg, self.info.spec)
        self.version, self.updates, self.env_steps0 = 0, 0, 0
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.replay_dir = self.run_dir / "replay"
        if self.checkpoint_path.exists():
            self._resume()
        self.updates0 = self.updates  # the replay ratio counts this session's updates and inserts
        self.ctx = zmq.Context.instance()
        self.pull, self.router, self.pub = learner_sockets(self.ctx, cfg.learner.host, cfg.learner.port)
        self._weights_frames = self._encode_weights()
        self.ingest = IngestServer(
            self.pull, self.router, self.info.spec, self.insert,
            current_version=lambda: self.version, current_weights=lambda: self._weights_frames,
            config=to_dict(cfg), credits=cfg.learner.credits_per_actor,
            actor_timeout_s=cfg.learner.actor_timeout_s, may_receive=self._may_receive)
        self.stop_event = threading.Event()
        self.best_eval, self.final_eval = -math.inf, None
        self.solved_at: tuple[int, int, float] | None = None  # (env steps, updates, minutes) when solved
        self._eval_thread: threading.Thread | None = None
        self._eval_done: tuple | None = None  # (when the weights were taken, result or error)
        self.start = time.monotonic()

    # --- weights and checkpoints ------------------------------------------------------------
    def _encode_weights(self):
        # a copy: on a CPU learner .to("cpu") would alias the parameters, and zmq sends large
        # frames without copying, so the next optimizer step would change weights in flight
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return wire.encode_weights(self.version, state)

    def publish(self) -> None:
        self.version += 1
        self._weights_frames = self._encode_weights()
        self.pub.send_multipart(self._weights_frames, copy=False)

    def _resume(self) -> None:
        state = load_checkpoint(self.checkpoint_path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version, self.updates = state["version"], state["updates"]
        self.env_steps0 = state["env_steps"]
        log.info("resumed from %s: version %d, %d updates", self.checkpoint_path, self.version, self.updates)
        if self.cfg.learner.save_replay and self.replay_dir.exists():
            self.replay.restore(self.replay_dir)
            log.info("restored %d replay steps from %s", len(self.replay), self.replay_dir)

    def save(self) -> None:
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.cfg,
                        version=self.version, updates=self.updates, env_steps=self.env_steps)

    @property
    def env_steps(self) -> int:
        return self.env_steps0 + self.ingest.steps

    # --- the loop -------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        def handler(signum, _frame):
            log.warning("signal %d: stopping cleanly (checkpoint and flush)", signum)
            self.stop_event.set()
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _budget_left(self) -> bool:
        b = self.cfg.budget
        if self.stop_event.is_set():
            return False
        if b.max_env_steps and self.env_steps >= b.max_env_steps:
            log.info("budget: %d env steps reached", self.env_steps)
            return False
        if b.max_minutes and time.monotonic() - self.start >= 60 * b.max_minutes:
            log.info("budget: %.1f minutes reached", b.max_minutes)
            return False
        return True

    def run(self) -> dict:
        """Train until the budget ends or a signal arrives; returns the run summary."""
        self._install_signals()
        try:
            self.monitor = Monitor(self.cfg, self.run_dir)
        except BaseException:
            for sock in (self.pull, self.router, self.pub):
                sock.close(0)
            raise
        self.ingest.start()
        start = self.start = time.monotonic()
        batchifier = None
        stats = _Interval()
        next_log = start + self.cfg.learner.log_every_s
        next_eval = start + self.cfg.eval.every_s if self.cfg.eval.every_s > 0 else math.inf
        next_ckpt = start + self.cfg.learner.checkpoint_every_s
        try:
            while self._budget_left():
                if self.ingest.error is not None:
                    raise RuntimeError("ingest thread failed") from self.ingest.error
                now = time.monotonic()
                if now >= next_log:
                    self._log(stats, now - start)
                    next_log = now + self.cfg.learner.log_every_s
                if self._poll_eval():
                    break
                if now >= next_eval and self._eval_thread is None:
                    self._start_eval()
                    next_eval = now + self.cfg.eval.every_s
                if now >= next_ckpt:
                    self.save()
                    next_ckpt = now + self.cfg.learner.checkpoint_every_s
                if not self._may_update():
                    time.sleep(0.002)
                    continue
                if batchifier is None:
                    batchifier = make_batchifier(self.cfg, self.replay, self.device)
                stats.step(self._update(batchifier))  # (None: no batch yet, go round again)
        except BaseException:
            self._close()  # actors are told to stop; the error itself goes to the caller
            raise
        finally:
            if batchifier is not None:
                batchifier.close()
        return self._shutdown()

    def _may_receive(self) -> bool:
        """Backpressure: hold back actors' credits while they are too far ahead of training."""
        c = self.cfg.learner
        if not c.max_ahead_steps or self.stop_event.is_set() or self.replay.num_windows == 0:
            return True  # (no full window yet: more records are the only way forward)
        owed = (self.updates - self.updates0) / c.replay_ratio  # steps the updates so far account for
        return self.ingest.steps < max(c.warmup_steps, owed) + c.max_ahead_steps

    def _may_update(self) -> bool:
        if len(self.replay) < self.cfg.learner.warmup_steps or self.replay.num_windows == 0:
            return False
        # the ratio counts this session's inserts and updates (a resumed run starts both at 0)
        return self.updates - self.updates0 < self.cfg.learner.replay_ratio * self.ingest.steps

    def _update(self, batchifier) -> tuple[float, float, dict] | None:
        t0 = time.perf_counter()
        try:  # bounded wait: budget, signals and checkpoints stay live
            batch = batchifier.get(timeout=1.0)
        except TimeoutError:
            return None
        t1 = time.perf_counter()
        metrics = train_step(self.model, self.optimizer, batch, self.cfg.train)
        t2 = time.perf_counter()
        self.updates += 1
        if self.updates % self.cfg.learner.publish_every == 0:
            self.publish()
        return t1 - t0, t2 - t0, metrics

    # --- evaluation: in a thread of its own, so training does not stall meanwhile ------------
    def _start_eval(self) -> None:
        """Snapshot the weights (here, between updates) and evaluate them in the background."""
        self.eval_model.load_state_dict(
            {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()})
        taken = (self.env_steps, self.updates, (time.monotonic() - self.start) / 60)
        e = self.cfg.eval

        def run():
            try:
                self._eval_done = (taken, evaluate(self.eval_model, self.cfg.env, self.info,
                                                   self.cfg.actor.policy, self.cfg.acting_context,
                                                   e.episodes, e.max_steps))
            except BaseException as err:  # re-raised in the learner loop
                self._eval_done = (taken, err)

        self._eval_thread = threading.Thread(target=run, name="mouse-eval", daemon=True)
        self._eval_thread.start()

    def _poll_eval(self, wait: bool = False) -> bool:
        """Log a finished evaluation (main thread: W&B is not thread-safe); True when solved."""
        if self._eval_thread is None:
            return False
        if wait:
            self._eval_thread.join()
        if self._eval_done is None:
            return False
        (env_steps, updates, minutes), result = self._eval_done
        self._eval_thread = self._eval_done = None
        if isinstance(result, BaseException):
            raise RuntimeError("evaluation failed") from result
        self.final_eval = result["eval/return"]
        self.best_eval = max(self.best_eval, self.final_eval)
        result["eval/best_return"] = self.best_eval
        self.monitor.log({**result, "eval/env_steps": env_steps}, step=self.updates)
        solved = self.final_eval >= self.cfg.budget.solved_return
        if solved:  # counted at the weights that were evaluated
            log.info("solved: eval return %.1f >= %.1f", self.final_eval, self.cfg.budget.solved_return)
            self.solved_at = (env_steps, updates, minutes)
        return solved

    def _evaluate(self) -> bool:
        """Evaluate the current weights now and wait for the result; True when solved."""
        self._poll_eval(wait=True)
        self._start_eval()
        return self._poll_eval(wait=True)

    def _log(self, stats: "_Interval", elapsed: float) -> None:
        m = stats.flush()
        m["perf/env_steps"] = self.env_steps
        m["perf/updates"] = self.updates
        m["perf/env_steps_per_s"] = stats.rate("steps", self.ingest.steps)
        m["perf/updates_per_s"] = stats.rate("updates", self.updates)
        m["perf/elapsed_s"] = elapsed
        m["replay/size"] = len(self.replay)
        m["actors/connected"] = self.ingest.connected()
        m["weights/version"] = self.version
        lag = self.ingest.take_policy_lag()
        if lag is not None:
            m["actors/policy_lag"] = lag
        episodes = self.ingest.take_episodes()
        if episodes:
            m["episode/return"] = sum(e["return"] for e in episodes) / len(episodes)
            m["episode/length"] = sum(e["length"] for e in episodes) / len(episodes)
            m["episode/count"] = len(episodes)
        for reason, count in list(self.ingest.rejected.items()):
            m[f"wire/rejected/{reason}"] = count
        self.monitor.log(m, step=self.updates)

    def _stop_actors(self) -> None:
        """Heartbeats now answer "stop": give the actors time to flush and say bye."""
        self.stop_event.set()  # also lifts backpressure: what the actors still send is kept
        self.ingest.stop_actors = True
        deadline = time.monotonic() + 2 * self.cfg.actor.heartbeat_s + 1
        while self.ingest.is_alive() and self.ingest.connected() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _shutdown(self) -> dict:
        try:
            return self._finish()
        finally:
            self._close()

    def _finish(self) -> dict:
        self._stop_actors()
        self.publish()
        self.save()  # first, so a kill during the final evaluation still leaves a checkpoint
        self._poll_eval(wait=True)  # one still running counts: it may have solved the run
        if self.solved_at is None:  # a solving evaluation is already the final one
            self._evaluate()
            self.save()
        if self.cfg.learner.save_replay:
            self.replay.save(self.replay_dir)
        with self.ingest.lock:  # the ingest thread still runs: copy what it writes
            actors = dict(self.ingest.actors)
            streams, rejected = sorted(self.ingest.streams_seen), dict(self.ingest.rejected)
        summary = {
            "best_eval_return": self.best_eval, "final_eval_return": self.final_eval,
            "env_steps": self.env_steps, "updates": self.updates, "weights_version": self.version,
            "wall_minutes": (time.monotonic() - self.start) / 60, "solved_at": self.solved_at,
            "run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint_path),
            "wandb_dir": self.monitor.files_dir, "wandb_mode": self.monitor.mode,
            "streams_seen": streams,
            "actors_seen": sorted(actors),
            "actor_versions": {str(a.actor_id): a.version for a in actors.values()},
            "rejected": rejected,
        }
        self.monitor.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        return summary

    def _close(self) -> None:
        if not self.ingest.stop_actors:  # an error path: still tell the actors
            self._stop_actors()
        self.monitor.finish()
        self.ingest.stop()
        if self.ingest.is_alive():
            self.ingest.join(timeout=5)
        for s in (self.pull, self.router, self.pub):
            s.close(0)


class _Interval:
    """Accumulates per-update timings and metrics between two logs."""

    def __init__(self):
        self.wait = self.total = 0.0
        self.n = 0
        self.sums: dict[str, float] = {}
        self.marks = {"steps": (time.monotonic(), 0), "updates": (time.monotonic(), 0)}

    def step(self, item) -> None:
        if item is None:
            return
        wait, total, metrics = item
        self.wait += wait
        self.total += total
        self.n += 1
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def rate(self, name: str, count: int) -> float:
        t0, c0 = self.marks[name]
        now = time.monotonic()
        self.marks[name] = (now, count)
        return (count - c0) / max(now - t0, 1e-9)

    def flush(self) -> dict[str, float]:
        m = {k: v / self.n for k, v in self.sums.items()} if self.n else {}
        if self.total > 0:
            m["perf/batch_wait_fraction"] = self.wait / self.total
        self.wait = self.total = 0.0
        self.n = 0
        self.sums = {}
        return m
