"""The `mouse` command. Each command's flags are generated from the config dataclasses by tyro.

    mouse run     [FLAGS] [--inproc]       learner + N local actor processes (the main job)
    mouse learner [FLAGS]                  a learner alone (cluster: actors join it)
    mouse actor   --learner tcp://HOST:PORT [--actor-id N] [--keys DIR]
    mouse keys    KEYS_DIR [--force]       CurveZMQ keys for a learner and its actors
    mouse eval    RUN_DIR [--episodes N] [--head H] [--checkpoint best|last] [--video DIR]
    mouse plot    RUN_DIR [RUN_DIR ...] [--out DIR]   PNG learning curves, runs overlaid

`--config FILE.json` (a run's saved config.json) sets the defaults that the
other flags then override; `--run-dir DIR` of an existing run does the same with
DIR/config.json (the run's config is its own: see learner.resume).

Nothing heavy is imported here: torch, zmq and gymnasium load only once a
command runs, so `mouse --help` and `mouse COMMAND --help` answer at once.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from mouse import __version__
from mouse.config import RunConfig, load_config

Cfg = Annotated[RunConfig, tyro.conf.arg(name="")]
RunDir = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
RunDirs = Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR [RUN_DIR ...]")]

COMMANDS = {
    "run": "a learner and --num-actors actor processes on this machine (the main job)",
    "learner": "a learner alone; actors on any node join it with `mouse actor`",
    "actor": "one actor process joining a learner",
    "keys": "create CurveZMQ keys for a learner and its actors",
    "eval": "evaluate a run's checkpoint: returns, success rate, q_star agreement, video",
    "plot": "PNG learning curves of one or more runs, overlaid",
}


def usage() -> str:
    rows = "\n".join(f"  {name:<9} {text}" for name, text in COMMANDS.items())
    return (f"usage: mouse [-h] [--version] {{{','.join(COMMANDS)}}} ...\n\n"
            f"mouse {__version__}: distributed actor-learner deep RL.\n\n"
            f"commands:\n{rows}\n\n"
            "`mouse COMMAND --help` lists that command's flags.")


# --- the base config: --config FILE, or an existing run's config.json --------------------------

def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag:
            return argv[i + 1] if i + 1 < len(argv) else None
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _split_config_flag(argv: list[str]) -> tuple[RunConfig, list[str]]:
    """(the config --config names, or the defaults; the other arguments)."""
    base, rest = _config_flag(argv)
    return base or RunConfig(), rest


def _config_flag(argv: list[str]) -> tuple[RunConfig | None, list[str]]:
    rest, base = [], None
    it = iter(argv)
    for a in it:
        if a == "--config" or a.startswith("--config="):
            path = a.split("=", 1)[1] if "=" in a else next(it, None)
            if not path:
                raise ValueError("--config needs a file path")
            base = load_config(path)
        else:
            rest.append(a)
    return base, rest


def base_config(argv: list[str]) -> tuple[RunConfig, list[str]]:
    """The defaults the flags override: --config FILE, else the config.json of the run
    directory --run-dir names when it holds one (a resume), else RunConfig()."""
    base, rest = _config_flag(argv)
    if base is None:
        run_dir = _flag_value(rest, "--run-dir")
        saved = Path(run_dir) / "config.json" if run_dir else None
        base = load_config(saved) if saved is not None and saved.is_file() else RunConfig()
    return base, rest


def parse_run_config(argv: list[str]) -> RunConfig:
    """The RunConfig that `mouse run ARGV` would use (for scripts and tests)."""
    base, rest = base_config(list(argv))
    with _one_line_config_errors():
        return tyro.cli(Cfg, args=rest, default=base, prog="mouse run")


# --- one-line config errors ---------------------------------------------------------------------

class ConfigError(ValueError):
    pass


@contextlib.contextmanager
def _one_line_config_errors():
    """A config dataclass's ValueError raised while tyro builds it becomes one line naming the field.

    tyro (1.x) reports such errors in a box that names its internal wrapper fields
    (``__tyro-dummy-inner__.cfg.train.sp``); its parse-error hook lets us raise our own
    error instead. The hook is tyro's private API, so this adapter checks the version it
    was written for and otherwise leaves tyro's own report.
    """
    try:
        errors = importlib.import_module("tyro._errors")
        hook_api = errors.on_parse_error if tyro.__version__.startswith("1.") else None
    except (ImportError, AttributeError):
        hook_api = None
    if hook_api is None:
        yield
        return

    def hook(event) -> None:
        if type(event).__name__ != "InstantiationFailure":
            return  # syntax errors (bad number, unknown flag): tyro's report, with the flag's help
        raw = getattr(sys.exc_info()[1], "arg", None)  # the failing field's dotted name
        path = ".".join(p for p in str(raw or "").split(".")
                        if p and p not in ("cfg", "__tyro-dummy-inner__", "__tyro_dummy_inner__"))
        message = str(event.message)
        if path and path not in message:
            message = f"{path}: {message}"
        raise ConfigError(message)

    with hook_api(hook):
        yield


# --- the commands -------------------------------------------------------------------------------

def _run(argv: list[str], prog: str):
    base, rest = base_config(argv)

    def run(cfg: Cfg = base, inproc: bool = False, config: str = "") -> dict:
        """Run a learner and `num_actors` actor processes on this machine (TCP on loopback).

        Args:
            inproc: Run the actors as threads of this process over inproc:// sockets (debugging, tests).
            config: A JSON config file (e.g. a run's config.json) that sets the other flags' defaults.
        """
        from mouse.env_ids import check_env

        check_env(cfg.env)  # a misspelt id or bad env_kwargs is refused before torch is imported
        from mouse.launch import run_inproc, run_local

        return run_inproc(cfg) if inproc else run_local(cfg)

    with _one_line_config_errors():
        return tyro.cli(run, args=rest, prog=prog)


def _learner(argv: list[str], prog: str):
    base, rest = base_config(argv)

    def learner(cfg: Cfg = base, config: str = "") -> dict:
        """Run a learner; actors on any node join with `mouse actor --learner tcp://HOST:PORT`.

        The learner picks free ports unless --learner.port is given, and logs its address
        (also in RUN_DIR/status.json). A --run-dir that holds a run resumes it.

        Args:
            config: A JSON config file (e.g. a run's config.json) that sets the other flags' defaults.
        """
        from mouse.env_ids import check_env

        check_env(cfg.env)  # a misspelt id or bad env_kwargs is refused before torch is imported
        from learner.main import main as learner_main

        return learner_main(cfg)

    with _one_line_config_errors():
        return tyro.cli(learner, args=rest, prog=prog)


def _actor(argv: list[str], prog: str):
    def actor(learner: str, actor_id: int = -1, max_steps: int = 0, status_file: str = "",
              keys: str = "", connect_timeout_s: float = 0.0, run_dir: str = "") -> dict:
        """Run one actor process against a learner (config and weights come from the learner).

        Args:
            learner: The learner's address, tcp://HOST:PORT (its records port).
            actor_id: This actor's id (streams are numbered from it); -1 = let the learner assign one.
            max_steps: Stop after this many vector-env steps (0 = until the learner says stop).
            status_file: Keep this JSON file up to date with the actor's state ("" = none).
            keys: CurveZMQ keys: DIR/learner.key (the one learner to trust), DIR/actor.key_secret.
                "" = none (a learner that listens on loopback only, or has learner.auth off).
            connect_timeout_s: Give up (exit 1) when no learner has answered within this many
                seconds (0 = wait for ever).
            run_dir: Join only the learner of this run directory (its config's run_dir); a learner
                of another run on that address ends the actor (exit 1). "" = any learner.
        """
        from actors.main import main as actor_main

        return actor_main(learner, actor_id, max_steps, status_file, keys, connect_timeout_s, run_dir)

    with _one_line_config_errors():
        return tyro.cli(actor, args=argv, prog=prog)


def _keys(argv: list[str], prog: str):
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

    with _one_line_config_errors():
        return tyro.cli(keys, args=argv, prog=prog)


def _eval(argv: list[str], prog: str):
    def evaluate(run_dir: RunDir, episodes: int = 100,
                 head: Literal["acting", "dqn", "vec_dqn", "sp"] = "acting",
                 checkpoint: Literal["best", "last"] = "best", video: str = "", seed: int = 0) -> dict:
        """Evaluate a run's weights: mean/min/max return over N episodes with epsilon 0, the success
        rate where the env's reward is a 0/1 goal (FrozenLake), agreement with the exact q_star
        where the env has one, and optionally videos.

        Args:
            run_dir: The run directory (holds best.pt and checkpoint.pt).
            episodes: Episodes to play (in parallel).
            head: The head that acts (acting = the run's actor.policy); dqn, vec_dqn greedy, sp samples.
            checkpoint: best = best.pt (the weights of the best evaluation); last = checkpoint.pt.
            video: Directory for videos of the first episodes ("" = none; PNG frames without moviepy).
            seed: Seed of the episodes and of sampling.
        """
        from learner.eval_run import eval_run

        return eval_run(run_dir, episodes=episodes, head=head, checkpoint=checkpoint,
                        video=video, seed=seed)

    with _one_line_config_errors():
        return tyro.cli(evaluate, args=argv, prog=prog)


def _plot(argv: list[str], prog: str):
    def plot(run_dirs: RunDirs, out: str = "") -> list:
        """Write PNG learning curves (returns, losses, throughput) of one or more runs, overlaid.

        Args:
            run_dirs: Run directories (each with metrics.jsonl, or offline W&B files).
            out: Directory for the PNG files ("" = RUN_DIR/plots for one run, ./plots for several).
        """
        from learner.plot import plot_runs

        paths = plot_runs(list(run_dirs), out)
        print("\n".join(map(str, paths)))
        return paths

    with _one_line_config_errors():
        return tyro.cli(plot, args=argv, prog=prog)


_PARSERS = {"run": _run, "learner": _learner, "actor": _actor, "keys": _keys, "eval": _eval,
            "plot": _plot}


def _setup_logging() -> None:
    level = os.environ.get("MOUSE_LOG", "INFO")
    if sys.stdout.isatty():  # rich's handler prints above the live table instead of through it
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(name)s  %(message)s", datefmt="%H:%M:%S",
                            handlers=[RichHandler(show_path=False)])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            datefmt="%H:%M:%S")
    # torchrl logs colour-coded INFO lines to stdout, through the console table. It reads these
    # variables when first imported (after this; actor processes inherit them): its warnings go
    # to stderr with ours. setLevel covers a torchrl imported already.
    os.environ.setdefault("RL_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TORCHRL_CONSOLE_STREAM", "stderr")
    try:
        logging.getLogger("torchrl").setLevel(os.environ["RL_LOGGING_LEVEL"])
    except ValueError:  # not a level name: torchrl's own import will say so
        pass


def console() -> None:
    """The ``mouse`` script's entry point: ``main`` without its result, which the script would
    pass to ``sys.exit`` (a run's summary dict there prints itself and exits 1)."""
    main()


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return None
    if argv[0] == "--version":
        print(f"mouse {__version__}")
        return None
    command, rest = argv[0], argv[1:]
    if command not in _PARSERS:
        raise SystemExit(f"error: unknown command {command!r}; the commands are "
                         f"{', '.join(COMMANDS)} (mouse --help)")
    _setup_logging()
    try:
        return _PARSERS[command](rest, f"mouse {command}")
    except ValueError as e:  # configuration and env errors: one clear line, no traceback
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
