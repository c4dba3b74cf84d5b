"""The plan: values derived from a recipe and the hardware it runs on.

The recipe says what to train (``global_batch``, ``lr`` per ``lr_ref_batch``);
the plan says how this launch does it (world size, per-device batch,
accumulation steps, scaled lr). It is printed at start-up and saved beside the
recipe, so a run on other hardware never silently trains a different recipe.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import torch

from trainkit.config.schema import RecipeError
from trainkit.train.optim import scaled_lr
from trainkit.config.recipe import Recipe, recipe_hash


@dataclass(frozen=True)
class Plan:
    recipe_hash: str
    device: str
    world_size: int
    precision: str                # fp32 | bf16 | fp16 as decided (trainkit.train.numerics); amp: not yet decided
    global_batch: int
    per_device_batch: int
    accum_steps: int
    eval_batch: int
    lr: float                     # scaled to global_batch
    epochs: int                   # epochs begun: schedule.epochs rounded up (a fraction ends the last one early)
    steps_per_epoch: int
    total_steps: int              # optimizer steps of the whole run (the schedule is laid out over them)
    warmup_steps: int
    num_classes: int
    in_chans: int
    train_samples: int
    val_samples: int
    test_samples: int
    in_memory: bool               # training data served by the in-memory fast path
    selected_on: str = "val"      # what best.pt is chosen on: val, holdout (data.val_from_train), or last (val is
                                  # the test split: no choice)
    report_split: str = "test"    # the split the summary evaluates, named as it is (val without a test split)
    precision_requested: str = "" # train.precision as the recipe says it (amp: decided at start-up)
    channels_last: bool = False   # the memory format used (runtime.channels_last, or the probe's choice)
    numerics_source: str = ""     # recipe | device | probe | checkpoint; "" while undecided (--print)
    numerics_probe: dict | None = None   # "<precision> <layout>": bare-step img/s the probe measured
    # schedule.budget_minutes: the decision (epochs) and its estimate (trainkit.train.budget); None without
    # a budget, or while undecided (--print, and until the Trainer has decoded the data)
    budget: dict | None = None
    # the weights the run is evaluated and published with (trainkit.models.hub.run_weights): ema when it
    # chooses its best checkpoint by an EMA metric (train.best_metric ema_*), else raw
    eval_weights: str = "raw"

    def with_numerics(self, numerics) -> "Plan":
        """This plan with the run's decided precision and memory format (a ``Numerics``)."""
        return dataclasses.replace(self, precision=numerics.precision, channels_last=numerics.channels_last,
                                   numerics_source=numerics.source, numerics_probe=numerics.probe)

    def with_budget(self, record: dict) -> "Plan":
        """This plan with the epochs a wall-clock budget decided (``trainkit.train.budget``)."""
        return dataclasses.replace(self, epochs=record["epochs"], total_steps=self.steps_per_epoch * record["epochs"],
                                   budget=record)

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps of epoch ``epoch`` (0-based): all of them, but fewer in a fractional last one."""
        return max(0, min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch))

    @property
    def schedule_epochs(self) -> float:
        """The epochs the lr schedule is laid out over (fractional when schedule.epochs is)."""
        return self.total_steps / self.steps_per_epoch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary_line(self) -> str:
        return (f"plan: world {self.world_size} x per-device batch {self.per_device_batch} x accum "
                f"{self.accum_steps} = global batch {self.global_batch}; effective lr {self.lr:.4g}; "
                f"{self.precision} on {self.device}; {self.steps_per_epoch} steps/epoch x {self.epochs} epochs; "
                f"{'in-memory' if self.in_memory else 'per-sample'} data")

    def selection_line(self) -> str:
        """What the final figure is: which checkpoint, chosen on what, evaluated on which split."""
        if self.selected_on == "last":
            return ("selection: val is the test split (data.holdout_fraction=0), so nothing is chosen on it: "
                    f"best-by-val is off and the last checkpoint is evaluated on {self.report_split} "
                    "(selected_on: last)")
        return (f"selection: best.pt is chosen on {self.selected_on}; the summary evaluates it on {self.report_split}"
                + (" (data.val_from_train: val/ chose nothing, it is only reported)" if self.selected_on == "holdout"
                   else " (no test split: the figure is a val figure, labelled val)" if self.report_split == "val"
                   else ""))

    def numerics_line(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        if not self.numerics_source:
            return f"numerics: train.precision={self.precision_requested} decided by a probe at start-up"
        text = (f"numerics: {self.precision}, {layout} ({self.numerics_source}; "
                f"train.precision={self.precision_requested})")
        if self.numerics_probe:
            text += "; probe, bare-step img/s: " + ", ".join(f"{k} {v:.0f}" for k, v in self.numerics_probe.items())
        return text

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def batch_split(recipe: Recipe, world: int) -> tuple[int, int]:
    """(per_device_batch, accum_steps) such that world x per_device x accum = global_batch."""
    gb = recipe.train.global_batch
    per_device = recipe.runtime.per_device_batch
    if per_device is None:
        if gb % world:
            raise RecipeError(f"train.global_batch={gb} is not divisible by the world size {world}; "
                              "set runtime.per_device_batch")
        return gb // world, 1
    if gb % (per_device * world):
        raise RecipeError(f"train.global_batch={gb} is not divisible by runtime.per_device_batch={per_device} "
                          f"x world size {world}; choose a per-device batch that divides "
                          f"{gb // world if gb % world == 0 else gb}")
    return per_device, gb // (per_device * world)


def total_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: a fractional ``schedule.epochs`` (9.9) ends part-way through its last
    epoch, rounded up to a whole step as airbench does."""
    return math.ceil(round(epochs * steps_per_epoch, 6))


def make_plan(recipe: Recipe, *, device: torch.device, world: int, split_sizes: dict[str, int],
              num_classes: int, in_chans: int, in_memory: bool, val_is_test: bool = False,
              report_split: str = "test", val_name: str = "val") -> Plan:
    """``val_is_test``: the val split is the test split (no selection on it); ``report_split``:
    the name of the split the summary reports (see trainkit.data.sources.val_is_test); ``val_name``: the
    val split's own name (``holdout`` when data.val_from_train carved it from train), what ``selected_on`` says."""
    per_device, accum = batch_split(recipe, world)
    rt, sch = recipe.runtime, recipe.schedule
    per_rank = split_sizes["train"] // world
    micro = per_rank // per_device if rt.drop_last else -(-per_rank // per_device)
    steps = micro // accum if rt.drop_last else -(-micro // accum)
    if steps < 1:
        raise RecipeError(f"train.global_batch={recipe.train.global_batch} is larger than the training set "
                          f"({split_sizes['train']} images); lower it or set runtime.drop_last=false")
    return Plan(
        recipe_hash=recipe_hash(recipe), device=str(device), world_size=world,
        precision=recipe.train.precision, precision_requested=recipe.train.precision,
        channels_last=recipe.runtime.channels_last is True, global_batch=recipe.train.global_batch,
        per_device_batch=per_device, accum_steps=accum, eval_batch=rt.eval_batch or 2 * per_device,
        lr=scaled_lr(recipe.optim, recipe.train.global_batch), epochs=math.ceil(sch.epochs), steps_per_epoch=steps,
        total_steps=total_steps(sch.epochs, steps), warmup_steps=round(sch.warmup_epochs * steps),
        num_classes=num_classes, in_chans=in_chans, train_samples=split_sizes["train"],
        val_samples=split_sizes["val"], test_samples=split_sizes["test"], in_memory=in_memory,
        selected_on="last" if val_is_test else val_name, report_split=report_split,
        eval_weights="ema" if recipe.train.best_metric.startswith("ema_") else "raw")
