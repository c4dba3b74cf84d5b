"""evaluate.py on any labelled folder: test/<class>/, val/<class>/ or flat <class>/ folders without a train/
folder, class folders mapped to the model's classes BY NAME (whatever their order), and one error line
listing unknown or missing classes. Real photos (CIFAR-10 JPEGs symlinked into tmp folders) through the
zoo's real CIFAR-10 ResNet-20, as a card and as a run checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import CIFAR_JPEG, WEIGHTS, require
from helpers_distill import run_entry

from trainkit.data.sources import DataError, match_classes, open_eval_splits
from trainkit.eval.pipeline import data_of, evaluate_model
from trainkit.models.hub import resolve
from trainkit.runtime.checkpoint import FORMAT, save_atomic

PER_CLASS = 12


def link_photos(dest: Path, per_class: int = PER_CLASS, classes: list[str] | None = None) -> Path:
    """``dest/<class>/`` holding symlinks to the first ``per_class`` CIFAR-10 JPEG test photos of each class."""
    source = require(CIFAR_JPEG) / "test"
    for cls in classes or sorted(os.listdir(source)):
        (dest / cls).mkdir(parents=True)
        for name in sorted(os.listdir(source / cls))[:per_class]:
            (dest / cls / name).symlink_to(source / cls / name)
    return dest


@pytest.fixture(scope="module")
def card():
    require(WEIGHTS)
    return resolve("zoo:cifar10_resnet20")


@pytest.fixture(scope="module")
def reference(card, tmp_path_factory) -> dict:
    """The same photos in the layout evaluation always accepted: train/ (one photo a class) and test/."""
    root = tmp_path_factory.mktemp("reference")
    link_photos(root / "test")
    link_photos(root / "train", per_class=1)
    return evaluate(card, root, "test")


def evaluate(loaded, root: Path, split: str | None = None) -> dict:
    return evaluate_model(loaded, split=split, data_root=str(root), show_progress=False)


def permuted(loaded, order: list[int]):
    """The same network with its outputs (and class names) in another order: output i is old output order[i]."""
    model = torch.nn.Sequential(loaded.model, PickOutputs(order))
    return dataclasses.replace(loaded, model=model.eval(), classes=[loaded.classes[i] for i in order])


class PickOutputs(torch.nn.Module):
    def __init__(self, order: list[int]):
        super().__init__()
        self.register_buffer("order", torch.tensor(order))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_select(1, self.order)


def test_test_only_val_only_and_flat_folders_score_like_the_full_layout(card, reference, tmp_path):
    assert reference["metrics"]["samples"] == 10 * PER_CLASS
    assert 50 < reference["metrics"]["top1"] < 100          # a real model on real photos
    for layout, split_name in (("test", "test"), ("val", "val"), (None, "test")):
        root = tmp_path / (layout or "flat")
        link_photos(root / layout if layout else root)
        report = evaluate(card, root)                         # the card's default split: test
        assert report["split"] == split_name, layout          # a val/-only folder answers "test" with val, named val
        assert report["metrics"]["confusion"] == reference["metrics"]["confusion"], layout
        assert report["classes"] == card.classes
    with pytest.raises(DataError, match=r"flat has no val split \(it has: test\); give --split test"):
        evaluate(card, tmp_path / "flat", "val")
    with pytest.raises(DataError, match=r"has no train split"):
        evaluate(card, tmp_path / "test", "train")


def test_class_folders_map_to_the_model_by_name_not_order(card, reference, tmp_path):
    """A model whose outputs are in another order than the sorted folder names scores the same photos the same."""
    order = [3, 7, 0, 9, 1, 8, 2, 6, 4, 5]
    shuffled = permuted(card, order)
    assert shuffled.classes != sorted(shuffled.classes)
    root = link_photos(tmp_path / "flat")
    report = evaluate(shuffled, root)
    m, ref = report["metrics"], reference["metrics"]
    assert report["classes"] == shuffled.classes                 # the report speaks the model's order
    assert m["top1"] == pytest.approx(ref["top1"], abs=1e-9)     # by position this would be near chance
    assert m["confusion"] == [[ref["confusion"][i][j] for j in order] for i in order]


def test_a_folder_with_fewer_classes_is_scored_restricted_and_over_all_outputs(card, tmp_path):
    root = link_photos(tmp_path / "two", classes=["cat", "ship"])
    m = evaluate(card, root)["metrics"]
    assert m["samples"] == 2 * PER_CLASS and m["classes_all"] == 10
    assert m["top1"] >= m["top1_all"]


def test_unknown_and_missing_classes_one_error_line(card, tmp_path):
    root = link_photos(tmp_path / "photos", classes=["cat", "dog"])
    (root / "zebra").mkdir()
    (root / "zebra" / "z.jpg").symlink_to(next((root / "cat").iterdir()).resolve())
    with pytest.raises(DataError, match=r"^zoo:cifar10_resnet20: the class folders of .*photos \(test\) do not "
                                        r"match the model's 10 classes \(unknown to the model: zebra\)"):
        evaluate(card, root)
    split = open_eval_splits(data_of(card, str(root)))["test"]
    with pytest.raises(DataError, match=r"unknown to the model: zebra; missing from the folder: airplane, automobile, "
                                        r"bird, deer, frog, horse, ship, truck\)") as err:
        match_classes(split, card.classes, "ensemble", str(root))
    assert "\n" not in str(err.value)


def test_evaluate_cli_on_a_run_checkpoint_and_a_test_only_folder(card, reference, tmp_path, monkeypatch):
    """``evaluate.py RUN --data-root DIR`` with only DIR/test/<class>/: the run's classes come from its checkpoint."""
    train_root = link_photos(tmp_path / "trained-on" / "train", per_class=1).parent
    tree = {"model": {"name": "resnet20_cifar"},
            "data": {"name": "imagefolder", "root": str(train_root), "holdout_fraction": 0.1,
                     "eval": {"size": 32, "crop_pct": 1.0, "interpolation": "bilinear",
                              "mean": list(card.eval.mean), "std": list(card.eval.std)}},
            "train": {"precision": "fp32"}, "runtime": {"workers": 0, "progress": False}}
    ckpt = {"format": FORMAT, "epoch": 1, "model": card.model.state_dict(), "train_step": None, "ema": None,
            "recipe": tree, "plan": {"eval_batch": 50, "precision": "fp32", "recipe_hash": "x"},
            "classes": list(card.classes), "arch": "resnet20_cifar", "num_classes": 10,
            "in_chans": 3, "eval": tree["data"]["eval"], "metrics": {}, "versions": {}}
    run = tmp_path / "run"
    run.mkdir()
    save_atomic(ckpt, run / "best.pt")
    photos = link_photos(tmp_path / "fresh" / "test").parent
    out = tmp_path / "report"
    assert run_entry("evaluate.py", [run, "--data-root", photos, "--out", out, "--workers", "0"], monkeypatch) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test"
    assert report["metrics"]["confusion"] == reference["metrics"]["confusion"]


def test_a_split_is_found_by_its_own_name():
    """Under data.val_from_train the val key holds the hold-out (named holdout) and the test key the val/ folder
    (named val): --split val must give the val/ folder, and a stand-in is refused only when asked by name."""
    import numpy as np

    from trainkit.config.recipe import DataCfg
    from trainkit.data.split import Split
    from trainkit.eval.pipeline import split_named

    def split(name):
        return Split(name=name, classes=("a", "b"), targets=np.zeros(2, dtype=np.int64))

    carved = {"train": split("train"), "val": split("holdout"), "test": split("val")}
    data = DataCfg(root="photos")
    assert split_named(carved, "val", data, exact=True) is carved["test"]
    assert split_named(carved, "holdout", data, exact=True) is carved["val"]
    assert split_named(carved, "test", data) is carved["test"]          # the key's stand-in, not by name
    with pytest.raises(DataError, match=r"--split test: photos has no test split \(it has: train, val, holdout; "
                                        r"its test would be the val split\)"):
        split_named(carved, "test", data, exact=True)
    cifar = {"train": split("train"), "val": split("test"), "test": split("test")}   # val stands in for test
    assert split_named(cifar, "val", data) is cifar["val"]
    with pytest.raises(DataError, match=r"no val split \(it has: train, test; its val would be the test split\)"):
        split_named(cifar, "val", data, exact=True)
