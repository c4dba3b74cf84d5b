"""Build everything a recipe names, then fit: the glue between train.py and the engine."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import timm
import torch

from trainkit import __version__
from trainkit.config import formats
from trainkit.config.recipe import Recipe, recipe_dict, recipe_hash, recipe_yaml
from trainkit.config.schema import RecipeError
from trainkit.data.loaders import LoaderSettings, choose_path, make_loader
from trainkit.train.feature_cache import HeadOnly, cache_features
from trainkit.data.mixup import Mixup
from trainkit.data.sources import Data, report_split, val_is_test
from trainkit.eval.loop import evaluate
from trainkit.eval.pipeline import evaluate_checkpoint
from trainkit.eval.tta import with_tta
from trainkit.models.build import count_params
from trainkit.models.hub import build_model
from trainkit.runtime.checkpoint import FORMAT, capture_rng, load_checkpoint, restore_rng
from trainkit.runtime.distributed import DistInfo, barrier, convert_sync_batchnorm
from trainkit.runtime.environment import git_commit, hardware_description, process_seconds
from trainkit.runtime.faults import Preempted, StopOnSigterm
from trainkit.train.callbacks import Checkpointer, RunLogger, StopTraining, peak_memory_mb
from trainkit.train.distill import build_distillation
from trainkit.train.ema import ModelEma
from trainkit.train.engine import TrainStep, train_one_epoch
from trainkit.train.finetune import Finetuner
from trainkit.train.lookahead import Lookahead
from trainkit.train.losses import build_loss
from trainkit.train.optim import build_optimizer, build_scheduler
from trainkit.train.numerics import decide, decide_for_run
from trainkit.train.plan import Plan, make_plan

log = logging.getLogger("trainkit")


def seed_everything(seed: int, deterministic: bool, device: torch.device, cudnn_benchmark: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        # Autotune conv algorithms once per input shape; fixed shapes make this pay off.
        torch.backends.cudnn.benchmark = cudnn_benchmark


def plan_for(recipe: Recipe, data: Data, dist: DistInfo, device: torch.device, *, saved_plan: dict | None = None,
             probe: bool = True) -> Plan:
    """The run's plan with its numerics decided (trainkit.train.numerics): ``saved_plan`` (a resumed
    checkpoint's) keeps its decision; ``probe=False`` (``--print``) leaves a probe's choice undecided."""
    num_classes = recipe.model.num_classes or len(data.classes)
    if num_classes != len(data.classes):
        raise RecipeError(f"model.num_classes={num_classes} but the data set has {len(data.classes)} classes")
    # The one decision of the training data path; the train loader obeys it, so plan.json is what ran.
    in_memory = choose_path(recipe.data, data.splits["train"], train=True, augment=recipe.augment, chans=data.in_chans,
                            seed=recipe.train.seed, multiscale=recipe.multiscale)
    plan = make_plan(recipe, device=device, world=dist.world, split_sizes={k: len(v) for k, v in data.splits.items()},
                     num_classes=num_classes, in_chans=data.in_chans, in_memory=in_memory,
                     val_is_test=val_is_test(data.splits), report_split=report_split(data.splits),
                     val_name=data.splits["val"].name)
    if probe:
        numerics = decide_for_run(recipe, device, batch=plan.per_device_batch, num_classes=num_classes,
                                  in_chans=data.in_chans, run_steps=plan.total_steps * plan.accum_steps,
                                  saved=saved_plan, is_main=dist.is_main)
    else:
        numerics = decide(recipe, device, saved=saved_plan, run_steps=plan.total_steps * plan.accum_steps)
    plan = plan if numerics is None else plan.with_numerics(numerics)
    if recipe.schedule.budget_minutes is not None and saved_plan and saved_plan.get("budget"):
        # A resumed run keeps the epochs its budget decided: its schedule must not move.
        plan = plan.with_budget({**saved_plan["budget"], "source": "checkpoint"})
    return plan


INIT_FROM_DATA_IMAGES = 5000


def first_images(loader, count: int) -> torch.Tensor:
    """Up to ``count`` normalised training images from the start of epoch 0, at one size
    (multi-scale batches of other sizes are skipped) and before random erasing and mixup."""
    batches, seen = [], 0
    post, loader.post = loader.post, None   # statistics of images, not of mixed images
    try:
        for x, _ in loader:
            if batches and x.shape[-2:] != batches[0].shape[-2:]:
                continue
            batches.append(x)
            seen += len(x)
            if seen >= count:
                break
    finally:
        loader.post = post
    return torch.cat(batches)[:count]


def stem_bias(model: torch.nn.Module, epochs: int | None) -> torch.nn.Parameter | None:
    """The whitening stem's bias that ``model.stem_bias_epochs`` freezes after that many epochs (None: unset)."""
    if epochs is None:
        return None
    stem = getattr(model, "whiten", None)
    if stem is None or getattr(stem, "bias", None) is None:
        raise RecipeError(f"model.stem_bias_epochs: {type(model).__name__} has no whitening stem with a bias "
                          f"(speednet_cifar has one, and resnet*_cifar with model.kwargs.whiten_stem: true); "
                          f"leave it null")
    return stem.bias


def run_folder(recipe_path: str | None, out_dir: str, run_name: str | None) -> Path:
    stem = Path(recipe_path).stem if recipe_path else "run"
    name = run_name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(out_dir) / name
    suffix = 1
    while path.exists() and not run_name:
        path = Path(out_dir) / f"{name}-{suffix}"
        suffix += 1
    return path


@dataclass(frozen=True)
class Loaders:
    """The training and val loaders of a run, and what decoding val cost per image (the budget measures it)."""
    train: object
    val: object
    decode_s_per_image: float


def build_loaders(recipe: Recipe, plan: Plan, data: Data, dist: DistInfo, device: torch.device) -> Loaders:
    """The run's loaders as the plan says (its data path, batches and layout)."""
    rt = recipe.runtime
    common = dict(data=recipe.data, augment=recipe.augment, chans=plan.in_chans, device=device,
                  seed=recipe.train.seed, channels_last=plan.channels_last, rank=dist.rank, world=dist.world)
    mix = Mixup(recipe.mixup, plan.num_classes) if recipe.mixup.active else None
    decode_start = time.perf_counter()
    train = make_loader(data.splits["train"], train=True,
                        settings=LoaderSettings.from_runtime(rt, plan.per_device_batch, device, True),
                        multiscale=recipe.multiscale, mix=mix, in_memory=plan.in_memory, **common)
    if plan.in_memory:   # the one-time decode, reported apart from the epochs' training img/s
        seconds = time.perf_counter() - decode_start
        log.info("decoded train once: %d images in %.1f s (%.0f img/s); the epochs' img/s exclude it",
                 len(data.splits["train"]), seconds, len(data.splits["train"]) / max(seconds, 1e-9))
    decode_start = time.perf_counter()
    val = make_loader(data.splits["val"], train=False,
                      settings=LoaderSettings.from_runtime(rt, plan.eval_batch, device, False), **common)
    decode_s_per_image = (time.perf_counter() - decode_start) / max(1, len(data.splits["val"]))
    return Loaders(train, val, decode_s_per_image)


class Trainer:
    """Owns the built objects of one run and its run folder; ``fit()`` trains and summarises.

    ``plan`` is final (trainkit.train.session decides the budget before): the Trainer never changes it.
    ``loaders``: built by the session (whose budget timed their decode); None builds them here."""

    def __init__(self, recipe: Recipe, plan: Plan, data: Data, dist: DistInfo, device: torch.device,
                 run_dir: Path, recipe_path: str | None, loaders: Loaders | None = None):
        self.recipe, self.plan, self.data, self.dist, self.device = recipe, plan, data, dist, device
        self.run_dir, self.recipe_path = run_dir, recipe_path
        rt = recipe.runtime
        self.show_progress = rt.progress if rt.progress != "auto" else "auto"
        if not dist.is_main:
            self.show_progress = False

        if recipe.schedule.budget_minutes is not None and plan.budget is None:
            raise RecipeError("internal: schedule.budget_minutes is not decided in this plan; set the run up "
                              "through trainkit.train.session.RunSession, which decides it before the Trainer")
        loaders = loaders or build_loaders(recipe, plan, data, dist, device)
        self.model = build_model(recipe.model, plan.num_classes, plan.in_chans)
        if dist.enabled and rt.sync_batchnorm:
            self.model = convert_sync_batchnorm(self.model, device)
        self.model = self.model.to(device)
        if plan.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_loader, self.val_loader = loaders.train, loaders.val
        if hasattr(self.model, "init_from_data") and not recipe.model.pretrained:
            # Data-dependent init (e.g. speednet's whitening stem), before DDP broadcasts rank 0's weights.
            self.model.init_from_data(first_images(self.train_loader, INIT_FROM_DATA_IMAGES))
        self.finetune = Finetuner(self.model, recipe.finetune, plan.num_classes)
        self.params = count_params(self.model)   # after a possible new head
        optimizer = build_optimizer(self.model, recipe.optim, plan.lr,
                                    param_groups=self.finetune.param_groups(recipe.optim))
        # plan.epochs: schedule.epochs, or the epochs a budget decided (schedule.epochs is then the cap)
        scheduler = build_scheduler(optimizer, dataclasses.replace(recipe.schedule, epochs=plan.schedule_epochs),
                                    plan.steps_per_epoch)
        net = self.model
        if recipe.finetune.cache_features:
            # the frozen backbone runs once per image here; the epochs train the head on its features
            self.train_loader, self.val_loader = cache_features(
                self.model, data.splits, data=recipe.data, chans=plan.in_chans,
                train_settings=LoaderSettings.from_runtime(rt, plan.per_device_batch, device, True),
                eval_settings=LoaderSettings.from_runtime(rt, plan.eval_batch, device, False), device=device,
                precision=plan.precision, seed=recipe.train.seed, rank=dist.rank, world=dist.world)
            net = HeadOnly(self.model)
        if dist.enabled:
            # Frozen fine-tuning parts get no gradient while frozen; DDP must not wait for them. All
            # parameters are still trainable here, so DDP registers (and later syncs) them when unfrozen.
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=bool(self.finetune.frozen))
        # After the fine-tuning set-up (which may replace the head) and after DDP has broadcast rank
        # 0's weights: every rank's EMA starts from the same final model.
        self.ema = ModelEma(self.model, recipe.ema) if recipe.ema.decay is not None else None
        self.compile_s = 0.0
        if rt.compile:
            net = torch.compile(net)
        # class counts of the training split only (after data.imbalance and the val hold-out)
        counts = torch.bincount(torch.from_numpy(data.splits["train"].targets), minlength=plan.num_classes)
        self.task_loss = build_loss(recipe.loss, counts).to(device)
        loss_fn = build_distillation(self.task_loss, recipe.distill, student=self.model,
                                     student_eval=recipe.data.eval, in_chans=plan.in_chans,
                                     classes=list(data.classes), device=device)
        self.step = TrainStep(net, loss_fn, optimizer, scheduler, device=device,
                              precision=plan.precision, accum_steps=plan.accum_steps,
                              clip_grad_norm=recipe.optim.clip_grad_norm, nonfinite=recipe.train.nonfinite,
                              check_every_steps=rt.log_every_steps)
        # data.eval.tta: val sees the views the summary's test figure does (an ablation ranks it on val)
        self.eval_net = with_tta(net, recipe.data.eval.tta)
        self.lookahead = Lookahead(self.model, recipe.optim.lookahead, plan.total_steps) \
            if recipe.optim.lookahead is not None else None
        if self.lookahead is not None:   # before the EMA, which then averages the weights training goes on from
            self.step.after_step.append(self.lookahead)
        self.stem_bias = stem_bias(self.model, recipe.model.stem_bias_epochs)
        if self.ema is not None:
            self.step.after_step.append(self.ema.hook(self.model))

        self.logger = RunLogger(run_dir, enabled=dist.is_main)
        self.checkpointer = Checkpointer(run_dir, recipe.train.best_metric, enabled=dist.is_main,
                                         select=plan.selected_on != "last", keep_epochs=rt.keep_epoch_checkpoints)
        self.start_epoch = 0
        self.start_step_in_epoch = 0     # optimizer steps of start_epoch already done (mid-epoch resume)
        self.train_seconds = 0.0
        # Called with each epoch's row once that epoch is saved and logged; one may raise StopTraining
        # (a sweep's pruner does). Features that watch epochs go here, not into the loop.
        self.epoch_end: list[Callable[[dict], None]] = []
        self.stopped_early: str | None = None   # StopTraining's message when a callback ended the run

    # ------------------------------------------------------------ state

    def state(self, epoch: int, metrics: dict, step_in_epoch: int = 0) -> dict:
        """``epoch``: completed epochs; ``step_in_epoch``: optimizer steps done in the next one."""
        rec = self.recipe
        return {
            "format": FORMAT, "epoch": epoch, "step_in_epoch": step_in_epoch, "model": self.model.state_dict(),
            "train_step": self.step.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "rng": capture_rng(), "recipe": recipe_dict(rec), "recipe_path": self.recipe_path,
            "plan": self.plan.to_dict(),
            "classes": list(self.data.classes), "arch": rec.model.name, "num_classes": self.plan.num_classes,
            "in_chans": self.plan.in_chans, "eval": recipe_dict(rec)["data"]["eval"], "metrics": metrics,
            "train_seconds": self.train_seconds,
            "versions": {"torch": str(torch.__version__), "timm": str(timm.__version__), "trainkit": __version__},
        }

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt["plan"]["recipe_hash"] != self.plan.recipe_hash:
            raise RecipeError(f"cannot resume from {path}: it was trained by a different recipe "
                              f"(hash {ckpt['plan']['recipe_hash']} vs {self.plan.recipe_hash})")
        self.model.load_state_dict(ckpt["model"])
        self.step.load_state_dict(ckpt["train_step"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        if self.lookahead is not None and ckpt.get("lookahead"):
            self.lookahead.load_state_dict(ckpt["lookahead"])
        restore_rng(ckpt["rng"])
        self.checkpointer.load_state(ckpt.get("best"))
        self.start_epoch = int(ckpt["epoch"])
        # Saved in optimizer steps, not micro-batches, so a resume on another world size stays exact.
        self.start_step_in_epoch = int(ckpt.get("step_in_epoch", 0))
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        log.info("resumed from %s at epoch %d, step %d of it (optimizer step %d)", path, self.start_epoch,
                 self.start_step_in_epoch, self.step.optimizer_steps)

    def on_step(self, epoch: int, micro_done: int) -> None:
        """After each optimizer step: the step checkpoint, and the checkpoint before a SIGTERM exit."""
        every = self.recipe.runtime.checkpoint_every_steps
        periodic = every is not None and self.step.optimizer_steps % every == 0
        if (periodic or self.step.stopping) and micro_done < self.plan.steps_per_epoch * self.plan.accum_steps:
            self.checkpointer.save_last(self.state(epoch, {}, micro_done // self.plan.accum_steps))
            # Epoch ends save through fit(), with metrics.

    # ------------------------------------------------------------ loop

    def fit(self) -> dict:
        last_row: dict = {}
        with StopOnSigterm(lambda: setattr(self.step, "stop_requested", True)):
            for epoch in range(self.start_epoch, self.plan.epochs):
                last_row = self.fit_epoch(epoch) or last_row
                try:
                    for callback in self.epoch_end:
                        callback(last_row)
                except StopTraining as stop:
                    self.stopped_early = str(stop) or "stopped by a callback"
                    log.info("stopped after epoch %d of %d: %s", epoch + 1, self.plan.epochs, self.stopped_early)
                    break
        barrier()
        return last_row

    def fit_epoch(self, epoch: int) -> dict:
        rec, plan = self.recipe, self.plan
        start = self.start_step_in_epoch * plan.accum_steps if epoch == self.start_epoch else 0
        self.train_loader.set_epoch(epoch, start)
        self.finetune.set_epoch(epoch)
        if self.stem_bias is not None:   # model.stem_bias_epochs: trains, then frozen (no grad: no update, no decay)
            self.stem_bias.requires_grad_(epoch < rec.model.stem_bias_epochs)
        if hasattr(self.task_loss, "set_epoch"):   # deferred re-weighting switches on by epoch (resume-safe)
            self.task_loss.set_epoch(epoch)
        stats = train_one_epoch(self.step, self.train_loader, steps=plan.steps_in_epoch(epoch),
                                log_every=rec.runtime.log_every_steps, on_log=self.logger.step,
                                show_progress=self.show_progress, desc=f"epoch {epoch + 1}/{plan.epochs}",
                                start_micro=start, on_step=lambda done: self.on_step(epoch, done))
        self.train_seconds += stats.seconds
        if rec.runtime.compile and epoch == self.start_epoch:
            # Compilation happens inside the first step; report it apart from training speed.
            self.compile_s = stats.first_step_s
            log.info("torch.compile: first step took %.1f s (compilation included)", self.compile_s)
        if self.step.stopping and self.step.optimizer_steps < min(plan.total_steps, (epoch + 1) * plan.steps_per_epoch):
            raise Preempted(f"SIGTERM at optimizer step {self.step.optimizer_steps} (epoch {epoch + 1}); "
                            f"saved {self.run_dir / 'last.pt'}; continue with --resume auto")
        row = {"epoch": epoch + 1, "step": self.step.optimizer_steps, "train_loss": stats.loss,
               "train_img_per_s": stats.img_per_s * self.dist.world, "train_epoch_s": stats.seconds,
               "train_first_step_s": stats.first_step_s,
               "train_lr": self.step.scheduler.lr(), "train_mem_mb": peak_memory_mb(self.device),
               "train_nonfinite_steps": self.step.skipped_steps}
        val = None
        if self.validates_after(epoch + 1):
            meter = evaluate(self.eval_net, self.val_loader, num_classes=plan.num_classes, device=self.device,
                             precision=plan.precision, show_progress=self.show_progress, desc="val")
            val = meter.compute()
            row.update(val_top1=val["top1"], val_top5=val["top5"], val_loss=val["loss"], val_ece=val["ece"],
                       val_balanced_accuracy=val["balanced_accuracy"], val_macro_f1=val["macro_f1"])
            if self.ema is not None:   # the averaged weights, beside the raw ones
                ema = evaluate(with_tta(self.ema.module, rec.data.eval.tta), self.val_loader,
                               num_classes=plan.num_classes, device=self.device, precision=plan.precision,
                               show_progress=self.show_progress, desc="val ema").compute()
                row.update(ema_val_top1=ema["top1"], ema_val_loss=ema["loss"])
                val = {**val, "ema_top1": ema["top1"], "ema_loss": ema["loss"]}
        row["skipped_images"] = self.train_loader.skipped + self.val_loader.skipped
        row["process_wall_s"] = round(process_seconds(), 1)   # since this process started (not across resumes)
        self.checkpointer.save(self.state(epoch + 1, row), val)
        self.logger.epoch(row)
        log.info("epoch %d/%d  loss %.4f  %s  %.0f img/s  %.1fs%s", epoch + 1, plan.epochs, stats.loss,
                 f"val top1 {val['top1']:.2f}%" if val else
                 "val: the test pass below" if epoch + 1 == plan.epochs else "",   # skipped: val is test
                 row["train_img_per_s"], stats.seconds,
                 f"  ({self.step.skipped_steps} non-finite steps skipped so far)" if self.step.skipped_steps else "")
        if self.step.stopping and epoch + 1 < plan.epochs:
            raise Preempted(f"SIGTERM at the end of epoch {epoch + 1}; saved {self.run_dir / 'last.pt'}; "
                            "continue with --resume auto")
        return row

    def validates_after(self, epochs_done: int) -> bool:
        """Every train.eval_every_epochs epochs and after the last, except after the last when val is the
        test split: nothing is chosen on it, and the summary's test pass evaluates those very weights on
        that very split (evaluating twice cost a 6-view TTA run ~40 s of its ~15 min on 2 CPU cores)."""
        last = epochs_done == self.plan.epochs
        if last and self.plan.selected_on == "last":
            return False
        return last or epochs_done % self.recipe.train.eval_every_epochs == 0

    def summarize(self, last_row: dict) -> dict:
        """Evaluate the chosen checkpoint on the report split the way evaluate.py does; write summary.json.

        best.pt when it was chosen on val, else last.pt; the split is named as it is (``val`` for a
        data set without a test split), with ``selected_on`` saying what chose the checkpoint."""
        chosen = self.plan.selected_on != "last" and (self.run_dir / "best.pt").exists()
        best = self.run_dir / ("best.pt" if chosen else "last.pt")
        report = evaluate_checkpoint(best, split="test", dist=self.dist, device=self.device,
                                     show_progress=self.show_progress)
        m = report["metrics"]
        # The checkpoint's own val row (free: recorded when it was saved), for ranking on val only
        # (ablations, sweeps). None when val is the test split: there is no separate val figure.
        row = load_checkpoint(best).get("metrics") or {}
        val_top1 = None if self.plan.selected_on == "last" else row.get(
            "ema_val_top1" if report["weights"] == "ema" else "val_top1")
        summary = {
            "run": self.run_dir.name, "recipe": self.recipe_path or "", "recipe_hash": self.plan.recipe_hash,
            "dataset": self.data.description, "model": self.recipe.model.name, "params": self.params,
            "epochs": self.plan.epochs, "split": report["split"], "checkpoint": best.name,
            "selected_on": self.plan.selected_on, "val_top1": val_top1, "weights": report["weights"],
            "top1": m["top1"], "top5": m["top5"], "loss": m["loss"], "ece": m["ece"], "samples": m["samples"],
            "balanced_accuracy": m["balanced_accuracy"], "macro_f1": m["macro_f1"],
            "per_class": per_class_table(report["classes"], m),
            "train_class_counts": dict(zip(self.data.classes, np.bincount(self.data.splits["train"].targets,
                                                                          minlength=len(self.data.classes)).tolist())),
            "best_val": {"metric": self.checkpointer.metric, "value": self.checkpointer.best_value,
                         "epoch": self.checkpointer.best_epoch},
            "train_time_s": self.train_seconds, "compile_s": self.compile_s,
            "img_per_s": last_row.get("train_img_per_s"),
            "peak_mem_mb": peak_memory_mb(self.device), "hardware": hardware_description(self.device),
            "world_size": self.dist.world, "precision": self.plan.precision,
            "precision_requested": self.plan.precision_requested, "channels_last": self.plan.channels_last,
            "numerics_source": self.plan.numerics_source, "numerics_probe": self.plan.numerics_probe,
            "torch": str(torch.__version__), "timm": str(timm.__version__), "git_commit": git_commit(),
            "skipped_images": last_row.get("skipped_images", 0),
            "budget": self.plan.budget, "process_wall_s": round(process_seconds(), 1),
        }
        if self.dist.is_main:
            formats.write(self.run_dir / "summary.json", formats.SUMMARY, summary)
        self.logger.hparams(dataclasses.asdict(self.recipe), {
            k: summary[k] for k in ("top1", "top5", "loss", "ece", "balanced_accuracy", "macro_f1", "val_top1",
                                    "train_time_s", "img_per_s")})
        self.logger.close()
        return summary


def per_class_table(classes: list[str], m: dict) -> dict:
    """{class: {samples, recall, precision, f1}} (%, None where undefined) from a metrics dict."""
    return {name: {"samples": sum(m["confusion"][i]), "recall": m["per_class_recall"][i],
                   "precision": m["per_class_precision"][i], "f1": m["per_class_f1"][i]}
            for i, name in enumerate(classes)}


def write_run_header(run_dir: Path, recipe: Recipe, plan: Plan | None = None) -> None:
    """recipe.yaml, and plan.json once the plan is final (the session writes it once, before training)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe_yaml(recipe))
    if plan is not None:
        formats.write(run_dir / "plan.json", formats.PLAN, plan.to_dict())


__all__ = ["Trainer", "Loaders", "build_loaders", "plan_for", "run_folder", "write_run_header", "seed_everything",
           "recipe_hash"]
