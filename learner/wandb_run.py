"""The learner's Weights & Biases run: dashboards that read well, and a run that ends
cleanly even when its W&B service was killed.

Dashboards. Every chart's x-axis is ``perf/env_steps`` (env steps the learner has
received); W&B's own step stays the update count, and ``perf/elapsed_s`` (wall time
of the run, all its starts) is the other x-axis to pick. Evaluations run beside training
and finish later than the weights they evaluate were taken, so the ``eval/*`` charts
use ``eval/env_steps``, the env steps of those weights. Every start of a run
directory logs to one W&B run (its id in RUN_DIR/wandb-id), in the W&B group
named after the run directory (or ``wandb.group``; ``job_type`` learner); its
config is the run's config plus ``code.git_commit``. Summaries: best and last
evaluation return, the run's totals, and when it was solved.

The W&B service (``wandb-core``) is a child process of the learner. On Slurm a plain
``scancel`` sends SIGTERM to every process of the job, the service too: it dies at
once and loses what it has not written. So the service writes the run's .wandb file
every ``WANDB_FLUSH_S`` seconds (a kill loses at most that much), and when logging or
finishing fails the run is opened again under the same id with a fresh service (the
job's SIGTERM has been sent by then) to log the values since the failure, set the
summary and finish. ``wandb sync RUN_DIR/wandb/offline-run-*`` then uploads one
complete run.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
import uuid
from pathlib import Path

from mouse.config import RunConfig, to_dict

log = logging.getLogger("mouse.monitor")

WANDB_ID_FILE = "wandb-id"  # in the run directory: a resumed run logs to the same W&B run
WANDB_FLUSH_S = 2.0  # seconds between writes of the .wandb file (0 would be: only when a buffer fills)
TRAIN_AXIS, TIME_AXIS, EVAL_AXIS = "perf/env_steps", "perf/elapsed_s", "eval/env_steps"
# summary aggregates besides W&B's default (the last value)
SUMMARIES = {"eval/return": "max,last", "eval/best_return": "max", "episode/return": "max,last",
             TRAIN_AXIS: "max", TIME_AXIS: "max", EVAL_AXIS: "max"}


def code_version() -> dict:
    """The git commit of the code this process runs, and whether its tracked files differ
    from it ("" and None outside a git checkout, e.g. in a container image)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", None
    return {"git_commit": commit, "git_dirty": dirty, "git_root": str(root) if commit else ""}


def wandb_run_id(run_dir: Path) -> str:
    """The run directory's W&B run id, made and stored on its first start."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]  # W&B ids: letters and digits
    path.write_text(run_id + "\n")
    return run_id


def summary_values(summary: dict) -> dict:
    """What of a learner summary goes to the W&B summary: its finite numbers, the stop reason,
    and ``solved_at`` as three numbers (``solved`` says whether there are any)."""
    out = {k: v for k, v in summary.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    solved = summary.get("solved_at")
    out["solved"] = bool(solved)
    if solved:
        out.update(zip(("solved_at_env_steps", "solved_at_updates", "solved_at_minutes"), solved))
    if summary.get("stop_reason"):
        out["stop_reason"] = summary["stop_reason"]
    return out


def define_metrics(run) -> None:
    """The x-axes and summaries; ``eval/*`` metrics get theirs when first logged."""
    for axis in (TRAIN_AXIS, TIME_AXIS, EVAL_AXIS):
        run.define_metric(axis, summary=SUMMARIES[axis])
    run.define_metric("episode/return", step_metric=TRAIN_AXIS, summary=SUMMARIES["episode/return"])
    run.define_metric("*", step_metric=TRAIN_AXIS)


class WandbRun:
    """One learner's W&B run (mode online or offline); no call raises when W&B fails."""

    def __init__(self, cfg: RunConfig, run_dir: Path, mode: str):
        self.cfg, self.run_dir, self.mode = cfg, Path(run_dir), mode
        self.code = code_version()
        self.failed: str | None = None  # why the W&B service stopped answering
        self.unsent: dict = {}  # latest value of each metric logged since the failure
        self.unsent_step = 0
        self.summary_values: dict = {}
        self.run = self._open()
        self.files_dir = str(Path(self.run.dir).parent)

    def _open(self):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        w = self.cfg.wandb
        run = wandb.init(
            project=w.project, entity=w.entity or None, name=w.run_name or self.run_dir.name,
            group=w.group or self.run_dir.name, job_type="learner", tags=list(w.tags),
            config={**to_dict(self.cfg), "code": self.code}, dir=str(self.run_dir),
            mode=self.mode, id=wandb_run_id(self.run_dir), resume="allow",
            settings=wandb.Settings(
                console="off", x_disable_stats=True, x_transaction_log_flush_interval=WANDB_FLUSH_S,
                git_commit=self.code["git_commit"] or None,
                git_root=self.code["git_root"] or None))
        define_metrics(run)
        self.eval_defined: set[str] = set()
        return run

    def _fail(self, e: BaseException) -> None:
        if self.failed is None:
            self.failed = f"{type(e).__name__}: {e}"
            log.warning("W&B: the run's W&B service stopped answering (%s; killed with the job?): the "
                        "metrics from now on are kept and written when the learner finishes", self.failed)

    def log(self, metrics: dict, step: int) -> None:
        if self.failed is not None:
            self.unsent.update(metrics)
            self.unsent_step = step
            return
        try:
            for key in metrics:
                if key.startswith("eval/") and key != EVAL_AXIS and key not in self.eval_defined:
                    self.run.define_metric(key, step_metric=EVAL_AXIS, summary=SUMMARIES.get(key))
                    self.eval_defined.add(key)
            self.run.log(metrics, step=step)
        except Exception as e:  # the service is gone: keep what it missed for finish()
            self._fail(e)
            self.log(metrics, step)

    def summary(self, values: dict) -> None:
        self.summary_values.update(values)
        if self.failed is None:
            try:
                for k, v in self.summary_values.items():
                    self.run.summary[k] = v
            except Exception as e:
                self._fail(e)

    def finish(self) -> None:
        if self.failed is None:
            try:
                self.run.finish()
                return
            except Exception as e:
                self._fail(e)
        self._finish_again()

    def _finish_again(self) -> None:
        """Open the run again with a fresh W&B service, write what the dead one missed, finish."""
        import wandb

        run_id, t0 = self.run.id, time.monotonic()
        try:
            wandb.teardown()  # forget the dead service (this raises for a dead connection)
        except Exception:
            pass
        first_dir, unsent, step = self.files_dir, self.unsent, self.unsent_step
        try:
            self.run, self.failed, self.unsent = self._open(), None, {}
            if unsent:
                self.log(unsent, step)
            self.summary({})  # sets every value kept so far
            if self.failed is None:
                self.run.finish()
        except Exception as e:
            self._fail(e)
        if self.failed is not None:
            log.error("W&B: could not finish run %s again (%s); its files hold what was written "
                      "before its service stopped", run_id, self.failed)
            return
        log.warning("W&B: run %s finished by a fresh W&B service in %.1fs; its files are in two "
                    "directories: %s and %s", run_id, time.monotonic() - t0, first_dir,
                    Path(self.run.dir).parent)


class ActorRates:
    """Per-actor metrics from the learner's own bookkeeping (no W&B run per actor):
    ``actors/<id>/env_steps_per_s`` over the last log interval and ``actors/<id>/policy_lag``
    (weights version now − the newest version in its records), for connected actors.

    Reads the ingest server's public state only: ``lock``, ``actors`` (``actor_id``,
    ``steps``, ``version``, ``last_seen``) and ``actor_timeout_s``.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.marks: dict[int, tuple[float, int]] = {}

    def take(self, ingest, weights_version: int) -> dict[str, float]:
        now = self.clock()
        with ingest.lock:
            live = [(a.actor_id, a.steps, a.version) for a in ingest.actors.values()
                    if time.monotonic() - a.last_seen < ingest.actor_timeout_s]
        out, marks = {}, {}
        for actor_id, steps, version in live:
            t0, s0 = self.marks.get(actor_id, (now, steps))
            marks[actor_id] = (now, steps)
            if now > t0:
                out[f"actors/{actor_id}/env_steps_per_s"] = (steps - s0) / (now - t0)
            if version >= 0:
                out[f"actors/{actor_id}/policy_lag"] = weights_version - version
        self.marks = marks
        return out
