"""data.format=webdataset: prepare.py's shards and manifest, exact mid-epoch resume, every sample once
per epoch over 2 torchrun processes (gloo) and their workers, truncated shards, bounded memory, and
the URL path through an HTTP server on 127.0.0.1 with a bounded cache."""

from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import itertools
import json
import shutil
import subprocess
import sys
import threading
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from conftest import make_image_folder
from PIL import Image
from test_distributed import ENV, ROOT, assert_same_weights, python, tiny_recipe, torchrun
from test_faults import straight_then_crashed_and_resumed, weights

from trainkit.config.recipe import AugmentCfg, DataCfg, RuntimeCfg
from trainkit.data.loaders import EpochBatches, LoaderSettings, make_loader, shard_local_order
from trainkit.data.sources import DataError, open_source
from trainkit.runtime.checkpoint import load_checkpoint


def prepare(folder: Path, out: Path, shard_mb: float):
    return python("prepare.py", folder, out, "--format", "webdataset", "--shard-mb", shard_mb, "--workers", "0")


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The tiny 8 px folder of the other data tests (39 train, 21 test) as shards of ~4 KiB (several per split)."""
    base = tmp_path_factory.mktemp("wds")
    folder = make_image_folder(base / "folder", per_class=(13, 7), size=8)
    prepare(folder, base / "wds", 0.004)
    return folder, base / "wds"


def make_id_folder(root: Path, per_class: tuple[int, int], size=8) -> Path:
    """Lossless images whose red value is a sample id unique over both splits (class = id % 3)."""
    sample = 0
    for split, count in zip(("train", "test"), per_class):
        for _ in range(count * 3):
            label = sample % 3
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (size, size), (sample, 40 * label, 0)).save(folder / f"{sample:03d}.png")
            sample += 1
    return root


def make_large_folder(root: Path, count: int, size: int) -> Path:
    """``count`` uncompressed BMP files of noise (size*size*3 bytes each), split over 3 classes."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.bmp")
    return root


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves quietly and counts the GET requests per path."""
    gets: typing.ClassVar[collections.Counter] = collections.Counter()

    def do_GET(self):
        QuietHandler.gets[self.path] += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_root():
    """Serve a folder over HTTP on 127.0.0.1 (loopback only); yields (serve(folder) -> URL)."""
    servers = []

    def serve(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 functools.partial(QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def eval_loader(split, batch=8, workers=0, on_corrupt="error"):
    data = DataCfg(in_memory=False, on_corrupt=on_corrupt)
    settings = LoaderSettings(batch, workers, False, 2, False, False)
    return make_loader(split, train=False, data=data, augment=AugmentCfg(), settings=settings, chans=3,
                       device=torch.device("cpu"), seed=0, channels_last=False)


# ---------------------------------------------------------------- writing

def test_manifest_counts_checksums_and_original_bytes(shards):
    folder, out = shards
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "trainkit-webdataset/1" and manifest["classes"] == ["cat", "dog", "fox"]
    train = manifest["splits"]["train"]
    assert train["count"] == 39 and train["per_class"] == {"cat": 13, "dog": 13, "fox": 13}
    assert manifest["splits"]["test"]["count"] == 21 and len(train["shards"]) > 2
    assert sum(s["count"] for s in train["shards"]) == 39
    assert "all checksums match" in python("prepare.py", "--verify", out).stdout

    # Every sample holds a file's own bytes and its class, once; the split order is shuffled.
    files = open_source(DataCfg(root=str(folder))).splits
    streamed = open_source(DataCfg(root=str(out), format="webdataset")).splits
    for name in ("train", "test"):
        a = sorted((sha(Path(p).read_bytes()), int(t)) for p, t in zip(files[name].paths, files[name].targets))
        s = streamed[name]
        b = sorted((sha(s.blobs[i]), int(s.targets[i])) for i in range(len(s)))
        assert a == b, name
    assert list(streamed["train"].targets) != sorted(streamed["train"].targets)

    # Plain webdataset reads the same shards (the pattern is in the manifest).
    samples = list(wds.WebDataset(str(out / train["pattern"]), shardshuffle=False).to_tuple("jpg;png", "cls"))
    assert sorted((sha(img), int(cls)) for img, cls in samples) == sorted(
        (sha(s), int(t))
        for s, t in zip(map(streamed["train"].blobs.__getitem__, range(39)), streamed["train"].targets))

    # Same images, same seed: byte-identical shards.
    again = out.parent / "again"
    prepare(folder, again, 0.004)
    assert json.loads((again / "manifest.json").read_text())["splits"] == manifest["splits"]


def test_verify_names_a_changed_shard_and_bad_options_are_one_line(shards, tmp_path):
    folder, out = shards
    copy = tmp_path / "w"
    shutil.copytree(out, copy)
    shard = copy / "test-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = python_fail("prepare.py", "--verify", copy)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "test-000001.tar" in proc.stderr
    proc = python_fail("prepare.py", folder, tmp_path / "x", "--format", "webdataset", "--size", "32")
    assert proc.returncode == 2 and "--size and --chans apply to --format packed" in proc.stderr


def python_fail(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=ENV, check=False)


# ---------------------------------------------------------------- order

@pytest.mark.parametrize("window", [1, 3])
def test_shard_local_order_is_a_permutation_read_window_by_window(window):
    groups = np.repeat(np.arange(10), [5, 7, 3, 9, 4, 6, 5, 8, 2, 5])
    order = shard_local_order(groups, window, seed=7).numpy()
    assert sorted(order) == list(range(len(groups)))
    # Cut the order where its shard set changes: at most `window` shards per run, each read in one run.
    runs, seen = [], set()
    for i in order:
        if not runs or (groups[i] not in runs[-1] and len(runs[-1]) == window):
            runs.append(set())
        assert groups[i] in runs[-1] or groups[i] not in seen, "a shard came back after its window"
        runs[-1].add(groups[i])
        seen.add(groups[i])
    assert all(len(r) <= window for r in runs)
    assert not np.array_equal(order, shard_local_order(groups, window, seed=8).numpy())


def test_train_order_covers_each_sample_once_over_ranks():
    groups = np.repeat(np.arange(6), 8)
    seen = []
    for rank in range(2):
        batches = EpochBatches(48, 6, train=True, drop_last=True, seed=3, rank=rank, world=2, groups=groups, window=2)
        seen += [i for batch in batches for i, _ in batch]
    assert sorted(seen) == list(range(48))


# ---------------------------------------------------------------- training

def test_resume_mid_epoch_is_bit_identical_to_an_uninterrupted_run(shards, tmp_path, monkeypatch):
    """Crash after the step-4 checkpoint (mid epoch 2), resume: the same weights, bit for bit,
    with per-sample augmentation, 2 loader workers and a 2-shard shuffle window."""
    folder, out = shards
    _, recipe, *_ = tiny_recipe(folder, tmp_path, "x")
    common = [f"runtime.out_dir={tmp_path}", "runtime.checkpoint_every_steps=2", "augment.hflip=0.5",
              "augment.crop=pad", "augment.pad_px=2", "data.in_memory=false", "runtime.workers=2",
              "data.format=webdataset", f"data.root={out}", "data.window_shards=2", "schedule.epochs=3"]
    saved = straight_then_crashed_and_resumed(recipe, common, tmp_path, monkeypatch)
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 1)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "crashed")
    for key in a:
        assert torch.equal(a[key], b[key]), key


SEEN_SCRIPT = """\
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())         # torchrun runs it from the repository root
from trainkit.config.recipe import load_recipe
from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.runtime.distributed import init_distributed, cleanup
from trainkit.data.sources import prepare_data
from trainkit.train.trainer import plan_for

recipe = load_recipe(sys.argv[1], sys.argv[3:])
dist, device = init_distributed("cpu")
data = prepare_data(recipe)
plan = plan_for(recipe, data, dist, device)
common = dict(data=recipe.data, augment=recipe.augment, chans=3, device=device, seed=0, channels_last=False,
              rank=dist.rank, world=dist.world)
rt = recipe.runtime
train = make_loader(data.splits["train"], train=True, settings=LoaderSettings.from_runtime(rt, plan.per_device_batch,
                    device, True), **common)
test = make_loader(data.splits["test"], train=False, settings=LoaderSettings.from_runtime(rt, 5, device, False),
                   **common)
ids = lambda x: (x[:, 0, 0, 0] * 255).round().long().tolist()   # mean 0, std 1: the red value
seen = {}
for epoch in range(2):
    train.set_epoch(epoch)
    seen[f"train{epoch}"] = [i for x, _ in train for i in ids(x)]
seen["test"] = [i for x, _ in test for i in ids(x)]
Path(sys.argv[2], f"rank{dist.rank}.json").write_text(json.dumps(seen))
cleanup()
"""


def test_two_torchrun_processes_see_each_train_sample_once_per_epoch_and_each_test_sample_once(tmp_path):
    """2 processes x 2 loader workers over 48 train / 21 test images (ids in the pixels)."""
    folder = make_id_folder(tmp_path / "folder", per_class=(16, 7))
    prepare(folder, tmp_path / "wds", 0.003)
    script = tmp_path / "seen.py"
    script.write_text(SEEN_SCRIPT)
    _, recipe, *_ = tiny_recipe(folder, tmp_path, "x")
    torchrun(script, recipe, tmp_path, "data.format=webdataset", f"data.root={tmp_path / 'wds'}",
             "data.in_memory=false", "runtime.workers=2", "data.eval.mean=[0,0,0]", "data.eval.std=[1,1,1]",
             "data.window_shards=2", "train.global_batch=12")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        both = ranks[0][f"train{epoch}"] + ranks[1][f"train{epoch}"]
        assert sorted(both) == list(range(48)), epoch          # every sample, once, over ranks and workers
    assert ranks[0]["train0"] != ranks[0]["train1"]               # a new order each epoch
    assert sorted(ranks[0]["test"] + ranks[1]["test"]) == list(range(48, 69))


@pytest.mark.slow   # five train/evaluate processes on a shared CPU (~2 min)
def test_training_and_distributed_evaluation_from_shards(shards, tmp_path):
    """train.py under torchrun (2 processes) equals one process on the same global batch; evaluate.py
    under torchrun counts each of the 21 test images once and agrees with one process."""
    folder, out = shards
    common = ["data.format=webdataset", f"data.root={out}", "data.in_memory=false", "data.window_shards=2"]
    python(*tiny_recipe(folder, tmp_path, "one", *common))
    torchrun(*tiny_recipe(folder, tmp_path, "two", *common, "runtime.sync_batchnorm=true"))
    assert_same_weights(load_checkpoint(tmp_path / "one" / "last.pt")["model"],
                        load_checkpoint(tmp_path / "two" / "last.pt")["model"])
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["samples"] == 21
    python("evaluate.py", tmp_path / "one", "--out", tmp_path / "eval1")
    torchrun("evaluate.py", tmp_path / "one", "--out", tmp_path / "eval2")
    one = json.loads((tmp_path / "eval1" / "metrics.json").read_text())["metrics"]
    two = json.loads((tmp_path / "eval2" / "metrics.json").read_text())["metrics"]
    assert one["samples"] == two["samples"] == 21 and one["confusion"] == two["confusion"]


# ---------------------------------------------------------------- corrupt shards

def test_a_truncated_local_shard_is_one_clear_error_or_a_counted_skip(shards, tmp_path):
    _, out = shards
    copy = tmp_path / "w"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    info = manifest["splits"]["test"]["shards"][1]
    shard = copy / info["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"test-000001.tar: 100 bytes, not {info['bytes']} as in the manifest"):
        open_source(DataCfg(root=str(copy), format="webdataset"))

    cfg = DataCfg(root=str(copy), format="webdataset", on_corrupt="skip")
    loader = eval_loader(open_source(cfg).splits["test"], on_corrupt="skip")
    read = sum(len(t) for _, t in loader)
    assert loader.skipped == info["count"] and read == 21 - info["count"]


def test_resident_memory_stays_bounded_over_a_set_larger_than_the_cap(tmp_path):
    """64 MiB of images streamed through the per-sample loader: the peak RSS grows < 24 MiB."""
    folder = make_large_folder(tmp_path / "big", 340, 256)       # 340 x 192 KiB
    prepare(folder, tmp_path / "wds", 4)
    size = sum(f.stat().st_size for f in (tmp_path / "wds").glob("train-*.tar"))
    assert size > 64 * 2**20
    script = f"""
import resource, torch
from trainkit.config.recipe import AugmentCfg, DataCfg
from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.data.sources import open_source
cfg = DataCfg(root={str(tmp_path / 'wds')!r}, format="webdataset", in_memory=False)
loader = make_loader(open_source(cfg).splits["train"], train=False, data=cfg, augment=AugmentCfg(),
                     settings=LoaderSettings(16, 0, False, 2, False, False), chans=3, device=torch.device("cpu"),
                     seed=0, channels_last=False)
it = iter(loader); next(it)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 16 + sum(len(t) for _, t in it)
print(n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    n, grew_mb = python("-c", script).stdout.split()
    assert int(n) == 340 and float(grew_mb) < 24, grew_mb


# ---------------------------------------------------------------- URL path (127.0.0.1)

def test_the_url_path_reads_the_same_bytes_through_a_bounded_cache(tmp_path, http_root):
    folder = make_large_folder(tmp_path / "big", 60, 128)        # 60 x 48 KiB, shards of ~0.25 MiB
    prepare(folder, tmp_path / "wds", 0.25)
    url = http_root(tmp_path / "wds")
    local = open_source(DataCfg(root=str(tmp_path / "wds"), format="webdataset")).splits["train"]
    cache = tmp_path / "cache"
    cfg = DataCfg(root=url, format="webdataset", window_shards=2)
    remote = open_source(cfg, RuntimeCfg(shard_cache_dir=str(cache), shard_cache_mb=2)).splits["train"]
    assert np.array_equal(local.targets, remote.targets)
    batches = EpochBatches(len(remote), 4, train=True, drop_last=False, seed=0, groups=remote.blobs.groups,
                           window=2)
    largest = 0
    for batch in batches:
        for i, _ in batch:
            assert remote.blobs[i] == local.blobs[i]
            largest = max(largest, sum(f.stat().st_size for f in cache.iterdir()))
    assert 0 < largest <= 2 * 2**20                          # never more than cache_mb on disk
    shards = len(json.loads((tmp_path / "wds" / "manifest.json").read_text())["splits"]["train"]["shards"])
    assert shards > 8                                        # more shards than the cache could hold


def test_training_from_a_url_and_url_errors_are_one_line(shards, tmp_path, http_root):
    folder, out = shards
    url = http_root(out)
    common = ["data.format=webdataset", f"data.root={url}", f"runtime.shard_cache_dir={tmp_path / 'cache'}",
              "data.in_memory=false", "runtime.workers=2"]
    QuietHandler.gets.clear()
    python(*tiny_recipe(folder, tmp_path, "url", *common, "schedule.epochs=2"))
    assert json.loads((tmp_path / "url" / "summary.json").read_text())["samples"] == 21
    # Two workers, two epochs, val and test: each shard was downloaded once (the cache holds them all).
    tars = {path: n for path, n in QuietHandler.gets.items() if path.endswith(".tar")}
    assert len(tars) == len(list(out.glob("*.tar"))) and set(tars.values()) == {1}, tars

    with pytest.raises(DataError, match=rf"cannot fetch {url}/nothing/manifest.json"):
        open_source(DataCfg(root=f"{url}/nothing", format="webdataset"))
    with pytest.raises(DataError, match="runtime.shard_cache_mb=1 cannot hold two windows of 200 shards"):
        open_source(DataCfg(root=url, format="webdataset", window_shards=200), RuntimeCfg(shard_cache_mb=1))

    # A shard whose served bytes differ from the manifest: an error naming the URL (no retry loop).
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "test-000000.tar").write_bytes((bad / "test-000000.tar").read_bytes()[:2000])
    source = open_source(DataCfg(root=http_root(bad), format="webdataset"),
                         RuntimeCfg(shard_cache_dir=str(tmp_path / "c2")))
    with pytest.raises(DataError, match=r"test-000000.tar: 2000 bytes with sha256 .* the manifest says"):
        sum(len(t) for _, t in eval_loader(source.splits["test"]))


def test_a_weighted_draw_from_shards_is_the_same_draw_read_window_by_window():
    groups = np.repeat(np.arange(6), 8)
    weights = torch.linspace(0.1, 1.0, 48)
    plain = EpochBatches(48, 48, train=True, drop_last=False, seed=5, weights=weights)
    local = EpochBatches(48, 48, train=True, drop_last=False, seed=5, weights=weights, groups=groups, window=2)
    assert sorted(plain.indices()) == sorted(local.indices()) and plain.indices() != local.indices()

    def shard_switches(order):
        return sum(groups[a] != groups[b] for a, b in itertools.pairwise(order))
    assert shard_switches(local.indices()) < shard_switches(plain.indices())


def test_a_new_upload_under_the_same_url_is_fetched_again(shards, tmp_path, http_root):
    """The cache names files by their sha256: shards rewritten in another order under the same URL
    (same file names, new manifest) are read from the new upload, not from the old copies."""
    folder, out = shards
    served = tmp_path / "served"
    shutil.copytree(out, served)
    url, rt = http_root(served), RuntimeCfg(shard_cache_dir=str(tmp_path / "cache"))

    def read_all(source):
        split = source.splits["train"]
        return [(split.blobs[i], int(split.targets[i])) for i in range(len(split))]
    old = read_all(open_source(DataCfg(root=url, format="webdataset"), rt))
    shutil.rmtree(served)
    python("prepare.py", folder, served, "--format", "webdataset", "--shard-mb", 0.004, "--workers", 0,
           "--shuffle-seed", 1)
    new = read_all(open_source(DataCfg(root=url, format="webdataset"), rt))
    assert new == read_all(open_source(DataCfg(root=str(served), format="webdataset"))) and new != old
    assert sorted(new) == sorted(old)                           # the same images, in another order
