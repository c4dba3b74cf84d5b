"""``train.precision: amp`` and ``runtime.channels_last: auto``: decided once per run, at start-up.

bf16 is not always the fast choice on a CPU: on a 2-core Xeon with AVX512-BF16 the bare
ResNet-20 step ran 397 img/s in bf16 and 444 in fp32, while on an AMD EPYC bf16 was about
twice as fast. So ``amp`` means "the fastest mixed precision this device does well":

- CUDA: fp16 autocast + GradScaler (the one choice every CUDA GPU does well; ask for bf16
  explicitly with ``train.precision: bf16`` on GPUs that support it);
- CPU: the faster of bf16 autocast and fp32 for this recipe's model, per-device batch and
  memory format, measured by a short probe (warm-up then interleaved timed steps on
  synthetic tensors, a few seconds).

The same probe decides the memory format when ``runtime.channels_last: auto``. An explicit
precision or layout is obeyed as written. The decision (and the probe's figures) is logged
and saved in ``plan.json``, every checkpoint and ``summary.json``; the recipe hash keeps the
intent (``amp``), as it keeps cudnn's algorithm choice out. A resumed run reuses the saved
decision, so it never switches precision mid-run; under DDP rank 0 probes and every rank
uses its decision.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from trainkit.config.recipe import Recipe
from trainkit.models.build import create_model
from trainkit.runtime.distributed import autocast, broadcast_from_main

log = logging.getLogger("trainkit")

PROBE_WARMUP_STEPS = 1   # oneDNN builds its kernels on the first step; never timed (the median drops a slow second)
PROBE_ROUNDS = 3         # timed steps per candidate, interleaved so drift on a shared machine hits all
# A round ends the probe early when its winner's slowest step beats every other candidate's fastest by this
# much: more rounds cannot change the choice. bf16 vs fp32 on an AMD EPYC or with AVX512-BF16 (2-3x) stops
# after one round, saving two slow fp32 steps (~6 s of a 2-core CIFAR run); a close call still gets all three.
PROBE_DECISIVE_RATIO = 1.5
# The probe is skipped when it would cost more than a tenth of the run's own steps (a smoke test, a
# tiny fine-tune): the first candidate (bf16 on a CPU) is used then, and the source says so.
PROBE_MAX_RUN_FRACTION = 0.1


@dataclass(frozen=True)
class Numerics:
    """How this run computes: the precision and memory format actually used, and why."""
    precision: str                       # fp32 | bf16 | fp16
    channels_last: bool
    source: str                          # recipe | device | probe | checkpoint | short run
    probe: dict[str, float] | None = None   # "<precision> <layout>": img/s of the bare step, when probed


def label(precision: str, channels_last: bool) -> str:
    return f"{precision} {'channels_last' if channels_last else 'contiguous'}"


def candidates(precision: str, channels_last: bool | str, device: torch.device) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs the request allows on this device, in order of preference on a tie."""
    if precision != "amp":
        precisions = [precision]
    elif device.type == "cuda":
        precisions = ["fp16"]
    else:
        precisions = ["bf16", "fp32"]
    layouts = [True, False] if channels_last == "auto" else [bool(channels_last)]
    return [(p, cl) for p in precisions for cl in layouts]


def probe(options: list[tuple[str, bool]], measure: Callable[[str, bool], float],
          rounds: int = PROBE_ROUNDS) -> dict[tuple[str, bool], float]:
    """Median img/s per option; ``measure(precision, channels_last)`` times one step and returns img/s.

    Rounds are interleaved (A B A B ...), so a burst of load from another process hits every option; after
    a round whose winner is decisive (:data:`PROBE_DECISIVE_RATIO`) the probe stops.
    """
    samples: dict[tuple[str, bool], list[float]] = {opt: [] for opt in options}
    for _ in range(rounds):
        for opt in options:
            samples[opt].append(measure(*opt))
        if decisive(samples):
            break
    return {opt: statistics.median(v) for opt, v in samples.items()}


def decisive(samples: dict[tuple[str, bool], list[float]]) -> bool:
    """Whether the best option's slowest step beats every other option's fastest by PROBE_DECISIVE_RATIO."""
    worst = {opt: min(v) for opt, v in samples.items()}
    winner = max(worst, key=worst.get)
    return all(worst[winner] >= PROBE_DECISIVE_RATIO * max(v) for opt, v in samples.items() if opt != winner)


def fastest(figures: dict[tuple[str, bool], float]) -> tuple[str, bool]:
    """The option with the highest img/s; the earlier one on a tie."""
    return max(figures, key=lambda opt: (figures[opt], -list(figures).index(opt)))


class StepTimer:
    """Times the bare training step (forward, backward, SGD) of a fresh copy of the recipe's model
    on synthetic in-memory tensors: the ceiling the data pipeline and the loop can approach."""

    def __init__(self, recipe: Recipe, *, batch: int, num_classes: int, in_chans: int, device: torch.device,
                 warmup_steps: int = PROBE_WARMUP_STEPS):
        size = recipe.data.train_size or recipe.data.eval.size
        # Never the pretrained weights: loading them costs time and the step is as fast without.
        self.model = create_model(recipe.model, num_classes, in_chans).to(device)   # random weights: only timing
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch, in_chans, size, size, generator=gen).to(device)
        self.targets = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
        self.device, self.warmup_steps, self.warm = device, warmup_steps, set()

    def step(self, precision: str, channels_last: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=fmt)
        x = self.images.contiguous(memory_format=fmt)
        with autocast(self.device, precision):
            loss = F.cross_entropy(self.model(x), self.targets)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, precision: str, channels_last: bool) -> float:
        """img/s of one timed step (after this option's warm-up steps on first use)."""
        if (precision, channels_last) not in self.warm:
            for _ in range(self.warmup_steps):
                self.step(precision, channels_last)
            self.warm.add((precision, channels_last))
        start = time.perf_counter()
        self.step(precision, channels_last)
        return len(self.images) / (time.perf_counter() - start)


def probe_steps(options: list) -> int:
    return len(options) * (PROBE_WARMUP_STEPS + PROBE_ROUNDS)


def decide(recipe: Recipe, device: torch.device, *, measure: Callable[[str, bool], float] | None = None,
           saved: dict | None = None, run_steps: int | None = None) -> Numerics | None:
    """The run's numerics. ``saved``: the plan of the checkpoint being resumed (its decision is kept);
    ``measure``: the probe's step timer, needed only when the request leaves a choice (None: undecided,
    as for ``train.py --print``, which must stay instant); ``run_steps``: the run's forward/backward
    steps, to skip a probe that would cost more than PROBE_MAX_RUN_FRACTION of them."""
    requested, layout = recipe.train.precision, recipe.runtime.channels_last
    if saved is not None and "precision" in saved:
        # A resumed run keeps its precision; the layout too unless the recipe now names one.
        cl = bool(saved.get("channels_last", False)) if layout == "auto" else layout
        return Numerics(saved["precision"], cl, "checkpoint", saved.get("numerics_probe"))
    options = candidates(requested, layout, device)
    if len(options) == 1:
        source = "device" if requested == "amp" else "recipe"
        return Numerics(*options[0], source)
    if run_steps is not None and probe_steps(options) > PROBE_MAX_RUN_FRACTION * run_steps:
        return Numerics(*options[0], "short run")
    if measure is None:
        return None
    start = time.perf_counter()
    figures = probe(options, measure)
    precision, cl = fastest(figures)
    log.info("numerics probe: %d candidates in %.1f s", len(options), time.perf_counter() - start)
    return Numerics(precision, cl, "probe", {label(*opt): round(v, 1) for opt, v in figures.items()})


def decide_for_run(recipe: Recipe, device: torch.device, *, batch: int, num_classes: int, in_chans: int,
                   run_steps: int, saved: dict | None, is_main: bool) -> Numerics:
    """``decide`` with the real step timer, on rank 0 only; every rank gets rank 0's decision."""
    numerics = None
    if is_main:
        numerics = decide(recipe, device, saved=saved, run_steps=run_steps)   # no probe needed?
        if numerics is None:
            # The probe's throw-away model and its dropout draw from a forked RNG: the run's initialisation and data
            # order never depend on whether, or for how many rounds (PROBE_DECISIVE_RATIO), the probe ran.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                timer = StepTimer(recipe, batch=batch, num_classes=num_classes, in_chans=in_chans, device=device)
                numerics = decide(recipe, device, measure=timer, saved=saved, run_steps=run_steps)
    return broadcast_from_main(numerics)


def bare_step_rate(recipe: Recipe, precision: str, channels_last: bool, *, batch: int, num_classes: int,
                   in_chans: int, device: torch.device, probed: dict | None = None) -> float:
    """img/s of the bare step with these numerics: the probe's figure when it measured them, else a
    StepTimer's median (schedule.budget_minutes needs it whether or not a probe ran)."""
    if probed and label(precision, channels_last) in probed:
        return float(probed[label(precision, channels_last)])
    timer = StepTimer(recipe, batch=batch, num_classes=num_classes, in_chans=in_chans, device=device)
    return statistics.median(timer(precision, channels_last) for _ in range(PROBE_ROUNDS))


__all__ = ["Numerics", "bare_step_rate", "candidates", "probe", "fastest", "StepTimer", "decide", "decide_for_run",
           "label"]
