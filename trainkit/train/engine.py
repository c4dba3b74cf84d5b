"""The training loop. It never sees argv or YAML: only built objects and a plan."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from trainkit.runtime.distributed import agree_any, autocast
from trainkit.runtime.progress import progress

class NonFiniteLoss(RuntimeError):
    """train.nonfinite=stop: a step's loss was NaN or infinite; the message names the step."""


def with_inputs(loss_fn: Callable) -> Callable:
    """Every loss is called as ``loss(outputs, targets, images)``; a plain ``loss(outputs, targets)``
    is adapted once here, so the step has one call whether or not the loss reads the inputs
    (a distillation wrapper sets ``takes_inputs`` because its teacher labels the same images)."""
    if getattr(loss_fn, "takes_inputs", False):
        return loss_fn
    return lambda outputs, targets, images: loss_fn(outputs, targets)


def grads_finite(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Whether every gradient is finite, as a device tensor (two fused kernels, no host sync)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    return torch.stack(torch._foreach_norm(grads)).isfinite().all()


class TrainStep:
    """One training-step path for every precision and accumulation setting.

    ``GradScaler`` is enabled only for fp16; with bf16/fp32 its calls are
    pass-throughs, so the same code steps the optimizer exactly once per
    ``accum_steps`` micro-batches whatever the precision.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer, scheduler,
                 *, device: torch.device, precision: str, accum_steps: int, clip_grad_norm: float | None,
                 nonfinite: str = "stop", check_every_steps: int = 1):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, with_inputs(loss_fn), optimizer, scheduler
        self.device, self.precision, self.accum_steps, self.clip = device, precision, accum_steps, clip_grad_norm
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.optimizer_steps = 0
        self.nonfinite = nonfinite            # skip | stop (train.nonfinite)
        self.skipped_steps = 0                # steps skipped for a non-finite loss
        self.stop_requested = False           # set by a SIGTERM handler; honoured at the next step
        self.stopping = False                 # all ranks agreed to stop after this step
        # With "stop", the finite flag and a pending SIGTERM are read (a host sync, plus an
        # all-reduce under DDP) only every check_every_steps steps, so fast GPU steps do not stall;
        # "skip" must decide at every step. Checkpoints refuse non-finite weights in between.
        self.check_every = 1 if nonfinite == "skip" else max(1, check_every_steps)
        self._group_finite = torch.ones((), dtype=torch.bool, device=device)
        self.after_step: list[Callable[[int], None]] = []   # e.g. the EMA update; gets optimizer_steps
        self._group_images = 0                # images in the accumulation group so far
        self._group_ref = 0                   # size of the group's first micro-batch

    def micro(self, images: torch.Tensor, targets: torch.Tensor, last_in_step: bool) -> torch.Tensor:
        """Forward/backward one micro-batch; step the optimizer on the last of a group."""
        # DDP: all-reduce gradients only on the micro-batch that completes the step.
        sync = getattr(self.model, "no_sync", None)
        ctx = contextlib.nullcontext() if last_in_step or sync is None else sync()
        # Each micro-batch counts by its images: a full group is accum_steps micro-batches of the
        # group's first size (weight 1 / accum_steps each); finish() rescales a trailing partial
        # group (drop_last: false) so that the step equals one batch of the images it holds.
        if self._group_images == 0:
            self._group_ref = len(targets)
        self._group_images += len(targets)
        with ctx:
            with autocast(self.device, self.precision):
                loss = self.loss_fn(self.model(images), targets, images)
            scaled = loss / self.accum_steps if len(targets) == self._group_ref else \
                loss * (len(targets) / (self._group_ref * self.accum_steps))
            self.scaler.scale(scaled).backward()
        self._group_finite &= torch.isfinite(loss.detach())
        if last_in_step:
            self.finish()
        return loss.detach()

    def finish(self) -> None:
        full, group_images = self._group_ref * self.accum_steps, self._group_images
        self._group_images = 0
        if not self.scaler.is_enabled():
            # A finite loss can still give non-finite gradients (seen: bf16 conv backward on a 1x1
            # map); fp16's GradScaler checks gradients itself and skips such steps.
            self._group_finite &= grads_finite(self.optimizer)
        if (self.optimizer_steps + 1) % self.check_every == 0:
            self.check()   # at the same step on every rank (a collective under DDP)
        if self._skip_this_step:
            # The step happens as a no-op (as GradScaler's skipped steps do), so the
            # schedule and the step count stay aligned with the data.
            self._skip_this_step = False
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.optimizer_steps += 1
            self.skipped_steps += 1
            return
        self.scaler.unscale_(self.optimizer)
        if group_images != full:    # a trailing partial group: mean over the images it actually holds
            grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch._foreach_mul_(grads, full / group_images)
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.optimizer_steps += 1
        for hook in self.after_step:
            hook(self.optimizer_steps)

    _skip_this_step = False

    def check(self) -> None:
        """Read the finite flag and SIGTERM on every rank at once; every rank takes the same decision."""
        bad, self.stopping = agree_any([not bool(self._group_finite), self.stop_requested], self.device)
        self._group_finite.fill_(True)
        if bad and self.nonfinite == "stop":
            raise NonFiniteLoss(f"non-finite loss or gradient by optimizer step {self.optimizer_steps + 1}; "
                                "stopped without saving, so the last checkpoint holds the last good weights "
                                "(train.nonfinite=skip skips such steps and counts them)")
        self._skip_this_step = bad

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "optimizer_steps": self.optimizer_steps,
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.optimizer_steps = int(state["optimizer_steps"])
        self.skipped_steps = int(state.get("skipped_steps", 0))


@dataclass
class EpochStats:
    loss: float
    images: int
    seconds: float
    first_step_s: float = 0.0   # the first micro-batch alone (holds torch.compile's compilation)

    @property
    def img_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(step: TrainStep, loader: Iterable, *, steps: int, log_every: int,
                    on_log: Callable[[int, float, float], None], show_progress: bool, desc: str,
                    start_micro: int = 0, on_step: Callable[[int], None] | None = None) -> EpochStats:
    """Run ``steps`` optimizer steps (``steps * accum_steps`` micro-batches) over ``loader``.

    ``start_micro``: micro-batches of this epoch already done (the loader must skip as
    many: ``set_epoch(epoch, start)``). ``on_step(micro_done)`` runs after every
    optimizer step (step checkpoints); the epoch ends early when ``step.stopping``.
    """
    step.model.train()
    accum = step.accum_steps
    micro_total = min(len(loader), steps * accum)
    loss_sum = torch.zeros((), device=step.device)   # summed on the device: no host sync per step
    images, start, first_step_s = 0, time.perf_counter(), 0.0
    bar = progress(total=micro_total - start_micro, desc=desc, enabled=show_progress)
    done = start_micro
    for i, (x, y) in enumerate(loader, start=start_micro):
        if i >= micro_total:
            break
        last = (i + 1) % accum == 0 or i + 1 == micro_total
        loss_sum += step.micro(x, y, last)
        images += len(y)
        done = i + 1
        if i == start_micro:
            sync_device(step.device)
            first_step_s = time.perf_counter() - start
        if last and step.optimizer_steps % log_every == 0:
            loss_now = float(loss_sum) / (done - start_micro)   # the one host sync, every log_every steps
            on_log(step.optimizer_steps, loss_now, step.scheduler.lr())
            bar.set_postfix(loss=f"{loss_now:.4f}", img_s=f"{images / (time.perf_counter() - start):.0f}")
        bar.update(1)
        if last and on_step is not None:
            on_step(done)
        if last and step.stopping:
            break
    bar.close()
    if not step.stopping:
        step.check()     # a non-finite loss since the last check stops the run before the epoch checkpoint
    sync_device(step.device)
    seconds = time.perf_counter() - start
    return EpochStats(float(loss_sum) / max(1, done - start_micro), images, seconds, first_step_s)
