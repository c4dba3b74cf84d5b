"""The packed format: an ImageFolder converted once into fixed-size uint8 records.

Layout of a packed folder (written by ``prepare.py``)::

    manifest.json                 format, image size/channels, classes, per split: count,
                                  per-class counts, shards (file, first index, count, sha256)
    <split>-labels.npy            int64 labels of the split, in record order
    <split>-00000.u8, ...         shards: raw uint8 records [count, size, size, chans], C order

A record is ``size * size * chans`` bytes at a fixed offset, so a loader reads any
image with one ``pread`` and no decoding. Records are read, not memory-mapped: a
mapping's touched pages count as the process's resident memory until the kernel
reclaims them, whereas ``pread`` leaves them in the page cache, which the kernel
shrinks under pressure. Resident memory therefore stays at about one batch
however large the set (see ``benchmarks/packed_data.py``). ``np.memmap`` on a
shard gives the same records for other tools.

Training reads it with the usual keys plus ``data.format: packed`` and ``data.root``
pointing at the packed folder.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trainkit.data.split import DataError, DataSource, Split
from trainkit.data.transforms import to_channels

FORMAT = "trainkit-packed/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Shard:
    path: Path
    first: int          # index of its first record in the split
    count: int


class ProcessFds:
    """Mixin for readers holding file descriptors in ``self._fds`` (a dict): each process (a
    forked loader worker) opens its own, none cross a pickle, and only the opener closes them."""

    def _process_fds(self) -> dict:
        if getattr(self, "_pid", None) != os.getpid():      # new, or a forked worker: own descriptors
            self._fds, self._pid = type(getattr(self, "_fds", {}))(), os.getpid()
        return self._fds

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": type(self._fds)(), "_pid": None}

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in getattr(self, "_fds", {}).values():
                try:
                    os.close(fd)
                except OSError:
                    pass


class PackedArray(ProcessFds):
    """A read-only ``[N, H, W(, C)]`` uint8 array over shard files, read record by record.

    Supports what :class:`~trainkit.data.sources.Split` and the loaders use: ``len``,
    ``shape``, ``ndim``, ``arr[i]`` (one image), ``arr[index_array]`` (a lazy view,
    so carving a hold-out or a subset reads nothing) and ``np.asarray(arr)`` (all
    records, only for the in-memory path, which is chosen only when they fit).
    """

    def __init__(self, shards: list[Shard], record_shape: tuple[int, ...], index: np.ndarray | None = None):
        self.shards, self.record_shape = shards, tuple(record_shape)
        self.record_bytes = int(np.prod(self.record_shape))
        total = sum(s.count for s in shards)
        self.index = np.arange(total, dtype=np.int64) if index is None else index
        self._starts = np.asarray([s.first for s in shards], dtype=np.int64)
        self._fds: dict[int, int] = {}

    dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.record_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.record_shape)

    def __len__(self) -> int:
        return len(self.index)

    def _fd(self, shard: int) -> int:
        fds = self._process_fds()
        if shard not in fds:
            fds[shard] = os.open(self.shards[shard].path, os.O_RDONLY)
        return fds[shard]

    def read(self, record: int) -> np.ndarray:
        shard = int(np.searchsorted(self._starts, record, side="right") - 1)
        offset = (record - self.shards[shard].first) * self.record_bytes
        data = os.pread(self._fd(shard), self.record_bytes, offset)
        if len(data) != self.record_bytes:
            raise DataError(f"{self.shards[shard].path}: truncated (record {record}); run prepare.py again")
        return np.frombuffer(data, dtype=np.uint8).reshape(self.record_shape)

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return self.read(int(self.index[item]))
        return PackedArray(self.shards, self.record_shape, self.index[np.asarray(item)])

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=np.uint8)
        for i, record in enumerate(self.index):
            out[i] = self.read(int(record))
        return out if dtype is None else out.astype(dtype)

    def reshape(self, *shape) -> np.ndarray:
        return np.asarray(self).reshape(*shape)


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(f"{root}: no {MANIFEST}; data.format=packed needs a folder written by prepare.py")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} manifest (format {manifest.get('format')!r})")
    return manifest


def open_packed(root: str | Path) -> DataSource:
    """The splits of a packed folder, read lazily (nothing is loaded here but the labels)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root not found: {root} (data.format=packed: a folder written by prepare.py)")
    manifest = read_manifest(root)
    size, chans = manifest["size"], manifest["chans"]
    record_shape = (size, size) if chans == 1 else (size, size, chans)
    classes = tuple(manifest["classes"])
    splits = {}
    for name, info in manifest["splits"].items():
        shards = [Shard(root / s["file"], s["first"], s["count"]) for s in info["shards"]]
        for shard in shards:
            expected = shard.count * int(np.prod(record_shape))
            if not shard.path.is_file() or shard.path.stat().st_size != expected:
                raise DataError(f"{shard.path}: missing or not {expected} bytes; run prepare.py again")
        labels = np.load(root / info["labels"])
        splits[name] = Split(name, classes, labels.astype(np.int64), arrays=PackedArray(shards, record_shape))
    if "train" not in splits:
        raise DataError(f"{root}: the packed set has no train split")
    return DataSource(splits, natural_chans=chans, description=f"packed {root} ({size} px)")


def sha256_file(path: Path, chunk_mb: int = 8) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_mb << 20):
            h.update(block)
    return h.hexdigest()


def verify(root: str | Path) -> list[str]:
    """Files whose sha256 differs from the manifest's (empty: all good)."""
    root = Path(root)
    manifest = read_manifest(root)
    bad = []
    for info in manifest["splits"].values():
        for shard in info["shards"]:
            if sha256_file(root / shard["file"]) != shard["sha256"]:
                bad.append(shard["file"])
        if sha256_file(root / info["labels"]) != info["labels_sha256"]:
            bad.append(info["labels"])
    return bad


# ---------------------------------------------------------------- writing (prepare.py)

def _fit_square(img, size: int, chans: int) -> np.ndarray:
    """Resize the short side to ``size`` and centre-crop a square (no-op for images already that size)."""
    img = to_channels(img, chans)
    if img.size != (size, size):
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


_JOB: dict = {}


def _decode(path: str) -> bytes | str:
    try:
        with Image.open(path) as img:
            img.load()
            return _fit_square(img, _JOB["size"], _JOB["chans"]).tobytes()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"{path}: {err}"


def pack_split(split: Split, out: Path, *, size: int, chans: int, shard_mb: float, workers: int,
               on_corrupt: str, log=print) -> dict:
    """Decode ``split`` (file paths) into shards of at most ``shard_mb`` MiB; memory: one chunk of images."""
    record = size * size * chans
    per_shard = max(1, int(shard_mb * 2**20) // record)
    _JOB.update(size=size, chans=chans)
    shards, labels, skipped = [], [], []
    f = digest = None
    pool = mp.get_context("fork").Pool(workers) if workers > 0 else None
    decoded = pool.imap(_decode, split.paths, chunksize=64) if pool else map(_decode, split.paths)
    try:
        for path, label, data in zip(split.paths, split.targets, decoded):
            if isinstance(data, str):
                if on_corrupt == "error":
                    raise DataError(f"corrupt or unreadable image {data} (--skip-corrupt skips such files)")
                skipped.append(data)
                continue
            if f is None or shards[-1]["count"] == per_shard:
                if f is not None:
                    f.close()
                    shards[-1]["sha256"] = digest.hexdigest()
                name = f"{split.name}-{len(shards):05d}.u8"
                f, digest = open(out / name, "wb"), hashlib.sha256()
                shards.append({"file": name, "first": len(labels), "count": 0})
            f.write(data)
            digest.update(data)
            shards[-1]["count"] += 1
            labels.append(int(label))
            if len(labels) % 10000 == 0:
                log(f"  {split.name}: {len(labels)}/{len(split)}")
    finally:
        if pool:
            pool.terminate()
        _JOB.clear()
    if f is not None:
        f.close()
        shards[-1]["sha256"] = digest.hexdigest()
    if not labels:
        raise DataError(f"no readable images in split {split.name}")
    label_file = f"{split.name}-labels.npy"
    np.save(out / label_file, np.asarray(labels, dtype=np.int64))
    counts = np.bincount(np.asarray(labels), minlength=len(split.classes)).tolist()
    return {"count": len(labels), "per_class": dict(zip(split.classes, counts)), "skipped": skipped,
            "labels": label_file, "labels_sha256": sha256_file(out / label_file), "shards": shards}


def write_packed(source: DataSource, out: Path, *, size: int, chans: int, shard_mb: float, workers: int,
                 on_corrupt: str = "error", log=print) -> dict:
    """Pack every split of ``source`` into ``out``; the manifest is written last (its presence = complete)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    splits = {}
    for name, split in source.splits.items():
        log(f"packing {name}: {len(split)} images -> {size}x{size}x{chans}")
        splits[name] = pack_split(split, out, size=size, chans=chans, shard_mb=shard_mb, workers=workers,
                                  on_corrupt=on_corrupt, log=log)
    classes = next(iter(source.splits.values())).classes
    manifest = {"format": FORMAT, "source": source.description, "size": size, "chans": chans,
                "resize": "short side to size, centre crop", "classes": list(classes), "splits": splits}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest
