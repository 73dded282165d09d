"""The disk cache of lm-eval's task index gives lm-eval's own index, and rebuilds whenever it could be stale."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
from lm_eval.tasks._index import TaskIndex
from lm_eval.tasks._yaml_loader import load_yaml

import lm_eval.tasks.manager as manager
from moral_tasks.lm_eval_plugin import TASKS_DIR
from moral_tasks.task_index_cache import cached_build, install

class CountingBuild:
    """lm-eval's own TaskIndex.build over one folder, counting how often it really parses."""

    def __init__(self):
        self.calls = 0

    def __call__(self, paths, *, resolve_includes=True):
        self.calls += 1
        return uncached_build(paths, resolve_includes=resolve_includes)


def uncached_build(paths, *, resolve_includes=True) -> dict:
    """lm-eval 0.4.13's TaskIndex.build, step by step (ours replaces it in this process): every YAML parsed."""
    index = {}
    for root in paths:
        path_index = {}
        for yaml_path in TaskIndex._iter_yaml_files(Path(root)):
            try:
                cfg = load_yaml(yaml_path, resolve_func=False, recursive=resolve_includes)
                TaskIndex.process_cfg(cfg, yaml_path, path_index)
            except Exception:  # lm-eval skips YAMLs it cannot read
                continue
        index.update(path_index)
    return index


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, root)
    return root


def test_second_build_comes_from_the_cache_and_equals_a_fresh_parse(tree, tmp_path):
    build = CountingBuild()
    first = cached_build(build, tree, True, "0.4.13", folder=tmp_path / "cache")
    second = cached_build(build, tree, True, "0.4.13", folder=tmp_path / "cache")
    assert build.calls == 1
    assert second == uncached_build([tree]) and "moral_dilemmas" in second and first == second


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_a_changed_yaml_folder_is_parsed_again(tree, tmp_path, change):
    build = CountingBuild()
    cached_build(build, tree, True, "0.4.13", folder=tmp_path / "cache")
    yaml = next(tree.rglob("moral_dilemmas.yaml"))
    if change == "edit":
        yaml.write_text(yaml.read_text().replace("task: moral_dilemmas\n", "task: moral_dilemmas_renamed\n"))
    elif change == "add":
        (tree / "extra.yaml").write_text("task: extra_task\ndataset_path: json\n")
    else:
        yaml.unlink()
    index = cached_build(build, tree, True, "0.4.13", folder=tmp_path / "cache")
    assert build.calls == 2 and index == uncached_build([tree])
    assert ("moral_dilemmas_renamed" in index) == (change == "edit")
    assert ("extra_task" in index) == (change == "add")
    assert ("moral_dilemmas" in index) == (change == "add")


def test_another_lm_eval_version_is_parsed_again(tree, tmp_path):
    build = CountingBuild()
    cached_build(build, tree, True, "0.4.13", folder=tmp_path / "cache")
    cached_build(build, tree, True, "0.4.14", folder=tmp_path / "cache")
    assert build.calls == 2


@pytest.mark.parametrize("damage", [b"", b"\x80\x05not a pickle", b"garbage"])
def test_a_damaged_cache_file_costs_a_rebuild_not_an_error(tree, tmp_path, damage):
    build = CountingBuild()
    cached_build(build, tree, True, "0.4.13", folder=tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("*.pickle")
    path.write_bytes(path.read_bytes()[:100] if damage == b"" else damage)  # truncated, or not ours
    assert cached_build(build, tree, True, "0.4.13", folder=tmp_path / "cache") == uncached_build([tree])
    assert build.calls == 2


def test_an_unwritable_cache_folder_still_gives_the_index(tree, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    build = CountingBuild()
    assert cached_build(build, tree, True, "0.4.13", folder=blocker / "cache") == uncached_build([tree])


def test_switched_off_by_the_environment(monkeypatch):
    class Index:
        build = staticmethod(uncached_build)

    monkeypatch.setenv("MORAL_AMBIGUITY_TASK_INDEX_CACHE", "0")
    install(Index, TASKS_DIR, "0.4.13")
    assert Index.__dict__["build"].__func__ is uncached_build


@pytest.mark.slow
def test_lm_eval_own_task_index_comes_back_from_the_cache_unchanged(tmp_path):
    """The real case: lm-eval's ~14,700 task YAMLs, parsed, cached and loaded back, give exactly lm-eval's index."""
    assert getattr(manager.TaskIndex, "_moral_ambiguity_cached", False)  # installed by the startup hook
    lm_eval_dir = Path(manager.__file__).parent
    build = CountingBuild()
    fresh = cached_build(build, lm_eval_dir, True, version("lm_eval"), folder=tmp_path / "cache")
    loaded = cached_build(build, lm_eval_dir, True, version("lm_eval"), folder=tmp_path / "cache")
    assert build.calls == 1 and loaded == fresh and len(loaded) > 10_000
    assert "hellaswag" in loaded and "moral_dilemmas" not in loaded  # ours are never cached
