"""Faults in data files and downloads, each driven for real through ``moral-ambiguity`` (and one through lm-eval).

Every case checks the exit code, the one-line message naming the culprit, that no traceback is shown,
and that data installed before stays as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moral_tasks.data import files as F
from moral_tasks.data.download import MANIFEST
from scruples_factory import dilemma_row, write_jsonl, write_scruples
from scruples_server import Server, flip_bit, make_tarball

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = "anecdotes.tar.gz"


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv(F.ENV_CACHE, str(tmp_path / "cache"))
    for var in (F.ENV_DATA_DIR, F.ENV_REQUIRE_FULL, F.ENV_AUTO_FETCH):
        monkeypatch.delenv(var, raising=False)
    return F.cache_dir()


@pytest.fixture
def tarballs(tmp_path) -> dict[str, bytes]:
    """Two releases of the anecdotes archive with different rows: what is installed can be told apart."""
    return {release: make_tarball(write_scruples(tmp_path / release, n=5, seed=seed), "anecdotes")
            for release, seed in (("old", 0), ("new", 1))}


@pytest.fixture
def server(tarballs):
    srv = Server({ARCHIVE: tarballs["new"]})
    yield srv
    srv.close()


def installed(cache: Path) -> dict[str, bytes]:
    folder = cache / "anecdotes"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def leftovers(cache: Path) -> list[str]:
    """Partial downloads and temporary extraction folders left behind."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.name.endswith(".part") or p.name.startswith("."))


@pytest.fixture
def old_data(cli, server, tarballs, cache) -> dict[str, bytes]:
    """The old release, installed through the CLI; the server then serves the new one."""
    server.files[ARCHIVE] = tarballs["old"]
    assert cli("data", "fetch", "--dataset", "anecdotes", "--url", server.url, "--quiet").code == 0
    server.files[ARCHIVE] = tarballs["new"]
    server.requests.clear()
    return installed(cache)


def fetch_args(server, *extra) -> list[str]:
    return ["data", "fetch", "--dataset", "anecdotes", "--url", server.url, "--quiet", *extra]


# --- corrupt archives -------------------------------------------------------------------------------------------

def test_gzip_crc_bit_flip_is_not_installed_and_old_data_is_kept(cli, server, tarballs, old_data, cache):
    # tarfile stops at the tar end marker and would extract this archive without complaint.
    server.files[ARCHIVE] = flip_bit(tarballs["new"], -6)  # inside the CRC-32 of the gzip trailer
    line = cli(*fetch_args(server, "--force")).error_line()
    assert f"{server.url}/{ARCHIVE}" in line and "corrupt gzip archive" in line and "CRC check failed" in line
    assert installed(cache) == old_data
    assert leftovers(cache) == []


def test_gzip_length_bit_flip_is_not_installed(cli, server, tarballs, cache):
    server.files[ARCHIVE] = flip_bit(tarballs["new"], -2)  # inside ISIZE, the uncompressed length
    line = cli(*fetch_args(server)).error_line()
    assert "corrupt gzip archive" in line and "length" in line
    assert installed(cache) == {} and leftovers(cache) == []


def test_corrupt_download_is_deleted_and_the_next_run_starts_from_zero(cli, server, tarballs, cache):
    server.files[ARCHIVE] = flip_bit(tarballs["new"], 40)  # in the deflate stream
    line = cli(*fetch_args(server)).error_line()
    assert "corrupt gzip archive" in line and "nothing was installed" in line
    assert leftovers(cache) == [], "a corrupt archive must not be resumed"
    server.files[ARCHIVE] = tarballs["new"]
    assert cli(*fetch_args(server)).code == 0
    assert server.requests[-1] == (ARCHIVE, None), "downloaded from the start, not resumed"
    assert (cache / "anecdotes" / MANIFEST).exists()


def test_resumed_download_with_bad_early_bytes_is_downloaded_again_from_zero(cli, server, tarballs, cache, caplog):
    # A flaky connection delivers a damaged first half, then drops; the resumed archive cannot be good.
    server.files[ARCHIVE] = flip_bit(tarballs["new"], 40)
    server.cut_first_at = 200
    line = cli(*fetch_args(server)).error_line()
    assert "run the command again to resume" in line
    server.files[ARCHIVE] = tarballs["new"]
    result = cli(*fetch_args(server))
    assert result.code == 0, result.err
    assert server.requests[1:] == [(ARCHIVE, "bytes=200-"), (ARCHIVE, None)]
    assert "resumed from an earlier partial download: downloading it again from the start" in caplog.text
    assert (cache / "anecdotes" / MANIFEST).exists() and leftovers(cache) == []


def test_http_416_on_resume_removes_the_partial_file_and_restarts(cli, server, tarballs, cache, caplog):
    # A partial file longer than the archive now served (it changed upstream): resuming can only fail.
    part = cache / "downloads" / f"{ARCHIVE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (len(tarballs["new"]) + 100))
    result = cli(*fetch_args(server))
    assert result.code == 0, result.err
    assert server.requests == [(ARCHIVE, f"bytes={len(tarballs['new']) + 100}-"), (ARCHIVE, None)]
    assert "HTTP 416" in caplog.text
    assert installed(cache)["dev.scruples-anecdotes.jsonl"] and leftovers(cache) == []


def test_force_discards_a_partial_download(cli, server, old_data, cache):
    part = cache / "downloads" / f"{ARCHIVE}.part"
    part.write_bytes(b"stale bytes from an older release")
    assert cli(*fetch_args(server, "--force")).code == 0
    assert server.requests == [(ARCHIVE, None)]
    assert installed(cache) != old_data and leftovers(cache) == []


def test_corrupt_archive_through_the_console_script(server, tarballs, tmp_path, cache):
    """The one real subprocess: what a user sees on the terminal, exactly one line."""
    server.files[ARCHIVE] = flip_bit(tarballs["new"], -6)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "moral_tasks.cli.main", *fetch_args(server)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("moral-ambiguity: error: "), proc.stderr
    assert "corrupt gzip archive" in proc.stderr and ARCHIVE in proc.stderr
    assert installed(cache) == {} and leftovers(cache) == []


# --- malformed --sha256 ---------------------------------------------------------------------------------------

HEX = "ab" * 32


@pytest.mark.parametrize("value,message", [
    ("anecdotes=", "anecdotes= has no checksum"),
    (HEX, "expected DATASET=SHA256"),
    (f"stories={HEX}", "unknown dataset 'stories'"),
    (f"anecdotes={HEX[:-1]}", "expected 64 hex digits, got 63 characters"),
    (f"anecdotes={'g' * 64}", "with non-hex ones"),
], ids=["empty", "bare-hex", "unknown-dataset", "wrong-length", "non-hex"])
def test_malformed_sha256_is_an_argument_error(cli, server, old_data, cache, value, message):
    line = cli(*fetch_args(server, "--force", "--sha256", value)).error_line()
    assert "argument --sha256" in line and message in line
    assert server.requests == [] and installed(cache) == old_data


@pytest.mark.parametrize("values,message", [
    ([f"anecdotes={HEX}", f"anecdotes={HEX}"], "--sha256 gives anecdotes twice"),
    ([f"dilemmas={HEX}"], "--sha256 gives a checksum for dilemmas, which is not being fetched"),
], ids=["twice", "not-fetched"])
def test_sha256_for_a_dataset_given_twice_or_not_fetched(cli, server, old_data, cache, values, message):
    line = cli(*fetch_args(server, "--force", "--sha256", *values)).error_line()
    assert line.startswith("moral-ambiguity: error: ") and message in line
    assert server.requests == [] and installed(cache) == old_data


def test_wrong_sha256_deletes_the_download_and_keeps_old_data(cli, server, old_data, cache):
    line = cli(*fetch_args(server, "--force", "--sha256", f"anecdotes={HEX}")).error_line()
    assert "does not match the expected" in line and HEX in line
    assert installed(cache) == old_data and leftovers(cache) == []


# --- bad data files ---------------------------------------------------------------------------------------------

@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_scruples(tmp_path / "scruples", n=4)


def test_duplicate_ids_are_refused_naming_file_line_and_id(cli, data_dir):
    import random

    path = data_dir / "dilemmas" / "test.scruples-dilemmas.jsonl"
    rows = [dilemma_row(random.Random(5), i) for i in range(3)]
    rows.append(dict(rows[1], gold_annotations=[4, 1]))  # same id as line 2, other votes
    write_jsonl(path, rows)
    result = cli("data", "verify", "--data-dir", data_dir)
    assert result.code == 1 and "Traceback" not in result.out + result.err
    expected = f"{path}:4: duplicate id 'dil0001' (first on line 2)"
    assert expected in result.out.replace("\n", "")
    # lm-eval builds the task from the same reader and stops with the same message.
    from lm_eval.tasks import TaskManager

    from moral_tasks.data import DataError
    from moral_tasks.lm_eval_plugin import TASKS_DIR

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(data_dir)})
    with pytest.raises(DataError) as err:
        manager.load(["moral_dilemmas"])
    assert str(err.value) == expected


def test_invalid_utf8_is_reported_with_file_and_line(cli, data_dir):
    path = data_dir / "anecdotes" / "dev.scruples-anecdotes.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"Story", b"St\xffry", 1)
    path.write_bytes(b"".join(lines))
    result = cli("data", "verify", "--data-dir", data_dir)
    assert result.code == 1 and "Traceback" not in result.out + result.err
    out = result.out.replace("\n", "")
    assert f"{path}:3: invalid UTF-8 (byte 0xff at column" in out
    assert "problem(s)" in out


def test_unwritable_destination_is_named(cli, server, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    line = cli(*fetch_args(server, "--data-dir", blocker)).error_line()
    assert "cannot write the data" in line and str(blocker) in line
    assert blocker.read_text().startswith("a file")
