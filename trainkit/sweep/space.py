"""Search spaces: YAML over dotted recipe keys, checked against the recipe schema before a trial runs.

    optim.lr:             {loguniform: [0.01, 1.0]}
    loss.label_smoothing: {uniform: [0.0, 0.2], step: 0.05}     # step: a grid of 0, 0.05, ..., 0.2
    augment.auto_augment: {choice: [null, rand-m9-mstd0.5]}
    schedule.epochs:      {int: [2, 6], step: 2}                # or {int: [8, 256], log: true}

Each key must be a recipe key and every value the space can produce (both ends of a range, each
choice) must pass the recipe's own checks with the base recipe, so a typo or a range outside what
the schema allows is one error line naming the space file and the key, before anything trains.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from trainkit.config.recipe import load_recipe
from trainkit.config.schema import RecipeError, did_you_mean

KINDS = ("loguniform", "uniform", "int", "choice")
OPTIONS = {"loguniform": (), "uniform": ("step",), "int": ("step", "log"), "choice": ()}
Scalar = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Dimension:
    key: str                      # dotted recipe key, e.g. optim.lr
    kind: str                     # one of KINDS
    values: tuple                 # [low, high] for ranges, the options for choice
    step: float | int | None = None
    log: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        low, high = self.values
        if self.kind == "int":
            return trial.suggest_int(self.key, low, high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, low, high, step=self.step, log=self.kind == "loguniform")

    def grid(self) -> list:
        """Every value, for the grid sampler (ranges need a step)."""
        if self.kind == "choice":
            return list(self.values)
        if self.step is None:
            raise RecipeError(f"{self.key}: the grid sampler needs discrete values; give a step or a choice list")
        low, high = self.values
        count = math.floor((high - low) / self.step + 1e-9) + 1
        values = [low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def ends(self) -> list:
        """The values the schema must accept: both ends of a range, or every choice."""
        return list(self.values)


def yaml_scalar(value: Any) -> str:
    """JSON is YAML (strings stay strings, null stays null), except that YAML 1.1 reads a float
    only with a dot: 1e-06 would be a string, 1.0e-06 is a number. Floats keep 12 significant
    digits, so a step's low + k * step (0.15000000000000002) reaches the recipe as 0.15."""
    if isinstance(value, float):
        value = float(f"{value:.12g}")
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text:
        text = text.replace("e", ".0e", 1)
    return text


def override(key: str, value: Any) -> str:
    """``key=value`` as train.py takes it."""
    return f"{key}={yaml_scalar(value)}"


def parse_dimension(key: str, spec: Any, where: str) -> Dimension:
    if not isinstance(spec, dict) or not spec:
        raise RecipeError(f"{where}: {key}: expected a mapping such as {{loguniform: [0.01, 1.0]}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        unknown = next((k for k in spec if k not in KINDS and k not in ("step", "log")), None)
        hint = did_you_mean(str(unknown), KINDS) if unknown is not None else ""
        raise RecipeError(f"{where}: {key}: give exactly one of {', '.join(KINDS)}, got {list(spec)}{hint}")
    kind = kinds[0]
    extra = [k for k in spec if k != kind and k not in OPTIONS[kind]]
    if extra:
        allowed = ", ".join(OPTIONS[kind]) or "no options"
        raise RecipeError(f"{where}: {key}: {kind} takes {allowed}, got {extra[0]!r}")
    values = spec[kind]
    if kind == "choice":
        if not isinstance(values, list) or not values or not all(isinstance(v, Scalar) for v in values):
            raise RecipeError(f"{where}: {key}: choice needs a non-empty list of scalars (null, numbers, strings, "
                              f"true/false), got {values!r}")
        if len({json.dumps(v) for v in values}) != len(values):
            raise RecipeError(f"{where}: {key}: choice lists a value twice: {values!r}")
        return Dimension(key, kind, tuple(values))
    number = int if kind == "int" else (int, float)
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, number) and not isinstance(v, bool) for v in values)):
        what = "integers" if kind == "int" else "numbers"
        raise RecipeError(f"{where}: {key}: {kind} needs [low, high] {what}, got {values!r}")
    low, high = values
    if not low < high:
        raise RecipeError(f"{where}: {key}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise RecipeError(f"{where}: {key}: loguniform needs low > 0, got {low}")
    step, log = spec.get("step"), bool(spec.get("log", False))
    if not isinstance(spec.get("log", False), bool):
        raise RecipeError(f"{where}: {key}: log is true or false, got {spec['log']!r}")
    if log and low < 1:
        raise RecipeError(f"{where}: {key}: int with log: true needs low >= 1, got {low}")
    if step is not None:
        if not isinstance(step, number) or isinstance(step, bool) or not 0 < step <= high - low:
            what = "an integer" if kind == "int" else "a number"
            raise RecipeError(f"{where}: {key}: step must be {what} in (0, high - low], got {step!r}")
        if log:
            raise RecipeError(f"{where}: {key}: int takes step or log: true, not both")
    return Dimension(key, kind, (low, high), step, log)


def load_space(path: str | Path) -> list[Dimension]:
    """Read and check the space file's own syntax (not yet against a recipe)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"space file not found: {path}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{line}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict) or not data:
        raise RecipeError(f"{path}: a space is a non-empty mapping of dotted recipe keys, e.g. "
                          f"optim.lr: {{loguniform: [0.01, 1.0]}}")
    return [parse_dimension(str(key), spec, str(path)) for key, spec in data.items()]


def check_space(space: list[Dimension], recipe: str | Path, overrides: list[str], where: str) -> None:
    """Every value the space can produce must make a valid recipe (unknown keys, types, ranges),
    each dimension tried alone on top of the base recipe and its overrides."""
    for dim in space:
        if dim.key.startswith("runtime."):
            raise RecipeError(f"{where}: {dim.key}: runtime keys say how a run executes, not what it trains; "
                              f"they cannot be searched")
        for value in dim.ends():
            try:
                load_recipe(recipe, [*overrides, override(dim.key, value)])
            except RecipeError as err:
                raise RecipeError(f"{where}: {dim.key}={yaml_scalar(value)}: {err}") from None


def grid_space(space: list[Dimension]) -> dict[str, list]:
    return {dim.key: dim.grid() for dim in space}
