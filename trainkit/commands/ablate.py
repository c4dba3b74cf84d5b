"""Ablation runner: train a base recipe and each cumulative delta over several seeds,
then write a Markdown table of val top-1 mean ± std, gain per step and time.

    trainkit ablate recipes/cifar10_resnet20.yaml data.root=../shared/data/cifar10-jpeg \\
        --step "mixup: mixup.mixup_alpha=0.2" --step "ema: ema.decay=0.999" --seeds 0 1 --out runs/ablate-r20
    (= python ablate.py ...; writes runs/ablate-r20/ablation.md beside the run folders)

Every step's recipe is validated before anything trains. Each run is its own
``train.py`` process (run folders under --out). An ablation ranks recipes, so it
reads val only: each run's val top-1 of its best-on-val checkpoint (summary.json ``val_top1``).
A step whose val split is the test split (data.holdout_fraction=0) is refused before training.

``--records results/records`` also writes each run's result record (trainkit.report.records, with the
ablation id, step and what it adds), which ``python compare.py results`` shows as an ablation table in
recipes/RESULTS.md. A run whose folder under --out already holds a summary.json is not trained
again: rerunning an earlier ablation's command with its --out and --records records it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from trainkit.commands.common import add_shared, new_parser, output_file, parse, recipe_overrides, warn
from trainkit.cli import RunFailed, one_line_errors, train_once
from trainkit.config import formats
from trainkit.config.recipe import load_recipe, recipe_hash
from trainkit.config.schema import RecipeError
from trainkit.data.sources import open_source, resolve_splits, val_is_test
from trainkit.report.ablation import StepResult, cumulative, markdown_table, parse_step
from trainkit.report.provenance import commit_problem
from trainkit.report.records import record_from_run, write_record
from trainkit.runtime.environment import git_commit



EXAMPLES = ['trainkit ablate recipes/quickstart.yaml --step "ls: loss.label_smoothing=0.1" '
            '--step "ema: train.ema_decay=0.999" --seeds 0 1 2 --out runs/ablate-qs',
            'trainkit ablate recipes/quickstart.yaml data.limit_train=3000 --step "mix: augment.mixup=0.2" '
            '--seeds 0 --device cpu']


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    p.add_argument("recipe", help="base recipe YAML; key.path=value overrides (applied to every run) go anywhere")
    p.add_argument("--step", action="append", default=[], metavar='"NAME: key=value ..."',
                   help="one cumulative delta (repeat, in order)")
    p.add_argument("--steps-file", type=Path, metavar="FILE",
                   help="more steps, one per line in --step's form, after any --step (# comments, blank lines "
                        "skipped), e.g. recipes/ablations/cifar10_speedrun_airbench.steps")
    add_shared(p, "seeds", "out", "data_root", "device", "precision", defaults={"seeds": [0, 1]},
               help={"seeds": "seeds each step is trained with (default 0 1)",
                     "out": "folder for the run folders and ablation.md (default runs/ablate-<recipe>-<time>)",
                     "data_root": "data.root of every run", "device": "runtime.device of every run",
                     "precision": "train.precision of every run"})
    p.add_argument("--runs-dir", type=Path, help=argparse.SUPPRESS)   # deprecated: --out is the folder
    p.add_argument("--records", type=Path, metavar="DIR",
                   help="also write each run's result record under DIR (e.g. results/records)")
    p.add_argument("--name", help="the ablation's id in its records (default: the recipe's name)")
    p.add_argument("--allow-dirty", action="store_true", help="with --records: as compare.py record --allow-dirty")
    args = parse(p, argv, "ablate")
    args.overrides = recipe_overrides(args, "data_root", "device", "precision")
    if args.runs_dir is not None:
        warn("--runs-dir is deprecated and goes away in the next release; --out DIR holds the run folders and "
             "ablation.md")
    default_dir = Path("runs") / f"ablate-{Path(args.recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    table_only = args.out is not None and args.out.suffix.lower() == ".md"   # the old --out FILE.md
    args.runs_dir = args.runs_dir or (args.out if args.out is not None and not table_only else default_dir)
    args.table = output_file(args.out, "ablation.md", (".md",), default_dir=args.runs_dir)
    return args


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
    """The summary of a finished run in the --out folder, reused only when it trained exactly this step's recipe."""
    try:
        data = formats.read(summary, formats.SUMMARY)
    except formats.FormatError as err:   # a half-written or foreign file
        raise RecipeError(f"{' '.join(str(err).split())}; remove that run folder or give another --out folder") \
            from None
    found = data.get("recipe_hash")
    if found != expected_hash:
        raise RecipeError(f"{summary.parent}: a finished run of another recipe (hash {found}, this step's is "
                          f"{expected_hash}); give another --out folder or remove it")
    return data


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    steps = [parse_step(s) for s in args.step + read_steps_file(args.steps_file)]
    plan = cumulative(args.overrides, steps)
    check_steps(args.recipe, plan)
    problem = commit_problem(git_commit()) if args.records and not args.allow_dirty else None
    if problem:   # before hours of training, not at the first record
        raise RecipeError(f"--records: {problem}; commit first, or give --allow-dirty (records are then marked)")
    runs_dir = args.runs_dir
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
                record = record_from_run(runs_dir / name, ablation=ablation)
                print(f"record: {write_record(record, args.records, allow_dirty=args.allow_dirty)}")
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
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(markdown_table(results, seeds=args.seeds, header=header))   # after every step
    print(args.table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
