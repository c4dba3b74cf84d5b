"""Streaming shards: the original encoded images in webdataset tar shards, on a local disk or behind a URL.

Layout (written by ``prepare.py --format webdataset``)::

    manifest.json              format, library, classes, shuffle seed; per split: count, per-class
                               counts, skipped files, the index file, shards (file, count, bytes, sha256)
    <split>-index.npy          int64 [N, 4]: shard number, byte offset, byte length, class index
    <split>-000000.tar, ...    webdataset shards: per sample ``<key>.<jpg|png|...>`` (the file's own
                               bytes) and ``<key>.cls`` (the class index as text)

The shards are plain webdataset tar files, so ``webdataset.WebDataset("train-{000000..000041}.tar")``
and ``tar`` read them as they are; samples were written in a seeded random order, so a shard
mixes classes. The index lets a reader fetch sample ``i`` with one ``pread`` at a known offset:
the order of an epoch is then a pure function of (seed, epoch, rank, world) computed from the
index alone, which is what gives every guarantee of the other formats here (each training sample
once per epoch over all ranks and workers, a mid-epoch ``--resume`` that skips batches without
reading them and continues bit-identically, evaluation that counts each sample once), while
webdataset's own iterable pipeline (shards split by node and worker, a shuffle buffer) gives
none of them exactly.

``data.root`` is a folder, ``s3://bucket/prefix`` (read with boto3: endpoint and credentials from the
standard AWS environment variables and files, so any S3 API works: AWS, MinIO, Ceph, a test server),
or a URL that webdataset's ``gopen`` opens: ``http(s)://host/prefix`` (the object store's HTTP
endpoint), ``gs://bucket/prefix``, or a ``pipe:`` command with ``{file}`` where the file name goes
(``pipe:aws s3 cp s3://bucket/prefix/{file} -``). From a URL, shards are
downloaded whole into ``runtime.shard_cache_dir``, checked against the manifest's size and sha256,
and the least recently used ones are deleted to keep the cache under ``runtime.shard_cache_mb``.
Training reads shards in a shard-local order (see ``EpochBatches``): only about
``data.window_shards`` shards are needed at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import shutil
import tarfile
import time
from collections import OrderedDict
from pathlib import Path

import boto3   # s3:// roots (requirements.txt); botocore comes with it
import numpy as np
import webdataset as wds
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from PIL import Image

from trainkit.data.packed import ProcessFds, sha256_file
from trainkit.data.split import DataError, DataSource, Split

log = logging.getLogger(__name__)

FORMAT = "trainkit-webdataset/1"
MANIFEST = "manifest.json"
OPEN_SHARDS = 16            # descriptors one process keeps open (a window plus the next one's first)
DEFAULT_CACHE = Path("~/.cache/trainkit/shards")


S3_TRIES = 4               # tries per object (the first and 3 retries) ...
S3_BACKOFF_S = 0.5         # ... waiting 0.5, 1, 2 s between them: a transient error heals, a dead endpoint
                           # is one error within seconds
S3_FATAL = {"NoSuchKey": "no such object (a missing shard? upload the whole folder written by prepare.py)",
            "404": "no such object (a missing shard? upload the whole folder written by prepare.py)",
            "NoSuchBucket": "no such bucket", "AccessDenied": "access denied (check the AWS credentials)",
            "403": "access denied (check the AWS credentials)",
            "InvalidAccessKeyId": "unknown access key (AWS_ACCESS_KEY_ID)",
            "SignatureDoesNotMatch": "wrong secret key (AWS_SECRET_ACCESS_KEY)"}
_S3_CLIENTS: dict[int, object] = {}        # per process: a boto3 client must not cross a fork (loader workers)


def s3_client():
    """A boto3 S3 client of this process. boto3 reads the endpoint (AWS_ENDPOINT_URL), credentials
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, a profile, an instance role) and region itself."""
    if os.getpid() not in _S3_CLIENTS:
        # Retries are ours (copy_url: logged, with back-off); timeouts keep a dead endpoint from hanging.
        config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=60)
        _S3_CLIENTS[os.getpid()] = boto3.session.Session().client("s3", config=config)
    return _S3_CLIENTS[os.getpid()]


def copy_url(url: str, dst) -> None:
    """Write the object at ``url`` into the binary file ``dst``. s3:// is read with boto3, with
    S3_TRIES tries and back-off (each logged); a missing object or refused credentials fail at once."""
    if not url.startswith("s3://"):
        try:
            with wds.gopen(url, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, ValueError) as err:    # gopen: a missing file, a failed curl/pipe, a bad scheme
            raise DataError(f"cannot fetch {url}: {' '.join(str(err).split())[:300]}") from None
        return
    bucket, _, key = url[len("s3://"):].partition("/")
    client = s3_client()
    for attempt in range(1, S3_TRIES + 1):
        try:
            dst.seek(0)
            dst.truncate()
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            for block in body.iter_chunks(1 << 20):
                dst.write(block)
            return
        except NoCredentialsError:
            raise DataError(f"{url}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                            "or a profile)") from None
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "?")
            if code in S3_FATAL:
                raise DataError(f"{url}: {S3_FATAL[code]}") from None
            error = f"{code}: {err.response.get('Error', {}).get('Message', '')}"
        except (BotoCoreError, OSError) as err:   # no connection, a timeout, a stream cut short
            error = " ".join(str(err).split())
        if attempt < S3_TRIES:
            wait = S3_BACKOFF_S * 2 ** (attempt - 1)
            log.warning("%s: try %d of %d failed (%s); again in %.1f s", url, attempt, S3_TRIES, error[:200], wait)
            time.sleep(wait)
    endpoint = client.meta.endpoint_url
    raise DataError(f"cannot fetch {url} from {endpoint} after {S3_TRIES} tries: {error[:300]}")


def is_url(root: str) -> bool:
    return "://" in root or root.startswith("pipe:")


def file_url(root: str, name: str) -> str:
    """Where ``name`` lives under a URL root (``{file}`` in the root marks the place)."""
    return root.replace("{file}", name) if "{file}" in root else f"{root.rstrip('/')}/{name}"


# ---------------------------------------------------------------- where the bytes are

class ShardStore:
    """Makes shard files local: a folder as it is, or a URL through a bounded on-disk cache."""

    def __init__(self, root: str, *, cache_dir: str | None = None, cache_mb: int = 8192,
                 on_corrupt: str = "error"):
        self.root, self.remote, self.on_corrupt = root, is_url(root), on_corrupt
        self.expected: dict[str, tuple[int, str]] = {}     # file -> (bytes or -1, sha256), from the manifest
        self.cache_bytes = cache_mb << 20
        if self.remote:
            default = DEFAULT_CACHE / hashlib.sha1(root.encode()).hexdigest()[:12]
            self.cache = Path(cache_dir or default).expanduser()
        else:
            self.cache = None
            if not Path(root).expanduser().is_dir():
                raise DataError(f"data root not found: {root} (data.format=webdataset: a folder or URL "
                                "written by prepare.py --format webdataset)")

    def fetch_bytes(self, name: str) -> bytes:
        """A small file (the manifest), read whole and not cached."""
        if not self.remote:
            path = Path(self.root).expanduser() / name
            if not path.is_file():
                raise DataError(f"{path}: not found; data.format=webdataset needs a folder written by "
                                "prepare.py --format webdataset")
            return path.read_bytes()
        buffer = io.BytesIO()
        copy_url(file_url(self.root, name), buffer)
        return buffer.getvalue()

    def path(self, name: str) -> Path:
        """A local path holding ``name``: the file itself, or a checked copy in the cache."""
        if not self.remote:
            return Path(self.root).expanduser() / name
        path = self.cached(name)
        try:
            os.utime(path)          # the cache evicts by modification time: mark it used
            return path
        except FileNotFoundError:
            return self._download(name)

    def open(self, name: str) -> int:
        """A read-only descriptor on ``name``. Another process may evict a cached shard between
        finding and opening it; then it is fetched again (an open descriptor survives eviction)."""
        for _ in range(3):
            try:
                return os.open(self.path(name), os.O_RDONLY)
            except FileNotFoundError:
                if not self.remote:
                    raise
        raise DataError(f"{name}: evicted from {self.cache} right after each of 3 downloads; "
                        "raise runtime.shard_cache_mb")

    def cached(self, name: str) -> Path:
        """The cache's name for ``name`` starts with its sha256: a new upload under the same URL
        (a new manifest) is fetched again, never mixed with an old copy."""
        return self.cache / f"{self.expected.get(name, (-1, 'unknown'))[1][:16]}-{name}"

    def _download(self, name: str) -> Path:
        """Fetch ``name`` into the cache once per node: the loader workers and ranks that need it
        at the same moment wait on a lock file while the first one downloads."""
        partial = self.cache.parent / f"{self.cache.name}.partial"   # outside the folder the LRU sweeps
        partial.mkdir(parents=True, exist_ok=True)
        with open(partial / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)                        # released when the file closes
            if self.cached(name).is_file():
                return self.cached(name)                            # fetched while this one waited
            return self._fetch(name, partial / f"{name}.{os.getpid()}")

    def _fetch(self, name: str, tmp: Path) -> Path:
        size, digest = self.expected.get(name, (-1, ""))
        self.make_room(max(size, 0))
        url = file_url(self.root, name)
        try:
            with open(tmp, "wb") as dst:
                copy_url(url, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        got, got_sha = tmp.stat().st_size, sha256_file(tmp)
        if digest and ((size >= 0 and got != size) or got_sha != digest):
            if self.on_corrupt == "error":
                tmp.unlink(missing_ok=True)
                raise DataError(f"{url}: {got} bytes with sha256 {got_sha[:12]}, the manifest says {size} "
                                f"bytes, {digest[:12]}; re-upload it or set data.on_corrupt=skip")
            log.warning("%s: %d bytes, not %d as in the manifest; unreadable samples are skipped", url, got, size)
        self.cache.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, self.cached(name))
        return self.cached(name)

    def make_room(self, incoming: int) -> None:
        """Delete least recently used cached files until ``incoming`` more bytes fit under the bound.
        A deleted shard still open in some process stays readable there (POSIX unlink)."""
        wds.LRUCleanup(str(self.cache), max(0, self.cache_bytes - incoming), keyfn=os.path.getmtime,
                       interval=None).cleanup()

    def check_local(self) -> None:
        """Local shards: a size that differs from the manifest's is an error, or (skip) a warning."""
        for name, (size, _) in self.expected.items():
            if size < 0:
                continue                    # an index: checked by its sha256 when loaded
            path = self.path(name)
            got = path.stat().st_size if path.is_file() else -1
            if got != size:
                what = "missing" if got < 0 else f"{got} bytes, not {size} as in the manifest (truncated?)"
                if self.on_corrupt == "error":
                    raise DataError(f"{path}: {what}; run prepare.py again, or data.on_corrupt=skip "
                                    "to skip (and count) the samples it lacks")
                log.warning("%s: %s; its unreadable samples are skipped", path, what)


class ShardSamples(ProcessFds):
    """The encoded images of one split, by index: what :class:`Split` holds as ``blobs``.

    ``samples[i]`` is sample ``i``'s bytes (``OSError`` when its shard is cut short);
    ``samples[index_array]`` is a lazy view (carving a hold-out or a subset reads nothing);
    ``groups`` is each sample's shard, for the shard-local training order. Each process
    (loader worker) opens its own descriptors, at most ``OPEN_SHARDS`` at once.
    """

    def __init__(self, store: ShardStore, files: list[str], index: np.ndarray, window: int,
                 select: np.ndarray | None = None):
        self.store, self.files, self.index, self.window = store, files, index, window
        self.select = np.arange(len(index), dtype=np.int64) if select is None else select
        self._fds: OrderedDict[int, int] = OrderedDict()     # least recently used first

    def __len__(self) -> int:
        return len(self.select)

    @property
    def groups(self) -> np.ndarray:
        return self.index[self.select, 0]

    def _fd(self, shard: int) -> int:
        fds = self._process_fds()
        if shard in fds:
            fds.move_to_end(shard)
            return fds[shard]
        if len(fds) >= OPEN_SHARDS:
            os.close(fds.popitem(last=False)[1])
        fds[shard] = self.store.open(self.files[shard])
        return fds[shard]

    def __getitem__(self, item):
        if not isinstance(item, (int, np.integer)):
            return ShardSamples(self.store, self.files, self.index, self.window, self.select[np.asarray(item)])
        shard, offset, size, _ = (int(v) for v in self.index[self.select[item]])
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"shard cut short ({len(data)} of {size} bytes at offset {offset})")
        return data

    def describe(self, item: int) -> str:
        shard, offset = (int(v) for v in self.index[self.select[item], :2])
        return f"{file_url(self.store.root, self.files[shard])} (sample at byte {offset})"


def read_manifest(store: ShardStore) -> dict:
    try:
        manifest = json.loads(store.fetch_bytes(MANIFEST))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{file_url(store.root, MANIFEST)}: not JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{file_url(store.root, MANIFEST)}: not a {FORMAT} manifest (format "
                        f"{manifest.get('format')!r}; prepare.py --format webdataset writes one)")
    return manifest


def _load_index(store: ShardStore, info: dict) -> np.ndarray:
    path = store.path(info["index"])
    if sha256_file(path) != info["index_sha256"]:
        if store.remote:
            path.unlink(missing_ok=True)    # a bad download: fetch it again next time
        raise DataError(f"{file_url(store.root, info['index'])}: sha256 differs from the manifest's; "
                        "run prepare.py again")
    return np.load(path, allow_pickle=False)


def open_shards(root: str, *, cache_dir: str | None = None, cache_mb: int = 8192, window_shards: int = 8,
                on_corrupt: str = "error") -> DataSource:
    """The splits of a shard set at ``root`` (a folder or URL); reads the manifest and the indexes only."""
    store = ShardStore(str(root), cache_dir=cache_dir, cache_mb=cache_mb, on_corrupt=on_corrupt)
    manifest = read_manifest(store)
    for info in manifest["splits"].values():
        store.expected.update({s["file"]: (s["bytes"], s["sha256"]) for s in info["shards"]})
        store.expected[info["index"]] = (-1, info["index_sha256"])
    if store.remote:
        largest = max(s["bytes"] for info in manifest["splits"].values() for s in info["shards"])
        need_mb = -(-2 * window_shards * largest // 2**20)
        if cache_mb < need_mb:
            raise DataError(f"runtime.shard_cache_mb={cache_mb} cannot hold two windows of {window_shards} "
                            f"shards of up to {largest / 2**20:.1f} MiB; set runtime.shard_cache_mb>={need_mb} "
                            "or lower data.window_shards")
    else:
        store.check_local()
    classes = tuple(manifest["classes"])
    splits = {}
    for name, info in manifest["splits"].items():
        index = _load_index(store, info)
        files = [s["file"] for s in info["shards"]]
        splits[name] = Split(name, classes, index[:, 3].copy(),
                             blobs=ShardSamples(store, files, index, window_shards))
    if "train" not in splits:
        raise DataError(f"{root}: the shard set has no train split")
    where = f"cache {store.cache}, {cache_mb} MiB" if store.remote else "local"
    return DataSource(splits, natural_chans=3, description=f"webdataset shards {root} ({where})")


def is_shard_folder(root: Path) -> bool:
    """Whether ``root`` holds a manifest of this format (prepare.py --verify picks the checker by it)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def verify(root: str | Path) -> list[str]:
    """Files of a local shard folder whose sha256 differs from the manifest's (empty: all good)."""
    root = Path(root)
    manifest = read_manifest(ShardStore(str(root)))
    bad = []
    for info in manifest["splits"].values():
        for s in info["shards"]:
            if not (root / s["file"]).is_file() or sha256_file(root / s["file"]) != s["sha256"]:
                bad.append(s["file"])
        if sha256_file(root / info["index"]) != info["index_sha256"]:
            bad.append(info["index"])
    return bad


# ---------------------------------------------------------------- writing (prepare.py)

def _read_checked(path: str) -> bytes | str:
    """The file's bytes if PIL decodes it, else an error line (a worker of write_split's pool)."""
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return data
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"{path}: {err}"


def sample_key(path: str, split_root: Path) -> str:
    """``<class>/<stem>`` with dots made underscores: webdataset groups members by the name up to
    the first dot, so a dotted stem would split one sample in two."""
    rel = Path(path).relative_to(split_root).with_suffix("")
    return rel.as_posix().replace(".", "_")


def _finish(writer: wds.TarWriter) -> None:
    writer.close()              # closes the tar stream; the file it was given stays open
    writer.stream.close()


def _close_shard(out: Path, shard: dict, members: list[tuple[str, int]], rows: list) -> None:
    """Record the data offset of each image member (scanned back from the finished tar)."""
    images = {key: label for key, label in members}
    with tarfile.open(out / shard["file"], "r:") as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            if ext != "cls" and key in images:
                rows.append((shard["number"], m.offset_data, m.size, images[key]))
    shard["bytes"] = (out / shard["file"]).stat().st_size
    shard["sha256"] = sha256_file(out / shard["file"])
    del shard["number"]


def write_split(split: Split, split_root: Path, out: Path, *, shard_mb: float, seed: int, workers: int,
                on_corrupt: str, log=print) -> dict:
    """Write ``split`` (file paths) in a seeded random order into tar shards of about ``shard_mb`` MiB."""
    order = np.random.default_rng(seed).permutation(len(split))
    paths = [split.paths[i] for i in order]
    pool = mp.get_context("fork").Pool(workers) if workers > 0 else None
    read = pool.imap(_read_checked, paths, chunksize=16) if pool else map(_read_checked, paths)
    shards, rows, skipped, members = [], [], [], []
    writer = None
    try:
        for i, path, data in zip(order, paths, read):
            if isinstance(data, str):
                if on_corrupt == "error":
                    raise DataError(f"corrupt or unreadable image {data} (--skip-corrupt skips such files)")
                skipped.append(data)
                continue
            if writer is None or writer.stream.tell() >= shard_mb * 2**20:
                if writer is not None:
                    _finish(writer)
                    _close_shard(out, shards[-1], members, rows)
                name = f"{split.name}-{len(shards):06d}.tar"
                shards.append({"file": name, "number": len(shards), "count": 0})
                members = []
                # mtime 0: the same images give byte-identical shards (and checksums) on every run
                stream = open(out / name, "wb")     # noqa: SIM115 (spans loop turns; _finish closes it)
                writer = wds.TarWriter(stream, encoder=False, mtime=0, format="PAX_FORMAT")
            key, label = sample_key(path, split_root), int(split.targets[i])
            ext = Path(path).suffix.lower().lstrip(".")
            writer.write({"__key__": key, ext: data, "cls": str(label).encode()})
            members.append((key, label))
            shards[-1]["count"] += 1
            if sum(s["count"] for s in shards) % 10000 == 0:
                log(f"  {split.name}: {sum(s['count'] for s in shards)}/{len(split)}")
    finally:
        if pool:
            pool.terminate()
    if writer is not None:
        _finish(writer)
        _close_shard(out, shards[-1], members, rows)
    if not rows:
        raise DataError(f"no readable images in split {split.name}")
    index = np.asarray(rows, dtype=np.int64)
    index_file = f"{split.name}-index.npy"
    np.save(out / index_file, index)
    counts = np.bincount(index[:, 3], minlength=len(split.classes)).tolist()
    return {"count": len(index), "per_class": dict(zip(split.classes, counts)), "skipped": skipped,
            "index": index_file, "index_sha256": sha256_file(out / index_file),
            "pattern": f"{split.name}-{{000000..{len(shards) - 1:06d}}}.tar", "shards": shards}


def write_shards(source: DataSource, root: Path, out: Path, *, shard_mb: float, seed: int = 0, workers: int = 2,
                 on_corrupt: str = "error", log=print) -> dict:
    """Write every split of an ImageFolder ``source`` (at ``root``) as webdataset shards into ``out``;
    the manifest is written last (its presence = complete)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    splits = {}
    for k, (name, split) in enumerate(source.splits.items()):
        log(f"writing {name}: {len(split)} images -> shards of ~{shard_mb:g} MiB")
        splits[name] = write_split(split, root / name, out, shard_mb=shard_mb, seed=seed + k, workers=workers,
                                   on_corrupt=on_corrupt, log=log)
    classes = next(iter(source.splits.values())).classes
    manifest = {"format": FORMAT, "library": f"webdataset {wds.__version__} tar shards", "source": source.description,
                "seed": seed, "classes": list(classes), "splits": splits}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest
