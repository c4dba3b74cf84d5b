"""zoo/README.md: one table per data set, generated from the model cards."""

from __future__ import annotations

from pathlib import Path

from trainkit.report.records import RecordError, read_record
from trainkit.report.results import anchor
from trainkit.report.table import format_params, format_split
from trainkit.zoo.cards import ROOT, ModelCard, card_ids, load_card, zoo_dir

README_HEADER = """# Model zoo

Generated from the model cards in this folder by `python zoo.py readme`; do not edit by hand.
Every number below was measured through the evaluation pipeline (`python evaluate.py zoo:<id> --update-card`,
or `python zoo.py publish`, which runs the same code) on the split named
in the card (the command and hardware are in each card). Load any model with
`model.pretrained: zoo:<id>` in a recipe, or `trainkit.models.hub.resolve("zoo:<id>")`.
Cards for weights our own recipes trained (`python zoo.py publish RUN_DIR --id ID`) link the row of
[recipes/RESULTS.md](../recipes/RESULTS.md) their run belongs to; their weights are committed in
`weights/` (safetensors, at most 5 MB each, sha256 on the card).
"""


def readme_markdown(cards: list[ModelCard]) -> str:
    """One table per data set: model, architecture, recipe or source, params, top-1, top-5."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    def source(card: ModelCard) -> str:
        s = card.source
        if s.recipe:
            return f"[{Path(s.recipe).name}](../{s.recipe})" + (f" `{s.recipe_hash}`" if s.recipe_hash else "")
        return f"[{s.third_party.removeprefix('https://github.com/')}]({s.third_party}) ({s.license})"

    def results_row(card: ModelCard) -> str:
        return "-" if not card.source.record else f"[{result_anchor(card.source.record)}]" \
            f"(../recipes/RESULTS.md#{result_anchor(card.source.record)})"

    lines = [README_HEADER]
    for dataset in sorted({c.dataset.name for c in cards}):
        rows = sorted((c for c in cards if c.dataset.name == dataset), key=lambda c: -(c.metrics.top1 or -1))
        # cards whose data set holds a subset of their classes (ImageNet models on 10 ImageNet classes)
        restricted = any(c.metrics.top1_restricted is not None for c in rows)
        extra = (" top-1 over all classes | top-5 over all classes | top-1, logits restricted to the data set's "
                 "classes |", "---:|---:|---:|") if restricted else (" top-1 | top-5 |", "---:|---:|")
        lines += [f"## {dataset}", "", f"| model | architecture | recipe / source | results row | params | split |"
                                       f"{extra[0]}", f"|---|---|---|---|---:|---|{extra[1]}"]
        lines += [f"| [{c.id}]({c.id}.yaml) | {c.architecture} | {source(c)} | {results_row(c)} | "
                  f"{format_params(c.params)} | {split_text(c)} | {pct(c.metrics.top1)} | {pct(c.metrics.top5)} |"
                  + (f" {pct(c.metrics.top1_restricted)} |" if restricted else "") for c in rows]
        lines.append("")
    return "\n".join(lines)


def split_text(card: ModelCard) -> str:
    """The card's split, named as RESULTS.md names it: a run on a data set without a test split chose its
    checkpoint on the val split its card reports, and the reader should see that here too."""
    record = committed_record(card.source.record)
    return format_split({"split": card.dataset.split, "selected_on": record.get("selected_on")}) if record \
        else card.dataset.split


def committed_record(record: str | None) -> dict:
    """The result record a card of our own weights names ({} for a third-party card, or a record that is gone)."""
    try:   # the one record reader; a gone or broken record leaves the card's own fields
        return read_record(ROOT / record) if record else {}
    except RecordError:
        return {}


def result_anchor(record: str) -> str:
    """The RESULTS.md row (its anchor) of the result record a card names; the record's file name when it is gone."""
    found = committed_record(record)
    return anchor(found) if found else Path(record).stem


def write_readme() -> Path:
    path = zoo_dir() / "README.md"
    path.write_text(readme_markdown([load_card(i) for i in card_ids()]))
    return path
