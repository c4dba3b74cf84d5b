"""The one command-line dialect every subcommand speaks (``trainkit <command>`` and ``python <command>.py``).

- Recipe keys are always ``key.path=value`` overrides, accepted anywhere on the line (before, between or after
  flags), as nanoGPT, Hydra and timm users type them.
- Flags are for what is not a recipe key, with one spelling per meaning across all subcommands (``SHARED``):
  ``--data-root DIR``, ``--out DIR`` (always an output *folder*), ``--seeds N [N ...]``,
  ``--device auto|cpu|cuda``, ``--precision fp32|bf16|fp16``. Where such a flag duplicates a recipe key it is
  turned into that override (``--device cpu`` = ``runtime.device=cpu``), so there is one place a value lands.
- Old spellings keep working for one release, with one ``warning:`` line on stderr (``DEPRECATED``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from trainkit.config.schema import RecipeError

# key.path=value: a dotted identifier, then '='. Paths (a/b=c), URLs (sqlite:///x) and step strings
# ("mix: a=b") do not match, so they stay the values they are.
OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")

# The shared flags: one spelling, one meaning, and the recipe key each duplicates (None: not a recipe key).
SHARED = {
    "data_root": ("--data-root", "DIR", "data.root", "the data set's folder (the recipe key data.root)"),
    "out": ("--out", "DIR", "runtime.out_dir", "output folder"),
    "seeds": ("--seeds", "N", "train.seed", "seeds of the training runs"),
    "device": ("--device", "auto|cpu|cuda", "runtime.device", "where to run (default: auto)"),
    "precision": ("--precision", "fp32|bf16|fp16", "train.precision", "autocast precision"),
}
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")

# Old spelling -> new spelling, per subcommand ("*": every subcommand). Removed one release after 0.1.
DEPRECATED: dict[str, dict[str, str]] = {
    "sweep": {"--final-seeds": "--seeds", "--seed": "--sampler-seed"},
    "prepare": {"--seed": "--shuffle-seed"},
}


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def new_parser(doc: str | None, examples: list[str], prog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand's parser: its docstring as the description and worked examples in the epilog."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    return argparse.ArgumentParser(prog=prog, description=doc, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_shared(p: argparse.ArgumentParser, *names: str, help: dict[str, str] | None = None,
               defaults: dict | None = None) -> None:
    """Add the shared flags ``names`` (keys of SHARED) with their one spelling; ``help`` refines the text."""
    help, defaults = help or {}, defaults or {}
    for name in names:
        flag, metavar, _key, text = SHARED[name]
        kw: dict = {"dest": name, "help": help.get(name, text), "default": defaults.get(name)}
        if name == "seeds":
            kw.update(type=int, nargs="+", metavar="N")
        elif name == "out":
            kw.update(type=Path, metavar=metavar)
        elif name == "device":
            kw.update(choices=DEVICES, default=defaults.get(name, "auto"))
        elif name == "precision":
            kw.update(choices=PRECISIONS)
        else:
            kw.update(metavar=metavar)
        p.add_argument(flag, **kw)


def rename_deprecated(command: str, argv: list[str]) -> list[str]:
    """Old spellings become new ones, each with one deprecation line."""
    renames = {**DEPRECATED.get("*", {}), **DEPRECATED.get(command, {})}
    out = []
    for token in argv:
        flag, eq, value = token.partition("=")
        if flag in renames:
            warn(f"{flag} is deprecated and goes away in the next release; use {renames[flag]}")
            token = renames[flag] + eq + value
        out.append(token)
    return out


def split_overrides(p: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without the key=value overrides, the overrides in order). A token right after a flag that takes
    exactly one value stays that flag's value (``--storage a=b``); after a flag taking several values
    (``--seeds 0 1``) an override still ends the list, as a person would read it."""
    rest, overrides = [], []
    takes_one_value = False
    for token in argv:
        if token == "--":
            takes_one_value = False
        if not takes_one_value and OVERRIDE.match(token):
            overrides.append(token)
            continue
        rest.append(token)
        action = p._option_string_actions.get(token.split("=", 1)[0]) if token.startswith("-") else None
        takes_one_value = action is not None and "=" not in token and action.nargs is None \
            and not isinstance(action, (argparse._StoreConstAction, argparse._HelpAction, argparse._VersionAction))
    return rest, overrides


def parse(p: argparse.ArgumentParser, argv: list[str], command: str, *, overrides: bool = True) -> argparse.Namespace:
    """Parse ``argv`` in the shared dialect. With ``overrides``: ``args.overrides`` holds the key=value tokens
    from anywhere on the line (the parser must not declare a positional for them)."""
    argv = rename_deprecated(command, list(argv))
    if not overrides:
        return p.parse_args(argv)
    rest, found = split_overrides(p, argv)
    args = p.parse_args(rest)
    args.overrides = found
    return args


def recipe_overrides(args: argparse.Namespace, *names: str) -> list[str]:
    """The shared flags ``names`` that were given, as the recipe overrides they stand for, placed before the
    explicit key=value ones (an explicit override, written later, wins)."""
    flags = []
    for name in names:
        value = getattr(args, name, None)
        if value is None or (name == "device" and value == "auto"):
            continue
        key = SHARED[name][2]
        if name == "seeds":
            if len(value) != 1:
                raise RecipeError(f"--seeds: a training run takes one seed, got {len(value)} "
                                  "(several seeds: trainkit ablate --seeds, or trainkit sweep --seeds)")
            value = value[0]
        flags.append(f"{key}={value}")
    return [*flags, *getattr(args, "overrides", [])]


def output_file(out: Path | None, name: str, suffixes: tuple[str, ...], default_dir: Path | None = None) -> Path:
    """The file a one-file command writes: ``--out DIR`` -> DIR/name. A path ending in one of ``suffixes``
    (the old meaning of --out as a file) still works for one release, with a deprecation line."""
    if out is None:
        return (default_dir or Path(".")) / name
    if out.suffix.lower() in suffixes and not out.is_dir():
        warn(f"--out {out}: a file name is deprecated and goes away in the next release; --out is the output "
             f"folder (this command writes {name} in it)")
        return out
    return out / name
