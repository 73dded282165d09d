"""Scruples data: file locations (:mod:`.files`), reading and validation (:mod:`.reading`), download (:mod:`.download`)."""

from .files import SAMPLE_DIR, SCRUPLES_VERSION, SPLITS, DataError, cache_dir, file_name, sha256_file
from .reading import LoadedSplit, load_split, locate, read_jsonl, validate_row

__all__ = [
    "SAMPLE_DIR", "SCRUPLES_VERSION", "SPLITS", "DataError", "LoadedSplit", "cache_dir", "file_name",
    "load_split", "locate", "read_jsonl", "sha256_file", "validate_row",
]
