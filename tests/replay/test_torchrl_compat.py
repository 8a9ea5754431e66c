"""The TorchRL adapter refuses releases it was not written for, in one line naming them."""

from __future__ import annotations

import importlib.util

import pytest
import tensordict
import torchrl

from mouse.replay.torchrl_compat import check_versions


def test_the_installed_releases_are_accepted():
    check_versions({"torchrl": torchrl.__version__, "tensordict": tensordict.__version__})


@pytest.mark.parametrize("version", ["0.14.0", "0.14.1", "0.14.3+cu128", "0.14.0rc1", "0.14.2.post1"])
def test_any_release_of_the_series_is_accepted(version):
    check_versions({"torchrl": version, "tensordict": version})


@pytest.mark.parametrize("torchrl_version,tensordict_version,message", [
    ("0.15.0", "0.14.3", r"^mouse\.replay needs torchrl 0\.14\.x \(installed: 0\.15\.0\): "),
    ("0.14.1", "0.13.2", r"^mouse\.replay needs tensordict 0\.14\.x \(installed: 0\.13\.2\): "),
    ("0.140.0", "0.14.3", r"needs torchrl 0\.14\.x \(installed: 0\.140\.0\)"),  # not a prefix match
    ("1.14.0", "0.14.3", r"needs torchrl 0\.14\.x \(installed: 1\.14\.0\)"),
    ("unknown", "0.14.3", r"needs torchrl 0\.14\.x \(installed: unknown\)"),
    ("0.15.0", "0.16.1", r"needs torchrl 0\.14\.x \(installed: 0\.15\.0\) and tensordict 0\.14\.x "
                         r"\(installed: 0\.16\.1\): its adapter mouse/replay/torchrl_compat\.py"),
])
def test_another_release_fails_with_one_line_naming_it(torchrl_version, tensordict_version, message):
    with pytest.raises(ImportError, match=message) as error:
        check_versions({"torchrl": torchrl_version, "tensordict": tensordict_version})
    assert "\n" not in str(error.value)


def test_importing_the_adapter_under_another_release_fails(monkeypatch):
    """The check runs on import, before any TorchRL internals are looked up."""
    monkeypatch.setattr(torchrl, "__version__", "0.15.0")
    spec = importlib.util.find_spec("mouse.replay.torchrl_compat")
    fresh = importlib.util.module_from_spec(spec)  # a second copy: the imported one is left alone
    with pytest.raises(ImportError, match=r"^mouse\.replay needs torchrl 0\.14\.x \(installed: 0\.15\.0\)"):
        spec.loader.exec_module(fresh)
