"""Finding, reading and validating the Scruples v1.0 files.

Where data comes from, first match wins:

1. ``data_dir`` (task metadata / ``--data-dir``) or ``$MORAL_AMBIGUITY_DATA_DIR``:
   the file must be there, a missing file is an error (no silent fallback);
2. the user cache (``moral-ambiguity data fetch`` fills it; with
   ``MORAL_AMBIGUITY_AUTO_FETCH=1`` a missing cache is fetched on first use);
3. the bundled hand-written sample, with a loud warning, unless
   ``MORAL_AMBIGUITY_REQUIRE_FULL_DATA=1`` turns that into an error.

Every loaded split carries its provenance (full or sample, split, rows, rows
skipped for having no votes, SHA-256 of the file) so that no number computed
on the sample can pass for a Scruples number.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..prompts import TaskSpec
from .files import (
    ENV_AUTO_FETCH,
    ENV_DATA_DIR,
    ENV_REQUIRE_FULL,
    SAMPLE_DIR,
    SCRUPLES_VERSION,
    DataError,
    cache_dir,
    file_name,
    sha256_file,
)

log = logging.getLogger(__name__)

_WARNED: set[tuple[str, str]] = set()


def _find_in(directory: Path, dataset: str, split: str) -> Path | None:
    # Accept both the extracted tarball layout (<dir>/<dataset>/<file>) and a flat folder.
    name = file_name(dataset, split)
    for candidate in (directory / dataset / name, directory / name):
        if candidate.is_file():
            return candidate
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def _source_of(path: Path) -> str:
    return "sample" if SAMPLE_DIR.resolve() in path.resolve().parents else "full"


def locate(dataset: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Return ``(path, source)`` with source ``"full"`` or ``"sample"``."""
    explicit = data_dir or os.environ.get(ENV_DATA_DIR)
    if explicit:
        where = "data_dir" if data_dir else f"${ENV_DATA_DIR}"
        directory = Path(explicit).expanduser()
        if not directory.is_dir():
            raise DataError(f"{where} {directory} is not a directory")
        found = _find_in(directory, dataset, split)
        if found is None:
            raise DataError(
                f"{where} {directory} has no {file_name(dataset, split)} "
                f"(looked in {directory / dataset} and {directory})"
            )
        return found, _source_of(found)

    found = _find_in(cache_dir(), dataset, split)
    if found is None and _truthy(os.environ.get(ENV_AUTO_FETCH)):
        from .download import fetch

        fetch([dataset])
        found = _find_in(cache_dir(), dataset, split)
    if found is not None:
        return found, "full"

    if _truthy(os.environ.get(ENV_REQUIRE_FULL)):
        raise DataError(
            f"Scruples {dataset}/{split} not found (no data_dir, no ${ENV_DATA_DIR}, nothing in {cache_dir()}) "
            f"and {ENV_REQUIRE_FULL} forbids the bundled sample. Run `moral-ambiguity data fetch`."
        )
    if (dataset, split) in _WARNED:
        return SAMPLE_DIR / dataset / file_name(dataset, split), "sample"
    _WARNED.add((dataset, split))
    log.warning(
        "\n%s\nUSING THE BUNDLED SAMPLE for Scruples %s/%s: 40 hand-written items, NOT Scruples data.\n"
        "Numbers computed on it are not comparable to any published figure.\n"
        "Run `moral-ambiguity data fetch`, or pass data_dir / $%s.\n%s",
        "!" * 78, dataset, split, ENV_DATA_DIR, "!" * 78,
    )
    return SAMPLE_DIR / dataset / file_name(dataset, split), "sample"


def _require(row: dict, key: str, kind: type | tuple, where: str):
    if key not in row:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(row[key], kind):
        raise DataError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {row[key]!r:.80}")
    return row[key]


def _check_counts(counts: list, expected: int, field: str, where: str) -> list[int]:
    if len(counts) != expected:
        raise DataError(f"{where}: {field} has {len(counts)} counts, expected {expected}")
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, int):
            raise DataError(f"{where}: {field} has a non-integer count {c!r}")
        if c < 0:
            raise DataError(f"{where}: {field} has a negative count {c}")
    return counts


def validate_row(spec: TaskSpec, row, where: str) -> list[int]:
    """Check the fields ``spec`` needs; return its vote counts in label order."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    _require(row, "id", str, where)
    if spec.dataset == "dilemmas":
        actions = _require(row, "actions", list, where)
        if len(actions) != 2 or not all(isinstance(a, dict) and isinstance(a.get("description"), str) for a in actions):
            raise DataError(f"{where}: 'actions' must be two objects with a string 'description'")
        counts = _require(row, spec.counts_field, list, where)
    else:
        _require(row, "title", str, where)
        _require(row, "text", str, where)
        scores = _require(row, spec.counts_field, dict, where)
        if set(scores) != set(spec.labels):
            raise DataError(
                f"{where}: {spec.counts_field} has keys {sorted(scores)}, expected exactly {list(spec.labels)}"
            )
        counts = spec.counts(row)
    return _check_counts(counts, len(spec.labels), spec.counts_field, where)


@dataclass
class LoadedSplit:
    spec: TaskSpec
    split: str
    path: Path
    source: str  # "full" or "sample"
    rows: list[dict]  # rows with at least one vote, in file order
    counts: list[list[int]]
    skipped_zero_votes: int
    sha256: str

    @property
    def provenance(self) -> dict:
        return {
            "dataset": f"scruples-{SCRUPLES_VERSION}/{self.spec.dataset}",
            "source": self.source,
            "split": self.split,
            "rows": len(self.rows),
            "skipped_zero_votes": self.skipped_zero_votes,
            "sha256": self.sha256,
            "path": str(self.path),
        }

    @property
    def provenance_str(self) -> str:
        # A compact, grep-able one-liner for lm-eval's results table and JSON.
        p = self.provenance
        return (
            f"{p['source']}:{p['dataset']}/{p['split']} rows={p['rows']} "
            f"skipped_zero_votes={p['skipped_zero_votes']} sha256:{p['sha256'][:16]}"
        )


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """``(line_number, parsed)`` for every non-blank line; a clear error for invalid UTF-8 or JSON."""
    out = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                out.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    return out


def load_split(spec: TaskSpec, split: str, data_dir: str | os.PathLike | None = None) -> LoadedSplit:
    path, source = locate(spec.dataset, split, data_dir)
    rows, counts, skipped = [], [], 0
    first_line: dict[str, int] = {}  # id -> line; a repeated id would silently merge documents downstream
    for lineno, row in read_jsonl(path):
        row_counts = validate_row(spec, row, f"{path}:{lineno}")
        if row["id"] in first_line:
            raise DataError(f"{path}:{lineno}: duplicate id {row['id']!r} (first on line {first_line[row['id']]})")
        first_line[row["id"]] = lineno
        if sum(row_counts) == 0:
            skipped += 1
            continue
        rows.append(row)
        counts.append(row_counts)
    if skipped:
        log.warning("%s: skipped %d rows with zero %s votes (Scruples leaves them undefined)", path, skipped, spec.name)
    if not rows:
        raise DataError(f"{path}: no rows with votes for {spec.name}")
    sha256 = sha256_file(path)
    bundled = SAMPLE_DIR / spec.dataset / file_name(spec.dataset, split)
    if (source == "full" and bundled.is_file() and bundled.stat().st_size == path.stat().st_size
            and sha256_file(bundled) == sha256):
        source = "sample"  # a copy of the bundled sample is still the sample, wherever it lies
    return LoadedSplit(spec, split, path, source, rows, counts, skipped, sha256)
