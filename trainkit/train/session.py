"""One run session: a recipe and its overrides -> the resolved recipe, the final plan, the data, the run
folder and the Trainer. Every entry point that trains sets its run up here (train.py; the sweep worker;
ablate.py and ``sweep.py --final-test retrain`` through train.py), so they cannot drift apart.

    session = RunSession.open("recipes/quickstart.yaml", ["optim.lr=0.05"])
    summary = session.trainer.summarize(session.trainer.fit())

The order is fixed: recipe (a file with overrides, or the checkpoint's own on ``--resume``) -> process
set-up (device, threads, seeds) -> data -> plan (numerics decided) -> run folder -> loaders (the decode is
measured) -> ``schedule.budget_minutes`` decided -> the plan is final and written to ``plan.json`` ->
Trainer -> resume. The Trainer never changes the plan, so ``plan.json`` is the plan that ran, also when
a time budget shortened it. A resumed run keeps its recipe path (saved in every checkpoint), so its
``summary.json`` names the same recipe file as an uninterrupted run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from trainkit.config.recipe import Recipe, apply_overrides, check_schedule_points, load_recipe, parse_recipe, \
    schedule_points
from trainkit.config.schema import RecipeError
from trainkit.data.sources import Data, Split, prepare_data, val_is_test
from trainkit.runtime.checkpoint import load_checkpoint, resolve_checkpoint
from trainkit.runtime.distributed import DistInfo, init_distributed
from trainkit.runtime.environment import process_seconds
from trainkit.runtime.faults import newest_valid_checkpoint
from trainkit.runtime.host_memory import reuse_freed_memory
from trainkit.train import budget
from trainkit.train.numerics import bare_step_rate
from trainkit.train.plan import Plan
from trainkit.train.trainer import Loaders, Trainer, build_loaders, plan_for, run_folder, seed_everything, \
    write_run_header

log = logging.getLogger("trainkit")


@dataclass(frozen=True)
class Resolved:
    """What the command line names: the recipe to run, the file it came from, the checkpoint to continue."""
    recipe: Recipe
    recipe_path: str | None
    checkpoint: Path | None


def resolve_run(recipe_path: str | None, overrides: list[str], resume: str | None) -> Resolved:
    """``resume``: None, a checkpoint, a run folder (its newest loadable checkpoint) or ``auto`` (the folder
    runtime.out_dir/runtime.run_name when it has a checkpoint, else a fresh run there). Without a recipe file
    the checkpoint's own resolved recipe runs, and its saved recipe path names it."""
    if not resume:
        return Resolved(load_recipe(recipe_path, overrides), recipe_path, None)
    if resume == "auto":
        recipe = load_recipe(recipe_path, overrides)
        if recipe.runtime.run_name is None:
            raise RecipeError("--resume auto: set runtime.run_name=NAME, a fixed run folder to continue "
                              "(the default name carries a timestamp, so a restart would not find it)")
        ckpt = newest_valid_checkpoint(Path(recipe.runtime.out_dir) / recipe.runtime.run_name)
        return Resolved(recipe, recipe_path, ckpt)
    ckpt_path = Path(resume)
    if ckpt_path.is_dir():
        ckpt_path = newest_valid_checkpoint(ckpt_path) or resolve_checkpoint(ckpt_path, "last")
    ckpt_path = resolve_checkpoint(ckpt_path, "last")
    if recipe_path:
        return Resolved(load_recipe(recipe_path, overrides), recipe_path, ckpt_path)
    saved = load_checkpoint(ckpt_path)
    recipe = parse_recipe(apply_overrides(saved["recipe"], overrides))
    check_schedule_points(recipe)
    return Resolved(recipe, saved.get("recipe_path"), ckpt_path)


def refuse_selection_on_test(splits: dict[str, Split]) -> None:
    """A sweep selects on val; when val is the test split (data.holdout_fraction=0 on a set with
    only train and test) that would report a number chosen on test."""
    if val_is_test(splits):
        raise RecipeError("the sweep selects on val, but this recipe's val split is the test split "
                          "(data.holdout_fraction=0 and no val/ folder); set data.holdout_fraction > 0 "
                          "or give the data a val split")


def decide_budget(recipe: Recipe, plan: Plan, dist: DistInfo, device: torch.device, decode_s_per_image: float) -> dict:
    """schedule.budget_minutes -> epochs (trainkit.train.budget), on rank 0 for every rank. The step timer builds
    a throw-away model: its random draws are taken from a forked RNG, so the run's model initialisation is the
    one an unbudgeted run of the same recipe gets."""

    def step_rate() -> float:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return bare_step_rate(recipe, plan.precision, plan.channels_last, batch=plan.per_device_batch,
                                  num_classes=plan.num_classes, in_chans=plan.in_chans, device=device,
                                  probed=plan.numerics_probe)
    sch = recipe.schedule
    return budget.decide_for_run(sch.budget_minutes, plan, spent_s=process_seconds, step_rate=step_rate,
                                 decode_s_per_image=decode_s_per_image, cap=int(sch.epochs),
                                 eval_every=recipe.train.eval_every_epochs, is_main=dist.is_main,
                                 least=budget.least_epochs(sch.warmup_epochs, schedule_points(recipe).values()))


def log_to_file(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)


def shared_run_dir(path: Path, dist: DistInfo) -> Path:
    """Every rank must write into rank 0's folder (timestamps differ between processes)."""
    if not dist.enabled:
        return path
    import torch.distributed as tdist   # late: only a distributed run reaches here
    box = [str(path)]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0])


class RunSession:
    """One training run, set up: ``recipe``, ``recipe_path``, the final ``plan``, ``data``, ``dist``,
    ``device``, ``run_dir``, ``checkpoint`` (resumed from) and the built ``trainer`` (None for ``--print``)."""

    def __init__(self, resolved: Resolved, plan: Plan, data: Data, dist: DistInfo, device: torch.device,
                 run_dir: Path | None = None, trainer: Trainer | None = None):
        self.recipe, self.recipe_path, self.checkpoint = resolved.recipe, resolved.recipe_path, resolved.checkpoint
        self.plan, self.data, self.dist, self.device = plan, data, dist, device
        self.run_dir, self.trainer = run_dir, trainer

    @classmethod
    def open(cls, recipe_path: str | None, overrides: list[str] = (), *, resume: str | None = None,
             print_only: bool = False, sweep_trial: bool = False) -> "RunSession":
        """Set the run up (see the module docstring). ``print_only``: stop after the plan (no run folder, no
        probe, the budget undecided); ``sweep_trial``: the run folder is runtime.out_dir/runtime.run_name,
        which must be set, and a val split that is the test split is refused (the sweep selects on val)."""
        resolved = resolve_run(recipe_path, list(overrides), resume)
        recipe = resolved.recipe
        if sweep_trial and recipe.runtime.run_name is None:
            raise RecipeError("a sweep trial needs runtime.run_name (sweep.py sets it)")
        dist, device = init_distributed(recipe.runtime.device)
        if not dist.is_main:    # one copy of the log: rank 0's (warnings and errors from every rank)
            logging.getLogger().setLevel(logging.WARNING)
        if recipe.runtime.threads:
            torch.set_num_threads(recipe.runtime.threads)
        # before the data decode and the first step: every large block from here on is reused, not re-faulted
        reuse = recipe.runtime.reuse_freed_memory
        reused = (device.type == "cpu" if reuse == "auto" else reuse) and reuse_freed_memory()
        seed_everything(recipe.train.seed, recipe.train.deterministic, device, recipe.runtime.cudnn_benchmark)
        data = prepare_data(recipe, dry_run=print_only)
        if sweep_trial:
            refuse_selection_on_test(data.splits)
        # A resumed run keeps the precision, layout and budget its checkpoint was trained with.
        saved_plan = load_checkpoint(resolved.checkpoint)["plan"] if resolved.checkpoint is not None else None
        plan = plan_for(recipe, data, dist, device, saved_plan=saved_plan, probe=not print_only)
        if print_only:
            return cls(resolved, plan, data, dist, device)

        if resolved.checkpoint is not None:
            run_dir = resolved.checkpoint.parent
        else:
            run_dir = shared_run_dir(run_folder(recipe_path, recipe.runtime.out_dir, recipe.runtime.run_name), dist)
        if dist.is_main:
            write_run_header(run_dir, recipe)
            log_to_file(run_dir / "train.log")
        log.info("data: %s (train %d, val %d, test %d images, %d classes)", data.description, plan.train_samples,
                 plan.val_samples, plan.test_samples, plan.num_classes)
        loaders = build_loaders(recipe, plan, data, dist, device)
        if recipe.schedule.budget_minutes is not None and plan.budget is None:
            # After the decode (measured, inside the budget), before the schedule is laid out.
            plan = plan.with_budget(decide_budget(recipe, plan, dist, device, loaders.decode_s_per_image))
        for line in (plan.summary_line(), plan.selection_line(), plan.numerics_line()):
            log.info("%s", line)
        if plan.budget:
            log.info("%s", budget.budget_line(plan.budget))
        if reused:
            log.info("host memory: freed blocks kept for reuse (runtime.reuse_freed_memory; glibc mmap off)")
        log.info("run folder: %s", run_dir)
        if dist.is_main:   # final from here on: the plan that runs
            write_run_header(run_dir, recipe, plan)
        trainer = Trainer(recipe, plan, data, dist, device, run_dir, resolved.recipe_path, loaders=loaders)
        if resolved.checkpoint is not None:
            trainer.resume(resolved.checkpoint)
        return cls(resolved, plan, data, dist, device, run_dir, trainer)


__all__ = ["RunSession", "Resolved", "resolve_run", "refuse_selection_on_test", "decide_budget", "Loaders"]
