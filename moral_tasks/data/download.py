"""Download the official Scruples v1.0 tarballs into the user cache.

* progress bar (tqdm) on the download;
* resume: an interrupted download leaves ``<name>.tar.gz.part``, and the next
  run continues it with an HTTP Range request (or restarts if the server
  ignores ranges);
* checksum: the archive's SHA-256 is checked against a pinned value when one
  is known (``--sha256`` or :data:`PINNED_SHA256`); otherwise it is recorded
  in ``MANIFEST.json`` (trust on first use) and checked by ``data verify``;
* atomic extraction: files are extracted into a temporary folder, checked,
  then moved into place with one rename, so a crash never leaves a half
  dataset in the cache; a corrupt or mismatching archive is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .files import SCRUPLES_VERSION, SPLITS, DataError, cache_dir, file_name, sha256_file

OFFICIAL_URL_BASE = f"https://storage.googleapis.com/ai2-mosaic-public/projects/scruples/{SCRUPLES_VERSION}/data"
ENV_URL_BASE = "MORAL_AMBIGUITY_DATA_URL"
# SHA-256 of the official archives. Unknown to us so far (this project was
# built without network access): filled in from the first verified download.
PINNED_SHA256: dict[str, str | None] = {"anecdotes": None, "dilemmas": None}
MANIFEST = "MANIFEST.json"
CHUNK = 1 << 16


class FetchError(RuntimeError):
    pass


def url_for(dataset: str, url_base: str | None = None) -> str:
    base = (url_base or os.environ.get(ENV_URL_BASE) or OFFICIAL_URL_BASE).rstrip("/")
    return f"{base}/{dataset}.tar.gz"


def _download(url: str, part: Path, progress: bool, timeout: float) -> None:
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # already complete
            return
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise FetchError(f"download of {url} failed: {exc}") from None
    with response:
        resumed = have and response.status == 206
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


def _extract(archive: Path, dataset: str, target: Path) -> dict[str, str]:
    """Extract into a temp dir beside ``target``, check, then swap it in atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}-", dir=target.parent))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")  # refuses absolute paths, '..' and links out
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FetchError(f"{archive} is not a valid .tar.gz ({exc})") from None
        staged = tmp / "staged"
        staged.mkdir()
        hashes = {}
        for split in SPLITS[dataset]:
            name = file_name(dataset, split)
            found = sorted(p for p in tmp.rglob(name) if staged not in p.parents)
            if not found:
                raise FetchError(f"{archive} has no {name}")
            shutil.move(str(found[0]), staged / name)
            hashes[name] = sha256_file(staged / name)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            os.replace(target, old)
        os.replace(staged, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return hashes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(datasets=("anecdotes", "dilemmas"), *, url_base: str | None = None, expected_sha256: dict | None = None,
          dest: Path | None = None, progress: bool = True, timeout: float = 60.0, force: bool = False) -> Path:
    """Fetch ``datasets`` into ``dest`` (default: the user cache); return ``dest``."""
    dest = Path(dest) if dest is not None else cache_dir()
    downloads = dest / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        if dataset not in SPLITS:
            raise DataError(f"unknown Scruples dataset {dataset!r}; expected one of {sorted(SPLITS)}")
        target = dest / dataset
        if (target / MANIFEST).exists() and not force:
            continue
        url = url_for(dataset, url_base)
        part = downloads / f"{dataset}.tar.gz.part"
        _download(url, part, progress, timeout)
        digest = sha256_file(part)
        expected = (expected_sha256 or {}).get(dataset) or PINNED_SHA256.get(dataset)
        if expected and digest != expected.lower():
            part.unlink()
            raise FetchError(f"{url}: SHA-256 {digest} does not match the expected {expected}; the download was deleted")
        try:
            hashes = _extract(part, dataset, target)
        except FetchError:
            part.unlink(missing_ok=True)  # a corrupt archive cannot be resumed
            raise
        manifest = {
            "url": url,
            "archive_sha256": digest,
            "archive_sha256_pinned": bool(expected),
            "files": hashes,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        part.unlink()
    return dest


def verify_manifest(directory: Path) -> list[str]:
    """Problems found comparing the files under ``directory/<dataset>`` with their manifests."""
    problems = []
    for dataset in SPLITS:
        manifest_path = directory / dataset / MANIFEST
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        for name, digest in manifest["files"].items():
            path = directory / dataset / name
            if not path.exists():
                problems.append(f"{path}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{path}: SHA-256 differs from {manifest_path}")
    return problems
