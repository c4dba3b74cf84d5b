"""Ablations: a base recipe plus an ordered list of deltas, each step trained cumulatively
over several seeds, summarised as a Markdown table (val top-1 mean ± std, gain per step, time).

ablate.py is the entry point; this module holds the pure parts (parsing, the
cumulative plan, statistics, the table) so they are testable without training.
"""

from __future__ import annotations

import shlex
import statistics
from dataclasses import dataclass, field

from trainkit.config.schema import RecipeError


@dataclass(frozen=True)
class Step:
    name: str
    overrides: tuple[str, ...]


def parse_step(text: str) -> Step:
    """``"name: key=value key=value"`` -> Step; values may be quoted (shell rules).
    Without ``name:`` the overrides themselves name the step."""
    head, sep, rest = text.partition(":")
    if not sep or "=" in head:
        head, rest = "", text
    try:
        overrides = tuple(shlex.split(rest))
    except ValueError as err:
        raise RecipeError(f"--step {text!r}: {err}") from None
    if not overrides or any("=" not in o for o in overrides):
        raise RecipeError(f"--step {text!r}: expected 'name: key.path=value [key.path=value ...]'")
    return Step(head.strip() or " ".join(overrides), overrides)


def cumulative(base: list[str], steps: list[Step]) -> list[tuple[Step, list[str]]]:
    """The baseline then every step with all earlier steps' overrides applied (later wins)."""
    plan = [(Step("baseline", ()), list(base))]
    acc = list(base)
    for step in steps:
        acc = acc + list(step.overrides)
        plan.append((step, list(acc)))
    return plan


@dataclass
class StepResult:
    step: Step
    top1: list[float] = field(default_factory=list)       # val top-1 per seed, %
    train_s: list[float] = field(default_factory=list)    # training loop time per seed
    wall_s: list[float] = field(default_factory=list)     # whole process (data, eval, start-up) per seed
    failed: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.top1) if self.top1 else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.top1) if len(self.top1) > 1 else None


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "failed"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _gain(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{a - b:+.2f}"


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def markdown_table(results: list[StepResult], *, seeds: list[int], header: str = "") -> str:
    """One row per cumulative step: top-1 mean ± sample std over seeds, gain vs previous
    step and vs baseline (percentage points), mean training and wall time per run, and the step's
    price in time: its change of mean training minutes vs the previous step and the points it gains per
    minute it adds (a negative minute count with a negative gain: points lost per minute saved). A time change
    within the seeds' spread of training time (the two steps' sample stds added, at least 3 s) has no price:
    dividing a gain by run-to-run noise gives numbers like +90 points per minute for a step that loses 13."""
    lines = [header, ""] if header else []
    lines += ["| # | step | adds | val top-1 % (mean ± std) | gain vs prev | gain vs base | seeds | train s | wall s | "
              "Δ train min vs prev | points per Δ min |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = results[0].mean if results else None
    prev = prev_train = None
    prev_train_s: list[float] = []
    for i, r in enumerate(results):
        adds = " ".join(f"`{o}`" for o in r.step.overrides) or "—"
        mean_train = statistics.fmean(r.train_s) if r.train_s else None
        train = f"{mean_train:.0f}" if mean_train is not None else ""
        wall = f"{statistics.fmean(r.wall_s):.0f}" if r.wall_s else ""
        minutes = (mean_train - prev_train) / 60 if i and None not in (mean_train, prev_train) else None
        priced = minutes is not None and abs(minutes) * 60 > max(3.0, _spread(r.train_s) + _spread(prev_train_s))
        per_min = (r.mean - prev) / minutes if priced and None not in (r.mean, prev) else None
        lines.append(f"| {i} | {r.step.name} | {adds} | {_pm(r.mean, r.std)} | {_gain(r.mean, prev) if i else ''} | "
                     f"{_gain(r.mean, base) if i else ''} | {len(r.top1)}/{len(seeds)} | {train} | {wall} | "
                     f"{f'{minutes:+.1f}' if minutes is not None else ''} | "
                     f"{f'{per_min:+.2f}' if per_min is not None else ''} |")
        prev, prev_train, prev_train_s = r.mean, mean_train, r.train_s
    failures = [f"- step {r.step.name}: {msg}" for r in results for msg in r.failed]
    if failures:
        lines += ["", "Failed runs:", *failures]
    return "\n".join(lines) + "\n"
