"""predict.py and trainkit.eval.predict: files, folders, globs and stdin; broken and non-image files;
CSV and JSON rows; and predict's top-1 over a split equal to evaluate.py's on the same model."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import CIFAR_JPEG, WEIGHTS, require
from helpers_distill import run_entry
from PIL import Image

from trainkit.config.recipe import EvalCfg
from trainkit.eval.predict import class_names, expand_images, predict
from trainkit.models import cifar  # noqa: F401  (registers resnet20_cifar with timm)
from trainkit.models.hub import LoadedModel


@pytest.fixture
def run(monkeypatch, capsys):
    """predict.py's main() in this process (no interpreter start-up): (exit status, stdout, stderr)."""
    def call(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        capsys.readouterr()
        code = run_entry("predict.py", list(args), monkeypatch)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return call


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A plain weights file (random ResNet-20): enough to check files, rows and formats without ../shared."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "resnet20.pt"
    torch.save(timm.create_model("resnet20_cifar", num_classes=10).state_dict(), path)
    return path


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Good images of several modes and sizes (in a sub-folder too), a truncated JPEG, a text file, a hidden file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(root / "b_grey.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8), "RGBA").save(root / "sub" / "c_rgba.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.jpg")
    (root / "broken.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:200])
    (root / "notes.txt").write_text("not a picture\n")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_expand_images_folders_globs_stdin_missing(mixed_folder, tmp_path):
    files = expand_images([str(mixed_folder)])
    assert [Path(f).name for f in files] == ["a.jpg", "b_grey.png", "broken.jpg", "notes.txt", "c_rgba.png"]
    assert expand_images([str(mixed_folder / "*.png"), str(mixed_folder / "a.jpg")]) == \
        [str(mixed_folder / "b_grey.png"), str(mixed_folder / "a.jpg")]
    # "-" reads paths from stdin (blank lines ignored); a file named twice counts once; misses are kept
    stdin = [f"{mixed_folder / 'a.jpg'}\n", "\n", f"{mixed_folder / 'sub'}\n"]
    missing = str(tmp_path / "nope" / "*.jpg")
    assert expand_images(["-", str(mixed_folder / "a.jpg"), missing], stdin) == \
        [str(mixed_folder / "a.jpg"), str(mixed_folder / "sub" / "c_rgba.png"), missing]


def test_cli_folder_with_good_broken_and_non_image_files_csv(run, weights, mixed_folder, tmp_path):
    out = tmp_path / "preds"                          # --out is a folder: predictions.csv goes in it
    done = run(weights, "--arch", "resnet20_cifar", mixed_folder, "--topk", "3", "--out", out)
    assert done.returncode == 1, done.stderr          # an image failed to decode
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "Traceback" not in done.stderr
    assert "broken.jpg: unreadable image" in warnings[0]
    # notes.txt is not an image at all: skipped and counted apart from the failed one, not a row
    assert "4 images (1 failed, 1 non-image file skipped)" in done.stderr
    assert done.stdout == ""                          # --out: rows go to the file, not the terminal
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "b_grey.png", "broken.jpg", "c_rgba.png"]
    assert {r["model"] for r in rows} == {str(weights)} and {r["card"] for r in rows} == {""}
    good = [r for r in rows if not r["error"]]
    assert len(good) == 3
    for r in good:
        probs = [float(r[f"prob_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert len({r[f"label_{k}"] for k in (1, 2, 3)}) == 3 and all(r[f"label_{k}"].isdigit() for k in (1, 2, 3))
    assert all(r["label_1"] == "" for r in rows if r["error"])


def test_cli_missing_path_is_an_error_not_a_failed_prediction(run, weights, mixed_folder, tmp_path):
    done = run(weights, "--arch", "resnet20_cifar", mixed_folder, tmp_path / "missing.png")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"error: no such file or folder: {tmp_path / 'missing.png'}"


def test_cli_json_from_stdin_and_lines(run, weights, mixed_folder, tmp_path):
    good = [mixed_folder / "a.jpg", mixed_folder / "sub" / "c_rgba.png"]
    out = tmp_path / "preds.json"                     # the old --out FILE still works for a release
    done = run(weights, "--arch", "resnet20_cifar", "-", "--topk", "2", "--out", out, "--batch", "1",
               stdin="".join(f"{p}\n" for p in good))
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: --out ") and "deprecated" in done.stderr.splitlines()[0]
    data = json.loads(out.read_text())
    assert data["model"] == str(weights) and data["card"] is None and data["arch"] == "resnet20_cifar"
    assert data["images"] == 2 and data["failed"] == 0 and data["topk"] == 2
    assert [p["path"] for p in data["predictions"]] == [str(p) for p in good]
    for p in data["predictions"]:
        assert p["error"] is None and len(p["top"]) == 2 and p["top"][0]["prob"] >= p["top"][1]["prob"]
        assert p["top"][0]["label"] == str(p["top"][0]["index"])
    # without --out: one line per image on stdout, same top-1 as the file
    lines = run(weights, "--arch", "resnet20_cifar", *good, "--topk", "2").stdout.splitlines()
    assert [line.split("  ")[0] for line in lines] == [str(p) for p in good]
    assert [line.split("  ")[1].split()[0] for line in lines] == [p["top"][0]["label"] for p in data["predictions"]]


def test_api_results_and_errors(weights, mixed_folder):
    results = predict(str(weights), mixed_folder, topk=4, arch="resnet20_cifar", batch=2)
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert all(len(r.labels) == len(r.probs) == len(r.indices) == 4 for r in results if r.ok)
    assert results[2].error.startswith("unreadable image") and results[3].error.startswith("not an image")
    # batching does not change a result
    again = predict(str(weights), [r.path for r in results if r.ok], topk=4, arch="resnet20_cifar", batch=64)
    assert [r.indices for r in again] == [r.indices for r in results if r.ok]
    assert np.allclose([r.probs for r in again], [r.probs for r in results if r.ok], atol=1e-5)


def test_tta_averages_over_flips(weights, mixed_folder, tmp_path):
    """With --tta an image and its mirror image get the same probabilities (without it they differ)."""
    original = mixed_folder / "b_grey.png"
    mirror = tmp_path / "mirror.png"
    Image.open(original).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror)
    plain = predict(str(weights), [original, mirror], topk=10, arch="resnet20_cifar")
    tta = predict(str(weights), [original, mirror], topk=10, arch="resnet20_cifar", tta=True)
    by_class = [dict(zip(r.indices, r.probs)) for r in tta]
    assert all(abs(by_class[0][c] - by_class[1][c]) < 1e-5 for c in range(10))
    assert max(abs(a - b) for a, b in zip(plain[0].probs, plain[1].probs)) > 1e-4


def test_user_errors_are_one_line_exit_2(run, weights, mixed_folder, tmp_path):
    for args in (["zoo:no_such_card", mixed_folder], [weights, mixed_folder],       # weights without --arch
                 [weights, "--arch", "resnet20_cifar", mixed_folder, "--topk", "0"]):
        done = run(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr


def test_imagenet_synsets_get_names():
    model = LoadedModel("x", "m", torch.nn.Identity(), EvalCfg(), 3, 3, ["n01440764", "n02102040", "n03888257"])
    assert class_names(model) == ["tench", "English springer", "parachute"]
    plain = LoadedModel("x", "m", torch.nn.Identity(), EvalCfg(), 2, 3, ["cat", "dog"])
    assert class_names(plain) == [None, None]


def test_predict_top1_equals_evaluate_on_the_same_split(run, tmp_path, monkeypatch):
    """The zoo's CIFAR-10 ResNet-20 on 40 test images per class: predict.py's predictions over the split's
    files give evaluate.py's top-1 and confusion matrix exactly (the same eval preprocessing)."""
    source = require(CIFAR_JPEG) / "test"
    require(WEIGHTS)
    root = tmp_path / "cifar-subset"
    for cls in sorted(os.listdir(source)):
        for split in ("train", "test"):     # an ImageFolder needs train/; evaluate reads test/
            (root / split / cls).mkdir(parents=True)
        for name in sorted(os.listdir(source / cls))[:40]:
            (root / "test" / cls / name).symlink_to(source / cls / name)
        (root / "train" / cls / "0.jpg").symlink_to(source / cls / name)
    report_dir = tmp_path / "eval"
    assert run_entry("evaluate.py", ["zoo:cifar10_resnet20", "--data-root", root, "--split", "test", "--out",
                                     report_dir, "--workers", "0"], monkeypatch) == 0
    metrics = json.loads((report_dir / "metrics.json").read_text())["metrics"]
    out = tmp_path / "preds" / "predictions.csv"
    done = run("zoo:cifar10_resnet20", root / "test", "--out", out.parent, "--topk", "1", "--batch", "100")
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 400 and {r["card"] for r in rows} == {"cifar10_resnet20"}
    classes = sorted(os.listdir(source))
    confusion = np.zeros((10, 10), dtype=int)
    for r in rows:
        confusion[classes.index(Path(r["path"]).parent.name), classes.index(r["label_1"])] += 1
    top1 = 100.0 * np.trace(confusion) / len(rows)
    assert 50 < top1 < 100                      # a real model on real images: neither broken nor trivial
    assert top1 == pytest.approx(metrics["top1"], abs=1e-9)
    assert confusion.tolist() == metrics["confusion"]
