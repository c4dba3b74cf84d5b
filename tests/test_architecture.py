"""The package's shape: imports go one way (config -> runtime -> report -> data -> models -> zoo -> eval ->
train -> cli -> sweep), without cycles; the configuration layer imports no torch code; function-local imports stay
the commented exception; every shipped recipe keeps its hash."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from trainkit.config.recipe import load_recipe, recipe_hash
from trainkit.config.schema import RecipeError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "trainkit"
# Lowest first: a module may import its own layer and the layers before it, never one after it.
LAYERS = ["config", "runtime", "report", "data", "models", "zoo", "eval", "train", "cli", "sweep", "commands",
          "__main__"]   # python -m trainkit: the console script, on top of every command
TORCH_CODE = ("torch", "torchvision", "timm", "numpy", "PIL", "albumentations", "safetensors", "onnx")
MAX_LOCAL_IMPORTS = 15


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    return LAYERS.index(part) if part in LAYERS else -1   # trainkit/__init__ sits below everything


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import statement of ``path``."""
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in local) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, node.lineno, id(node) in local))
            # "from trainkit.models import cifar": the imported name may itself be a module
            out += [(f"{node.module}.{a.name}", node.lineno, id(node) in local) for a in node.names
                    if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").is_file()]
    return out


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: sorted({name for name, _, _ in imports(p) if name in MODULES and name != m}) for m, p in MODULES.items()}


def test_no_upward_import():
    upward = [f"{m} imports {dep} ({LAYERS[layer(dep)]} is above {LAYERS[layer(m)]})"
              for m, deps in GRAPH.items() for dep in deps if layer(dep) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for dep in GRAPH[m]:
            if state.get(dep) == 1:
                return path + [m, dep]
            if dep not in state and (cycle := visit(dep, path + [m])):
                return cycle
        state[m] = 2
        return None

    for m in GRAPH:
        if m not in state:
            cycle = visit(m, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_the_configuration_layer_imports_no_torch_code():
    for m, path in MODULES.items():
        if layer(m) == LAYERS.index("config"):
            heavy = [f"{m}:{line} imports {name}" for name, line, _ in imports(path)
                     if name.split(".")[0] in TORCH_CODE]
            assert not heavy, heavy


def test_function_local_imports_are_few_and_say_why():
    found = []
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        for name, line, local in imports(path):
            if local:
                found.append(f"{m}:{line} {name}")
                around = " ".join(lines[max(0, line - 5):line])   # on the line or a few lines above (a block)
                assert "#" in around, f"{m}:{line}: a function-local import of {name} needs a comment saying why"
    assert len(found) <= MAX_LOCAL_IMPORTS, "\n".join(found)


def test_a_wrong_layer_would_be_caught():
    """The checks above can fail: a config module importing torch code or a component is flagged."""
    assert layer("trainkit.zoo.source") > layer("trainkit.models.hub") > layer("trainkit.config.recipe")
    assert "trainkit.models.hub" in GRAPH["trainkit.zoo.source"]   # the zoo source plugs into the hub
    assert all(layer(dep) <= layer("trainkit.config.recipe") for dep in GRAPH["trainkit.config.recipe"])


RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml"))
HASHES = ROOT / "tests" / "recipe_hashes.json"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_hashes_are_unchanged(path):
    """A recipe's hash names what it trains: refactoring the code must not move it (a changed recipe
    updates tests/recipe_hashes.json in the same commit, on purpose)."""
    expected = json.loads(HASHES.read_text())
    assert path.stem in expected, f"new recipe {path.name}: add its hash to {HASHES.name}"
    try:
        recipe = load_recipe(path)
    except RecipeError:   # recipes whose data.root is given on the command line
        recipe = load_recipe(path, ["data.root=/data"])
    assert recipe_hash(recipe) == expected[path.stem]


def _shipped_hashes() -> dict[str, str]:
    out = {}
    for path in RECIPES:
        try:
            out[path.stem] = recipe_hash(load_recipe(path))
        except RecipeError:
            out[path.stem] = recipe_hash(load_recipe(path, ["data.root=/data"]))
    return out


def test_a_new_defaulted_key_changes_no_hash(monkeypatch):
    """The hash covers only values that differ from the schema defaults (recipe.hashed_values): a key added to
    a section with a default moves no shipped recipe's hash, and setting it away from the default does."""
    import dataclasses

    from trainkit.config import recipe as recipe_module

    before = _shipped_hashes()
    assert before == json.loads(HASHES.read_text())

    @dataclasses.dataclass(frozen=True)
    class ScheduleWithNewKey(recipe_module.ScheduleCfg):
        cooldown_epochs: int = 0          # a key a later schema might add

    @dataclasses.dataclass(frozen=True)
    class TrainWithNewKey(recipe_module.TrainCfg):
        grad_noise: float | None = None

    # the schema's sections are resolved by name from the module (typing.get_type_hints), so this is the
    # schema a later version of recipe.py would have
    monkeypatch.setattr(recipe_module, "ScheduleCfg", ScheduleWithNewKey)
    monkeypatch.setattr(recipe_module, "TrainCfg", TrainWithNewKey)
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert isinstance(recipe.schedule, ScheduleWithNewKey) and recipe.schedule.cooldown_epochs == 0
    assert _shipped_hashes() == before
    changed = load_recipe(ROOT / "recipes" / "quickstart.yaml", ["schedule.cooldown_epochs=2"])
    assert recipe_hash(changed) != before["quickstart"]


def test_the_hash_ignores_prose_and_execution_but_not_training():
    quickstart = ROOT / "recipes" / "quickstart.yaml"
    base = recipe_hash(load_recipe(quickstart))
    assert recipe_hash(load_recipe(quickstart, ["description=other words", "runtime.workers=0"])) == base
    assert recipe_hash(load_recipe(quickstart, ["runtime.per_device_batch=32"])) != base   # steps per epoch
    assert recipe_hash(load_recipe(quickstart, ["optim.lr=0.0123"])) != base
