"""Learner process entry point: `mouse learner [FLAGS]`: run directory, bind, train, summary.

Nothing is written before the config, the env and (on a resume) the run's own
config have been checked; a run directory this process created is removed again
when the learner fails before it trains (a bad env, a port in use, ...).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

from mouse.config import RunConfig, save_config
from mouse.envs import describe_env, reward_threshold
from mouse.keys import learner_keys
from mouse.transport import free_port_base

from . import address as address_file
from .learner import Learner
from .monitor import say
from .resume import record_start, refuse_changes, saved_config

log = logging.getLogger("mouse.learner")


def run_dir_for(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir or f"runs/{cfg.env.env_id}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare_run_dir(run_dir: Path) -> bool:
    """Create the run directory (clear error when it cannot be written); True if it was made here."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"run_dir: {run_dir} is not writable: {e}") from None
    return created


def with_solved_return(cfg: RunConfig) -> RunConfig:
    """budget.solved_return nan: the env's registered reward_threshold, or never (inf) without one."""
    if not math.isnan(cfg.budget.solved_return):
        return cfg
    threshold = reward_threshold(cfg.env)
    target = math.inf if threshold is None else float(threshold)
    log.info("budget.solved_return %g (%s)", target,
             f"{cfg.env.env_id}'s reward_threshold" if threshold is not None
             else f"{cfg.env.env_id} registers no reward_threshold: never stops on a return")
    return dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, solved_return=target))


def format_summary(s: dict) -> str:
    def num(x, fmt="{:.1f}"):
        return "n/a" if x is None or x == -math.inf else fmt.format(x)
    heads = s.get("best_eval_by_head") or {}
    best = num(s["best_eval_return"], "{:.3g}")
    if len(heads) > 1:  # every head that acts was evaluated: show the others too
        best += f" ({s['eval_head']}, the actors' head); " + ", ".join(
            f"{h} {num(v, '{:.3g}')}" for h, v in heads.items() if h != s["eval_head"])
    lines = [
        "",
        "== mouse run finished ==",
        f"best eval return   {best}",
        f"final eval return  {num(s['final_eval_return'], '{:.3g}')}",
        "solved at          " + ("not solved" if not s["solved_at"] else
                                 "{:,} env steps, {:,} updates, {:.1f} min".format(*s["solved_at"]))
        + f" (target {num(s.get('solved_return'), '{:g}')})",
        f"env steps          {s['env_steps']:,}",
        f"updates            {s['updates']:,} (weights v{s['weights_version']})",
        f"wall time          {s['wall_minutes']:.1f} min (all starts of the run)",
        f"stopped by         {s['stop_reason']}",
        f"run directory      {s['run_dir']}",
        f"checkpoint         {s['checkpoint']}",
    ]
    if s.get("best_checkpoint"):
        lines.append(f"best weights       {s['best_checkpoint']} (mouse eval {s['run_dir']})")
    if s["wandb_dir"]:
        lines.append(f"W&B files          {s['wandb_dir']} ({s['wandb_mode']})")
        if s["wandb_mode"] == "offline":
            lines.append(f"sync to W&B with   wandb sync {s['wandb_dir']}")
    if s["rejected"]:
        lines.append(f"rejected messages  {s['rejected']}")
    return "\n".join(lines)


def learner_address(cfg: RunConfig) -> str:
    """tcp://HOST:PORT from the config; port 0 picks three free consecutive ports."""
    port = cfg.learner.port or free_port_base(cfg.learner.host)
    return f"tcp://{cfg.learner.host}:{port}"


def actor_command(address: str, keys_dir: str) -> str:
    """The `mouse actor` line that joins this learner at ``address`` (one actors can reach:
    ``address.advertised``)."""
    keys = f" --keys {keys_dir}" if keys_dir else ""
    return f"mouse actor --learner {address}{keys}"


def _bind(learner: Learner, cfg: RunConfig, address: str | None, run_dir: Path) -> tuple[str, str]:
    """Bind (retrying free ports, which may be taken between the probe and the bind);
    returns the address and the actors' keys directory ("" when the learner is open)."""
    for attempt in range(3):
        addr = address or learner_address(cfg)
        keys = learner_keys(cfg.learner.auth, cfg.learner.keys_dir, addr, run_dir)
        try:
            return learner.bind(addr, keys), str(keys.dir.resolve()) if keys is not None else ""
        except ValueError:
            if address is not None or cfg.learner.port or attempt == 2:
                raise
    raise AssertionError("unreachable")


def main(cfg: RunConfig, on_ready=None, address: str | None = None, on_learner=None) -> dict:
    """Run a learner until its budget ends.

    ``address`` defaults to the config's tcp address; ``on_ready(address, run_dir, keys_dir)``
    is called once it listens (``keys_dir``: the actors' --keys, "" when the learner is open),
    ``on_learner(learner)`` once it exists (the in-process launcher uses it to stop the
    learner from another thread).
    """
    run_dir = run_dir_for(cfg)
    saved = saved_config(run_dir)  # a resume: the run's own config
    if saved is not None:
        refuse_changes(run_dir, saved, cfg)  # before anything is written
    info = describe_env(cfg.env)  # env errors before anything is written too
    cfg = with_solved_return(cfg)
    # config checks, model, replay, checkpoint: still nothing written (a finished run is refused here)
    learner = Learner(cfg, run_dir, info)
    created = prepare_run_dir(run_dir)
    reachable = None
    try:
        address, keys_dir = _bind(learner, cfg, address, run_dir)
        record_start(run_dir, saved, cfg)
        save_config(cfg, run_dir / "config.json")
        reachable = address_file.advertised(address, cfg.learner.advertise_host)
        address_file.publish(run_dir, reachable)  # only now: the file means "a learner listens here"
        log.info("learner listening on %s (device %s, run directory %s); start actors with: %s",
                 address, learner.device, run_dir, actor_command(reachable, keys_dir))
        if on_learner is not None:
            on_learner(learner)
        if on_ready is not None:
            on_ready(address, run_dir, keys_dir)
        summary = learner.run()
    except BaseException:
        # nothing useful yet (the learner never trained): leave no run directory behind
        if created and learner.monitor is None and not (run_dir / "checkpoint.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if reachable is not None:
            address_file.withdraw(run_dir, reachable)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    say(format_summary(summary))
    return summary
