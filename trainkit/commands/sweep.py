"""Hyper-parameter search over a recipe with Optuna; the study survives restarts.

    trainkit sweep recipes/quickstart.yaml --space recipes/sweeps/quickstart.yaml --trials 16 \\
        data.limit_train=10000 schedule.epochs=3        (= python sweep.py ...)

Each trial is a real training run (its own run folder under OUT/trials/) whose per-epoch val
metric (train.best_metric, top-1 by default) goes to the pruner; the search selects on val only
and refuses a recipe whose val split is the test split. The study lives in a database
(--storage, default sqlite:///OUT/study.db): kill the sweep and run the same command again, and it
continues; the trial that was running is marked failed and re-run with the same parameters.
Several machines share one study through one database URL (see README, "Hyper-parameter sweeps").

Writes OUT/trials.md and trials.csv, OUT/best_recipe.yaml (train.py runs it as is), OUT/plots/*.png
and, with --final-test, OUT/final_test.md: test numbers, reported apart from the search.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
import warnings
from pathlib import Path

import optuna

from trainkit.cli import RunFailed, one_line_errors, setup_logging, train_once
from trainkit.commands.common import add_shared, new_parser, parse, recipe_overrides
from trainkit.config import formats
from trainkit.config.recipe import load_recipe
from trainkit.config.registry import Registry
from trainkit.config.schema import RecipeError
from trainkit.data.sources import open_source, resolve_splits
from trainkit.eval.pipeline import evaluate_checkpoint
from trainkit.sweep.report import best_lines, search_shortcuts, write_best_recipe, write_plots, write_tables
from trainkit.sweep.space import check_space, grid_space, load_space
from trainkit.sweep.study import (
    GRACE_S,
    BudgetSpent,
    Slots,
    StopAtBudget,
    TrialFailed,
    TrialRunner,
    check_same_sweep,
    counted,
    default_storage,
    fail_dead_local_trials,
    is_shared,
    open_storage,
    requeue_interrupted,
    sampler_seed,
    shown_url,
    wait_for_others,
    worker_name,
)
from trainkit.sweep.worker import refuse_selection_on_test

log = logging.getLogger("trainkit")


def make_sampler(name: str, space, trials: int, seed: int, concurrent: bool) -> optuna.samplers.BaseSampler:
    """``concurrent``: other trials may run while this one is sampled (--jobs > 1, or a shared study)."""
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(space), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's default of 10 random start-up trials is most of a 12-20 trial budget; a third of it
    # explores. constant_liar counts running trials (of every worker) as bad results, so parallel
    # trials (--jobs, or other machines on the study) do not propose the same point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)),
                                      constant_liar=concurrent)


def make_pruner(name: str, epochs: int, startup: int, warmup_epochs: int) -> optuna.pruners.BasePruner:
    return PRUNERS.get(name)(epochs, startup, warmup_epochs)


PRUNERS: Registry = Registry("pruner", "--pruner")
# Stop a trial whose val metric at an epoch is worse than the median of earlier trials at that epoch.
PRUNERS.register("median")(lambda epochs, startup, warmup: optuna.pruners.MedianPruner(
    n_startup_trials=startup, n_warmup_steps=warmup))
# Successive halving in brackets; the resource is the epoch.
PRUNERS.register("hyperband")(lambda epochs, startup, warmup: optuna.pruners.HyperbandPruner(
    min_resource=max(1, warmup), max_resource=max(epochs, 1), reduction_factor=3))
PRUNERS.register("none")(lambda epochs, startup, warmup: optuna.pruners.NopPruner())


EXAMPLES = ["trainkit sweep recipes/quickstart.yaml --space recipes/sweeps/quickstart.yaml --trials 16 "
            "data.limit_train=10000",
            "trainkit sweep recipes/quickstart.yaml --space recipes/sweeps/quickstart.yaml --trials 8 --out runs/sw "
            "--final-test retrain --seeds 0 1 2 --device cpu"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    p.add_argument("recipe", help="base recipe YAML; key.path=value overrides (applied to every trial) go anywhere")
    p.add_argument("--space", required=True, help="search space YAML (see recipes/sweeps/)")
    p.add_argument("--trials", type=int, required=True,
                   help="finished trials the study should hold (complete, pruned or failed; interrupted ones "
                        "that were re-run do not count); a rerun continues up to this number")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe")
    p.add_argument("--pruner", choices=sorted(PRUNERS.names()), default="median")
    p.add_argument("--prune-startup-trials", type=int, default=3, help="median: trials that are never pruned")
    p.add_argument("--prune-warmup-epochs", type=int, default=0, help="median: epochs before pruning may start")
    p.add_argument("--storage", help="SQLAlchemy URL of the study database (default sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name (default: <recipe>-<space> file stems)")
    p.add_argument("--jobs", type=int, default=1, help="trials at once on this machine (CPU threads split)")
    p.add_argument("--sampler-seed", type=int, default=0,
                   help="sampler seed (was --seed); with --storage, each worker samples with a seed derived from "
                        "it, the study and --worker, so workers started with the same command never repeat each other")
    p.add_argument("--worker", help="this sweep's name among the workers of a shared study (default HOST-PID)")
    p.add_argument("--heartbeat-grace-s", type=int, default=GRACE_S,
                   help="a trial whose sweep wrote no heartbeat for this long is failed and re-run by another "
                        "worker of the study")
    p.add_argument("--final-test", choices=("eval", "retrain"), nargs="?", const="eval",
                   help="after the search: evaluate the best trial's checkpoint on test (eval), or retrain the "
                        "best recipe and the base recipe for --seeds and report val and test (retrain)")
    add_shared(p, "data_root", "out", "seeds", "device", "precision", defaults={"seeds": [0, 1]},
               help={"out": "the sweep's folder (default runs/sweeps/<study>)",
                     "seeds": "--final-test retrain: the seeds each recipe is retrained with (default 0 1; "
                              "was --final-seeds)",
                     "data_root": "data.root of every trial", "device": "runtime.device of every trial",
                     "precision": "train.precision of every trial"})
    args = parse(p, argv, "sweep")
    args.overrides = recipe_overrides(args, "data_root", "device", "precision")
    args.final_seeds = args.seeds
    for name in ("trials", "jobs", "heartbeat_grace_s"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def check_splits(recipe_path: str, overrides: list[str], final_test: str | None) -> None:
    """Before any trial (file lists only, no images): refuse when val is the test split, and a
    final test on a data set whose report split is val, the split the sweep selects on."""
    recipe = load_recipe(recipe_path, overrides)
    splits = resolve_splits(recipe.data, open_source(recipe.data))
    refuse_selection_on_test(splits)
    if final_test and splits["test"].name == splits["val"].name:
        raise RecipeError("--final-test: this data set's test split is the val split the sweep selects on; drop "
                          "--final-test, or give the data a test split (or data.val_from_train=true to select on "
                          "a hold-out carved from train)")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    # Heartbeats, retries and matplotlib plots are "experimental" in Optuna; one warning each per run is noise.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = load_space(args.space)
    check_space(space, args.recipe, args.overrides, args.space)
    base = load_recipe(args.recipe, args.overrides)
    check_splits(args.recipe, args.overrides, args.final_test)
    metric = base.train.best_metric
    name = args.study or f"{Path(args.recipe).stem}-{Path(args.space).stem}"
    out = args.out or Path("runs") / "sweeps" / name
    storage_url = args.storage or default_storage(out)
    storage = open_storage(storage_url, args.heartbeat_grace_s)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared = is_shared(args.storage)
    worker = (args.worker or worker_name()) if shared else None
    seed = sampler_seed(args.sampler_seed, name, worker)
    if shared:
        log.info("worker %s: sampler seed %d (from --sampler-seed %d, the study and the worker)", worker, seed,
                 args.sampler_seed)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="minimize" if metric.endswith("loss") else "maximize",
                                sampler=make_sampler(args.sampler, space, args.trials, seed, shared or args.jobs > 1),
                                pruner=make_pruner(args.pruner, base.schedule.epochs, args.prune_startup_trials,
                                                   args.prune_warmup_epochs))
    check_same_sweep(study, {"recipe": args.recipe, "overrides": args.overrides,
                             "space": {d.key: [d.kind, list(d.values), d.step, d.log] for d in space},
                             "metric": metric})
    failed = fail_dead_local_trials(study)
    if failed:
        log.info("trials %s were running when their sweep died: marked failed, re-queued with the same parameters",
                 failed)
    interrupted = requeue_interrupted(study)
    if interrupted:
        log.info("trials %s were interrupted (Ctrl-C or a signal): re-queued with the same parameters", interrupted)
    done = counted(study.get_trials(deepcopy=False))
    log.info("study %r in %s: %d of %d trials done; run folders in %s", name, shown_url(storage_url), done, args.trials,
             out / "trials")
    slots = Slots.detect(args.jobs)
    runner = TrialRunner(args.recipe, args.overrides, space, out / "trials", slots, metric, args.trials)
    header = (f"Sweep `{name}`; to continue it or rewrite these reports, run `{sweep_command(args, name, out)}`. "
              f"Each trial's value is its best val {metric} (selection on val only; test not evaluated).")
    best_path = out / "best_recipe.yaml"
    footer = lambda: best_lines(study, args.recipe, args.overrides, best_path)  # noqa: E731

    def after_trial(study: optuna.Study, trial) -> None:
        t = trial
        if t.user_attrs.get("surplus"):
            log.info("trial %d not run: the study's %d trials are taken by other workers", t.number, args.trials)
            return
        shown = f"val {metric} {t.user_attrs['value']:.2f}" if t.user_attrs.get("value") is not None else ""
        log.info("trial %d %s %s %s (%.0f s)", t.number, t.state.name.lower(), shown,
                 " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()),
                 t.user_attrs.get("wall_s", 0))
        requeue_interrupted(study)   # e.g. a training process the OOM killer ended: run it again
        write_tables(study, space, out, header, metric, footer())   # after every trial: a killed sweep leaves one

    while done < args.trials:
        study.optimize(runner, n_trials=args.trials - done, n_jobs=args.jobs, catch=(TrialFailed, BudgetSpent),
                       callbacks=[after_trial, StopAtBudget(args.trials)])
        done = counted(study.get_trials(deepcopy=False))
        # The budget is taken but not finished: trials of other workers (or re-queued interrupted ones)
        # are still open. Wait while they run; one whose worker dies is failed by its heartbeat and
        # re-queued, and this worker runs it.
        if done < args.trials and not wait_for_others(study, args.trials, poll_s=min(10, args.heartbeat_grace_s)):
            break
    # Every report is rewritten by every run of the command, a resumed or finished study's included.
    table = write_tables(study, space, out, header, metric, footer())
    best_path = write_best_recipe(study, args.recipe, args.overrides, best_path)
    if not args.final_test:
        drop_stale_final_test(study, out)
    plots = write_plots(study, out / "plots", metric)
    print(table.read_text())
    log.info("wrote %s, %s, %s", table, best_path or "(no best recipe: no trial completed)",
             ", ".join(str(p) for p in plots) or "no plots")
    if args.final_test and best_path is not None:
        final = final_test(args, study, best_path, out)
        print(final.read_text())
    return 0


def sweep_command(args: argparse.Namespace, name: str, out: Path) -> str:
    """The command that continues this study (or, when it is done, rewrites its reports), every option spelled
    out, so it runs as printed from the folder the sweep ran in."""
    words = ["python", "sweep.py", args.recipe, *args.overrides, "--space", args.space, "--trials", str(args.trials),
             "--sampler", args.sampler, "--pruner", args.pruner,
             "--prune-startup-trials", str(args.prune_startup_trials),
             "--prune-warmup-epochs", str(args.prune_warmup_epochs), "--study", name, "--out", str(out),
             "--jobs", str(args.jobs), "--sampler-seed", str(args.sampler_seed),
             "--heartbeat-grace-s", str(args.heartbeat_grace_s)]
    if args.storage:   # a password in the URL is masked (shown_url): the report may be shared, the secret not
        words += ["--storage", shown_url(args.storage)]
    if args.final_test:
        words += ["--final-test", args.final_test, "--seeds", *map(str, args.final_seeds)]
    return shlex.join(words)


def study_state(study: optuna.Study) -> dict:
    """What a final test was made from: the best trial and how many trials the study held."""
    try:
        best = study.best_trial.number
    except ValueError:   # no trial completed
        best = None
    return {"best_trial": best, "trials": len(study.get_trials(deepcopy=False))}


def drop_stale_final_test(study: optuna.Study, out: Path) -> None:
    """A final test of an earlier state of the study (it has trials since) no longer reports its best recipe:
    removed, with a line saying so, rather than left beside the new trials.md."""
    made = out / "final_test.json"
    if not made.is_file():
        return
    try:
        was = formats.read(made, formats.FINAL_TEST)["study"]
    except formats.FormatError:   # unreadable or foreign: stale all the same
        was = None
    if was != study_state(study):
        for stale in (made, out / "final_test.md"):
            stale.unlink(missing_ok=True)
        log.info("removed final_test.md/json: made before this study's latest trials (rerun with --final-test)")


# ------------------------------------------------------------------ test, apart from the search

def final_test(args: argparse.Namespace, study: optuna.Study, best_path: Path, out: Path) -> Path:
    if args.final_test == "eval":
        return final_eval(study, out, study.user_attrs["sweep"]["metric"])
    return final_retrain(args, study, best_path, out)


def final_eval(study: optuna.Study, out: Path, metric: str) -> Path:
    best = study.best_trial
    ckpt = Path(best.user_attrs["run_dir"]) / "best.pt"
    report = evaluate_checkpoint(ckpt, split="test", show_progress=False)
    m, split = report["metrics"], report["split"]
    path = out / "final_test.md"
    formats.write(out / "final_test.json", formats.FINAL_TEST, {k: v for k, v in report.items() if k != "metrics"}
                  | {"top1": m["top1"], "top5": m["top5"], "loss": m["loss"], "study": study_state(study)})
    path.write_text(f"Final test of sweep `{study.study_name}` (after the search; never used to select):\n\n"
                    f"| trial | checkpoint | val {metric} (selected on) | "
                    f"{split} top-1 | {split} top-5 | {split} images |\n|---|---|---|---|---|---|\n"
                    f"| {best.number} | `{ckpt}` | {best.value:.2f} | {m['top1']:.2f} | {m['top5']:.2f} | "
                    f"{m['samples']} |\n")
    return path


def final_retrain(args: argparse.Namespace, study: optuna.Study, best_path: Path, out: Path) -> Path:
    """The best recipe and the base recipe, trained again per seed: val (what was selected on)
    and test (reported apart) for each, and the gain of best over base."""
    runs_dir = out / "final"
    results: dict[str, list[dict]] = {"base": [], "best": []}
    # both with the search's shortcuts (best_recipe.yaml leaves them out): the gain is measured as it was searched
    shortcuts = search_shortcuts(args.recipe, args.overrides, list(study.best_trial.params))
    for seed in args.final_seeds:
        for label, recipe, overrides in (("base", args.recipe, args.overrides), ("best", str(best_path), shortcuts)):
            try:
                summary, _ = train_once(recipe, overrides, seed, runs_dir, f"{label}-s{seed}")
            except RunFailed as err:
                raise RecipeError(f"--final-test retrain: the {label} recipe failed: {err}") from None
            # val_top1: the chosen checkpoint's own val row; top1: the report split (named in "split").
            results[label].append({"seed": seed, "val": summary["val_top1"], "test": summary["top1"],
                                   "split": summary["split"], "train_s": summary["train_time_s"]})
            log.info("final %s seed %d: val %.2f test %.2f", label, seed, results[label][-1]["val"],
                     results[label][-1]["test"])
    formats.write(out / "final_test.json", formats.FINAL_TEST, {**results, "study": study_state(study)})

    def pm(values: list[float]) -> str:
        return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 \
            else f"{values[0]:.2f}"

    split = results["best"][0]["split"]   # "test", or "val" for a data set without a test split
    lines = [(f"Best recipe (`{best_path}`) vs the base (`{args.recipe} {' '.join(args.overrides)}`), "
             f"each retrained with seeds {args.final_seeds}. Val: the split the sweep selected on. "
             f"{split.capitalize()}: reported apart, never used to select."), "",
             f"| recipe | val top-1 % | {split} top-1 % | per seed (val / {split}) | train s |",
             "|---|---|---|---|---|"]
    for label in ("base", "best"):
        rows = results[label]
        seeds = ", ".join(f"s{r['seed']}: {r['val']:.2f} / {r['test']:.2f}" for r in rows)
        lines.append(f"| {label} | {pm([r['val'] for r in rows])} | {pm([r['test'] for r in rows])} | {seeds} | "
                     f"{statistics.fmean(r['train_s'] for r in rows):.0f} |")
    gain = {k: statistics.fmean(r[k] for r in results["best"]) - statistics.fmean(r[k] for r in results["base"])
            for k in ("val", "test")}
    lines += ["", (f"Gain of best over base: val {gain['val']:+.2f} points, {split} {gain['test']:+.2f} points "
                  f"(means over {len(args.final_seeds)} seeds).")]
    path = out / "final_test.md"
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
