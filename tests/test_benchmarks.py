"""BENCHMARKS.md is rendered from the committed result files only, section by section."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_run():
    if str(ROOT / "benchmarks") not in sys.path:   # run.py imports its sibling modules, as when run as a script
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


META = {"command": "python benchmarks/run.py --only X", "repeats": 3, "repeats_planned": 3, "machine": "a test machine",
        "measured": "2026-01-01 00:00 UTC", "git_commit": "0123456789abcdef", "load_average": [0.5, 0.7]}


def write_train(results: Path, ours_wall: list[float]) -> None:
    runs = {"ours train.py, bf16": [{"wall_s": w, "images": 2560, "img_per_s": 2560 / w, "precision": "bf16"}
                                    for w in ours_wall],
            "timm train.py -j 1": [{"wall_s": 128.0, "images": 2560, "img_per_s": 20.0}] * 3,
            "ceiling, bf16": [{"precision": "bf16", "img_per_s": 40.0, "wall_s": 30.0}] * 3}
    res = {**META, "section": "train", "runs": runs, "commands": {k: f"cmd {k}" for k in runs},
           "timm_commit": "aa4b5850c1543fa4", "settings": {"train_images": 2560, "eval_images": 250, "batch": 128,
                                                        "threads": 2, "ceiling_steps": 10}}
    (results / "train.json").write_text(json.dumps(res))


def test_each_section_renders_from_its_own_file_and_missing_ones_say_so(tmp_path):
    run = load_run()
    results = tmp_path / "results"
    results.mkdir()
    write_train(results, [100.0, 80.0, 160.0])
    row = {"name": "data pipeline, CIFAR-10 JPEG 32 px", "ours": 3000.0, "reference": 1000.0,
           "ours_wall_s": 10.0, "reference_wall_s": 30.0, "decode_s": 2.0}
    (results / "data.json").write_text(json.dumps({**META, "section": "data", "rows": [row],
                                                   "commands": {"ours": "o", "reference": "r"}}))
    text = run.render(results, tmp_path / "B.md")
    assert (tmp_path / "B.md").read_text() == text
    # Medians over the repeats: ours 2560 / 100 s = 25.6 img/s; timm 20 -> 1.28x; ceiling 40 -> 0.64x.
    assert "| ours train.py, bf16 | bf16 | 25.6 | 100.0 | 1.28x | 0.64x |" in text
    assert "| data pipeline, CIFAR-10 JPEG 32 px | 3000 | 1000 | 3.00x | 10.0 | 30.0 |" in text
    assert "3 repeat(s). 1-minute load average 0.5 at the start, 0.7 at the end (its own processes included)." in text
    assert "`aa4b5850c154`" in text and "- timm train.py -j 1: `cmd timm train.py -j 1`" in text
    assert text.index("`cmd timm train.py -j 1`") < text.index("| side |")   # commands above the table
    assert "Not measured yet" in text.split("## Evaluation")[1].split("##")[0]
    # A re-run of one section replaces that section only.
    write_train(results, [50.0, 50.0, 50.0])
    again = run.render(results, tmp_path / "B.md")
    assert "| ours train.py, bf16 | bf16 | 51.2 | 50.0 | 2.56x | 1.28x |" in again
    assert again.split("## Training")[0] == text.split("## Training")[0]


def test_committed_benchmarks_md_is_exactly_the_rendering_of_the_committed_results(tmp_path):
    run = load_run()
    assert run.render(run.RESULTS, tmp_path / "B.md") == (ROOT / "BENCHMARKS.md").read_text(), \
        "BENCHMARKS.md differs from its result files: run python benchmarks/run.py --render"


def test_tta_split_folder_is_our_holdout_split_as_symlinks(image_folder, tmp_path):
    load_run()
    import time_to_accuracy as tta
    from trainkit.config.recipe import DataCfg
    from trainkit.data.sources import open_source, resolve_splits

    sizes = tta.split_folder(image_folder, tmp_path / "tta")
    ours = resolve_splits(DataCfg(root=str(image_folder)), open_source(DataCfg(root=str(image_folder))))
    assert sizes == {name: len(ours[name]) for name in ("train", "val", "test")} == {"train": 32, "val": 4, "test": 18}
    for name in ("train", "val", "test"):
        linked = sorted(str(p.resolve()) for p in (tmp_path / "tta" / name).glob("*/*"))
        assert linked == sorted(str(Path(p).resolve()) for p in ours[name].paths)
        assert all(p.is_symlink() for p in (tmp_path / "tta" / name).glob("*/*"))   # nothing copied
    # The folder has a val/ split: a recipe on it validates on exactly those images, with no hold-out of its own.
    again = resolve_splits(DataCfg(root=str(tmp_path / "tta")), open_source(DataCfg(root=str(tmp_path / "tta"))))
    assert len(again["train"]) == 32 and len(again["val"]) == 4


def test_tta_timm_eval_preprocessing_is_the_recipes():
    """The test figures of both sides come through one pipeline with one preprocessing: timm's config of
    resnet20_cifar (what a timm checkpoint is evaluated with) equals the speed recipe's data.eval."""
    import timm
    from trainkit.config.recipe import load_recipe
    from trainkit.models.weights import timm_eval_cfg

    recipe = load_recipe(ROOT / "recipes" / "cifar10_speedrun.yaml", ["data.root=/data"])
    assert timm_eval_cfg(timm.create_model("resnet20_cifar")) == recipe.data.eval


def test_tta_best_timm_flags_come_from_the_train_section(tmp_path):
    load_run()
    import time_to_accuracy as tta

    assert tta.timm_best_flags(tmp_path / "missing.json") == (1, "bf16")
    runs = {"timm train.py -j 1": [{"wall_s": 150.0}], "timm train.py -j 2": [{"wall_s": 120.0}],
            "ceiling, bf16": [{"img_per_s": 300.0}], "ceiling, fp32": [{"img_per_s": 400.0}]}
    (tmp_path / "train.json").write_text(json.dumps({**META, "section": "train", "runs": runs}))
    assert tta.timm_best_flags(tmp_path / "train.json") == (2, "fp32")


def tta_run(walls: list[float], vals: list[float], tests: list[float], **extra) -> dict:
    import time_to_accuracy as tta

    epochs = [{"epoch": i + 1, "wall_s": w, "val_top1": v, "test_top1": t}
              for i, (w, v, t) in enumerate(zip(walls, vals, tests))]
    return {"epochs": epochs, "wall_s": walls[-1] + 20, "final_val_top1": vals[-1], "final_test_top1": tests[-1],
            "to_target_val_s": tta.first_reach(epochs, "val_top1", 80), "to_target_test_s":
            tta.first_reach(epochs, "test_top1", 80), **extra}


def test_tta_section_renders_time_to_target_and_the_budget_figure(tmp_path):
    run = load_run()
    results = tmp_path / "results"
    results.mkdir()
    budget = {"epochs": 3, "estimate_s": 880.0, "cap_epochs": 10}
    ours = tta_run([300, 600, 870], [70.0, 82.0, 88.5], [69.0, 79.5, 88.0], budget=budget, precision="bf16")
    timm = tta_run([200, 400], [60.0, 75.0], [61.0, 74.0], precision="fp32", workers=1)
    res = {**META, "section": "tta", "runs": {"ours": [ours], "timm": [timm]}, "commands": {"ours": "o", "timm": "t"},
           "split_sizes": {"train": 45000, "val": 5000, "test": 10000}, "target_top1": 80.0,
           "timm_commit": "aa4b5850c154",
           "settings": {"budget_minutes": 15.0, "timm_epochs": 2, "timm_workers": 1, "timm_precision": "fp32",
                        "per_class": None}}
    (results / "tta.json").write_text(json.dumps(res))
    text = run.render(results, tmp_path / "B.md").split("## Time to accuracy")[1]
    # first epoch at or above 80%: val at 600 s, test (79.5 at 600 s) only at 870 s; timm never
    assert "| ours | 1 | 3 | 600 | 870 | 88.50% | 88.00% | 890 |" in text
    assert "| timm | 1 | 2 | not reached | not reached | 75.00% | 74.00% | 420 |" in text
    assert "`schedule.budget_minutes=15`" in text and "3 epoch(s) decided at start-up (estimate 880 s, cap 10)" in text
    assert "test top-1 88.00% at its last epoch" in text and "tta.png" in text


def test_tta_reads_timms_epochs_and_evaluates_its_checkpoints_through_our_pipeline(image_folder, tmp_path):
    """timm's summary.csv (epochs from 0) and its checkpoint files (flags pickled as an argparse
    Namespace beside the state dict) become the epoch rows; test top-1 comes from evaluate_model."""
    import argparse
    import os

    import timm
    import torch

    load_run()
    import time_to_accuracy as tta

    run_dir = tmp_path / "timm"
    run_dir.mkdir()
    (run_dir / "summary.csv").write_text("epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n"
                                         "0,2.1,2.0,41.5,90.0,0.1\n1,1.9,1.8,55.25,95.0,0.05\n")
    model = timm.create_model("resnet20_cifar", num_classes=3)
    for epoch in (0, 1):
        path = run_dir / f"checkpoint-{epoch}.pth.tar"
        torch.save({"epoch": epoch, "arch": "resnet20_cifar", "state_dict": model.state_dict(),
                    "args": argparse.Namespace(lr=0.1, model="resnet20_cifar")}, path)
        os.utime(path, (1000.0 + 60 * epoch, 1000.0 + 60 * epoch))
    rows = tta.timm_epochs(run_dir, start=900.0)
    assert [(r["epoch"], r["wall_s"], r["val_top1"]) for r in rows] == [(1, 100.0, 41.5), (2, 160.0, 55.25)]
    top1 = tta.test_top1(rows[0]["checkpoint"], image_folder, "resnet20_cifar")
    assert 0.0 <= top1 <= 100.0 and (top1 * 18 / 100) == pytest.approx(round(top1 * 18 / 100))   # k of 18 images
