"""sweep.py: space checks, refusal to select on test, a 4-trial sweep with pruning, and a sweep
killed with SIGKILL and run again (tiny ImageFolder runs: smallcnn, 16 px, a few epochs)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import ROOT, make_image_folder

from trainkit.config.recipe import load_recipe
from trainkit.config.schema import RecipeError
from trainkit.runtime.distributed import DistInfo
from trainkit.sweep.space import check_space, load_space, override
from trainkit.sweep.study import counted, requeue_interrupted
from trainkit.sweep.worker import PruneReporter
from trainkit.data.sources import prepare_data
from trainkit.train.trainer import Trainer, plan_for

RECIPE = "recipes/cifar10_resnet20.yaml"


def tiny(root: Path, epochs: int) -> list[str]:
    return [f"data.root={root}", "data.train_size=16", "data.eval.size=16", "model.name=smallcnn",
            "train.global_batch=16", f"schedule.epochs={epochs}", "runtime.workers=0", "runtime.threads=1",
            "data.holdout_fraction=0.25"]


@pytest.fixture
def folder(tmp_path) -> Path:
    # 40 training images per class: a 25% hold-out gives 30 val images, enough to tell lr 0.1 from 1e-6.
    return make_image_folder(tmp_path / "folder", per_class=(40, 10))


def sweep(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "sweep.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("optim.lrr: {loguniform: [0.01, 1.0]}", "unknown key optim.lrr; did you mean optim.lr?"),
    ("optim.lr: {loguniform: [0.0, 1.0]}", "optim.lr: loguniform needs low > 0, got 0.0"),
    ("optim.lr: {uniform: [0.5, 0.1]}", "optim.lr: uniform needs low < high"),
    ("optim.lr: {logunifrom: [0.01, 1.0]}", "did you mean 'loguniform'?"),
    ("loss.label_smoothing: {uniform: [0.0, 1.5]}",
     "loss.label_smoothing=1.5: loss.label_smoothing: must be in [0, 1)"),
    ("augment.auto_augment: {choice: [null, rand-m9-mstd0.5, not-a-policy]}", "augment.auto_augment=\"not-a-policy\""),
    ("schedule.epochs: {int: [1, 4], step: 0.5}",
     "schedule.epochs: step must be an integer in (0, high - low], got 0.5"),
    ("schedule.epochs: {int: [1.0, 4]}", "schedule.epochs: int needs [low, high] integers"),
    ("runtime.threads: {int: [1, 4]}", "runtime keys say how a run executes"),
    ("[optim.lr]", "a space is a non-empty mapping"),
])
def test_bad_space_is_one_error_before_anything_runs(tmp_path, text, message):
    path = write(tmp_path / "space.yaml", text)
    with pytest.raises(RecipeError) as err:
        check_space(load_space(path), "recipes/quickstart.yaml", [], str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_space_values_become_recipe_overrides(tmp_path):
    path = write(tmp_path / "space.yaml", "optim.lr: {loguniform: [1.0e-6, 1.0]}\n"
                 "augment.auto_augment: {choice: [null, rand-m9-mstd0.5]}\nloss.label_smoothing: "
                 "{uniform: [0.0, 0.2], step: 0.1}\nschedule.epochs: {int: [2, 6], step: 2}\n")
    space = load_space(path)
    check_space(space, "recipes/quickstart.yaml", [], str(path))
    assert [d.grid() for d in space[2:]] == [[0.0, 0.1, 0.2], [2, 4, 6]]
    # 1e-06 is a string to YAML 1.1; the override must still be a number.
    recipe = load_recipe("recipes/quickstart.yaml",
                         [override("optim.lr", 1e-6), override("augment.auto_augment", None)])
    assert recipe.optim.lr == 1e-6 and recipe.augment.auto_augment is None
    assert override("loss.label_smoothing", 0.05 * 3) == "loss.label_smoothing=0.15"   # not 0.15000000000000002
    with pytest.raises(RecipeError, match="grid sampler needs discrete values"):
        space[0].grid()


def test_bad_space_file_exits_2_with_one_line_and_no_study(tmp_path):
    path = write(tmp_path / "space.yaml", "optim.lrr: {loguniform: [0.01, 1.0]}\n")
    proc = sweep("recipes/quickstart.yaml", "--space", path, "--trials", 2, "--out", tmp_path / "out", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: optim.lrr=0.01: unknown key optim.lrr; did you mean optim.lr?"
    assert not (tmp_path / "out").exists()


def test_refuses_to_select_on_the_test_split(folder, tmp_path):
    space = write(tmp_path / "space.yaml", "optim.lr: {loguniform: [0.01, 1.0]}\n")
    args = [a for a in tiny(folder, 1) if not a.startswith("data.holdout_fraction")]
    proc = sweep(RECIPE, *args, "data.holdout_fraction=0", "--space", space, "--trials", 2,
                 "--out", tmp_path / "out", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: the sweep selects on val, but this recipe's val split is the test split")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_four_trial_sweep_prunes_weak_trials_and_writes_outputs(folder, tmp_path):
    # Two learning rates that learn and two that cannot: the grid's seeded order puts a good one
    # first, so the median pruner (after one start-up trial) stops the bad ones after epoch 1.
    space = write(tmp_path / "space.yaml", "optim.lr: {choice: [0.2, 1.0e-6, 0.1, 2.0e-6]}\n")
    out = tmp_path / "out"
    proc = sweep(RECIPE, *tiny(folder, 3), "--space", space, "--trials", 4, "--sampler", "grid",
                 "--prune-startup-trials", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    by_lr = {float(r["optim.lr"]): r for r in rows}
    assert {r["state"].split()[0] for r in rows} <= {"COMPLETE", "PRUNED"}
    pruned = [r for r in rows if r["state"].startswith("PRUNED")]
    assert pruned and all(float(r["optim.lr"]) < 1e-5 for r in pruned)
    for r in rows:
        epochs = len((Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines())
        assert epochs == (1 if r in pruned else 3) == int(r["epochs_run"])
        assert not (Path(r["run_dir"]) / "summary.json").exists()     # no test evaluation inside the search
    assert float(by_lr[0.1]["val"]) > float(by_lr[1e-6]["val"]) + 20
    # The best recipe is the base plus the best trial's value, and train.py takes it as it is.
    study = optuna.load_study(study_name="cifar10_resnet20-space", storage=f"sqlite:///{out / 'study.db'}")
    best = load_recipe(out / "best_recipe.yaml")
    expected = load_recipe(RECIPE, [*tiny(folder, 3), override("optim.lr", study.best_trial.params["optim.lr"])])
    assert best.optim == expected.optim and best.data == expected.data and best.runtime == expected.runtime
    assert study.best_trial.params["optim.lr"] in (0.1, 0.2)
    printed = subprocess.run([sys.executable, "train.py", str(out / "best_recipe.yaml"), "--print"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, check=False)
    assert printed.returncode == 0, printed.stderr
    md = (out / "trials.md").read_text()
    assert "| 4 trials" not in md and "4 trials: complete 2, pruned 2" in md and "Best (on val)" in md
    for name in ("history", "parallel_coordinates", "importances"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_sigkilled_sweep_continues_and_reruns_the_interrupted_trials(folder, tmp_path):
    space = write(tmp_path / "space.yaml", "optim.lr: {choice: [0.05, 0.1, 0.2]}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "sweep.py", RECIPE, *tiny(folder, 6), "--space", str(space), "--trials", "3",
           "--sampler", "grid", "--pruner", "none", "--jobs", "1", "--out", str(out)]
    # One trial at a time: with --jobs 2 and both running trials killed, a CI run once re-ran only one
    # of them (open bug, see the closing note of 2026-12-01); this test pins the single-trial path.
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "trials" / "trial-0000" / "metrics.jsonl").exists(), 300, "trial 0's first epoch")
    finally:
        os.kill(first.pid, signal.SIGKILL)       # no cleanup of any kind: as a crash or an OOM kill
        first.wait()
    storage = f"sqlite:///{out / 'study.db'}"
    killed = optuna.load_study(study_name="cifar10_resnet20-space", storage=storage).get_trials()
    running = [t for t in killed if t.state == optuna.trial.TrialState.RUNNING]
    assert running and all(t.state != optuna.trial.TrialState.COMPLETE for t in killed if t.number == 0)
    workers = [t.user_attrs["worker_pid"] for t in running]   # the trials' training processes die with the sweep
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, f"workers {workers} to die")

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "were running when their sweep died" in again.stdout
    trials = optuna.load_study(study_name="cifar10_resnet20-space", storage=storage).get_trials()
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    # Every grid point trained to the end once; each interrupted trial is failed (not lost) and was re-run
    # with its parameters (not counted twice: the budget of 3 is 3 complete trials).
    assert sorted(t.params["optim.lr"] for t in complete) == [0.05, 0.1, 0.2], states
    assert {t.number for t in failed} == {t.number for t in running}
    reruns = {t.system_attrs["retry_history"][-1]: t for t in trials if t.system_attrs.get("retry_history")}
    assert set(reruns) == {t.number for t in failed}
    assert all(reruns[t.number].params == t.params and reruns[t.number].state.name == "COMPLETE" for t in failed)
    assert len(trials) == 3 + len(failed)
    table = (out / "trials.md").read_text()
    assert table.count("FAIL (interrupted; re-run as #") == len(failed)


@pytest.mark.parametrize("recipe, space, overrides, n_dims", [
    ("recipes/quickstart.yaml", "recipes/sweeps/quickstart.yaml", [], 5),
    ("recipes/cifar10_resnet20.yaml", "recipes/sweeps/cifar10_resnet20.yaml",
     ["data.root=../shared/data/cifar10-jpeg"], None),
    ("recipes/linear_probe_photos_aid_lite0.yaml", "recipes/sweeps/linear_probe_photos_aid.yaml", [], 1),
])
def test_shipped_space_files_check_against_their_recipes(recipe, space, overrides, n_dims):
    dims = load_space(ROOT / space)
    check_space(dims, ROOT / recipe, overrides, space)
    assert len(dims) == n_dims if n_dims else len(dims) >= 4


def test_epoch_end_callback_prunes_after_a_saved_epoch(folder, tmp_path):
    """The pruning path in-process: PruneReporter sends each epoch's val top-1 and stops the run on 'prune'."""
    recipe = load_recipe(ROOT / RECIPE, [*tiny(folder, 3), "runtime.progress=false"])
    data = prepare_data(recipe)
    plan = plan_for(recipe, data, DistInfo(), torch.device("cpu"))
    trainer = Trainer(recipe, plan, data, DistInfo(), torch.device("cpu"), tmp_path / "run", None)
    reports, answers = io.StringIO(), io.StringIO("go\nprune\n")
    trainer.epoch_end.append(PruneReporter("top1", plan.epochs, reports, answers))
    last = trainer.fit()
    sent = [json.loads(line) for line in reports.getvalue().splitlines()]
    assert [(s["epoch"], s["last"]) for s in sent] == [(1, False), (2, False)] and last["epoch"] == 2
    assert sent[1]["value"] == last["val_top1"]
    assert trainer.stopped_early.startswith("pruned by the sweep at epoch 2")
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "run" / "last.pt").exists()     # the stopped epoch was saved before the stop


def test_interrupted_trial_is_requeued_once_and_not_counted(tmp_path):
    """A trial ended by Ctrl-C or a signal (marked interrupted) is re-run with its parameters; the
    budget counts the re-run, not the interrupted try."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    dist = {"optim.lr": optuna.distributions.FloatDistribution(0.01, 1.0, log=True)}
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.COMPLETE, value=50.0,
                                        params={"optim.lr": 0.1}, distributions=dist))
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, params={"optim.lr": 0.3},
                                        distributions=dist, user_attrs={"interrupted": True}))
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, params={"optim.lr": 0.5},
                                        distributions=dist, user_attrs={"error": "error: diverged"}))
    assert requeue_interrupted(study) == [1]
    assert requeue_interrupted(study) == []          # once: the re-run now points at it
    trials = study.get_trials()
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == {"optim.lr": 0.3}
    assert waiting[0].system_attrs["retry_history"] == [1]
    assert counted(trials) == 2      # trial 0 and the real failure 2; not the interrupted 1
