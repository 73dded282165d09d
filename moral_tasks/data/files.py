"""Where the Scruples v1.0 files live: names, splits, the user cache, the bundled sample, checksums.

The bottom of the data package: reading (:mod:`.reading`) and downloading
(:mod:`.download`) both build on it, and neither imports the other at module level.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SCRUPLES_VERSION = "v1.0"
SPLITS = {
    "anecdotes": ("train", "dev", "test"),
    "dilemmas": ("train", "train-extra", "dev", "test"),
}
SAMPLE_DIR = Path(__file__).parent / "sample"

ENV_DATA_DIR = "MORAL_AMBIGUITY_DATA_DIR"
ENV_CACHE = "MORAL_AMBIGUITY_CACHE"
ENV_REQUIRE_FULL = "MORAL_AMBIGUITY_REQUIRE_FULL_DATA"
ENV_AUTO_FETCH = "MORAL_AMBIGUITY_AUTO_FETCH"


class DataError(ValueError):
    """Bad or missing data; the message names the file (and line)."""


def file_name(dataset: str, split: str) -> str:
    if dataset not in SPLITS:
        raise DataError(f"unknown Scruples dataset {dataset!r}; expected one of {sorted(SPLITS)}")
    if split not in SPLITS[dataset]:
        raise DataError(f"unknown split {split!r} for Scruples {dataset}; expected one of {list(SPLITS[dataset])}")
    return f"{split}.scruples-{dataset}.jsonl"


def cache_dir() -> Path:
    """Where ``data fetch`` puts the official files."""
    if os.environ.get(ENV_CACHE):
        root = Path(os.environ[ENV_CACHE])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "moral_ambiguity"
    return root / f"scruples-{SCRUPLES_VERSION}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
