"""``trainkit zoo list [WORD]`` and ``trainkit zoo show NAME``: the cards as a terminal table and as text.

No weights are fetched and no torch code runs: listing the zoo is instant. The size column is the weights
file's size where the file is here (the repository, an installed package or the download cache), else the
float32 size its parameter count implies (marked ``~``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml

from trainkit.config.schema import RecipeError, did_you_mean
from trainkit.report.table import format_params
from trainkit.zoo.cards import ROOT, ModelCard, card_ids, card_path, ensemble_card_path, ensembles_dir, load_card, \
    load_ensemble_card
from trainkit.zoo.fetch import cache_dir

COLUMNS = ("name", "arch", "data set", "top-1", "params", "size", "license", "source")


def ensemble_ids() -> list[str]:
    folder = ensembles_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def weights_size(card: ModelCard) -> str:
    """MB of the weights file where it is on this machine, else ``~`` the float32 size of the parameters."""
    w = card.weights
    candidates = [ROOT / w.path] if w.path else []
    candidates.append(cache_dir() / w.sha256[:12] / w.file_name)
    for path in candidates:
        if path.is_file():
            return f"{os.path.getsize(path) / 1e6:.1f} MB"
    return f"~{card.params * 4 / 1e6:.1f} MB" if card.params else "-"


def source_text(card: ModelCard) -> str:
    s = card.source
    if s.recipe:
        return f"ours: {s.recipe}"
    return (s.third_party or "-").removeprefix("https://").removeprefix("github.com/")


def model_row(card: ModelCard) -> list[str]:
    top1 = card.metrics.top1
    return [f"zoo:{card.id}", card.architecture, card.dataset.name or card.dataset.source,
            "-" if top1 is None else f"{top1:.2f}", format_params(card.params), weights_size(card),
            card.source.license or ("ours" if card.source.recipe else "-"), source_text(card)]


def ensemble_row(card_id: str) -> list[str]:
    card = load_ensemble_card(card_id)
    top1 = card.metrics.top1
    return [f"zoo:{card_id}", f"ensemble of {len(card.members)} ({card.combine})", "-",
            "-" if top1 is None else f"{top1:.2f}", "-", "-", "-", ", ".join(card.members)]


def zoo_rows(word: str | None = None) -> list[list[str]]:
    """Every card (model cards, then ensemble cards) whose name, architecture, data set or source contains
    ``word`` (case-insensitive); all cards without ``word``."""
    rows = [model_row(load_card(i)) for i in card_ids()] + [ensemble_row(i) for i in ensemble_ids()]
    if word:
        needle = word.lower()
        rows = [r for r in rows if any(needle in cell.lower() for cell in (r[0], r[1], r[2], r[7]))]
    return rows


def format_rows(rows: list[list[str]]) -> str:
    """A plain aligned table (readable in a terminal, greppable, no box characters)."""
    table = [list(COLUMNS), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table)


def zoo_table(word: str | None = None) -> str:
    rows = zoo_rows(word)
    if not rows:
        names = [f"zoo:{i}" for i in card_ids() + ensemble_ids()]
        raise RecipeError(f"no zoo card matches {word!r}; {len(names)} cards: trainkit zoo list (no word) shows them")
    return format_rows(rows)


def card_text(name: str) -> str:
    """The card ``name`` (``zoo:<id>`` or ``<id>``) as YAML, without the long class list (its size and first
    entries instead), and where its file is."""
    card_id = name.removeprefix("zoo:")
    if ensemble_card_path(card_id).is_file():
        card = load_ensemble_card(card_id)
        path = ensemble_card_path(card_id)
    elif card_path(card_id).is_file():
        card = load_card(card_id)
        path = card_path(card_id)
    else:
        raise RecipeError(f"zoo:{card_id}: no such card{did_you_mean(card_id, card_ids() + ensemble_ids())} "
                          "(trainkit zoo list shows them)")
    tree = dataclasses.asdict(card)
    for key in ("classes", "class_names"):
        values = tree.get(key) or []
        if len(values) > 12:
            tree[key] = f"{len(values)} entries: {', '.join(values[:5])}, ..."
    return f"# {Path(path).relative_to(ROOT) if Path(path).is_relative_to(ROOT) else path}\n" + \
        yaml.safe_dump(tree, sort_keys=False, width=110)
