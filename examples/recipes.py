"""The recipes in this folder: each JSON file is the full run config of one result, made from
the flags below (``python examples/recipes.py`` writes them again after a config change).

    mouse run --config examples/NAME.json [more flags]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# the memory task: the two differ only in the backbone
CUE_RECALL = ("--env.env-id", "mouse/CueRecall-v0", "--model.hidden-dim", "64", "--train.seq-len", "8",
              "--eval.every-s", "10", "--budget.solved-return", "0.95", "--budget.max-env-steps", "0",
              "--budget.max-minutes", "5")

RECIPES: dict[str, tuple[str, ...]] = {
    # the default job (./dev.sh run): CartPole-v1 until solved (eval return 475)
    "cartpole": (),
    "cue_recall_transformer": (*CUE_RECALL, "--model.backbone", "transformer"),
    "cue_recall_mlp": (*CUE_RECALL, "--model.backbone", "mlp"),
    # Pong with the Atari preset; a GPU learner and many actors (--num-actors) are what it is for
    "pong": ("--env.env-id", "ALE/Pong-v5", "--model.backbone", "transformer", "--model.hidden-dim", "256",
             "--train.batch-size", "32", "--train.seq-len", "8", "--train.lr", "1e-4",
             "--replay.capacity", "200000", "--learner.warmup-steps", "20000",
             "--learner.replay-ratio", "0.05", "--learner.max-ahead-steps", "20000",
             "--eval.every-s", "300", "--eval.episodes", "8", "--eval.max-steps", "30000",
             "--budget.solved-return", "20", "--budget.max-env-steps", "10000000",
             "--budget.max-minutes", "0"),
}


def write_recipes(directory: Path = HERE) -> list[Path]:
    from mouse.cli import parse_run_config
    from mouse.config import save_config

    paths = []
    for name, flags in RECIPES.items():
        path = directory / f"{name}.json"
        save_config(parse_run_config(list(flags)), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    print("\n".join(map(str, write_recipes())))
