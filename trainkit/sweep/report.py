"""What a sweep leaves: the trial table (Markdown + CSV), the best recipe as a YAML file that
train.py runs as it is, and PNG plots. All of it is selected on val; test appears only in the
separate final-test report (sweep.py --final-test)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shlex
import statistics
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from trainkit.config.recipe import EPOCH_POINT_KEYS, load_recipe, recipe_yaml
from trainkit.sweep.space import Dimension, override
from trainkit.sweep.study import is_surplus, retried_numbers

log = logging.getLogger("trainkit")


def state_text(trial: FrozenTrial, retried: dict[int, int]) -> str:
    text = trial.state.name
    if trial.number in retried:
        text += f" (interrupted; re-run as #{retried[trial.number]})"
    elif trial.system_attrs.get("retry_history"):
        text += f" (re-run of #{trial.system_attrs['retry_history'][-1]})"
    elif trial.state == TrialState.PRUNED:
        text += f" (epoch {trial.user_attrs.get('epochs_run', '?')})"
    return text


def trial_rows(study: optuna.Study, space: list[Dimension]) -> list[dict]:
    trials = [t for t in study.get_trials(deepcopy=False) if not is_surplus(t)]   # never run: not a trial
    retried = retried_numbers(trials)
    rows = []
    for t in trials:
        row = {"trial": t.number, "state": state_text(t, retried)}
        row.update({d.key: t.params.get(d.key, "") for d in space})
        attrs = t.user_attrs
        row.update({"val": attrs.get("value"), "best_epoch": attrs.get("best_epoch"),
                    "epochs_run": attrs.get("epochs_run"), "wall_s": attrs.get("wall_s"),
                    "run_dir": attrs.get("run_dir", ""), "error": attrs.get("error", "")})
        rows.append(row)
    return rows


def fmt(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def write_tables(study: optuna.Study, space: list[Dimension], out_dir: Path, header: str, metric: str,
                 footer: list[str] = ()) -> Path:
    """trials.csv (raw values) and trials.md (best first among finished trials), ``footer`` lines last.
    Returns the .md path."""
    rows = trial_rows(study, space)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    keys = [d.key for d in space]
    cols = ["trial", "state", *keys, f"val {metric}", "best epoch", "epochs", "wall s", "run folder"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        folder = Path(r["run_dir"]).name if r["run_dir"] else ""
        cells = [str(r["trial"]), r["state"], *(fmt(r[k]) if r[k] != "" else "" for k in keys), fmt(r["val"]),
                 fmt(r["best_epoch"]), fmt(r["epochs_run"]),
                 f"{r['wall_s']:.0f}" if r["wall_s"] else "", folder]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    walls = [r["wall_s"] for r in rows if r["wall_s"]]
    states = [t.state for t in study.get_trials(deepcopy=False) if not is_surplus(t)]
    lines += ["", f"{len(rows)} trials: " + ", ".join(f"{s.name.lower()} {states.count(s)}" for s in TrialState
                                                     if states.count(s)) +
              (f"; trial wall time total {sum(walls):.0f} s, median {statistics.median(walls):.0f} s" if walls else "")]
    try:
        best = study.best_trial
        lines.append(f"Best (on val): trial {best.number}, val {metric} {best.value:.2f}, "
                     + ", ".join(f"`{override(k, v)}`" for k, v in best.params.items()))
    except ValueError:
        lines.append("No trial completed yet.")
    for line in footer:   # a paragraph each
        lines += ["", line]
    (out_dir / "trials.md").write_text("\n".join(lines) + "\n")
    return out_dir / "trials.md"


# Epoch-valued keys: overridden together with a shortened schedule.epochs they were scaled to the short search
# schedule, so they are shortcuts too.
EPOCH_KEYS = ("schedule.warmup_epochs", *EPOCH_POINT_KEYS)


def search_shortcuts(recipe: str, overrides: list[str], searched: list[str]) -> list[str]:
    """The sweep command's overrides that made the search cheap rather than changed the recipe: data.limit_*,
    schedule.budget_minutes, a schedule.epochs below the recipe file's (and the epoch points set with it).
    A searched key is never a shortcut."""
    epochs = [yaml.safe_load(o.partition("=")[2]) for o in overrides if o.partition("=")[0] == "schedule.epochs"]
    # a number (fractional epochs are allowed: 9.9), not a bool, which YAML also reads from the override
    if epochs and "schedule.epochs" not in searched and isinstance(epochs[-1], (int, float)) \
            and not isinstance(epochs[-1], bool):
        # the recipe file's epochs, with the command's other overrides (data.root may be needed to load it)
        unscheduled = [o for o in overrides if o.partition("=")[0] not in ("schedule.epochs", *EPOCH_KEYS)]
        shortened = epochs[-1] < load_recipe(recipe, unscheduled).schedule.epochs
    else:
        shortened = False
    out = []
    for item in overrides:
        key = item.partition("=")[0]
        if key in searched:
            continue
        if key.startswith("data.limit_") or key == "schedule.budget_minutes" or \
                (shortened and (key == "schedule.epochs" or key in EPOCH_KEYS)):
            out.append(item)
    return out


def write_best_recipe(study: optuna.Study, recipe: str, overrides: list[str], path: Path) -> Path | None:
    """The base recipe, its overrides and the best trial's parameters, fully resolved: train.py runs it as is.
    The search shortcuts (:func:`search_shortcuts`) are left out, so it trains the full recipe; they are named
    in its header, with the command that reruns the best trial as it was searched."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    params = [override(k, v) for k, v in best.params.items()]
    shortcuts = search_shortcuts(recipe, overrides, list(best.params))
    kept = [o for o in overrides if o not in shortcuts]
    resolved = load_recipe(recipe, [*kept, *params])
    resolved = dataclasses.replace(resolved, description=f"{resolved.description.strip()} Tuned by sweep "
                                   f"{study.study_name} (trial {best.number}, on val).".strip())
    head = (f"# Best trial ({best.number}) of sweep {study.study_name!r}, selected on val "
            f"({best.value:.4g}); test was not used.\n# Base: {recipe} {' '.join(kept)}\n"
            f"# Searched: {' '.join(params)}\n"
            f"# Search shortcuts, left out here: {' '.join(shortcuts) or '(none)'}\n"
            f"# Train it: {train_command(path)}\n")
    if shortcuts:
        head += f"# The best trial as it was searched: {train_command(path, shortcuts)}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + recipe_yaml(resolved))
    return path


def train_command(recipe: Path, overrides: list[str] = ()) -> str:
    return shlex.join(["python", "train.py", str(recipe), *overrides])


def best_lines(study: optuna.Study, recipe: str, overrides: list[str], best_path: Path) -> list[str]:
    """trials.md's closing lines: the commands that train the best recipe, and rerun its trial as searched."""
    try:
        best = study.best_trial
    except ValueError:
        return []
    shortcuts = search_shortcuts(recipe, overrides, list(best.params))
    lines = [f"Train the best recipe: `{train_command(best_path)}`"]
    if shortcuts:
        lines.append(f"Rerun the best trial as it was searched (with the search shortcuts): "
                     f"`{train_command(best_path, shortcuts)}`")
    return lines


PLOTS = {
    "history": "plot_optimization_history",
    "importances": "plot_param_importances",
    "parallel_coordinates": "plot_parallel_coordinate",
    "intermediate": "plot_intermediate_values",
}


def write_plots(study: optuna.Study, out_dir: Path, metric: str) -> list[Path]:
    """PNG plots through optuna.visualization.matplotlib; a plot that the trials so far cannot make
    (e.g. importances with one finished trial) is skipped with one log line, never an error."""
    import matplotlib  # late: only the sweep's report needs matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.importance import PedAnovaImportanceEvaluator

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, func in PLOTS.items():
        kwargs = {} if name == "intermediate" else {"target_name": f"val {metric}"}
        if name == "importances":   # PED-ANOVA: no scikit-learn needed (fANOVA's default needs it)
            kwargs["evaluator"] = PedAnovaImportanceEvaluator()
        try:
            with warnings.catch_warnings():   # "experimental" per plot; PED-ANOVA's few-trials note
                warnings.simplefilter("ignore")
                ax = getattr(ovm, func)(study, **kwargs)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5.5)
            fig.tight_layout()
            fig.savefig(out_dir / f"{name}.png", dpi=110)
            plt.close(fig)
            written.append(out_dir / f"{name}.png")
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as err:
            log.info("plot %s skipped: %s", name, " ".join(str(err).split())[:200])
    return written
