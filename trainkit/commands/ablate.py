"""Ablation runner: train a base recipe and each cumulative delta over several seeds,
then write a Markdown table of val top-1 mean ± std, gain per step and time.

    python ablate.py recipes/cifar10_resnet20.yaml data.root=../shared/data/cifar10-jpeg \\
        --step "mixup: mixup.mixup_alpha=0.2" --step "ema: ema.decay=0.999" --seeds 0 1 --out ablation.md

Every step's recipe is validated before anything trains. Each run is its own
``train.py`` process (run folders under --runs-dir). An ablation ranks recipes, so it
reads val only: each run's val top-1 of its best-on-val checkpoint (summary.json ``val_top1``).
A step whose val split is the test split (data.holdout_fraction=0) is refused before training.

``--records results/records`` also writes each run's result record (trainkit.report.records, with the
ablation id, step and what it adds), which ``python compare.py results`` shows as an ablation table in
recipes/RESULTS.md. A run whose folder under --runs-dir already holds a summary.json is not trained
again: rerunning an earlier ablation's command with its --runs-dir and --records records it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from trainkit.cli import RunFailed, one_line_errors, train_once
from trainkit.config.recipe import load_recipe, recipe_hash
from trainkit.config.schema import RecipeError
from trainkit.data.sources import open_source, resolve_splits, val_is_test
from trainkit.report.ablation import StepResult, cumulative, markdown_table, parse_step
from trainkit.report.records import record_from_run, write_record

ROOT = Path(__file__).resolve().parents[2]   # the checkout (issue 25 item 8 moves this to trainkit paths)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="base recipe YAML")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every run")
    p.add_argument("--step", action="append", default=[], metavar='"NAME: key=value ..."',
                   help="one cumulative delta (repeat, in order)")
    p.add_argument("--steps-file", type=Path, metavar="FILE",
                   help="more steps, one per line in --step's form, after any --step (# comments, blank lines "
                        "skipped), e.g. recipes/ablations/cifar10_speedrun_airbench.steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=Path("ablation.md"), help="Markdown table to write")
    p.add_argument("--runs-dir", type=Path, help="where the run folders go (default: runs/ablate-<recipe>)")
    p.add_argument("--records", type=Path, metavar="DIR",
                   help="also write each run's result record under DIR (e.g. results/records)")
    p.add_argument("--name", help="the ablation's id in its records (default: the recipe's name)")
    return p.parse_args(argv)


def read_steps_file(path: Path | None) -> list[str]:
    """The step lines of ``--steps-file`` (none without one)."""
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"--steps-file {path}: cannot read it ({err})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def check_steps(recipe_path: str, plan: list) -> None:
    """Every step's recipe loads (a bad key fails now, not after hours of training) and has a val
    split of its own: ranking steps on a val split that is the test split would select on test."""
    checked: dict[str, bool] = {}
    for step, overrides in plan:
        data = load_recipe(recipe_path, overrides).data
        if repr(data) not in checked:
            checked[repr(data)] = val_is_test(resolve_splits(data, open_source(data)))
        if checked[repr(data)]:
            raise RecipeError(f"ablate: step {step.name!r} validates on the test split (data.holdout_fraction=0 "
                              "on a data set with a test split); an ablation compares on val only: set "
                              "data.holdout_fraction > 0")


def check_reused(summary: Path, expected_hash: str) -> dict:
    """The summary of a finished run in --runs-dir, reused only when it trained exactly this step's recipe."""
    try:
        data = json.loads(summary.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:   # a half-written or foreign file
        raise RecipeError(f"{summary}: unreadable ({' '.join(str(err).split())}); remove that run folder or give "
                          "another --runs-dir") from None
    found = data.get("recipe_hash") if isinstance(data, dict) else None
    if found != expected_hash:
        raise RecipeError(f"{summary.parent}: a finished run of another recipe (hash {found}, this step's is "
                          f"{expected_hash}); give another --runs-dir or remove it")
    return data


@one_line_errors
def main() -> int:
    args = parse_args(sys.argv[1:])
    steps = [parse_step(s) for s in args.step + read_steps_file(args.steps_file)]
    plan = cumulative(args.overrides, steps)
    check_steps(args.recipe, plan)
    runs_dir = args.runs_dir or ROOT / "runs" / f"ablate-{Path(args.recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    results: list[StepResult] = []
    hardware = "?"
    for i, (step, overrides) in enumerate(plan):
        result = StepResult(step)
        for seed in args.seeds:
            name = f"{i:02d}-s{seed}"
            done = runs_dir / name / "summary.json"
            reused = check_reused(done, recipe_hash(load_recipe(args.recipe, [*overrides, f"train.seed={seed}"]))) \
                if done.is_file() else None
            try:   # a finished run (an earlier ablation's folder) is reused; its wall time is not known
                summary, wall = (reused, None) if reused is not None else \
                    train_once(args.recipe, overrides, seed, runs_dir, name)
            except RunFailed as err:
                result.failed.append(str(err))
                print(f"[{i}] {step.name} seed {seed}: FAILED {err}", flush=True)
                continue
            if args.records:
                ablation = {"id": args.name or Path(args.recipe).stem, "step": i, "step_name": step.name,
                            "adds": list(step.overrides), "base_overrides": list(args.overrides)}
                print(f"record: {write_record(record_from_run(runs_dir / name, ablation=ablation), args.records)}")
            hardware = summary.get("hardware", hardware)
            if summary.get("val_top1") is None:
                result.failed.append(f"seed {seed}: no val top-1 in the summary (selected_on "
                                     f"{summary.get('selected_on')}); an ablation compares on val only")
                continue
            result.top1.append(summary["val_top1"])
            result.train_s.append(summary["train_time_s"])
            if wall is not None:
                result.wall_s.append(wall)
            print(f"[{i}] {step.name} seed {seed}: val top-1 {summary['val_top1']:.2f}%  "
                  f"train {summary['train_time_s']:.0f}s  wall {'(reused run)' if wall is None else f'{wall:.0f}s'}",
                  flush=True)
        results.append(result)
        header = (f"Ablation of `{args.recipe}` {' '.join(f'`{o}`' for o in args.overrides)}; "
                  f"seeds {args.seeds}; val top-1 of each run's best-on-val checkpoint (val only: an "
                  f"ablation ranks recipes, so it never reads test); "
                  f"torch {torch.__version__}; {hardware}.")
        args.out.write_text(markdown_table(results, seeds=args.seeds, header=header))   # after every step
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
