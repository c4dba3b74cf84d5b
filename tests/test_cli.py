"""train.py / evaluate.py / compare.py as a user runs them: real processes, real files."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainkit.runtime.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check=True, timeout=300, **kw):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny_fashion(out_dir: Path, name: str, *extra: str) -> list[str]:
    """The quickstart recipe on a small seeded subset, deterministic, no worker processes."""
    return ["train.py", "recipes/quickstart.yaml", "data.limit_train=3000", "data.limit_eval=500",
            "train.global_batch=100", "train.precision=fp32", "train.deterministic=true", "schedule.epochs=4",
            "runtime.workers=0", "runtime.threads=1", "runtime.log_every_steps=5",
            f"runtime.out_dir={out_dir}", f"runtime.run_name={name}", *extra]


@pytest.mark.parametrize("override, needle", [
    ("loss.lable_smoothing=0.1", "loss.lable_smoothing; did you mean loss.label_smoothing?"),
    ("optim.lr=[1, 2]", "optim.lr: expected a number"),
    ("train.precision=fp8", "train.precision: invalid value 'fp8'"),
    ("data.root=/no/such/folder", "/no/such/folder"),
])
def test_bad_recipe_exits_with_one_line(override, needle):
    recipe = "recipes/cifar10_resnet20.yaml" if override.startswith("data.root") else "recipes/quickstart.yaml"
    proc = run("train.py", recipe, override, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_base_file_exits_with_one_line(tmp_path):
    (tmp_path / "r.yaml").write_text("base: _base/missing.yaml\n")
    proc = run("train.py", tmp_path / "r.yaml", check=False)
    assert proc.returncode == 2 and "base file not found" in proc.stderr and "missing.yaml" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_print_shows_recipe_and_plan_without_training(tmp_path):
    proc = run("train.py", "recipes/quickstart.yaml", "optim.lr=0.05", "train.global_batch=512",
               "runtime.per_device_batch=128", f"runtime.out_dir={tmp_path}", "--print")
    assert "lr: 0.05" in proc.stdout
    plan = json.loads(proc.stdout.split("# plan (derived, not part of the recipe)")[1])
    assert plan["accum_steps"] == 4 and plan["lr"] == pytest.approx(0.05 * 512 / 256)
    assert not any(tmp_path.iterdir())


@pytest.mark.usefixtures("fashion_dir")
def test_train_writes_run_folder_and_evaluate_reproduces_top1(tmp_path):
    run(*tiny_fashion(tmp_path, "a", "schedule.epochs=2", "train.best_metric=balanced_accuracy"))
    run_dir = tmp_path / "a"
    for name in ("recipe.yaml", "plan.json", "metrics.csv", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["split"] == "test" and summary["samples"] == 500 and summary["top1"] > 50
    for key in ("top5", "loss", "params", "epochs", "train_time_s", "img_per_s", "peak_mem_mb", "hardware",
                "torch", "timm", "git_commit", "recipe_hash"):
        assert key in summary, key
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("val_top1" in r for r in rows)
    # the best checkpoint was chosen on val balanced accuracy; test reports it beside top-1, per class too
    best = max(rows, key=lambda r: r["val_balanced_accuracy"])
    assert summary["best_val"] == {"metric": "balanced_accuracy", "value": best["val_balanced_accuracy"],
                                   "epoch": best["epoch"]}
    per_class = summary["per_class"]
    assert len(per_class) == 10 and sum(c["samples"] for c in per_class.values()) == 500
    recalls = [c["recall"] for c in per_class.values() if c["recall"] is not None]
    assert summary["balanced_accuracy"] == pytest.approx(sum(recalls) / len(recalls))
    assert 0 <= summary["macro_f1"] <= 100

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/top1", "val/top5", "train/img_per_s", "train/epoch_s"} <= tags
    assert [e.step for e in events.Scalars("val/top1")] == [1, 2]

    ckpt = load_checkpoint(run_dir / "best.pt")
    assert len(ckpt["classes"]) == 10 and ckpt["eval"]["size"] == 28

    proc = run("evaluate.py", run_dir)
    report = json.loads((run_dir / "eval" / "test-best" / "metrics.json").read_text())
    assert report["metrics"]["top1"] == summary["top1"]          # exactly, not approximately
    assert report["metrics"]["balanced_accuracy"] == summary["balanced_accuracy"]
    assert f"bal_acc {summary['balanced_accuracy']:.2f}%" in proc.stdout
    with open(run_dir / "eval" / "test-best" / "per_class.csv", newline="") as f:
        assert next(csv.reader(f)) == ["class", "samples", "recall", "precision", "f1"]
    assert f"top1 {summary['top1']:.2f}%" in proc.stdout
    assert (run_dir / "eval" / "test-best" / "confusion.png").stat().st_size > 1000

    table = run("compare.py", tmp_path, "--out", tmp_path / "table")
    assert "smallcnn" in table.stdout and (tmp_path / "table" / "table.csv").is_file()


def final_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "last.pt")["model"]


@pytest.mark.usefixtures("fashion_dir")
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    run(*tiny_fashion(tmp_path, "straight"))

    cmd = [sys.executable, *tiny_fashion(tmp_path, "killed")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.5)     # into epoch 3
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    survivor = load_checkpoint(tmp_path / "killed" / "last.pt")     # loadable after SIGKILL
    assert survivor["epoch"] == 2

    run("train.py", "--resume", tmp_path / "killed")
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 4
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_different_recipe(tmp_path, fashion_dir):
    run(*tiny_fashion(tmp_path, "r", "schedule.epochs=1"))
    proc = run("train.py", "recipes/quickstart.yaml", "--resume", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "different recipe" in proc.stderr


def test_evaluate_missing_checkpoint_is_one_line(tmp_path):
    proc = run("evaluate.py", tmp_path / "nothing-here", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_evaluate_truncated_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    proc = run("evaluate.py", bad, check=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "Traceback" not in proc.stderr

