"""compare.py end to end on fake run folders, plus the table helpers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit.report.table import collect, format_duration, format_params, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def summary(run: str, recipe: str, model: str, top1: float, dataset: str = "CIFAR10 (data/cifar10)", **extra) -> dict:
    base = {"run": run, "recipe": recipe, "recipe_hash": "abc123", "model": model, "params": 272474, "epochs": 30,
            "top1": top1, "top5": 99.5, "loss": 0.31, "ece": 0.02, "split": "test", "train_time_s": 192.4,
            "img_per_s": 5321.7, "peak_mem_mb": 812.0, "hardware": "NVIDIA H100", "torch": "2.14.1",
            "timm": "1.0", "git_commit": "deadbeef", "dataset": dataset}
    return {**base, **extra}


def write_run(parent: Path, data: dict) -> Path:
    folder = parent / data["run"]
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(data))
    return folder


def compare(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "compare.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_run(root, summary("resnet20-a", "recipes/cifar_resnet20.yaml", "resnet20", 91.5))
    write_run(root, summary("wrn-b", "recipes/cifar_wrn.yaml", "wrn16_4", 94.25, params=2748890, train_time_s=3725,
                             balanced_accuracy=94.134, macro_f1=94.0))
    write_run(root / "nested", summary("mlp-c", "recipes/cifar_mlp.yaml", "mlp", 55.0, train_time_s=42.0))
    return root


def table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ") and not line.startswith(("| recipe |", "| ---"))]


def test_compare_writes_sorted_tables(runs, tmp_path):
    out = tmp_path / "results" / "table"
    done = compare(runs, "--out", out)
    assert done.returncode == 0, done.stderr
    md = (out / "table.md").read_text()
    assert done.stdout == md
    rows = table_lines(md)
    assert [r.split(" | ")[1] for r in rows] == ["wrn16_4", "resnet20", "mlp"]
    assert "| recipes/cifar_wrn.yaml | wrn16_4 | 2.75M | 30 | test | 94.25 | 99.50 | 94.13 | 94.00 | 1h02m | 5322 |" in rows
    assert "3m12s" in rows[1] and "0.27M" in rows[1] and "42s" in rows[2]
    with open(out / "table.csv", newline="") as f:
        parsed = list(csv.DictReader(f))
    assert [r["run"] for r in parsed] == ["wrn-b", "resnet20-a", "mlp-c"]
    assert float(parsed[0]["top1"]) == 94.25 and int(parsed[0]["params"]) == 2748890
    assert float(parsed[0]["balanced_accuracy"]) == 94.134 and parsed[1]["macro_f1"] == ""
    assert parsed[1]["recipe"] == "recipes/cifar_resnet20.yaml" and float(parsed[2]["train_time_s"]) == 42.0


def test_missing_keys_show_dash_and_datasets_group(tmp_path):
    old = summary("old", "recipes/old.yaml", "resnet8", 80.0, dataset="MNIST")
    for key in ("img_per_s", "train_time_s", "params", "top5"):
        del old[key]
    rows = [old, summary("new", "recipes/new.yaml", "resnet20", 90.0)]
    md = to_markdown(rows)
    assert md.index("### CIFAR10") < md.index("### MNIST")
    assert "| recipes/old.yaml | resnet8 | - | 30 | test | 80.00 | - | - | - | - | - |" in md


def test_run_folder_and_parent_counted_once(runs):
    found = collect([runs, runs / "wrn-b"])
    assert sorted(r["run"] for r in found) == ["mlp-c", "resnet20-a", "wrn-b"]


def test_unreadable_summary_skipped_with_warning(runs, tmp_path):
    broken = runs / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    done = compare(runs, "--out", tmp_path / "t")
    assert done.returncode == 0
    assert "warning" in done.stderr and str(broken / "summary.json") in done.stderr
    assert len(table_lines(done.stdout)) == 3


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_user_errors_exit_2_with_one_line(tmp_path, make):
    path = tmp_path / "nowhere"
    if make == "empty":
        path.mkdir()
    done = compare(path, "--out", tmp_path / "t")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]


def test_formatters():
    assert format_params(272474) == "0.27M" and format_params(None) == "-"
    assert format_duration(192.4) == "3m12s" and format_duration(59.6) == "1m00s" and format_duration(7) == "7s"
    assert format_duration(float("nan")) == "-"


def test_compare_writes_charts(tmp_path):
    import json
    import subprocess
    import sys

    for name, top1, loss in (("a", 80.0, [1.0, 0.5]), ("b", 85.5, [0.9, 0.4])):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"run": name, "dataset": "d", "top1": top1,
                                                      "train_time_s": 60.0 * len(name) + top1}))
        (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "train_loss": v, "val_top1": top1 - 1})
                                                   + "\n" for i, v in enumerate(loss)))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "compare.py", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for png in ("accuracy_vs_time.png", "curves.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
