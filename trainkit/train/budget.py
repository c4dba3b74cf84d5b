"""``schedule.budget_minutes``: the number of epochs that fit a wall-clock budget, decided once.

The budget covers the whole process: start-up, imports, the JPEG decode, the precision probe,
the training epochs, every validation and the summary's test evaluation. The Trainer decides
just before it builds the schedule (the data is decoded by then, so that cost is measured, not
guessed) and the schedule (onecycle, cosine, ...) is laid out over the epochs decided;
``schedule.epochs`` is the cap. The estimate for ``n`` epochs:

    spent so far + n x epoch_s + (validations in n epochs) x val_s + final_s

- ``epoch_s``: training images per rank per epoch / (the bare step's img/s x LOOP_EFFICIENCY).
  The bare step is the precision probe's figure for the numerics chosen (a fresh StepTimer
  measures it when no probe ran);
- ``val_s``: val images per rank / (that img/s x EVAL_SPEEDUP);
- ``final_s``: the test split decoded again (at the measured decode cost per image of the val
  split) and evaluated like val.

The decision (and every figure behind it) goes to the log in one line, ``plan.json``, every
checkpoint and ``summary.json`` (beside the actual wall time). A resumed run reuses it, never
re-decides: its schedule must not move. Under DDP rank 0 decides and every rank uses that.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Iterable

from trainkit.runtime.distributed import broadcast_from_main

log = logging.getLogger("trainkit")

# The real loop (batched augmentation, loader, loss read every log_every_steps, EMA, ...) against the
# bare step on synthetic tensors. Below 1 so that an error lands under the budget, not over it.
LOOP_EFFICIENCY = 0.85
# A forward pass without gradients costs about a third of forward + backward + optimizer step.
EVAL_SPEEDUP = 3.0


@dataclass(frozen=True)
class Costs:
    """Seconds, as estimated at the decision (per rank: every rank works in parallel)."""
    spent_s: float      # from process start to the decision (start-up, decode, probe: measured)
    epoch_s: float      # one training epoch
    val_s: float        # one validation
    final_s: float      # the summary's test evaluation (decode included)


def validations(epochs: int, eval_every: int, validates_last: bool = True) -> int:
    """How many validations ``epochs`` epochs run, as Trainer.validates_after decides them: every ``eval_every``
    epochs, and after the last unless ``validates_last`` is False (val is the test split, selected_on "last":
    the summary's test pass is that last validation)."""
    if not validates_last:
        return (epochs - 1) // eval_every
    return epochs // eval_every + (epochs % eval_every != 0)


def estimate_s(epochs: int, costs: Costs, eval_every: int, validates_last: bool = True) -> float:
    return (costs.spent_s + epochs * costs.epoch_s + validations(epochs, eval_every, validates_last) * costs.val_s
            + costs.final_s)


def epochs_within(budget_s: float, costs: Costs, *, cap: int, eval_every: int, least: int = 1,
                  validates_last: bool = True) -> int:
    """The most epochs (least..cap) whose estimate fits ``budget_s``; ``least`` when not even that many fit."""
    fits = [n for n in range(least, cap + 1) if estimate_s(n, costs, eval_every, validates_last) <= budget_s]
    return max(fits, default=least)


def least_epochs(warmup_epochs: float, points: Iterable[float] = ()) -> int:
    """The fewest epochs a schedule with ``warmup_epochs`` may run: more than its warmup (the recipe check's
    ``warmup_epochs < epochs``), else the whole run would be warmup and the lr would never decay; and more
    than every epoch point (``trainkit.config.recipe.schedule_points``: re-weighting from, mixing off at,
    unfreeze after, ...), which the recipe check held below schedule.epochs: a budget never makes one dead."""
    return math.floor(max([warmup_epochs, *points])) + 1


def costs_for(plan, *, spent_s: float, step_img_per_s: float, decode_s_per_image: float) -> Costs:
    """The cost model above from the run's plan and the measured figures."""
    world = plan.world_size
    eval_rate = step_img_per_s * EVAL_SPEEDUP
    images = plan.steps_per_epoch * plan.accum_steps * plan.per_device_batch
    test = plan.test_samples / world
    return Costs(spent_s=spent_s, epoch_s=images / (step_img_per_s * LOOP_EFFICIENCY),
                 val_s=plan.val_samples / world / eval_rate, final_s=test * decode_s_per_image + test / eval_rate)


def decide(budget_minutes: float, plan, costs: Costs, *, cap: int, eval_every: int,
           step_img_per_s: float, least: int = 1) -> dict:
    """The budget decision as recorded in plan.json (``Plan.budget``); ``least``: :func:`least_epochs`."""
    validates_last = plan.selected_on != "last"   # a run whose val is the test split skips its last val pass
    epochs = epochs_within(budget_minutes * 60, costs, cap=cap, eval_every=eval_every, least=least,
                           validates_last=validates_last)
    estimate = estimate_s(epochs, costs, eval_every, validates_last)
    record = {"minutes": budget_minutes, "epochs": epochs, "cap_epochs": cap, "source": "estimate",
              "estimate_s": round(estimate, 1), "step_img_per_s": round(step_img_per_s, 1),
              "loop_efficiency": LOOP_EFFICIENCY, "eval_speedup": EVAL_SPEEDUP,
              **{k: round(v, 2) for k, v in asdict(costs).items()}}
    if estimate > budget_minutes * 60:
        log.warning("budget: %g min is too short for even %d epoch(s), the fewest the schedule allows (estimate "
                    "%.0f s); running %d", budget_minutes, epochs, record["estimate_s"], epochs)
    return record


def budget_line(record: dict) -> str:
    capped = " (the cap, schedule.epochs)" if record["epochs"] == record["cap_epochs"] else ""
    return (f"budget: {record['minutes']:g} min -> {record['epochs']} epochs{capped} ({record['source']}; estimate "
            f"{record['estimate_s']:.0f} s = {record['spent_s']:.0f} s spent + {record['epochs']} x "
            f"{record['epoch_s']:.1f} s training + validations at {record['val_s']:.1f} s + test "
            f"{record['final_s']:.1f} s; "
            f"bare step {record['step_img_per_s']:.0f} img/s x {record['loop_efficiency']})")


def decide_for_run(budget_minutes: float, plan, *, spent_s, step_rate, decode_s_per_image: float, cap: int,
                   eval_every: int, is_main: bool, least: int = 1) -> dict:
    """``decide`` on rank 0 (``spent_s()`` and ``step_rate()`` are called there only); every rank gets its record."""
    record = None
    if is_main:
        rate = step_rate()
        costs = costs_for(plan, spent_s=spent_s(), step_img_per_s=rate, decode_s_per_image=decode_s_per_image)
        record = decide(budget_minutes, plan, costs, cap=cap, eval_every=eval_every, step_img_per_s=rate,
                        least=least)
    return broadcast_from_main(record)


__all__ = ["Costs", "LOOP_EFFICIENCY", "EVAL_SPEEDUP", "validations", "estimate_s", "epochs_within", "least_epochs",
           "costs_for", "decide", "decide_for_run", "budget_line"]
