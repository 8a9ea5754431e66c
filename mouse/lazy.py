"""Package exports loaded on first use (PEP 562), so that importing a package's config does not
import torch: ``__getattr__ = lazy_exports(__name__, {"name": "module", ...})``."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, table: dict[str, str], first: str | None = None):
    """A module ``__getattr__`` that imports ``name`` from module ``table[name]`` (absolute, or
    relative to ``package``) when first asked for, and keeps it in the package; module
    ``first`` is imported before any of them."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if first is not None:
            importlib.import_module(first, package)
        value = getattr(importlib.import_module(table[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
