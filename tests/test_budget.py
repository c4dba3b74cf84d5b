"""schedule.budget_minutes: the epochs that fit a wall-clock budget, decided once from (here stubbed)
timings, laid out by the schedule, recorded, and reused unchanged by a resumed run."""

from __future__ import annotations

import json

import pytest

from helpers_distill import run_entry
from trainkit.config.recipe import load_recipe, recipe_hash
from trainkit.config.schema import RecipeError
from trainkit.runtime.checkpoint import load_checkpoint
from trainkit.train import session as session_module
from trainkit.train.budget import Costs, epochs_within, estimate_s, least_epochs, validations


def test_epochs_within_takes_the_most_that_fit_counting_validations():
    costs = Costs(spent_s=100, epoch_s=60, val_s=10, final_s=20)
    # every epoch validated: 100 + 70 n + 20 <= 600 -> n = 6
    assert epochs_within(600, costs, cap=50, eval_every=1) == 6
    # every 3rd epoch (and the last): n = 7 costs 100 + 420 + 3 x 10 + 20 = 570; n = 8 costs 630
    assert validations(7, 3) == 3 and validations(6, 3) == 2
    assert epochs_within(600, costs, cap=50, eval_every=3) == 7
    assert estimate_s(7, costs, 3) == 570
    assert epochs_within(600, costs, cap=5, eval_every=1) == 5          # schedule.epochs is the cap
    assert epochs_within(100, costs, cap=5, eval_every=1) == 1          # not even one fits: one, with a warning


def test_the_estimate_counts_the_validations_the_trainer_runs():
    """A run whose val is the test split (selected_on last) skips its last val pass (the summary's test pass is
    it): the budget counts what Trainer.validates_after runs, so such a run may fit one more epoch."""
    from types import SimpleNamespace

    from trainkit.train.trainer import Trainer
    for epochs in range(1, 13):
        for every in (1, 2, 3, 5, 10):
            for selected_on in ("val", "last"):
                fake = SimpleNamespace(plan=SimpleNamespace(epochs=epochs, selected_on=selected_on),
                                       recipe=SimpleNamespace(train=SimpleNamespace(eval_every_epochs=every)))
                runs = sum(Trainer.validates_after(fake, n) for n in range(1, epochs + 1))
                assert validations(epochs, every, selected_on != "last") == runs, (epochs, every, selected_on)
    costs = Costs(spent_s=100, epoch_s=60, val_s=30, final_s=20)
    # every epoch validated: 100 + 90 n + 20 <= 560 -> 4; without the last pass 100 + 90 n - 30 + 20 <= 560 -> 5
    assert epochs_within(560, costs, cap=50, eval_every=1) == 4
    assert epochs_within(560, costs, cap=50, eval_every=1, validates_last=False) == 5


def test_a_budget_never_decides_fewer_epochs_than_the_warmup_needs():
    # warmup_epochs < epochs is the recipe's own rule; a budget of 1 epoch with a 1-epoch warmup would
    # leave an lr that only rises and never decays
    assert [least_epochs(w) for w in (0, 0.5, 1, 2.5)] == [1, 1, 2, 3]
    costs = Costs(spent_s=100, epoch_s=60, val_s=10, final_s=20)
    assert epochs_within(100, costs, cap=5, eval_every=1, least=2) == 2
    assert epochs_within(600, costs, cap=50, eval_every=1, least=2) == 6   # more fit: the floor changes nothing


def test_budget_minutes_is_checked_and_enters_the_hash_only_when_set():
    base = ["data.root=/data"]
    plain = load_recipe("recipes/cifar10_speedrun.yaml", base)
    budgeted = load_recipe("recipes/cifar10_speedrun.yaml", [*base, "schedule.budget_minutes=15"])
    assert recipe_hash(plain) != recipe_hash(budgeted)   # the intent is part of what is trained
    assert recipe_hash(budgeted) != recipe_hash(load_recipe("recipes/cifar10_speedrun.yaml",
                                                            [*base, "schedule.budget_minutes=10"]))
    with pytest.raises(RecipeError, match="schedule.budget_minutes"):
        load_recipe("recipes/cifar10_speedrun.yaml", [*base, "schedule.budget_minutes=0"])


@pytest.mark.parametrize("schedule", [["schedule.name=multistep", "schedule.milestones=[8,9]"],
                                      ["schedule.name=step", "schedule.step_epochs=5"]])
def test_a_budget_is_refused_with_a_schedule_that_decays_at_fixed_epochs(schedule):
    # a budget that decides 6 epochs would never reach milestone 8: the lr would never decay
    recipe = "recipes/cifar10_lt_resnet32_ce.yaml"
    assert load_recipe(recipe, schedule).schedule.budget_minutes is None   # fine without a budget
    with pytest.raises(RecipeError, match=r"^schedule.budget_minutes: .* use cosine, linear or onecycle"):
        load_recipe(recipe, [*schedule, "schedule.budget_minutes=10"])


class StubClock:
    """Stands in for the step timing and the process clock inside the run session; counts decisions."""
    img_per_s = 3.0
    calls = 0

    @classmethod
    def rate(cls, *args, **kwargs) -> float:
        cls.calls += 1
        return cls.img_per_s


def test_decision_is_recorded_laid_out_and_reused_on_resume(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "bare_step_rate", StubClock.rate)
    monkeypatch.setattr(session_module, "process_seconds", lambda: 10.0)
    # 33 training images, batch 6: 5 steps = 30 images per epoch; at 3 img/s x 0.85 an epoch is about
    # 11.8 s, so 10 s spent + 2 epochs (+ tiny evaluations) fit 45 s and 3 epochs do not.
    args = ["recipes/cifar10_resnet20.yaml", f"data.root={image_folder}", "data.train_size=16", "data.eval.size=16",
            "train.global_batch=6", "train.precision=fp32", "schedule.epochs=4", "schedule.budget_minutes=0.75",
            "runtime.keep_epoch_checkpoints=true", "runtime.workers=0", "runtime.threads=1",
            f"runtime.out_dir={tmp_path}", "runtime.run_name=r"]
    assert run_entry("train.py", args, monkeypatch) == 0
    run_dir = tmp_path / "r"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["train_lr"] == pytest.approx(0.0, abs=1e-9)   # the cosine was laid out over 2 epochs, not 4
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["epochs"] == 2 and plan["total_steps"] == 2 * plan["steps_per_epoch"]
    record = plan["budget"]
    assert (record["epochs"], record["cap_epochs"], record["source"], record["spent_s"]) == (2, 4, "estimate", 10.0)
    assert record["estimate_s"] <= 45
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["budget"] == record and summary["epochs"] == 2 and summary["process_wall_s"] > 0
    assert "budget: 0.75 min -> 2 epochs (estimate;" in (run_dir / "train.log").read_text()
    assert sorted(p.name for p in run_dir.glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    assert load_checkpoint(run_dir / "epoch_001.pt")["epoch"] == 1
    assert StubClock.calls == 1

    # Resume from epoch 1 on a machine now ten times faster (4 epochs would fit): the run keeps 2.
    monkeypatch.setattr(StubClock, "img_per_s", 30.0)
    assert run_entry("train.py", [*args, "--resume", str(run_dir / "epoch_001.pt")], monkeypatch) == 0
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["epochs"] == 2 and plan["budget"] == {**record, "source": "checkpoint"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 2]
    assert load_checkpoint(run_dir / "last.pt")["train_step"]["scheduler"]["step"] == 2 * plan["steps_per_epoch"]
    assert StubClock.calls == 1   # never re-decided


def test_a_short_budget_with_warmup_still_decays_the_lr(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "bare_step_rate", lambda *a, **k: 3.0)
    monkeypatch.setattr(session_module, "process_seconds", lambda: 10.0)
    # one epoch (about 12 s at 3 img/s) fits 0.4 min, but the 1-epoch warmup needs a second one to decay
    args = ["recipes/cifar10_resnet20.yaml", f"data.root={image_folder}", "data.train_size=16", "data.eval.size=16",
            "train.global_batch=6", "train.precision=fp32", "schedule.epochs=4", "schedule.warmup_epochs=1",
            "schedule.budget_minutes=0.4", "runtime.workers=0", "runtime.threads=1", f"runtime.out_dir={tmp_path}",
            "runtime.run_name=r"]
    assert run_entry("train.py", args, monkeypatch) == 0
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    assert plan["epochs"] == plan["budget"]["epochs"] == 2
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_lr"] == pytest.approx(0.0, abs=1e-9)   # warmed up over epoch 1, decayed over epoch 2
