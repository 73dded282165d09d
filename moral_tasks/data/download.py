"""Download the official Scruples v1.0 tarballs into the user cache.

* progress bar (tqdm) on the download;
* resume: an interrupted download leaves ``<name>.tar.gz.part``, and the next
  run continues it with an HTTP Range request (or restarts if the server
  ignores ranges, answers 416, or resumes at another offset); ``force``
  throws the partial file away and starts from zero;
* checks before anything is installed: the archive's SHA-256 against a pinned
  value when one is known (``--sha256`` or :data:`PINNED_SHA256`), otherwise
  recorded in ``MANIFEST.json`` (trust on first use) and checked by
  ``data verify``; and the whole gzip stream (every member's CRC-32 and
  length), which tarfile never reaches because it stops at the tar end marker;
* a bad archive is deleted; one that was resumed from an earlier partial file
  is downloaded once more from the start, since the old bytes may be the bad ones;
* atomic installation: files are extracted into a temporary folder, checked,
  then moved into place with one rename, so a crash or a bad archive never
  leaves a half dataset in the cache and never replaces good data.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import string
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from .files import SCRUPLES_VERSION, SPLITS, DataError, cache_dir, file_name, sha256_file

log = logging.getLogger(__name__)

OFFICIAL_URL_BASE = f"https://storage.googleapis.com/ai2-mosaic-public/projects/scruples/{SCRUPLES_VERSION}/data"
ENV_URL_BASE = "MORAL_AMBIGUITY_DATA_URL"
# SHA-256 of the official archives. Unknown to us so far (this project was
# built without network access): filled in from the first verified download.
PINNED_SHA256: dict[str, str | None] = {"anecdotes": None, "dilemmas": None}
MANIFEST = "MANIFEST.json"
CHUNK = 1 << 16
# What a damaged gzip stream raises while being read (BadGzipFile is an OSError).
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


class FetchError(RuntimeError):
    pass


def url_for(dataset: str, url_base: str | None = None) -> str:
    base = (url_base or os.environ.get(ENV_URL_BASE) or OFFICIAL_URL_BASE).rstrip("/")
    return f"{base}/{dataset}.tar.gz"


def parse_checksum(text: str) -> tuple[str, str]:
    """``"DATASET=HEX"`` -> ``(dataset, hex)``; a :class:`DataError` says what is wrong with it."""
    dataset, sep, digest = text.partition("=")
    if not sep:
        raise DataError(f"expected DATASET=SHA256 (e.g. dilemmas=<64 hex digits>), got {text!r:.80}")
    if dataset not in SPLITS:
        raise DataError(f"unknown dataset {dataset!r} in {text!r:.80}; expected one of {sorted(SPLITS)}")
    return dataset, check_sha256(dataset, digest)


def check_sha256(dataset: str, digest: str) -> str:
    """``digest`` in lower case if it is a SHA-256 (64 hex digits); otherwise a :class:`DataError`."""
    if not digest:
        raise DataError(f"{dataset}= has no checksum; expected 64 hex digits")
    if len(digest) != 64 or not set(digest) <= set(string.hexdigits):
        raise DataError(
            f"{dataset}={digest:.80} is not a SHA-256: expected 64 hex digits, got {len(digest)} characters"
            + ("" if set(digest) <= set(string.hexdigits) else " with non-hex ones")
        )
    return digest.lower()


def _content_range(response) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` from a Content-Range header (``bytes 10-99/100`` or ``bytes */100``)."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (response.headers.get("Content-Range") or "").strip())
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def _download(url: str, part: Path, progress: bool, timeout: float) -> bool:
    """Download ``url`` into ``part``, continuing what is there; True when earlier bytes were kept."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # The partial file is already complete, or longer than the file now served (it changed, or the
            # bytes are bad): keep it only in the first case, which the checks after the download then judge.
            if _content_range(exc)[1] == have:
                return True
            log.warning("%s: the server refused to resume at byte %d (HTTP 416); downloading from the start", url, have)
            part.unlink()
            return _download(url, part, progress, timeout)
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise FetchError(f"download of {url} failed: {exc}") from None
    with response:
        resumed = bool(have) and response.status == 206 and _content_range(response)[0] == have
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as fh, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress
        ) as bar:
            try:
                while block := response.read(CHUNK):
                    fh.write(block)
                    bar.update(len(block))
            except (OSError, TimeoutError) as exc:
                raise FetchError(f"download of {url} interrupted ({exc}); run the command again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise FetchError(
            f"download of {url} stopped at {part.stat().st_size} of {total} bytes; run the command again to resume"
        )
    return resumed


def _check_archive(archive: Path, url: str, expected: str | None) -> str:
    """SHA-256 of ``archive`` after checking it against ``expected`` and reading its whole gzip stream."""
    sha256 = sha256_file(archive)
    if expected and sha256 != expected:
        raise FetchError(f"{url}: SHA-256 {sha256} does not match the expected {expected}; the download was deleted")
    try:
        with gzip.open(archive, "rb") as stream:
            while stream.read(CHUNK):
                pass
    except _GZIP_ERRORS as exc:
        raise FetchError(f"{url}: corrupt gzip archive ({exc}); the download was deleted, nothing was installed") from None
    return sha256


def _fetch_archive(url: str, part: Path, expected: str | None, progress: bool, timeout: float) -> str:
    """Download and check the archive; return its SHA-256. A bad archive never stays on disk."""
    while True:
        resumed = _download(url, part, progress, timeout)
        try:
            return _check_archive(part, url, expected)
        except FetchError as exc:
            part.unlink(missing_ok=True)
            if not resumed:
                raise
            log.warning("%s; it was resumed from an earlier partial download: downloading it again from the start", exc)


def _install(archive: Path, dataset: str, target: Path, manifest: dict) -> None:
    """Extract into a temp dir beside ``target``, check, write the manifest, then swap it in atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}-", dir=target.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")  # refuses absolute paths, '..' and links out
        except (tarfile.TarError, *_GZIP_ERRORS) as exc:
            raise FetchError(f"{archive} is not a valid .tar.gz ({exc})") from None
        staged = tmp / "staged"
        staged.mkdir()
        files = {}
        for split in SPLITS[dataset]:
            name = file_name(dataset, split)
            found = sorted(p for p in tmp.rglob(name) if staged not in p.parents)
            if not found:
                raise FetchError(f"{archive} has no {name}")
            shutil.move(str(found[0]), staged / name)
            files[name] = sha256_file(staged / name)
        (staged / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=2) + "\n")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            os.replace(target, old)
        os.replace(staged, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_installed(manifest_path: Path, dataset: str, pinned: str | None) -> None:
    """Installed data is kept, but not against a pinned checksum that its archive did not have."""
    if not pinned:
        return
    try:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8")).get("archive_sha256")
    except (ValueError, AttributeError):
        recorded = None
    if recorded != pinned:
        raise FetchError(f"{manifest_path.parent} was installed from an archive with SHA-256 {recorded}, not the "
                         f"expected {pinned}; run `moral-ambiguity data fetch --force --dataset {dataset}` to replace it")


def fetch(datasets=("anecdotes", "dilemmas"), *, url_base: str | None = None, expected_sha256: dict | None = None,
          dest: Path | None = None, progress: bool = True, timeout: float = 60.0, force: bool = False) -> Path:
    """Fetch ``datasets`` into ``dest`` (default: the user cache); return ``dest``.

    ``force`` downloads again from zero even when the data or a partial download is present.
    """
    dest = Path(dest) if dest is not None else cache_dir()
    for dataset in datasets:
        if dataset not in SPLITS:
            raise DataError(f"unknown Scruples dataset {dataset!r}; expected one of {sorted(SPLITS)}")
    for dataset in expected_sha256 or {}:
        if dataset not in SPLITS:
            raise DataError(f"checksum given for unknown dataset {dataset!r}; expected one of {sorted(SPLITS)}")
    expected = {d: check_sha256(d, h) for d, h in (expected_sha256 or {}).items()}
    downloads = dest / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        target = dest / dataset
        pinned = expected.get(dataset) or PINNED_SHA256.get(dataset)
        if (target / MANIFEST).exists() and not force:
            _check_installed(target / MANIFEST, dataset, pinned)
            continue
        url = url_for(dataset, url_base)
        part = downloads / f"{dataset}.tar.gz.part"
        if force:
            part.unlink(missing_ok=True)
        digest = _fetch_archive(url, part, pinned, progress, timeout)
        manifest = {
            "url": url,
            "archive_sha256": digest,
            "archive_sha256_pinned": bool(pinned),
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            _install(part, dataset, target, manifest)
        except FetchError:
            part.unlink()  # a complete archive with the wrong content: nothing to resume
            raise
        part.unlink()
    return dest


def verify_manifest(directory: Path) -> list[str]:
    """Problems found comparing the files under ``directory/<dataset>`` with their manifests."""
    problems = []
    for dataset in SPLITS:
        manifest_path = directory / dataset / MANIFEST
        if not manifest_path.exists():
            continue
        try:
            files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
            files = {str(name): str(digest) for name, digest in files.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{manifest_path}: unreadable manifest ({type(exc).__name__}: {exc}); "
                            f"run `moral-ambiguity data fetch --force --dataset {dataset}`")
            continue
        for name, digest in files.items():
            path = directory / dataset / name
            if not path.exists():
                problems.append(f"{path}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{path}: SHA-256 differs from {manifest_path}")
    return problems
