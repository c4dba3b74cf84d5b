"""EMA of weights: the update formula, warmup, every-N, checkpoint and resume, best by EMA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainkit.runtime.checkpoint import load_checkpoint
from trainkit.train.callbacks import StopTraining
from trainkit.runtime.distributed import DistInfo
from trainkit.train.ema import ModelEma
from trainkit.config.recipe import EmaCfg, load_recipe
from trainkit.data.sources import prepare_data
from trainkit.train.trainer import Trainer, plan_for, seed_everything

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def perturb(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    model.train()(torch.randn(8, 4, generator=gen))   # moves the BatchNorm buffers too


def test_ema_equals_the_update_formula_for_weights_and_buffers():
    model = small_model()
    ema = ModelEma(model, EmaCfg(decay=0.9))
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(5):
        perturb(model, step)
        ema.update(model)
        for k, v in model.state_dict().items():
            expected[k] = 0.9 * expected[k] + 0.1 * v if v.is_floating_point() else v.clone()
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)
    assert ema.updates == 5 and not any(p.requires_grad for p in ema.module.parameters())


def test_warmup_ramp_and_every_n_steps():
    cfg = EmaCfg(decay=0.999, warmup=True, warmup_gamma=1.0, warmup_power=2 / 3)
    ema = ModelEma(small_model(), cfg)
    assert ema.decay_at(0) == 0.0                       # the first update copies the weights
    assert ema.decay_at(10) == pytest.approx(1 - 11 ** (-2 / 3))
    assert ema.decay_at(10**9) == 0.999                 # capped at decay
    model = small_model()
    ema = ModelEma(model, EmaCfg(decay=0.5, every_steps=3))
    hook = ema.hook(model)
    for step in range(1, 10):
        hook(step)
    assert ema.updates == 3


def tiny_recipe(folder, out, name, *extra):
    return load_recipe(ROOT / "recipes" / "cifar10_resnet20.yaml", [
        f"data.root={folder}", "data.train_size=16", "data.eval.size=16", "train.global_batch=8",
        "train.precision=fp32", "train.deterministic=true", "schedule.epochs=2", "ema.decay=0.8",
        "runtime.workers=0", "runtime.threads=1", "runtime.progress=false", f"runtime.out_dir={out}",
        f"runtime.run_name={name}", *extra])


def build_trainer(recipe, run_dir, epochs=None):
    seed_everything(recipe.train.seed, True, CPU, False)
    data = prepare_data(recipe)
    plan = plan_for(recipe, data, DistInfo(), CPU)
    trainer = Trainer(recipe, plan, data, DistInfo(), CPU, run_dir, None)
    if epochs is not None:   # stop after this epoch, saved, as a crash then would (the schedule keeps every epoch)
        def stop(row: dict) -> None:
            if row["epoch"] >= epochs:
                raise StopTraining(f"stopped after epoch {epochs}")
        trainer.epoch_end.append(stop)
    return trainer


def test_ema_is_checkpointed_and_restored_on_resume(image_folder, tmp_path):
    recipe = tiny_recipe(image_folder, tmp_path, "x")
    whole = build_trainer(recipe, tmp_path / "whole")
    whole.fit()
    part = build_trainer(recipe, tmp_path / "part", epochs=1)
    part.fit()
    saved = load_checkpoint(tmp_path / "part" / "last.pt")["ema"]
    assert saved["updates"] == part.step.optimizer_steps > 0
    resumed = build_trainer(recipe, tmp_path / "part")
    resumed.resume(tmp_path / "part" / "last.pt")
    assert resumed.ema.updates == saved["updates"]
    for k, v in resumed.ema.module.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    resumed.fit()
    # Interrupted + resumed ends with the same EMA as the uninterrupted run.
    for k, v in resumed.ema.module.state_dict().items():
        torch.testing.assert_close(v, whole.ema.module.state_dict()[k], msg=k)
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert all("ema_val_top1" in r and "val_top1" in r for r in rows)


@pytest.mark.slow
def test_best_by_ema_metric_evaluates_ema_weights(image_folder, tmp_path):
    args = [f"data.root={image_folder}", "data.train_size=16", "data.eval.size=16", "train.global_batch=8",
            "schedule.epochs=1", "ema.decay=0.5", "train.best_metric=ema_top1", "runtime.workers=0",
            "runtime.threads=1", f"runtime.out_dir={tmp_path}", "runtime.run_name=e"]
    proc = subprocess.run([sys.executable, "train.py", "recipes/cifar10_resnet20.yaml", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["weights"] == "ema" and summary["best_val"]["metric"] == "ema_top1"
    # evaluate.py: the same EMA weights reproduce the summary; raw weights and TTA on request.
    for flags, weights, tta in (([], "ema", False), (["--no-ema", "--tta", "--tta-sizes", "12", "16"],
                                                      "raw", True)):
        proc = subprocess.run([sys.executable, "evaluate.py", str(tmp_path / "e"), *flags], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        name = "test-best-ema" if weights == "ema" else "test-best-tta"
        report = json.loads((tmp_path / "e" / "eval" / name / "metrics.json").read_text())
        assert report["weights"] == weights and report["tta"]["flip"] is tta
        if not tta:
            assert report["metrics"]["top1"] == summary["top1"]
