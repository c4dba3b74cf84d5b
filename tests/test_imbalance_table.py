"""imbalance_table.py: run folders -> records -> the generated Markdown table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from trainkit.config.recipe import load_recipe, recipe_dict
from trainkit.report.imbalance import tail_recall

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("a", "b", "c", "d")
COUNTS = {"a": 400, "b": 100, "c": 20, "d": 4}


def fake_run(parent: Path, name: str, recipe: str, seed: int, recall: list[float], top1: float) -> Path:
    run = parent / name
    run.mkdir(parents=True)
    r = load_recipe(ROOT / "recipes" / f"{recipe}.yaml", [f"train.seed={seed}"])
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe_dict(r)))
    per_class = {c: {"samples": 10, "recall": v, "precision": 50.0, "f1": 50.0} for c, v in zip(CLASSES, recall)}
    summary = {"run": name, "recipe": f"recipes/{recipe}.yaml", "recipe_hash": "abc", "model": r.model.name,
               "split": "test", "samples": 40, "top1": top1, "balanced_accuracy": sum(recall) / 4, "macro_f1": 50.0,
               "per_class": per_class, "train_class_counts": COUNTS, "precision": "bf16",
               "selected_on": "val", "best_val": {"metric": "balanced_accuracy", "value": 60.0 + seed, "epoch": 3},
               "train_time_s": 600.0, "img_per_s": 100.0, "hardware": "cpu", "torch": "2", "git_commit": "abc"}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "imbalance_table.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_records_and_table(tmp_path):
    runs = [fake_run(tmp_path / "runs", "ce0", "cifar10_lt_resnet32_ce", 0, [90.0, 70.0, 30.0, 10.0], 80.0),
            fake_run(tmp_path / "runs", "ce1", "cifar10_lt_resnet32_ce", 1, [92.0, 70.0, 30.0, 12.0], 82.0),
            fake_run(tmp_path / "runs", "ldam0", "cifar10_lt_resnet32_ldam_drw", 0, [80.0, 70.0, 60.0, 50.0], 75.0)]
    out = tmp_path / "records"
    done = tool("record", *runs, "--out", out, "--allow-dirty")   # fake runs name no real commit
    assert done.returncode == 0, done.stderr
    rec = json.loads((out / "cifar10-jpeg-lt" / "cifar10_lt_resnet32_ldam_drw-seed0.json").read_text())
    assert tail_recall(rec) == (70.0 + 60.0 + 50.0) / 3      # the 3 classes with fewest images
    assert rec["selected_on"] == "val" and rec["best_val"] == {"metric": "balanced_accuracy", "value": 60.0, "epoch": 3}
    assert rec["setup"]["loss"]["name"] == "ldam" and rec["setup"]["model_kwargs"] == {"cosine_classifier": True}
    table = tmp_path / "table.md"
    done = tool("table", out / "cifar10-jpeg-lt", "--out", table)
    assert done.returncode == 0, done.stderr
    md = table.read_text()
    assert done.stdout == md
    rows = [line for line in md.splitlines() if line.startswith("| cifar10")]
    assert rows[0].startswith("| cifar10_lt_resnet32_ldam_drw |")       # best balanced accuracy first
    assert "| cifar10_lt_resnet32_ce | ce | 0, 1 | 81.00 ± 1.41 | 50.50 ± 0.71 |" in rows[1]
    assert "70.36 (ERM)" in rows[1] and "| 60.00 @ 3; 61.00 @ 3 |" in rows[1]
    assert "ldam (class_weights=effective_number, reweight_from_epoch=8)" in rows[0]
    assert "76.36" not in md and "12 epochs" not in md
    assert "epochs multistep" in md and "524 images (400, 100, 20, 4 per class" in md
    assert "top-1 equals balanced accuracy" in md      # every test class has 10 images


def test_not_a_run_folder_is_one_line(tmp_path):
    done = tool("record", tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
