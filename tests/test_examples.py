"""The recipes in examples/: each loads as `mouse run --config` does and holds what its flags say."""

from __future__ import annotations

import json

import pytest

from examples.recipes import RECIPES
from mouse.cli import parse_run_config
from tests.run_helpers import REPO


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads_and_holds_its_flags(name):
    path = REPO / "examples" / f"{name}.json"
    cfg = parse_run_config(["--config", str(path)])
    # the file pins every value (a later change of a default leaves the recipe as it was); its own
    # flags applied on top change nothing
    assert parse_run_config(["--config", str(path), *RECIPES[name]]) == cfg


def test_the_memory_recipes_differ_only_in_the_backbone():
    a, b = (json.loads((REPO / "examples" / f"cue_recall_{k}.json").read_text()) for k in ("mlp", "transformer"))
    assert a["model"].pop("backbone") == "mlp" and b["model"].pop("backbone") == "transformer"
    assert a == b
