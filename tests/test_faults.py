"""Fault tolerance: step checkpoints with exact mid-epoch resume, --resume auto past a truncated
file, SIGTERM (preemption), torchrun --max-restarts after a SIGKILL, and the non-finite loss policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_image_folder
from test_distributed import ENV, ROOT, assert_same_weights, tiny_recipe
from trainkit.train.callbacks import Checkpointer
from trainkit.runtime.checkpoint import load_checkpoint, save_atomic
from trainkit.config.schema import RecipeError
from trainkit.train.engine import NonFiniteLoss
from trainkit.runtime.faults import PREEMPTED_EXIT, newest_valid_checkpoint
from trainkit.config.recipe import load_recipe
from test_engine import batches, make_step, tiny_mlp


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("faults") / "folder", per_class=(13, 7), size=8)


def run(args, check=True, timeout=240):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "last.pt")["model"]


def wait_for_rows(path: Path, rows: int, proc: subprocess.Popen, timeout=120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended (or stalled) before writing {rows} rows of {path}; make it longer")


# ---------------------------------------------------------------- in-process resume

def build_trainer(recipe_path: Path, overrides: list[str], resume: bool):
    """What train.py's main() does, in this process."""
    from trainkit.runtime.distributed import DistInfo
    from trainkit.data.sources import prepare_data
    from trainkit.train.trainer import Trainer, plan_for, seed_everything, write_run_header

    recipe = load_recipe(recipe_path, overrides)
    device = torch.device("cpu")
    seed_everything(recipe.train.seed, recipe.train.deterministic, device, False)
    data = prepare_data(recipe)
    plan = plan_for(recipe, data, DistInfo(), device)
    run_dir = Path(recipe.runtime.out_dir) / recipe.runtime.run_name
    write_run_header(run_dir, recipe, plan)
    trainer = Trainer(recipe, plan, data, DistInfo(), device, run_dir, str(recipe_path))
    if resume:
        trainer.resume(newest_valid_checkpoint(run_dir))
    return trainer


class Crash(Exception):
    pass


def straight_then_crashed_and_resumed(recipe: Path, common: list[str], out_dir: Path, monkeypatch) -> dict:
    """Train run ``straight``; train ``crashed`` until just after its step-4 checkpoint, crash, and
    resume it to the end (both in ``out_dir``, one thread). Returns the checkpoint the crash left."""
    from trainkit.train.trainer import Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_trainer(recipe, [*common, "runtime.run_name=straight"], resume=False).fit()
        original = Trainer.on_step

        def crash_after_step_4(self, epoch, micro_done):
            original(self, epoch, micro_done)
            if self.step.optimizer_steps == 4:
                raise Crash
        monkeypatch.setattr(Trainer, "on_step", crash_after_step_4)
        with pytest.raises(Crash):
            build_trainer(recipe, [*common, "runtime.run_name=crashed"], resume=False).fit()
        monkeypatch.setattr(Trainer, "on_step", original)
        saved = load_checkpoint(out_dir / "crashed" / "last.pt")
        build_trainer(recipe, [*common, "runtime.run_name=crashed"], resume=True).fit()
    finally:
        torch.set_num_threads(threads)
    return saved


@pytest.mark.parametrize("in_memory, accum", [(True, 1), (False, 2)])
def test_step_checkpoints_resume_mid_epoch_to_the_same_weights(folder, tmp_path, monkeypatch, in_memory, accum):
    """Crash right after the step-4 checkpoint (mid epoch 2 of 3 steps each); resume; same weights.

    With augmentation on, both serving paths: the in-memory one draws per-batch seeds, the
    per-sample one per-sample seeds, so the skipped batches are never read."""
    _, recipe, *_ = tiny_recipe(folder, tmp_path, "x")
    common = [f"runtime.out_dir={tmp_path}", "runtime.checkpoint_every_steps=2", "augment.hflip=0.5",
              "augment.crop=pad", "augment.pad_px=2", f"data.in_memory={str(in_memory).lower()}",
              f"runtime.per_device_batch={12 // accum}", "schedule.epochs=3"]
    saved = straight_then_crashed_and_resumed(recipe, common, tmp_path, monkeypatch)
    assert (saved["epoch"], saved["step_in_epoch"], saved["train_step"]["optimizer_steps"]) == (1, 1, 4)
    assert load_checkpoint(tmp_path / "crashed" / "last.pt")["train_step"]["optimizer_steps"] == 9
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "crashed")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_newest_valid_checkpoint_skips_a_truncated_file(tmp_path):
    ck = Checkpointer(tmp_path, "top1", enabled=True)
    model = {"w": torch.ones(2)}
    for steps in (3, 6):
        ck.save_last({"format": "trainkit-checkpoint/1", "epoch": 0, "model": model,
                      "train_step": {"optimizer_steps": steps}})
    assert newest_valid_checkpoint(tmp_path) == tmp_path / "last.pt"
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])          # a cut-short copy
    assert newest_valid_checkpoint(tmp_path) == tmp_path / "prev.pt"
    assert load_checkpoint(tmp_path / "prev.pt")["train_step"]["optimizer_steps"] == 3
    assert newest_valid_checkpoint(tmp_path / "empty") is None


def test_save_atomic_removes_its_temp_file_when_the_save_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_atomic({"w": torch.ones(2)}, target)
    before = target.read_bytes()

    def failing_save(obj, f):
        f.write(b"partial")      # a half-written file, then the failure
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"w": torch.zeros(2)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]     # no .last.pt.tmp<pid> left behind
    assert target.read_bytes() == before                                  # the previous file is intact


# ---------------------------------------------------------------- SIGTERM, --resume auto

def test_sigterm_saves_and_exits_then_resume_auto_finishes_identically(folder, tmp_path):
    long = ["schedule.epochs=30", "runtime.checkpoint_every_steps=100"]   # step checkpoints only on SIGTERM
    run(tiny_recipe(folder, tmp_path, "straight", *long))

    cmd = [sys.executable, *map(str, tiny_recipe(folder, tmp_path, "stopped", *long)), "--resume", "auto"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "stopped" / "metrics.jsonl", 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT, err
    assert err.strip().splitlines()[-1].startswith("preempted: SIGTERM at ") and "Traceback" not in err
    saved = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert 9 <= saved["train_step"]["optimizer_steps"] < 90

    # A cut-short last.pt (a bad copy): --resume auto falls back to prev.pt, still exact.
    data = (tmp_path / "stopped" / "last.pt").read_bytes()
    (tmp_path / "stopped" / "last.pt").write_bytes(data[:1000])
    proc = run([*tiny_recipe(folder, tmp_path, "stopped", *long), "--resume", "auto"])
    assert "resume: skipping cannot load checkpoint" in proc.stdout + proc.stderr
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["train_step"]["optimizer_steps"] == 90
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "stopped")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_auto_without_run_name_is_one_line(folder, tmp_path):
    args = tiny_recipe(folder, tmp_path, "x")[:2]
    proc = run([*args, f"runtime.out_dir={tmp_path}", "--resume", "auto"], check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --resume auto: set runtime.run_name")


# ---------------------------------------------------------------- torchrun --max-restarts

def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def wait_for_mid_epoch_checkpoint(path: Path, proc: subprocess.Popen, timeout=60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if load_checkpoint(path)["step_in_epoch"]:
                return
        except Exception:       # mid-rename: try again
            pass
        time.sleep(0.005)
    raise AssertionError("no mid-epoch checkpoint appeared")


@pytest.mark.slow
def test_torchrun_max_restarts_survives_a_sigkilled_worker(folder, tmp_path):
    # 6 steps/epoch (global batch 6 = 2 x 3), a step checkpoint every 4: most are mid-epoch.
    long = ["schedule.epochs=8", "train.global_batch=6", "runtime.checkpoint_every_steps=4",
            "runtime.sync_batchnorm=true"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run([*launcher, *map(str, tiny_recipe(folder, tmp_path, "straight", *long))], cwd=ROOT, env=ENV,
                   check=True, capture_output=True, timeout=300)

    cmd = [*launcher, "--max-restarts=1", *map(str, tiny_recipe(folder, tmp_path, "killed", *long)),
           "--resume", "auto"]
    log = tmp_path / "torchrun.log"      # a file, not a pipe: nobody reads a pipe while we wait
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        wait_for_rows(tmp_path / "killed" / "metrics.jsonl", 3, proc)
        wait_for_mid_epoch_checkpoint(tmp_path / "killed" / "last.pt", proc)     # so the restart resumes mid-epoch
        workers = children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        try:
            proc.wait(timeout=200)
        finally:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert text.count("plan: world 2") == 2 and "resumed from" in text     # started twice, resumed once
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["train_step"]["optimizer_steps"] == 48
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "killed"), rtol=0, atol=0)


# ---------------------------------------------------------------- non-finite loss

def nan_batch(size=4):
    x, y = batches(1, size)[0]
    x[0] = float("nan")
    return x, y


def test_nonfinite_skip_leaves_weights_untouched_and_counts():
    model = tiny_mlp()
    step = make_step(model)
    step.nonfinite = "skip"
    before = [p.detach().clone() for p in model.parameters()]
    step.micro(*nan_batch(), last_in_step=True)
    assert step.skipped_steps == 1 and step.optimizer_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    step.micro(*batches(1, 4)[0], last_in_step=True)          # a good step still trains
    assert step.skipped_steps == 1 and not torch.equal(before[1], model[1].weight)


def test_nonfinite_stop_raises_a_clear_error():
    step = make_step(tiny_mlp())
    with pytest.raises(NonFiniteLoss, match="non-finite loss or gradient by optimizer step 1.*train.nonfinite=skip"):
        step.micro(*nan_batch(), last_in_step=True)


def test_checkpointer_never_replaces_good_weights_with_nonfinite_ones(tmp_path):
    ck = Checkpointer(tmp_path, "top1", enabled=True)
    good = {"format": "trainkit-checkpoint/1", "epoch": 1, "model": {"w": torch.ones(2)},
            "train_step": {"optimizer_steps": 1}}
    ck.save(good, {"top1": 50.0})
    bad = {**good, "epoch": 2, "model": {"w": torch.tensor([1.0, float("nan")])}}
    ck.save(bad, {"top1": 60.0})
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_nonfinite_and_checkpoint_keys_are_validated(folder, tmp_path):
    _, recipe, *_ = tiny_recipe(folder, tmp_path, "x")
    with pytest.raises(RecipeError, match="train.nonfinite: invalid value 'ignore'"):
        load_recipe(recipe, ["train.nonfinite=ignore"])
    with pytest.raises(RecipeError, match="runtime.checkpoint_every_steps: must be >= 1"):
        load_recipe(recipe, ["runtime.checkpoint_every_steps=0"])


def test_nonfinite_gradient_with_a_finite_loss_is_caught():
    # Seen in practice: bf16 conv backward on a 1x1 map returns inf/NaN gradients while the loss is fine.
    model = tiny_mlp()
    step = make_step(model)
    step.nonfinite = "skip"
    handle = model[1].weight.register_hook(lambda g: g * float("nan"))
    before = [p.detach().clone() for p in model.parameters()]
    loss = step.micro(*batches(1, 4)[0], last_in_step=True)
    assert torch.isfinite(loss) and step.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    handle.remove()
    stop = make_step(tiny_mlp())
    stop.model[1].weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(NonFiniteLoss):
        stop.micro(*batches(1, 4)[0], last_in_step=True)
