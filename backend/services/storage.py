"""Content-addressed file storage under the data dir.

A file is stored once under its SHA-256 (``blobs/ab/abcd…``), so the same upload twice costs
nothing and a stored file never changes under a reader (safe to cache by hash in any
process, API or Dask worker). Writers always go through a temp file in ``tmp/`` on the same
filesystem and an atomic ``os.replace``: a crash or a rejected upload never leaves a partial
blob behind, only temp files that ``scratch`` removes on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class Storage:
    """Blobs by SHA-256 under ``data_dir/blobs``, scratch space under ``data_dir/tmp``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.cache = self.root / "cache"
        for d in (self.blobs, self.tmp, self.cache):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (whether or not it exists)."""
        if not _SHA256.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.blobs / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private temp directory on the storage filesystem, removed on exit whatever
        happens (uploads stream into it; only ``put`` moves files out of it)."""
        path = self.tmp / uuid.uuid4().hex
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def put(self, src: Path, sha256: str) -> bool:
        """Move ``src`` (already hashed) into place atomically; True when the blob is new.
        An existing blob with the same hash is kept and ``src`` is deleted."""
        dest = self.path(sha256)
        if dest.is_file():
            src.unlink(missing_ok=True)
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return True

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; returns ``(sha256, created)``."""
        sha = hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return sha, False
        with self.scratch() as tmp:
            path = tmp / "blob"
            path.write_bytes(data)
            return sha, self.put(path, sha)

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    # -- derived results (explanation cache) -------------------------------------------------

    def _cache_path(self, namespace: str, key: str) -> Path:
        if not _SHA256.match(key) or not namespace.isidentifier():
            raise ValueError(f"bad cache key {namespace!r}/{key!r}")
        return self.cache / namespace / key[:2] / f"{key}.json"

    def read_json(self, namespace: str, key: str) -> Any | None:
        """A cached JSON value, or None when absent or unreadable (then it is recomputed)."""
        try:
            return json.loads(self._cache_path(namespace, key).read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, namespace: str, key: str, value: Any) -> None:
        """Write a JSON value atomically (temp file + rename), so readers never see half."""
        dest = self._cache_path(namespace, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp, suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(value, fh, separators=(",", ":"))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def cache_key(payload: Any) -> str:
    """A stable SHA-256 of a JSON-able payload (sorted keys)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
