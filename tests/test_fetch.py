"""`data fetch` against a real HTTP server on 127.0.0.1 serving Scruples-layout tarballs."""

from __future__ import annotations

import hashlib
import socket

import pytest

from moral_tasks.cli import main as cli
from moral_tasks import data as D
from moral_tasks.data import files as F, reading as R
from moral_tasks.data.download import FetchError, fetch
from scruples_factory import write_scruples
from scruples_server import Server, make_tarball


@pytest.fixture
def source(tmp_path):
    return write_scruples(tmp_path / "src", n=6)


@pytest.fixture
def server(source):
    srv = Server({f"{d}.tar.gz": make_tarball(source, d) for d in ("anecdotes", "dilemmas")})
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv(F.ENV_CACHE, str(tmp_path / "cache"))
    for var in (F.ENV_DATA_DIR, F.ENV_REQUIRE_FULL, F.ENV_AUTO_FETCH):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache"


def test_fetch_extracts_verifies_and_is_found(server, source):
    digest = hashlib.sha256(server.files["dilemmas.tar.gz"]).hexdigest()
    dest = fetch(url_base=server.url, expected_sha256={"dilemmas": digest}, progress=False)
    assert dest == D.cache_dir()
    for dataset in ("anecdotes", "dilemmas"):
        for split in D.SPLITS[dataset]:
            name = D.file_name(dataset, split)
            assert (dest / dataset / name).read_bytes() == (source / dataset / name).read_bytes()
    assert not list((dest / "downloads").iterdir()), "no leftover partial downloads"
    path, src = D.locate("dilemmas", "test")
    assert src == "full" and path == dest / "dilemmas" / "test.scruples-dilemmas.jsonl"
    # Already present: a second call downloads nothing.
    n = len(server.requests)
    fetch(url_base=server.url, progress=False)
    assert len(server.requests) == n


def test_checksum_mismatch_deletes_the_download(server):
    with pytest.raises(FetchError, match="does not match"):
        fetch(["anecdotes"], url_base=server.url, expected_sha256={"anecdotes": "0" * 64}, progress=False)
    assert not (D.cache_dir() / "anecdotes").exists()
    assert not list((D.cache_dir() / "downloads").iterdir())


def test_interrupted_download_resumes_with_range(server):
    server.cut_first_at = 100
    with pytest.raises(FetchError, match="run the command again to resume"):
        fetch(["dilemmas"], url_base=server.url, progress=False)
    part = D.cache_dir() / "downloads" / "dilemmas.tar.gz.part"
    assert part.stat().st_size == 100
    assert not (D.cache_dir() / "dilemmas").exists()
    fetch(["dilemmas"], url_base=server.url, progress=False)
    assert server.requests[-1] == ("dilemmas.tar.gz", "bytes=100-")
    assert (D.cache_dir() / "dilemmas" / "test.scruples-dilemmas.jsonl").exists()


def test_corrupt_archive_is_removed(server):
    server.files["anecdotes.tar.gz"] = b"this is not a gzip file" * 10
    with pytest.raises(FetchError, match="corrupt gzip archive"):
        fetch(["anecdotes"], url_base=server.url, progress=False)
    assert not (D.cache_dir() / "anecdotes").exists()
    assert not list(D.cache_dir().parent.rglob("*.part"))
    assert not [p for p in D.cache_dir().iterdir() if p.name.startswith(".anecdotes-")], "temp dir cleaned"


def test_archive_missing_a_split(server, source, tmp_path):
    (source / "anecdotes" / "dev.scruples-anecdotes.jsonl").unlink()
    server.files["anecdotes.tar.gz"] = make_tarball(source, "anecdotes")
    with pytest.raises(FetchError, match="has no dev.scruples-anecdotes.jsonl"):
        fetch(["anecdotes"], url_base=server.url, progress=False)


def test_http_errors_are_clear(server):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(["anecdotes"], url_base=server.url + "/missing-folder/x", progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match="failed"):
        fetch(["anecdotes"], url_base=f"http://127.0.0.1:{port}", progress=False, timeout=5)


def test_cli_fetch_info_verify(server, capsys):
    assert cli.main(["data", "fetch", "--url", server.url, "--quiet"]) == 0
    assert cli.main(["data", "verify"]) == 0
    out = capsys.readouterr().out
    assert "all files valid" in out and "full" in out
    victim = D.cache_dir() / "anecdotes" / "test.scruples-anecdotes.jsonl"
    victim.write_text(victim.read_text() + "{not json\n")
    assert cli.main(["data", "verify"]) == 1
    out = capsys.readouterr().out
    assert "invalid JSON" in out and "SHA-256 differs" in out
    assert cli.main(["data", "fetch", "--url", server.url + "/nope", "--force", "--quiet"]) == 2
    assert "HTTP 404" in capsys.readouterr().err


def test_complete_partial_download_is_checked_and_installed_without_downloading_again(server):
    # Killed after the download, before installing: the server answers the resume with 416 "bytes */size".
    part = D.cache_dir() / "downloads" / "dilemmas.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(server.files["dilemmas.tar.gz"])
    fetch(["dilemmas"], url_base=server.url, progress=False)
    assert server.requests == [("dilemmas.tar.gz", f"bytes={len(server.files['dilemmas.tar.gz'])}-")]
    assert (D.cache_dir() / "dilemmas" / "test.scruples-dilemmas.jsonl").exists() and not part.exists()


def test_installed_data_is_checked_against_a_pinned_checksum(server):
    digest = hashlib.sha256(server.files["anecdotes.tar.gz"]).hexdigest()
    fetch(["anecdotes"], url_base=server.url, progress=False)
    n = len(server.requests)
    fetch(["anecdotes"], url_base=server.url, expected_sha256={"anecdotes": digest.upper()}, progress=False)
    with pytest.raises(FetchError, match=f"installed from an archive with SHA-256 {digest}, not the expected 0000"):
        fetch(["anecdotes"], url_base=server.url, expected_sha256={"anecdotes": "0" * 64}, progress=False)
    assert len(server.requests) == n, "nothing downloaded: installed data is only checked"
