"""prepare.py and data.format=packed: the manifest, exact records, and training that matches the ImageFolder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder
from test_distributed import ENV, ROOT, tiny_recipe
from trainkit.runtime.checkpoint import load_checkpoint
from trainkit.data.sources import DataError, open_source, resolve_splits
from trainkit.config.recipe import DataCfg


def run(*args, check=True):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    base = tmp_path_factory.mktemp("packed")
    folder = make_image_folder(base / "folder", per_class=(13, 7), size=8)
    # ~10 records per shard: several shards per split
    run("prepare.py", folder, base / "packed", "--shard-mb", 10 * 8 * 8 * 3 / 2**20, "--workers", "0")
    return folder, base / "packed"


def test_manifest_counts_classes_and_checksums(packed):
    folder, out = packed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog", "fox"] and manifest["size"] == 8
    assert manifest["splits"]["train"]["count"] == 39 and manifest["splits"]["test"]["count"] == 21
    assert manifest["splits"]["train"]["per_class"] == {"cat": 13, "dog": 13, "fox": 13}
    assert [s["count"] for s in manifest["splits"]["train"]["shards"]] == [10, 10, 10, 9]
    assert "all checksums match" in run("prepare.py", "--verify", out).stdout
    shard = out / manifest["splits"]["test"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = run("prepare.py", "--verify", out, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and shard.name in proc.stderr
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))


def test_records_equal_the_decoded_files_and_subsets_read_lazily(packed):
    folder, out = packed
    files = resolve_splits(DataCfg(root=str(folder), holdout_fraction=0.2), open_source(DataCfg(root=str(folder))))
    cfg = DataCfg(root=str(out), format="packed", holdout_fraction=0.2)
    splits = resolve_splits(cfg, open_source(cfg))
    for name in ("train", "val", "test"):
        a, b = files[name], splits[name]
        assert len(a) == len(b) and np.array_equal(a.targets, b.targets)
        for i in range(len(a)):
            with Image.open(a.paths[i]) as img:
                assert np.array_equal(np.asarray(img.convert("RGB")), b.arrays[i]), (name, i)
    assert type(splits["val"].arrays).__name__ == "PackedArray"      # the hold-out is a view, not a copy


def test_a_truncated_shard_is_one_clear_error(packed, tmp_path):
    folder, out = packed
    import shutil
    copy = tmp_path / "p"
    shutil.copytree(out, copy)
    shard = copy / "train-00001.u8"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match="train-00001.u8: missing or not 1920 bytes; run prepare.py again"):
        open_source(DataCfg(root=str(copy), format="packed"))


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_training_from_packed_matches_training_from_the_folder(packed, tmp_path, in_memory):
    folder, out = packed
    common = ["schedule.epochs=1", "augment.hflip=0.5", f"data.in_memory={in_memory}"]
    run(*tiny_recipe(folder, tmp_path, "files", *common))
    run(*tiny_recipe(folder, tmp_path, "packed", *common, "data.format=packed", f"data.root={out}"))
    a = load_checkpoint(tmp_path / "files" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "packed" / "last.pt")["model"]
    for key in a:
        assert np.array_equal(a[key].numpy(), b[key].numpy()), key
