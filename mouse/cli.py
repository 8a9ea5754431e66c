"""The `mouse` command, generated from the config dataclasses by tyro.

    mouse run     [FLAGS] [--inproc]       learner + N local actor processes (the main job)
    mouse learner [FLAGS]                  a learner alone (cluster: actors join it)
    mouse actor   --learner tcp://HOST:PORT [--actor-id N] [--keys DIR]
    mouse keys    KEYS_DIR [--force]       CurveZMQ keys for a learner and its actors
    mouse plot    RUN_DIR [RUN_DIR ...] [--out DIR]   PNG learning curves, runs overlaid

`--config FILE.json` (a run's saved config.json) sets the defaults that the
other flags then override.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import tyro

from mouse.config import RunConfig, load_config

Cfg = Annotated[RunConfig, tyro.conf.arg(name="")]


def _split_config_flag(argv: list[str]) -> tuple[RunConfig, list[str]]:
    rest, base = [], RunConfig()
    it = iter(argv)
    for a in it:
        if a == "--config" or a.startswith("--config="):
            path = a.split("=", 1)[1] if "=" in a else next(it, None)
            if not path:
                raise SystemExit("--config needs a file path")
            base = load_config(path)
        else:
            rest.append(a)
    return base, rest


def parse_run_config(argv: list[str]) -> RunConfig:
    """The RunConfig that `mouse run ARGV` would use (for scripts and tests)."""
    base, rest = _split_config_flag(list(argv))
    return tyro.cli(RunConfig, args=rest, default=base)


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    level = os.environ.get("MOUSE_LOG", "INFO")
    if sys.stdout.isatty():  # rich's handler prints above the live table instead of through it
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(name)s  %(message)s", datefmt="%H:%M:%S",
                            handlers=[RichHandler(show_path=False)])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            datefmt="%H:%M:%S")
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # its INFO lines are colour-coded noise
    try:
        base, argv = _split_config_flag(argv)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None

    def run(cfg: Cfg = base, inproc: bool = False) -> dict:
        """Run a learner and `num_actors` actor processes on this machine (TCP on loopback).

        Args:
            inproc: Run the actors as threads of this process over inproc:// sockets instead
                (same wire format and code; for debugging and tests).
        """
        from mouse.launch import run_inproc, run_local

        return run_inproc(cfg) if inproc else run_local(cfg)

    def learner(cfg: Cfg = base) -> dict:
        """Run a learner; actors on any node join with `mouse actor --learner tcp://HOST:PORT`."""
        from learner.main import main as learner_main

        return learner_main(cfg)

    def actor(learner: str, actor_id: int = -1, max_steps: int = 0, status_file: str = "",
              keys: str = "") -> dict:
        """Run one actor process against a learner (config and weights come from the learner).

        Args:
            learner: The learner's address, tcp://HOST:PORT (its records port).
            actor_id: This actor's id (streams are numbered from it); -1 = let the learner assign one.
            max_steps: Stop after this many vector-env steps (0 = until the learner says stop).
            status_file: Keep this JSON file up to date with the actor's state ("" = none).
            keys: CurveZMQ keys: DIR/learner.key (the one learner to trust), DIR/actor.key_secret.
                "" = none (a learner that listens on loopback only, or has learner.auth off).
        """
        from actors.main import main as actor_main

        return actor_main(learner, actor_id, max_steps, status_file, keys)

    def keys(keys_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="KEYS_DIR")],
             force: bool = False) -> None:
        """Create CurveZMQ keys: KEYS_DIR/learner.key(_secret), actor.key(_secret), actors/actor.key.

        The learner takes them with --learner.keys-dir KEYS_DIR (its actors/ directory is the
        allow-list of actor public keys); actors with --keys KEYS_DIR, which needs only
        learner.key, actor.key and actor.key_secret.

        Args:
            keys_dir: Directory to create (mode 0700; files 0600).
            force: Replace existing keys (actors holding the old ones are then refused).
        """
        from mouse.keys import create_keys

        path = create_keys(keys_dir, force)
        print(f"CurveZMQ keys in {path}: learner: --learner.keys-dir {path}; actors: --keys {path}")

    def plot(run_dirs: tyro.conf.Positional[tuple[str, ...]], out: str = "") -> list:
        """Write PNG learning curves (returns, losses, throughput) of one or more runs, overlaid.

        Args:
            run_dirs: Run directories (each with metrics.jsonl, or offline W&B files).
            out: Directory for the PNG files ("" = RUN_DIR/plots for one run, ./plots for several).
        """
        from learner.plot import plot_runs

        paths = plot_runs(list(run_dirs), out)
        print("\n".join(map(str, paths)))
        return paths

    try:
        tyro.extras.subcommand_cli_from_dict(
            {"run": run, "learner": learner, "actor": actor, "keys": keys, "plot": plot},
            args=argv, prog="mouse")
    except ValueError as e:  # configuration errors: one clear line, no traceback
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
