"""The ablation runner: step parsing, cumulative plan, the table, and a real tiny run."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit.report.ablation import Step, StepResult, cumulative, markdown_table, parse_step
from trainkit.config.schema import RecipeError
from trainkit.report.records import read_records
from trainkit.report.results import results_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_parse_step_and_cumulative_plan():
    s = parse_step("mixup: mixup.mixup_alpha=0.2 'augment.albumentations=[{name: ToGray, p: 1.0}]'")
    assert s == Step("mixup", ("mixup.mixup_alpha=0.2", "augment.albumentations=[{name: ToGray, p: 1.0}]"))
    assert parse_step("ema.decay=0.99").name == "ema.decay=0.99"
    with pytest.raises(RecipeError, match="expected 'name: key.path=value"):
        parse_step("flip: hflip")
    plan = cumulative(["a=1"], [Step("x", ("b=2",)), Step("y", ("c=3", "b=4"))])
    assert [(s.name, o) for s, o in plan] == [("baseline", ["a=1"]), ("x", ["a=1", "b=2"]),
                                              ("y", ["a=1", "b=2", "c=3", "b=4"])]


def test_markdown_table_mean_std_and_gains():
    rows = [StepResult(Step("baseline", ()), [80.0, 82.0], [10, 12], [20, 22]),
            StepResult(Step("ema", ("ema.decay=0.99",)), [83.0, 83.0], [11, 11], [21, 21]),
            StepResult(Step("bad", ("x=1",)), failed=["seed 0: boom"])]
    table = markdown_table(rows, seeds=[0, 1])
    assert "| 0 | baseline | — | 81.00 ± 1.41 |  |  | 2/2 | 11 | 21 |" in table
    assert "| 1 | ema | `ema.decay=0.99` | 83.00 ± 0.00 | +2.00 | +2.00 | 2/2 | 11 | 21 |" in table
    assert "| 2 | bad | `x=1` | failed |" in table and "seed 0: boom" in table


def test_markdown_table_prices_each_step_in_points_per_minute():
    rows = [StepResult(Step("baseline", ()), [90.5, 90.7], [600, 600], [700, 700]),
            StepResult(Step("low res", ("multiscale.progressive.start_px=24",)), [90.3, 90.3], [420, 420], [520, 520]),
            StepResult(Step("same time", ("x=1",)), [90.4, 90.4], [421, 421], [521, 521]),
            StepResult(Step("noisy", ("y=1",)), [80.0, 80.2], [400, 430], [500, 530])]
    table = markdown_table(rows, seeds=[0, 1])
    assert "| 0 | baseline | — | 90.60 ± 0.14 |  |  | 2/2 | 600 | 700 |  |  |" in table
    # 3 training minutes saved for 0.30 points: 0.10 points lost per minute saved
    assert "| -0.30 | -0.30 | 2/2 | 420 | 520 | -3.0 | +0.10 |" in table
    # a step that does not move the time has no price per minute (no division by ~0)
    assert "| +0.10 | -0.20 | 2/2 | 421 | 521 | +0.0 |  |" in table
    # 6 s saved, within the seeds' spread of training time (21 s): -10 points are not priced per minute saved
    assert "| -10.30 | -10.50 | 2/2 | 415 | 515 | -0.1 |  |" in table


def test_bad_step_key_fails_before_training(tmp_path):
    proc = subprocess.run([sys.executable, "ablate.py", "recipes/quickstart.yaml", "--step", "x: mixup.alpha=0.2",
                           "--out", str(tmp_path / "a.md")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown key mixup.alpha" in proc.stderr and not (tmp_path / "a.md").exists()


@pytest.mark.slow
def test_ablation_runs_each_cumulative_step_per_seed(image_folder, tmp_path):
    base = [f"data.root={image_folder}", "data.train_size=16", "data.eval.size=16", "train.global_batch=8",
            "schedule.epochs=1", "runtime.workers=0", "runtime.threads=1"]
    out = tmp_path / "ablation.md"
    proc = subprocess.run([sys.executable, "ablate.py", "recipes/cifar10_resnet20.yaml", *base,
                           "--step", "mix: mixup.mixup_alpha=0.2", "--seeds", "0", "1", "--out", str(out),
                           "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert "| 0 | baseline |" in table and "| 1 | mix | `mixup.mixup_alpha=0.2` |" in table
    assert table.count("2/2") == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["00-s0", "00-s1", "01-s0", "01-s1"]

    # the same command with --records reuses the finished runs (no training) and writes one record per run
    records = tmp_path / "records"
    proc = subprocess.run([sys.executable, "ablate.py", "recipes/cifar10_resnet20.yaml", *base,
                           "--step", "mix: mixup.mixup_alpha=0.2", "--seeds", "0", "1", "--out", str(out),
                           "--runs-dir", str(tmp_path / "runs"), "--records", str(records), "--name", "tiny",
                           "--allow-dirty"],   # the tree under test may hold edits
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(reused run)") == 4
    files = sorted(p.relative_to(records).as_posix() for p in records.rglob("*.json"))
    folder = Path(image_folder).name
    assert files == [f"{folder}/ablation-tiny/{n}.json" for n in ("00-baseline-seed0", "00-baseline-seed1",
                                                                  "01-mix-seed0", "01-mix-seed1")]
    rows = read_records(records)
    md = results_markdown(rows, {})
    val = {(r["ablation"]["step"], r["seed"]): r["val_top1"] for r in rows}
    mix = statistics.fmean([val[1, 0], val[1, 1]])
    assert "### tiny" in md and f"| 1 | mix | `mixup.mixup_alpha=0.2` | {mix:.2f} ± " in md
    assert all(r["variant"].get("mixup.mixup_alpha") == 0.2 for r in rows if r["ablation"]["step"] == 1)

    # a folder of another recipe's run is not silently reused
    proc = subprocess.run([sys.executable, "ablate.py", "recipes/cifar10_resnet20.yaml", *base, "optim.lr=0.05",
                           "--seeds", "0", "--out", str(out), "--runs-dir", str(tmp_path / "runs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "a finished run of another recipe" in proc.stderr


def test_an_unreadable_finished_run_is_one_line(tmp_path):
    spec = importlib.util.spec_from_file_location("entry_ablate", ROOT / "trainkit" / "commands" / "ablate.py")
    ablate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablate)
    summary = tmp_path / "00-s0" / "summary.json"
    summary.parent.mkdir()
    summary.write_text('{"recipe_hash": "abc"')   # cut short, as by a crash mid-write
    with pytest.raises(RecipeError, match=r"00-s0/summary.json: unreadable"):
        ablate.check_reused(summary, "abc")
    summary.write_text('{"recipe_hash": "abc"}')
    assert ablate.check_reused(summary, "abc")["recipe_hash"] == "abc"   # a version-0 summary, upgraded
    with pytest.raises(RecipeError, match="a finished run of another recipe"):
        ablate.check_reused(summary, "def")
