"""Fetching a zoo card's weights: its local path (or installed package), else the cache, else a verified download.

The cache is ``$TRAINKIT_CACHE`` (default ``~/.cache/trainkit``)/weights; whatever file is used
must match the card's sha256. Every failure is one :class:`CheckpointError` line naming the
file and what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from trainkit.models.importers import package_file
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.zoo.cards import ROOT, ModelCard

log = logging.getLogger("trainkit")


def cache_dir() -> Path:
    return Path(os.environ.get("TRAINKIT_CACHE", Path.home() / ".cache" / "trainkit")) / "weights"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(f"{what}: {path} has sha256 {actual[:16]}... but the card says {expected[:16]}...: "
                              f"the file is corrupt or was replaced; delete it and fetch it again")


def fetch_weights(card: ModelCard) -> Path:
    """The card's weights file, verified: its local path, else the cache, else downloaded into the cache."""
    what = f"zoo:{card.id}"
    w = card.weights
    local = ROOT / w.path if w.path else package_file(w.package, w.package_file, what) if w.package else None
    cached = cache_dir() / w.sha256[:12] / w.file_name   # the hash in the folder: two versions never collide
    for candidate in (local, cached):
        if candidate is not None and candidate.is_file():
            verify_sha256(candidate, w.sha256, what)
            return candidate
    reason = "no url on the card"
    if w.url:
        try:
            return _download(w.url, cached, w.sha256, what)
        except (urllib.error.URLError, OSError) as err:
            reason = f"download failed: {getattr(err, 'reason', err)}"
    where = f"{local} or {cached}" if local else str(cached)
    source = f" (from {w.url})" if w.url else ""
    raise CheckpointError(f"{what}: weights not found and {reason}; put {w.file_name}{source} "
                          f"with sha256 {w.sha256[:16]}... at {where}")


def _download(url: str, dest: Path, sha256: str, what: str, timeout_s: float = 30.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    log.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
        verify_sha256(tmp, sha256, what)   # before the rename: a bad download never lands in the cache
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
