"""Where features meet (issue 25): one run session for train.py and the sweep worker, schedule points checked
against the schedule, resumed runs that keep their identity and go on the results shelf, sweeps that hand back
a trainable recipe, and one evaluation loop under inference mode with the run's own EMA-or-raw policy."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import timm
import torch
from conftest import ROOT, make_image_folder

from trainkit.config.recipe import load_recipe, recipe_hash
from trainkit.config.schema import RecipeError
from trainkit.eval.predict import iter_predictions
from trainkit.models import cifar  # noqa: F401  (registers resnet20_cifar with timm)
from trainkit.models import hub
from trainkit.sweep import worker
from trainkit.sweep.report import search_shortcuts
from trainkit.train import budget
from trainkit.train import session as session_module

RECIPE = "recipes/cifar10_resnet20.yaml"


def tiny(root: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", "data.name=imagefolder", "data.train_size=16", "data.eval.size=16",
            "data.eval.crop_pct=1.0", "model.name=smallcnn", "train.global_batch=6", "train.precision=fp32",
            "runtime.workers=0", "runtime.threads=1", *extra]


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("session") / "folder", per_class=(16, 4))


# ------------------------------------------------------------------ schedule points follow the schedule

def test_schedule_points_past_the_end_are_one_error_line():
    proc = cli("train.py", "recipes/cifar10_lt_resnet32_ldam_drw.yaml", "schedule.epochs=2", "--print")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: schedule.milestones=[8.0, 9.0], loss.reweight_from_epoch=8: past the end of the "
                           "run (schedule.epochs=2)")
    assert "must be < 2" in line and "raise schedule.epochs" in line


@pytest.mark.parametrize("overrides, key", [
    (["schedule.name=step", "schedule.step_epochs=10"], "schedule.step_epochs=10.0"),
    (["mixup.mixup_alpha=0.2", "mixup.off_epoch=12"], "mixup.off_epoch=12"),
    (["model.pretrained=x.pt", "finetune.freeze=backbone", "finetune.unfreeze_after_epochs=10"],
     "finetune.unfreeze_after_epochs=10"),
    (["multiscale.progressive.start_px=8", "multiscale.progressive.end_px=16"], "multiscale.progressive.end_epoch=10"),
])
def test_every_epoch_valued_key_follows_the_one_rule(overrides, key):
    with pytest.raises(RecipeError, match=re.escape(key) + r".*past the end of the run \(schedule.epochs=10\)"):
        load_recipe(RECIPE, ["data.root=x", "schedule.epochs=10", *overrides])
    load_recipe(RECIPE, ["data.root=x", "schedule.epochs=30", *overrides])   # inside the run: fine


def test_a_budget_never_decides_fewer_epochs_than_reach_every_point():
    assert budget.least_epochs(0.5, [3, 7]) == 8 and budget.least_epochs(2.5) == 3
    recipe = load_recipe(RECIPE, ["data.root=x", "schedule.epochs=10", "mixup.mixup_alpha=0.2", "mixup.off_epoch=6",
                                  "schedule.budget_minutes=1"])
    assert budget.least_epochs(recipe.schedule.warmup_epochs,
                               session_module.schedule_points(recipe).values()) == 7


# ------------------------------------------------------------------ a resumed run keeps its identity

def test_a_run_resumed_without_its_recipe_file_is_recorded_like_an_uninterrupted_one(folder, tmp_path):
    args = [RECIPE, *tiny(folder), "schedule.epochs=2", "runtime.keep_epoch_checkpoints=true",
            f"runtime.out_dir={tmp_path}", "runtime.run_name=r"]
    assert cli("train.py", *args).returncode == 0
    run_dir = tmp_path / "r"
    straight = json.loads((run_dir / "summary.json").read_text())
    done = cli("compare.py", "record", run_dir, "--variant", "tiny", "--out", tmp_path / "rec1", "--allow-dirty")
    assert done.returncode == 0, done.stderr
    # Interrupted after epoch 1: continue from that checkpoint with --resume alone (no recipe file).
    proc = cli("train.py", "--resume", run_dir / "epoch_001.pt")
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["recipe"] == straight["recipe"] == RECIPE
    assert resumed["recipe_hash"] == straight["recipe_hash"] and resumed["top1"] == straight["top1"]
    done = cli("compare.py", "record", run_dir, "--variant", "tiny", "--out", tmp_path / "rec2", "--allow-dirty")
    assert done.returncode == 0, done.stderr
    first, again = (json.loads(next((tmp_path / d).rglob("*.json")).read_text()) for d in ("rec1", "rec2"))
    for key in ("recipe", "recipe_hash", "seed", "variant", "command", "top1", "epochs"):
        assert first[key] == again[key], key


# ------------------------------------------------------------------ the sweep worker is set up as train.py

def test_a_budgeted_sweep_trial_reports_and_writes_the_epochs_that_ran(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "bare_step_rate", lambda *a, **k: 3.0)
    monkeypatch.setattr(session_module, "process_seconds", lambda: 10.0)
    monkeypatch.setattr(worker, "die_with_parent", lambda: None)
    # 36 training images at batch 6, 3 img/s: about 14 s an epoch, so 10 s + 2 epochs fit 45 s and 3 do not.
    read_fd, write_fd = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.StringIO("go\n" * 10))
    monkeypatch.setattr(sys, "argv", ["worker", RECIPE, *tiny(folder), "data.holdout_fraction=0.25",
                                      "schedule.epochs=4", "schedule.budget_minutes=0.75",
                                      f"runtime.out_dir={tmp_path}", "runtime.run_name=t", "--report-fd",
                                      str(write_fd)])
    monkeypatch.chdir(ROOT)
    assert worker.main() == 0
    with os.fdopen(read_fd) as f:
        reports = [json.loads(line) for line in f]
    plan = json.loads((tmp_path / "t" / "plan.json").read_text())
    trial = json.loads((tmp_path / "t" / "trial.json").read_text())
    assert plan["budget"]["epochs"] == plan["epochs"] == trial["epochs"] == len(reports) < 4
    assert [r["last"] for r in reports] == [False] * (len(reports) - 1) + [True]   # never pruned at its last epoch


# ------------------------------------------------------------------ sweeps hand back a trainable recipe

def test_best_recipe_leaves_out_the_search_shortcuts_and_trials_md_reruns_as_printed(folder, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {choice: [0.1]}\n")
    out = tmp_path / "out"
    shortcuts = ["data.limit_train=30", "schedule.epochs=1"]
    proc = cli("sweep.py", RECIPE, *tiny(folder), "data.holdout_fraction=0.25", *shortcuts, "--space", space,
               "--trials", 1, "--sampler", "grid", "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    best_path = out / "best_recipe.yaml"
    best = load_recipe(best_path)
    assert best.data.limit_train is None
    assert best.schedule.epochs == load_recipe(RECIPE, ["data.root=x"]).schedule.epochs == 30
    assert best.optim.lr == 0.1 and best.data.holdout_fraction == 0.25
    assert "# Search shortcuts, left out here: data.limit_train=30 schedule.epochs=1" in best_path.read_text()
    # with the shortcuts it is exactly the recipe the trial trained (only its description says it was tuned)
    trained = load_recipe(out / "trials" / "trial-0000" / "recipe.yaml")
    assert recipe_hash(dataclasses.replace(load_recipe(best_path, shortcuts), description=trained.description)) == \
        json.loads((out / "trials" / "trial-0000" / "plan.json").read_text())["recipe_hash"] == recipe_hash(trained)
    # the command in trials.md runs as printed: it continues the (finished) study and rewrites every report
    md = (out / "trials.md").read_text()
    command = re.search(r"run `(python sweep\.py [^`]*)`", md).group(1)
    best_path.unlink()
    (out / "final_test.json").write_text(json.dumps({"study": {"best_trial": 7, "trials": 9}}))
    (out / "final_test.md").write_text("a final test of another study state\n")
    words = shlex.split(command)
    assert words[0] == "python"
    proc = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert best_path.is_file() and not (out / "final_test.md").exists()
    study = optuna.load_study(study_name="cifar10_resnet20-space", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 1
    rerun = re.search(r"as it was searched[^`]*`([^`]*)`", (out / "trials.md").read_text()).group(1)
    assert shlex.split(rerun)[1:] == ["train.py", str(best_path), *shortcuts]


def test_search_shortcuts_are_only_the_cheapening_overrides():
    overrides = ["data.limit_train=100", "data.limit_eval=50", "schedule.epochs=2", "schedule.warmup_epochs=0",
                 "schedule.budget_minutes=3", "optim.weight_decay=0.001", "data.root=/x"]
    assert search_shortcuts(RECIPE, overrides, ["optim.lr"]) == overrides[:5]
    # a longer schedule is a change of recipe, not a shortcut; a searched key never is one
    assert search_shortcuts(RECIPE, ["data.root=/x", "schedule.epochs=300"], []) == []
    assert search_shortcuts(RECIPE, ["data.root=/x", "data.limit_train=100"], ["data.limit_train"]) == []
    # fractional epochs are epochs too (schedule.epochs may be 9.9)
    assert search_shortcuts(RECIPE, ["data.root=/x", "schedule.epochs=2.5"], []) == ["schedule.epochs=2.5"]


# ------------------------------------------------------------------ one evaluation loop, one policy

class Recorder(torch.nn.Module):
    """The model, noting whether autograd was on in each forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return self.model(x)


def test_predictions_run_under_inference_mode_and_the_caller_does_not(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "resnet20.pt"
    torch.save(timm.create_model("resnet20_cifar", num_classes=10).state_dict(), weights)
    images = make_image_folder(tmp_path / "img", per_class=(2, 1))
    paths = sorted(str(p) for p in images.rglob("*.*"))
    loaded = hub.resolve(str(weights), arch="resnet20_cifar")
    plain = [p.indices for p in iter_predictions(loaded, paths, topk=3, batch=4)]
    recorder = Recorder(loaded.model)
    outside = []
    for pred in iter_predictions(dataclasses.replace(loaded, model=recorder), paths, topk=3, batch=4):
        outside.append(torch.is_inference_mode_enabled())
    assert recorder.seen and all(seen == (True, False) for seen in recorder.seen)
    assert not any(outside)
    assert [p.indices for p in iter_predictions(loaded, paths, topk=3, batch=4)] == plain


def test_ema_or_raw_is_the_runs_own_recorded_in_its_plan(folder):
    ema_run = {"plan": {"eval_weights": "ema"}, "ema": {"model": {}}, "recipe": {}}
    assert hub.run_weights(ema_run) == "ema"
    assert hub.run_weights({**ema_run, "ema": None}) == "raw"   # a soup: EMA state dropped
    # a checkpoint from before plans recorded it: the rule from its recipe
    old = {"plan": {}, "ema": {"model": {}}, "recipe": {"train": {"best_metric": "ema_top1"}, "ema": {"decay": 0.9}}}
    assert hub.run_weights(old) == "ema"
    plan = session_module.RunSession.open(RECIPE, [*tiny(folder), "ema.decay=0.99", "train.best_metric=ema_top1"],
                                          print_only=True).plan
    assert plan.eval_weights == "ema"


def test_train_and_the_sweep_worker_share_one_run_set_up():
    """The worker keeps no copy of train.py's set-up: both open a RunSession."""
    for path in ("trainkit/commands/train.py", "trainkit/sweep/worker.py"):
        text = (ROOT / path).read_text()
        assert "RunSession.open(" in text
        for private in ("plan_for(", "prepare_data(", "Trainer(", "seed_everything(", "write_run_header("):
            assert private not in text, (path, private)
