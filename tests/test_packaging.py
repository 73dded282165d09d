"""The install: extras named where they are needed, and a missing extra named in one line."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from moral_tasks.cli import main as cli

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
EXTRAS = {extra: {Requirement(r).name for r in reqs} for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
CORE = {Requirement(r).name for r in PYPROJECT["project"]["dependencies"]}


@pytest.mark.parametrize("module,extra", sorted(cli.MODULE_EXTRAS.items()))
def test_each_optional_module_is_in_its_extra_and_not_in_the_core(module, extra):
    assert module in EXTRAS[extra] and module not in CORE


def test_all_installs_every_extra_but_the_test_tools_and_the_gpu_only_one():
    (everything,) = PYPROJECT["project"]["optional-dependencies"]["all"]
    assert set(Requirement(everything).extras) == set(EXTRAS) - {"all", "test", "qlora"}


def test_missing_extra_is_named_in_one_line(monkeypatch, capsys):
    # matplotlib cannot be imported (None in sys.modules makes every import of it fail); the check runs
    # before the leaderboard's own imports and before any model is run.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["leaderboard", "--help"]) == 2
    err = capsys.readouterr().err
    assert err == ("moral-ambiguity: error: matplotlib is not installed; it comes with the [leaderboard] extra: "
                   "pip install 'moral-ambiguity[leaderboard]'\n")
