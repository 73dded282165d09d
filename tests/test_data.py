"""Finding and validating Scruples files: sources, provenance, and clear errors for bad rows."""

from __future__ import annotations

import json
import random

import pytest

from moral_tasks import data as D
from moral_tasks.data import files as F, reading as R
from moral_tasks.dataset import build_documents
from moral_tasks.task import scoring_settings
from moral_tasks.prompts import TASKS, get_task
from scruples_factory import anecdote_row, dilemma_row, write_jsonl, write_scruples


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for var in (F.ENV_DATA_DIR, F.ENV_REQUIRE_FULL, F.ENV_AUTO_FETCH):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(F.ENV_CACHE, str(tmp_path / "cache"))


def test_data_dir_is_used_and_recorded(tmp_path):
    root = write_scruples(tmp_path / "scruples", n=7)
    loaded = D.load_split(get_task("moral_anecdotes"), "test", root)
    assert loaded.source == "full"
    assert len(loaded.rows) == 7 and loaded.skipped_zero_votes == 0
    prov = loaded.provenance
    assert prov["split"] == "test" and prov["rows"] == 7
    assert prov["sha256"] == D.sha256_file(root / "anecdotes" / "test.scruples-anecdotes.jsonl")
    assert loaded.provenance_str.startswith("full:scruples-v1.0/anecdotes/test rows=7")


def test_env_data_dir_and_flat_layout(tmp_path, monkeypatch):
    rng = random.Random(0)
    write_jsonl(tmp_path / "flat" / "dev.scruples-dilemmas.jsonl", [dilemma_row(rng, i) for i in range(3)])
    monkeypatch.setenv(F.ENV_DATA_DIR, str(tmp_path / "flat"))
    path, source = D.locate("dilemmas", "dev")
    assert path == tmp_path / "flat" / "dev.scruples-dilemmas.jsonl" and source == "full"


def test_explicit_data_dir_missing_file_is_an_error_not_a_fallback(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DataError, match="has no test.scruples-dilemmas.jsonl"):
        D.locate("dilemmas", "test", tmp_path / "empty")
    with pytest.raises(D.DataError, match="is not a directory"):
        D.locate("dilemmas", "test", tmp_path / "nope")


def test_cache_is_used_before_the_sample(tmp_path):
    write_scruples(D.cache_dir(), n=4)
    path, source = D.locate("anecdotes", "train")
    assert source == "full" and path.parent == D.cache_dir() / "anecdotes"


def test_sample_fallback_warns_loudly(caplog):
    R._WARNED.clear()
    with caplog.at_level("WARNING"):
        path, source = D.locate("anecdotes", "test")
    assert source == "sample" and path.is_relative_to(D.SAMPLE_DIR)
    assert "USING THE BUNDLED SAMPLE" in caplog.text and "NOT Scruples data" in caplog.text
    # Pointing data_dir at the bundled sample still records it as a sample.
    assert D.locate("anecdotes", "test", D.SAMPLE_DIR)[1] == "sample"


def test_require_full_data_turns_the_fallback_into_an_error(monkeypatch):
    monkeypatch.setenv(F.ENV_REQUIRE_FULL, "1")
    with pytest.raises(D.DataError, match="forbids the bundled sample"):
        D.locate("dilemmas", "test")


@pytest.mark.parametrize("spec_name", list(TASKS))
def test_bundled_sample_is_valid_and_varied(spec_name):
    spec = get_task(spec_name)
    for split in D.SPLITS[spec.dataset]:
        loaded = D.load_split(spec, split, D.SAMPLE_DIR)
        assert loaded.source == "sample"
        assert len(loaded.rows) + loaded.skipped_zero_votes >= 35
        unanimous = sum(1 for c in loaded.counts if sum(1 for x in c if x) == 1)
        assert 0 < unanimous < len(loaded.counts), "sample needs both unanimous and split votes"


def test_zero_vote_rows_are_skipped_and_counted(tmp_path):
    rng = random.Random(1)
    rows = [anecdote_row(rng, 0), anecdote_row(rng, 1, scores=dict.fromkeys(("AUTHOR", "OTHER", "EVERYBODY", "NOBODY", "INFO"), 0))]
    # Only INFO votes: a valid 5-way row but zero RIGHT/WRONG votes for the binary task.
    rows.append(anecdote_row(rng, 2, scores={"AUTHOR": 0, "OTHER": 0, "EVERYBODY": 0, "NOBODY": 0, "INFO": 4}))
    write_jsonl(tmp_path / "test.scruples-anecdotes.jsonl", rows)
    five = D.load_split(get_task("moral_anecdotes"), "test", tmp_path)
    binary = D.load_split(get_task("moral_anecdotes_binary"), "test", tmp_path)
    assert (len(five.rows), five.skipped_zero_votes) == (2, 1)
    assert (len(binary.rows), binary.skipped_zero_votes) == (1, 2)
    assert "skipped_zero_votes=2" in binary.provenance_str


def _bad(row_edit):
    rng = random.Random(2)
    row = dilemma_row(rng, 0)
    row_edit(row)
    return row


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"id": "x", "actions": [', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (_bad(lambda r: r.pop("gold_annotations")), "missing field 'gold_annotations'"),
        (_bad(lambda r: r.update(gold_annotations=[3, -1])), "negative count -1"),
        (_bad(lambda r: r.update(gold_annotations=[2.5, 2])), "non-integer count 2.5"),
        (_bad(lambda r: r.update(gold_annotations=[1, 2, 2])), "has 3 counts, expected 2"),
        (_bad(lambda r: r.update(gold_annotations="5,0")), "should be list"),
        (_bad(lambda r: r.update(actions=[{"description": "only one"}])), "'actions' must be two objects"),
        (_bad(lambda r: r.update(id=7)), "field 'id' should be str"),
    ],
)
def test_bad_dilemma_rows_name_file_and_line(tmp_path, line, message):
    rng = random.Random(3)
    path = write_jsonl(tmp_path / "test.scruples-dilemmas.jsonl", [dilemma_row(rng, 1), line])
    with pytest.raises(D.DataError) as err:
        D.load_split(get_task("moral_dilemmas"), "test", tmp_path)
    assert f"{path}:2:" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r["label_scores"].pop("INFO"), "label_scores has keys"),
        (lambda r: r["label_scores"].update(INFO=True), "non-integer count True"),
        (lambda r: r.pop("title"), "missing field 'title'"),
    ],
)
def test_bad_anecdote_rows(tmp_path, edit, message):
    row = anecdote_row(random.Random(4), 0)
    edit(row)
    path = write_jsonl(tmp_path / "dev.scruples-anecdotes.jsonl", [row])
    with pytest.raises(D.DataError, match=message) as err:
        D.load_split(get_task("moral_anecdotes"), "dev", tmp_path)
    assert f"{path}:1:" in str(err.value)


def test_unknown_split_and_dataset():
    with pytest.raises(D.DataError, match="unknown split 'validation'"):
        D.file_name("anecdotes", "validation")
    with pytest.raises(D.DataError, match="unknown Scruples dataset"):
        D.file_name("stories", "dev")


def test_build_documents_columns_and_split_choice(tmp_path):
    root = write_scruples(tmp_path / "s", n=5)
    ds, source = build_documents(get_task("moral_dilemmas"), split="train-extra", data_dir=str(root))
    assert set(ds) == {"test", "validation"}
    doc = ds["test"][0]
    original = json.loads((root / "dilemmas" / "train-extra.scruples-dilemmas.jsonl").read_text().splitlines()[0])
    # a document carries the texts the prompt reads, not the whole row (it is written into every samples line)
    assert doc["id"] == original["id"]
    assert doc["actions"] == [{"description": a["description"]} for a in original["actions"]]
    assert set(doc) == {"id", "actions", "choices", "target", "counts", "human_counts"}
    assert doc["counts"] == original["gold_annotations"]
    assert doc["choices"] == ["A", "B"]
    assert doc["target"] == original["gold_label"]
    assert "dilemmas/train-extra rows=5" in source


def test_scoring_settings_are_checked():
    settings = scoring_settings("moral_dilemmas", {"dirichlet_concentration": 7})
    assert settings["fixed_concentration"] == 7.0 and settings["bootstrap_resamples"] == 1000
    with pytest.raises(ValueError, match="dirichlet_concentration must be > 0"):
        scoring_settings("moral_dilemmas", {"dirichlet_concentration": 0})

def test_a_copy_of_the_bundled_sample_is_still_called_the_sample(tmp_path):
    """Provenance goes by content: the sample copied into a data folder (flat or not) is not "full" data."""
    import shutil

    name = D.file_name("dilemmas", "test")
    for folder in (tmp_path / "nested" / "dilemmas", tmp_path / "flat"):
        folder.mkdir(parents=True)
        shutil.copy(D.SAMPLE_DIR / "dilemmas" / name, folder / name)
    for data_dir in (tmp_path / "nested", tmp_path / "flat"):
        assert D.load_split(get_task("moral_dilemmas"), "test", data_dir).source == "sample"
    edited = tmp_path / "edited" / "dilemmas"
    edited.mkdir(parents=True)
    (edited / name).write_text((D.SAMPLE_DIR / "dilemmas" / name).read_text().replace("a", "b", 1))
    assert D.load_split(get_task("moral_dilemmas"), "test", tmp_path / "edited").source == "full"
