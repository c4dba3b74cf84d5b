"""A run never chooses a checkpoint on the data it reports as test, and names each split as it is:
best.pt only on a val split of its own, ``selected_on`` and ``split`` in summary.json, soups and
ablations on val only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_image_folder
from helpers_distill import run_entry, write_checkpoint
from test_distributed import tiny_recipe
from trainkit.eval.pipeline import evaluate_checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """train/ + test/, and the same images as train/ + val/ (an ImageNet-style set with no test split)."""
    base = tmp_path_factory.mktemp("selection")
    with_test = make_image_folder(base / "with_test", per_class=(13, 7), size=8)
    with_val = base / "with_val"
    shutil.copytree(with_test / "train", with_val / "train")
    shutil.copytree(with_test / "test", with_val / "val")
    return {"with_test": with_test, "with_val": with_val}


def train(folder: Path, out: Path, name: str, monkeypatch, *extra: str) -> tuple[dict, str]:
    """train.py in this process on the 8 px tiny recipe (holdout_fraction 0, 3 epochs): summary and log."""
    args = tiny_recipe(folder, out, name, "schedule.epochs=3", *extra)[1:]
    assert run_entry("train.py", args, monkeypatch) == 0
    return json.loads((out / name / "summary.json").read_text()), (out / name / "train.log").read_text()


def test_val_that_is_the_test_split_chooses_nothing(folders, tmp_path, monkeypatch):
    summary, log = train(folders["with_test"], tmp_path, "r", monkeypatch)   # holdout_fraction: 0
    run_dir = tmp_path / "r"
    assert not (run_dir / "best.pt").exists()                 # no checkpoint chosen on test
    assert summary["selected_on"] == "last" and summary["checkpoint"] == "last.pt"
    assert summary["split"] == "test" and summary["val_top1"] is None
    assert summary["best_val"]["epoch"] is None
    lines = [line for line in log.splitlines() if "selection:" in line]
    assert len(lines) == 1 and "best-by-val is off" in lines[0] and "selected_on: last" in lines[0]
    assert json.loads((run_dir / "plan.json").read_text())["selected_on"] == "last"
    again = evaluate_checkpoint(run_dir / "last.pt", show_progress=False)
    assert again["metrics"]["top1"] == summary["top1"] and again["split"] == "test"
    # the loop validates every epoch (eval_every_epochs 1) but the last: the summary's test pass is that figure
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "val_top1" in r] == [1, 2] and rows[-1]["epoch"] == 3
    assert "epoch 3/3" in log and "val: the test pass below" in log


def test_a_held_out_val_split_chooses_best_and_reports_test(folders, tmp_path, monkeypatch):
    summary, log = train(folders["with_test"], tmp_path, "r", monkeypatch, "data.holdout_fraction=0.25")
    assert (tmp_path / "r" / "best.pt").exists()
    assert summary["selected_on"] == "val" and summary["checkpoint"] == "best.pt" and summary["split"] == "test"
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert summary["val_top1"] == max(r["val_top1"] for r in rows)     # the checkpoint's own val figure
    assert "selection: best.pt is chosen on val; the summary evaluates it on test" in log


def test_without_a_test_split_the_final_figure_is_labelled_val(folders, tmp_path, monkeypatch):
    summary, log = train(folders["with_val"], tmp_path, "r", monkeypatch)
    assert summary["split"] == "val" and summary["selected_on"] == "val" and summary["checkpoint"] == "best.pt"
    assert "no test split" in log
    # evaluate.py's default split ("test") on such a set reads val, and names it so
    assert run_entry("evaluate.py", [tmp_path / "r", "--workers", "0"], monkeypatch) == 0
    report = json.loads((tmp_path / "r" / "eval" / "val-best" / "metrics.json").read_text())
    assert report["split"] == "val" and report["metrics"]["top1"] == summary["top1"]
    # compare.py's table carries the split column
    assert run_entry("compare.py", [tmp_path, "--out", tmp_path / "table", "--no-charts"], monkeypatch) == 0
    md = (tmp_path / "table" / "table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| # | recipe"))
    row = next(line for line in md.splitlines() if "smallcnn" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # val chose the checkpoint and is the split reported: the table says both
    assert cells[[c.strip() for c in header.strip("|").split("|")].index("split")] == "val (also chose the checkpoint)"
    assert "selected_on" in (tmp_path / "table" / "table.csv").read_text().splitlines()[0]


def test_greedy_soup_refuses_a_val_split_that_is_test(folders, tmp_path, monkeypatch, capsys):
    paths = [write_checkpoint(tmp_path / f"m{i}.pt", folders["with_test"], i, "data.holdout_fraction=0")
             for i in range(2)]
    code = run_entry("soup.py", [*paths, "--greedy", "--workers", "0", "--out", tmp_path / "s"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "validates on test" in err[0] and not (tmp_path / "s").exists()


def test_ablation_refuses_a_val_split_that_is_test_before_training(folders, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ablation"
    code = run_entry("ablate.py", ["recipes/cifar10_resnet20.yaml", f"data.root={folders['with_test']}",
                                   "data.holdout_fraction=0", "data.eval.size=8", "schedule.epochs=1",
                                   "train.global_batch=8", "runtime.workers=0", "--seeds", "0",
                                   "--step", "ls: loss.label_smoothing=0.1", "--out", out], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "validates on the test split" in err[0], err
    assert not out.exists()
