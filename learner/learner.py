"""The learner server: ingest → replay → PrefetchBatchifier → train_step → publish weights.

The decisions (warm-up, replay ratio, publish, evaluation and checkpoint times,
budget, backpressure) are ``learner.schedule.TrainLoop``'s; this class owns what
wraps them: sockets, the ingest and evaluation threads, signals, checkpoints,
the monitor and the status file. ``bind(address)`` takes ``tcp://HOST:PORT`` or
``inproc://NAME`` (learner and actors in one process).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import signal
import threading
import time
from functools import partial
from pathlib import Path

import torch
import zmq

from mouse import wire
from mouse.components import build_model, resolve_device
from mouse.config import RunConfig, to_dict
from mouse.envs import describe_env
from mouse.models import heads_for
from mouse.records import MAX_VERSION
from mouse.replay import PrefetchBatchifier, make_replay_buffer
from mouse.status import write_status
from mouse.train import MetricMeans, make_optimizer, train_step
from mouse.transport import DRAIN_BEATS, STOP_SILENT_BEATS, Guard, learner_sockets

from . import checkpoint
from .evaluation import BackgroundEval, acting_heads, binary_goal_reward, evaluate
from .ingest import IngestServer
from .monitor import ActorWatch, Monitor, Rates
from .publish import WeightsPublisher
from .room import check_replay_room
from .wandb_run import ActorRates
from .schedule import Counters, Hooks, LoopTimes, TrainLoop

log = logging.getLogger("mouse.learner")


def check_config(cfg: RunConfig, info, resuming: bool = False) -> None:
    t = cfg.train
    if (t.sp.weight > 0 or t.sv.weight > 0) and info.q_star_table is None:
        raise ValueError(
            f"train.sp.weight={t.sp.weight} / train.sv.weight={t.sv.weight} need q_star, but "
            f"{cfg.env.env_id!r} has no exact q_star (supported: FrozenLake, CliffWalking, Taxi); "
            "set those weights to 0 or pick such an env")
    if cfg.actor.policy == "sp" and t.sp.weight <= 0:
        log.warning("actor.policy=sp but train.sp.weight=0: actors will sample from an untrained head")
    check_replay_room(cfg.replay, info.spec, resuming=resuming)  # before it is built: refused, not OOM-killed later


def wire_spec(cfg: RunConfig, info):
    """The record contract ingest enforces: the env's spec with the run's magnitude bounds
    (exact q_star is bounded by max |reward| / (1 - gamma))."""
    lc = cfg.learner
    return dataclasses.replace(info.spec, max_abs_obs=lc.max_abs_obs, max_abs_reward=lc.max_abs_reward,
                               max_abs_q_star=lc.max_abs_reward / (1 - cfg.env.q_star_gamma))


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the whole state (target heads too) for the evaluator; broadcasts to actors
    go through ``learner.publish.WeightsPublisher`` (acting tensors only, off the training thread)."""
    # a copy: on a CPU learner .to("cpu") would alias the parameters
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class Learner:
    def __init__(self, cfg: RunConfig, run_dir: Path, info=None):
        """Builds everything and resumes from RUN_DIR/checkpoint.pt when there is one, but
        writes nothing: the run directory may not exist yet (``info``: the env, described)."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = resolve_device(cfg.learner.device)
        torch.manual_seed(cfg.learner.seed)
        self.info = describe_env(cfg.env) if info is None else info
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        check_config(cfg, self.info, resuming=checkpoint.exists(self.checkpoint_path))
        self.model = build_model(cfg, self.info).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg.train)
        self.replay = make_replay_buffer(cfg.replay, self.info.spec, seq_len=cfg.train.seq_len)
        self.version, self.updates, self.env_steps0 = 0, 0, 0
        self.wall_s0 = 0.0  # wall time of the run's earlier starts
        self.best_eval, self.final_eval = -math.inf, None  # of the acting head, as eval/return
        self.best_by_head: dict[str, float] = {}
        self.solved_at: tuple[int, int, float] | None = None  # (env steps, updates, minutes) when solved
        # versions rise only within one learner process; actors follow a new incarnation whatever its version
        self.incarnation = secrets.token_hex(wire.INCARNATION_HEX // 2)
        self.best_path = self.run_dir / "best.pt"
        self.replay_dir = self.run_dir / "replay"
        self.status_path = self.run_dir / "status.json"
        self.replay_written: int | None = None  # replay rows of the replay state saved last
        self.checkpoints = self.checkpoint_failures = 0  # saves of this process, whole and failed
        self.last_checkpoint: dict | None = None
        self._status_failing = False
        self.resumed_from: str | None = None
        if checkpoint.exists(self.checkpoint_path):
            self._resume()
        e = cfg.eval
        self.eval_heads = acting_heads(heads_for(cfg.train, cfg.actor.policy), cfg.actor.policy)
        self.evaluator = BackgroundEval(build_model(cfg, self.info).eval(), partial(
            evaluate, heads=self.eval_heads, env_cfg=cfg.env, info=self.info,
            context_len=cfg.acting_context, episodes=e.episodes, max_steps=e.max_steps, seed=e.seed,
            binary_goal=binary_goal_reward(cfg.env)))
        self.stop_event = threading.Event()
        self.actor_watch = ActorWatch()
        self.address: str | None = None
        self.guard: Guard | None = None  # the CurveZMQ authenticator when auth is on
        self.ingest: IngestServer | None = None
        self.monitor: Monitor | None = None
        self.loop_times = LoopTimes()
        self.loop = TrainLoop(cfg, self.loop_times.timed(self._hooks()), Counters(
            stored=lambda: len(self.replay), windows=lambda: self.replay.num_windows,
            inserted=lambda: self.ingest.steps, env_steps=lambda: self.env_steps), updates=self.updates)

    def _hooks(self) -> Hooks:
        return Hooks(train=self._train_once, publish=self.publish, start_eval=self._start_eval,
                     poll_eval=self._poll_eval, checkpoint=self._periodic_save, log=self._log,
                     idle=self._idle)

    # --- sockets ------------------------------------------------------------------------------
    def bind(self, address: str, keys=None) -> str:
        """Bind the three sockets at ``address`` and prepare the ingest thread; returns the address.

        ``keys`` (``mouse.keys.LearnerKeys``): CurveZMQ on; only actors in its allow-list get in.
        """
        cfg = self.cfg
        spec, max_records = wire_spec(cfg, self.info), cfg.actor.chunk_steps * cfg.env.num_envs
        ctx = zmq.Context.instance()
        if keys is not None:  # a context of its own: one authenticator (ZAP handler) per context
            ctx = zmq.Context()
            self.guard = Guard(ctx, keys)
        try:
            self.pull, self.router, self.pub = learner_sockets(
                ctx, address, keys, records_max_bytes=wire.max_frame_bytes(spec, max_records))
        except BaseException:
            if self.guard is not None:
                self.guard.close()
                ctx.term()
            raise
        if self.guard is not None:
            self.guard.watch({"records": self.pull, "control": self.router, "weights": self.pub})
        self.address = address
        self.publisher = WeightsPublisher(self.model, self.pub, self.version, self.incarnation)
        self.ingest = IngestServer(
            self.pull, self.router, spec, self.replay.ingest_arrays,
            current_version=lambda: self.version, current_weights=lambda: self.publisher.frames,
            incarnation=self.incarnation, config=to_dict(cfg), num_envs=cfg.env.num_envs,
            max_records=max_records, credits=cfg.learner.credits_per_actor,
            max_actors=cfg.learner.max_actors, actor_timeout_s=cfg.learner.actor_timeout_s,
            may_receive=self.loop.may_receive)
        self._write_status("starting")
        return address

    # --- weights and checkpoints ------------------------------------------------------------
    def publish(self) -> None:
        """Broadcast the acting weights as the next version: above this learner's last one and
        above any version an actor reported (a resumed learner continues above its actors).
        Training goes on while they are sent; weights holding NaN or inf are never sent
        (counted as train/nonfinite_weights)."""
        self.version = min(max(self.version, self.ingest.version_heard) + 1, MAX_VERSION)
        self.publisher.publish(self.version)

    def _idle(self) -> None:
        if self.ingest.version_heard > self.version:  # resumed: actors hold newer versions than ours
            self.publish()
        time.sleep(0.002)

    def rejected(self) -> dict[str, int]:
        """Rejected messages by reason (ingest's and the weights socket's)."""
        with self.ingest.lock:
            out = dict(self.ingest.rejected)
        if self.publisher.subscriptions is not None and self.publisher.subscriptions.ignored:
            out["bad_subscription"] = self.publisher.subscriptions.ignored
        return out

    def skipped(self) -> dict[str, int]:
        """Chunks dropped for their order (duplicate, out_of_order): resent, never lost."""
        with self.ingest.lock:
            return dict(self.ingest.skipped)

    def _resume(self) -> None:
        """Model, optimizer and counters from the newest usable checkpoint, then the replay saved
        with it (``checkpoint.resume`` reports a damaged file and falls back to the previous one)."""
        state, path = checkpoint.resume(self.checkpoint_path, self.model, self.optimizer)
        self.version, self.updates = state["version"], state["updates"]
        self.env_steps0 = state["env_steps"]
        budget = self.cfg.budget.max_env_steps
        if budget and self.env_steps0 >= budget:  # it would end at once and overwrite summary.json
            raise ValueError(
                f"{self.run_dir} has finished: its checkpoint holds {self.env_steps0:,} env steps, "
                f"budget.max_env_steps is {budget:,} (its results are in summary.json); to train on, "
                "raise --budget.max-env-steps")
        # counters of the run's earlier starts (absent in checkpoints of older versions)
        self.wall_s0 = float(state.get("wall_s", 0.0))
        self.best_eval = float(state.get("best_eval_return", -math.inf))
        self.best_by_head = dict(state.get("best_eval_by_head", {}))
        self.resumed_from = path.name
        log.info("resumed from %s: version %d, %d updates, %d env steps", path,
                 self.version, self.updates, self.env_steps0)
        if self.cfg.learner.save_replay and self.replay_dir.exists():
            self.replay_written = checkpoint.restore_replay(self.replay, self.replay_dir,
                                                            state.get("replay_written"))

    def save(self) -> bool:
        """Replay (when ``learner.save_replay``), then the checkpoint naming that replay state
        (``replay_written``), so a resume restores the two together. The counters are read after
        the replay's rows were copied: they may count a chunk or two more (ingest goes on).

        A write the disk refuses (full, read-only) is logged in one line and counted
        (``checkpoint_failures``); what was on disk stays whole, the run goes on and the
        next save (the next interval, or shutdown) tries again. False when a write failed."""
        failed = []
        if self.cfg.learner.save_replay:
            try:
                self.replay_written = self.replay.save(self.replay_dir)
            except OSError as e:
                failed.append(f"replay: {e}")
        counters = dict(version=self.version, updates=self.loop.updates, env_steps=self.env_steps)
        try:
            checkpoint.save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.cfg,
                                       replay_written=self.replay_written, wall_s=self.wall_s,
                                       best_eval_return=self.best_eval,
                                       best_eval_by_head=dict(self.best_by_head), **counters)
        except OSError as e:
            failed.append(f"checkpoint: {e}")
        if failed:
            self._save_failed("; ".join(failed))
            return False
        self.checkpoints += 1
        self.last_checkpoint = {**counters, "replay_written": self.replay_written, "time": time.time()}
        return True

    def _save_failed(self, why: str) -> None:
        self.checkpoint_failures += 1
        log.error("saving to %s failed (%s); the files there stay as they were, the next save "
                  "(every %g s) tries again", self.run_dir, why, self.cfg.learner.checkpoint_every_s)

    def _periodic_save(self) -> None:
        self.save()
        self._write_status("running")  # supervisors see the new checkpoint (or the failure) now

    @property
    def env_steps(self) -> int:
        return self.env_steps0 + (self.ingest.steps if self.ingest is not None else 0)

    @property
    def wall_s(self) -> float:
        """Wall time of the whole run: this start and the earlier ones."""
        return self.wall_s0 + self.loop.elapsed_s

    # --- the loop -------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """Thread- and signal-safe: the loop ends at its next round (checkpoint, summary)."""
        self.loop.request_stop(reason)
        self.stop_event.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, _frame):
            log.warning("signal %d: stopping cleanly (checkpoint and flush)", signum)
            self.request_stop(f"signal {signum}")

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)

    def run(self) -> dict:
        """Train until the budget ends or a stop arrives; returns the run summary."""
        if self.ingest is None:
            raise RuntimeError("Learner.run() before bind(address)")
        self._install_signals()
        try:
            self.monitor = Monitor(self.cfg, self.run_dir)
        except BaseException:
            self._close_sockets()
            raise
        self.ingest.start()
        start, self.loop.start = self.loop.start, time.monotonic()
        for when in ("next_log", "next_eval", "next_checkpoint"):  # the start-up (W&B, threads)
            setattr(self.loop, when, getattr(self.loop, when) + self.loop.start - start)  # is not run time
        self._batchifier: PrefetchBatchifier | None = None
        self._stats = _Interval()
        self._rates = Rates(self.env_steps, self.loop.updates)
        self._actor_rates = ActorRates()
        self._logged = None  # (updates, env_steps) at the last log
        self._write_status("running")
        self.loop_times.take()  # the loop's time starts now
        try:
            while self.loop.tick():
                if self.ingest.error is not None:
                    raise RuntimeError("ingest thread failed") from self.ingest.error
            log.info("stopping: %s", self.loop.stop_reason)
        except BaseException:
            self._close("failed")  # actors are told to stop; the error itself goes to the caller
            raise
        finally:
            if self._batchifier is not None:
                self._batchifier.close()
        return self._shutdown()

    def _train_once(self) -> bool:
        if self._batchifier is None:
            c = self.cfg
            self._batchifier = PrefetchBatchifier(
                self.replay, batch_size=c.train.batch_size, seq_len=c.train.seq_len,
                prefetch=c.learner.prefetch, num_workers=c.learner.batch_workers,
                device=self.device, pin_memory=self.device.type == "cuda")
        t0 = time.perf_counter()
        try:  # bounded wait: budget, signals and checkpoints stay live
            batch = self._batchifier.get(timeout=1.0)
        except TimeoutError:
            return False
        t1 = time.perf_counter()
        metrics = train_step(self.model, self.optimizer, batch, self.cfg.train)
        self._stats.step(t1 - t0, time.perf_counter() - t0, metrics)
        return True

    # --- evaluation ------------------------------------------------------------------------------
    def _start_eval(self) -> bool:
        taken = (self.env_steps, self.loop.updates, self.wall_s / 60, self.version)
        return self.evaluator.start(cpu_state(self.model), taken)

    def _poll_eval(self, wait: bool = False) -> bool:
        """Log a finished evaluation (main thread: W&B is not thread-safe); True when solved."""
        done = self.evaluator.poll(wait)
        if done is None:
            return False
        (env_steps, updates, minutes, version), result = done
        self.final_eval = result["eval/return"]
        for h in self.eval_heads:
            self.best_by_head[h] = max(self.best_by_head.get(h, -math.inf), result[f"eval/{h}/return"])
        if self.final_eval > self.best_eval:  # keep the evaluated weights, not the current ones
            self.best_eval = self.final_eval
            try:
                checkpoint.save_checkpoint(
                    self.best_path, self.evaluator.eval_model, None, self.cfg, keep_previous=False,
                    version=version, updates=updates, env_steps=env_steps, eval_return=self.final_eval,
                    eval_head=self.cfg.actor.policy)
            except OSError as e:  # a full disk costs best.pt this time, not the run
                self._save_failed(f"best.pt: {e}")
        result["eval/best_return"] = self.best_eval
        self.monitor.log({**result, "eval/env_steps": env_steps}, step=self.loop.updates)
        solved = self.final_eval >= self.cfg.budget.solved_return
        if solved:  # counted at the weights that were evaluated
            log.info("solved: eval return %.1f >= %.1f", self.final_eval, self.cfg.budget.solved_return)
            self.solved_at = (env_steps, updates, minutes)
        return solved

    def _evaluate_now(self) -> bool:
        """Evaluate the current weights now and wait for the result; True when solved."""
        self._poll_eval(wait=True)
        self._start_eval()
        return self._poll_eval(wait=True)

    # --- logging and status ------------------------------------------------------------------------
    def _log(self) -> None:
        """One log interval: its metrics to W&B and one console line of what is new in it."""
        m = self.loop_times.take(batch_wait_s=self._stats.wait)
        m.update(self._stats.flush())
        m["perf/env_steps"] = self.env_steps
        m["perf/updates"] = self.loop.updates
        m["perf/env_steps_per_s"], m["perf/updates_per_s"] = self._rates.take(self.env_steps,
                                                                              self.loop.updates)
        m["perf/elapsed_s"] = self.wall_s
        m["replay/size"] = len(self.replay)
        m["actors/connected"] = self.ingest.connected()
        m["weights/version"] = self.version
        m["checkpoint/failures"] = self.checkpoint_failures
        lag = self.ingest.take_policy_lag()
        if lag is not None:
            m["actors/policy_lag"] = lag
        episodes = self.ingest.take_episodes()
        if episodes:
            m["episode/return"] = sum(e["return"] for e in episodes) / len(episodes)
            m["episode/length"] = sum(e["length"] for e in episodes) / len(episodes)
            m["episode/count"] = len(episodes)
        for reason, count in self.rejected().items():
            m[f"wire/rejected/{reason}"] = count
        for reason, count in self.skipped().items():
            m[f"wire/skipped/{reason}"] = count
        m["train/nonfinite_weights"] = self.publisher.nonfinite
        if self.cfg.wandb.actor_metrics:
            m.update(self._actor_rates.take(self.ingest, self.version))
        self.monitor.log(m, step=self.loop.updates)
        self.monitor.console()
        self._log_actor_changes()
        self._write_status("running")
        self._logged = (self.loop.updates, self.env_steps)

    def _log_actor_changes(self) -> None:
        """Joins are logged by the ingest thread on hello; losses show here, once an actor said
        bye or stayed silent for learner.actor_timeout_s."""
        _joined, lost = self.actor_watch.update(self.ingest)
        for actor_id in lost:
            log.warning("actor %d left or went silent (nothing for %g s); %d actor(s) connected",
                        actor_id, self.cfg.learner.actor_timeout_s, len(self.actor_watch.connected))

    def _write_status(self, state: str) -> None:
        """RUN_DIR/status.json: what a supervisor or a test reads (never the console)."""
        ingest, rejected = self.ingest, self.rejected()
        with ingest.lock:
            actors = {str(a.actor_id): a.steps for a in ingest.actors.values()}
            episodes = {str(a.actor_id): a.episodes for a in ingest.actors.values()}
            streams = sorted(ingest.streams_seen)
        status = {
            "state": state, "address": self.address, "env_steps": self.env_steps,
            "updates": self.loop.updates, "weights_version": self.version,
            "replay_size": len(self.replay), "actors_connected": ingest.connected(),
            "actor_steps": actors, "actor_episodes": episodes, "streams_seen": streams, "rejected": rejected,
            "chunks_skipped": self.skipped(),
            "stop_reason": self.loop.stop_reason,
            "auth_rejected": None if self.guard is None else self.guard.rejected(),
            "checkpoints": self.checkpoints, "checkpoint_failures": self.checkpoint_failures,
            "last_checkpoint": self.last_checkpoint, "resumed_from": self.resumed_from,
        }
        try:
            write_status(self.status_path, status)
        except OSError as e:  # a full disk must not end the run; say so once, not every interval
            if not self._status_failing:
                log.warning("status file %s not written: %s", self.status_path, e)
            self._status_failing = True
        else:
            self._status_failing = False

    # --- shutdown ---------------------------------------------------------------------------------
    def _stop_actors(self) -> None:
        """Every actor is told "stop" now: give them time to flush and say bye. Only actors still
        heard from are waited for: one silent for STOP_SILENT_BEATS heartbeats (killed, or its
        node gone) would only hold the stop until the deadline. One that has sent nothing yet
        (welcomed a moment ago) is waited for too: an actor drops the replies it has not read
        when its learner's connection closes, so it would miss the stop and wait for ever."""
        self.loop.request_stop()  # also lifts backpressure: what the actors still send is kept
        self.ingest.stop_actors = True
        beat = self.cfg.actor.heartbeat_s
        deadline = time.monotonic() + (DRAIN_BEATS + 2) * beat + 1
        while self.ingest.is_alive() and not self.ingest.told_to_stop.wait(0.1):
            pass  # until every session has been told (one being welcomed now too)
        while (self.ingest.is_alive() and time.monotonic() < deadline
               and self.ingest.connected(within_s=STOP_SILENT_BEATS * beat)):
            time.sleep(0.1)

    def _shutdown(self) -> dict:
        try:
            summary = self._finish()
        except BaseException:
            self._close("failed")
            raise
        self._close("finished")
        return summary

    def _finish(self) -> dict:
        if self._logged != (self.loop.updates, self.env_steps):  # the last interval's losses, rates
            try:  # and episodes are not lost with a short run
                self._log()
            except Exception as e:  # (the checkpoint below matters more than one log row)
                log.warning("the last log interval was not logged: %s", e)
        self._stop_actors()
        self.publish()
        self.save()  # first, so a kill during the final evaluation still leaves a checkpoint (and replay)
        self._poll_eval(wait=True)  # one still running counts: it may have solved the run
        if self.solved_at is None:  # a solving evaluation is already the final one
            self._evaluate_now()
        self.monitor.console()  # the final evaluation's line
        self.save()  # with the best evaluation
        rejected = self.rejected()
        with self.ingest.lock:  # the ingest thread still runs: copy what it writes
            actors = dict(self.ingest.actors)
            streams = sorted(self.ingest.streams_seen)
        summary = {
            "best_eval_return": self.best_eval, "final_eval_return": self.final_eval,
            "env_steps": self.env_steps, "updates": self.loop.updates, "weights_version": self.version,
            "wall_minutes": self.wall_s / 60, "solved_at": self.solved_at,
            "solved_return": self.cfg.budget.solved_return, "eval_head": self.cfg.actor.policy,
            "best_eval_by_head": dict(self.best_by_head), "stop_reason": self.loop.stop_reason,
            "run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint_path),
            "best_checkpoint": str(self.best_path) if self.best_path.exists() else None,
            "wandb_dir": self.monitor.files_dir, "wandb_mode": self.monitor.mode,
            "streams_seen": streams,
            "actors_seen": sorted(actors),
            "actor_versions": {str(a.actor_id): a.version for a in actors.values()},
            "rejected": rejected,
        }
        self.monitor.summary(summary)
        return summary

    def _close(self, state: str) -> None:
        if not self.ingest.stop_actors:  # an error path: still tell the actors
            self._stop_actors()
        self.monitor.finish()
        self.ingest.stop()
        if self.ingest.is_alive():
            self.ingest.join(timeout=5)
        self._write_status(state)
        self._close_sockets()

    def _close_sockets(self) -> None:
        self.publisher.close()  # sends what is pending; it owns the PUB socket until then
        if self.guard is not None:
            self.guard.close()  # the sockets first, then the authenticator
        for s in (self.pull, self.router, self.pub):
            s.close(0)
        if self.guard is not None:
            self.pull.context.term()


class _Interval:
    """Per-update timings and metrics between two logs (metrics summed on the device)."""

    def __init__(self):
        self.wait = self.total = 0.0
        self.means = MetricMeans()
        self.n = 0
        self.skipped = 0  # non-finite updates skipped, over the whole process

    def step(self, wait: float, total: float, metrics: dict) -> None:
        self.wait += wait
        self.total += total
        self.n += 1
        self.means.add(metrics)

    def flush(self) -> dict[str, float]:
        m = self.means.flush()  # the one host sync of the interval
        if "train/skipped_nonfinite" in m:  # a mean over the interval's updates: make it a count
            self.skipped += round(m["train/skipped_nonfinite"] * self.n)
            m["train/skipped_nonfinite"] = self.skipped
        if self.total > 0:
            m["perf/batch_wait_fraction"] = self.wait / self.total
        self.wait = self.total = 0.0
        self.n = 0
        return m
