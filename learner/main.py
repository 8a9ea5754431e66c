"""Learner process entry point: `mouse learner [FLAGS]`: run directory, bind, train, summary."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from pathlib import Path

from mouse.config import RunConfig, save_config
from mouse.keys import learner_keys
from mouse.transport import free_port_base

from .learner import Learner

log = logging.getLogger("mouse.learner")


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Create the run directory (clear error when it cannot be written) and save the config."""
    run_dir = Path(cfg.run_dir or f"runs/{cfg.env.env_id}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"run directory {run_dir} is not writable: {e}") from None
    save_config(cfg, run_dir / "config.json")
    return run_dir


def format_summary(s: dict) -> str:
    def num(x, fmt="{:.1f}"):
        return "n/a" if x is None else fmt.format(x)
    lines = [
        "",
        "== mouse run finished ==",
        f"best eval return   {num(s['best_eval_return'])}",
        f"final eval return  {num(s['final_eval_return'])}",
        "solved at          " + ("not solved" if not s["solved_at"] else
                                 "{:,} env steps, {:,} updates, {:.1f} min".format(*s["solved_at"])),
        f"env steps          {s['env_steps']:,}",
        f"updates            {s['updates']:,} (weights v{s['weights_version']})",
        f"wall time          {s['wall_minutes']:.1f} min",
        f"stopped by         {s['stop_reason']}",
        f"run directory      {s['run_dir']}",
        f"checkpoint         {s['checkpoint']}",
    ]
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
    """The `mouse actor` line that joins this learner (a wildcard host becomes this host's name)."""
    address = re.sub(r"^tcp://(0\.0\.0\.0|\*|\[::\]):", f"tcp://{socket.getfqdn()}:", address)
    keys = f" --keys {keys_dir}" if keys_dir else ""
    return f"mouse actor --learner {address}{keys}"


def main(cfg: RunConfig, on_ready=None, address: str | None = None, on_learner=None) -> dict:
    """Run a learner until its budget ends.

    ``address`` defaults to the config's tcp address; ``on_ready(address, run_dir, keys_dir)``
    is called once it listens (``keys_dir``: the actors' --keys, "" when the learner is open),
    ``on_learner(learner)`` once it exists (the in-process launcher uses it to stop the
    learner from another thread).
    """
    run_dir = prepare_run_dir(cfg)
    address = address or learner_address(cfg)
    keys = learner_keys(cfg.learner.auth, cfg.learner.keys_dir, address, run_dir)
    keys_dir = str(keys.dir.resolve()) if keys is not None else ""
    learner = Learner(cfg, run_dir)
    address = learner.bind(address, keys)
    log.info("learner listening on %s (device %s); start actors with: %s",
             address, learner.device, actor_command(address, keys_dir))
    if on_learner is not None:
        on_learner(learner)
    if on_ready is not None:
        on_ready(address, run_dir, keys_dir)
    summary = learner.run()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary), flush=True)
    return summary
