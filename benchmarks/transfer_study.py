"""The transfer study on aid-dev: photos no ImageNet backbone has seen (aerial scenes, 30 classes, 150 px).

  python benchmarks/transfer_study.py run METHOD [--backbone lite0|lite1|lite2] [--resolution card|native]
                                      [--per-class N] [--seed S]
      trains one cell with train.py (timed: the whole command, feature cache and data decoding included),
      writes its result record (results/records/aid-dev/, so recipes/RESULTS.md gets its row from
      `python compare.py results`) and the cell's study file benchmarks/results/transfer/<cell>.json
      (wall time, the record it belongs to, the command)
  python benchmarks/transfer_study.py cells [--seeds 0 1 2]
      prints the commands of the whole study (methods x backbones x seeds, native vs card resolution,
      the learning curve), one a line, for a long run: `... cells | sh`
  python benchmarks/transfer_study.py table
      regenerates the README section between the transfer-table markers and docs/transfer_study.png
      (aid-dev val top-1 against whole-command minutes) from those files

Every choice is made on a hold-out carved from train/ (recipes/_base/data/aid_dev.yaml: data.val_from_train,
10 of each class's 50 photos); best.pt is chosen on it. aid-dev's own val/ (25 photos a class) is only
evaluated, once per run, at the end: it is the figure the table reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.config import formats  # noqa: E402  (after the sys.path line above)
from trainkit.report.charts import figure, style  # noqa: E402  (after the sys.path line above)
from trainkit.report.records import record_from_run, write_record  # noqa: E402  (after the sys.path line)

STUDY = ROOT / "benchmarks" / "results" / "transfer"
RUNS = ROOT / "runs" / "transfer"
PNG = ROOT / "docs" / "transfer_study.png"
START, END = "<!-- transfer-table:start -->", "<!-- transfer-table:end -->"

# method -> (label, recipe, overrides): each method is a shipped recipe as it is, or a named variant of one
METHODS = {
    "probe": ("linear probe (cached features)", "linear_probe_photos_aid_lite0.yaml", []),
    "partial": ("partial fine-tune (last blocks)", "partial_finetune_photos_aid_lite0.yaml", []),
    "full": ("full fine-tune, layer decay", "finetune_photos_aid_lite0.yaml", []),
    "lpft": ("probe, then fine-tune (LP-FT)", "lpft_photos_aid_lite0.yaml", []),
    "scratch": ("from random weights", "finetune_photos_aid_lite0.yaml",
                ["model.pretrained=null", "finetune.layer_decay=null", "finetune.head_lr_mult=1.0", "optim.lr=0.1"]),
}
# backbone -> overrides of the lite0 recipes: the architecture, its zoo weights and the card's measured eval
# preprocessing (zoo/imagenet_efficientnet_lite*.yaml)
BACKBONES = {
    "lite0": [],
    "lite1": ["model.name=tf_efficientnet_lite1", "model.pretrained=zoo:imagenet_efficientnet_lite1",
              "data.train_size=240", "data.eval.size=240", "data.eval.crop_pct=0.882",
              "data.eval.interpolation=bicubic"],
    "lite2": ["model.name=tf_efficientnet_lite2", "model.pretrained=zoo:imagenet_efficientnet_lite2",
              "data.train_size=260", "data.eval.size=260", "data.eval.crop_pct=0.89",
              "data.eval.interpolation=bicubic"],
}
# native: the photos' own 150 px, no resize (about 0.45x the pixels of 224 px: about twice the images a second)
NATIVE = ["data.train_size=150", "data.eval.size=150", "data.eval.crop_pct=1.0"]
CURVE = (5, 10, 25)   # photos per class for the learning curve; "all" is the 40 left after the hold-out


def cell_name(method: str, backbone: str, resolution: str, per_class: int | None, seed: int) -> str:
    return f"{method}-{backbone}-{resolution}-pc{per_class or 'all'}-s{seed}"


def cell_overrides(method: str, backbone: str, resolution: str, per_class: int | None, seed: int) -> list[str]:
    _, _, extra = METHODS[method]
    out = [*extra, *BACKBONES[backbone], *(NATIVE if resolution == "native" else [])]
    if per_class:
        out.append(f"data.train_per_class={per_class}")
    if seed:
        out.append(f"train.seed={seed}")
    return out


def variant_name(method: str, backbone: str, resolution: str, per_class: int | None) -> str | None:
    """The record's variant name (None: the recipe as shipped); the seed is the record's own."""
    parts = [p for p, on in ((method, method == "scratch"), (backbone, backbone != "lite0"),
                             (resolution, resolution != "card"), (f"pc{per_class}", bool(per_class))) if on]
    return "-".join(parts) or None


def run_cell(method: str, backbone: str, resolution: str, per_class: int | None, seed: int) -> dict:
    name = cell_name(method, backbone, resolution, per_class, seed)
    _, recipe, _ = METHODS[method]
    argv = ["train.py", f"recipes/{recipe}", *cell_overrides(method, backbone, resolution, per_class, seed)]
    run_dir = RUNS / name
    if run_dir.exists():
        raise SystemExit(f"error: {run_dir} exists: move it away first (nothing was overwritten)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv, f"runtime.out_dir={RUNS}", f"runtime.run_name={name}",
                           "runtime.progress=false"], cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    STUDY.mkdir(parents=True, exist_ok=True)
    (STUDY / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    record_file = write_record(record_from_run(run_dir, variant_name=variant_name(method, backbone, resolution,
                                                                                  per_class)))
    result = {"cell": name, "method": method, "backbone": backbone, "resolution": resolution,
              "per_class": per_class, "seed": seed, "wall_s": round(wall, 1),
              "record": record_file.relative_to(ROOT).as_posix(), "command": "python " + " ".join(argv),
              "date": time.strftime("%Y-%m-%d")}
    formats.write(STUDY / f"{name}.json", formats.TRANSFER_CELL, result)
    return result


def study_commands(seeds: list[int]) -> list[str]:
    """The whole study, cheapest first: every method on lite0 (card resolution and native), the two best
    kinds (probe, full fine-tune) on lite1/lite2, and the learning curve of the probe and the full fine-tune."""
    cells = [(m, "lite0", r, None) for r in ("native", "card") for m in METHODS]
    cells += [(m, b, r, None) for b in ("lite1", "lite2") for m in ("probe", "full") for r in ("native", "card")]
    cells += [(m, "lite0", "native", n) for m in ("probe", "full") for n in CURVE]
    head = "python benchmarks/transfer_study.py run"
    return [f"{head} {m} --backbone {b} --resolution {r}{f' --per-class {n}' if n else ''} --seed {s}"
            for (m, b, r, n) in cells for s in seeds]


# ---- the table and the chart ------------------------------------------------------------------------------------

def read_cells(folder: Path = STUDY) -> list[dict]:
    """Every study file with its record's figures: aid-dev val top-1 (``top1``), hold-out top-1 of the chosen
    checkpoint (``holdout_top1``), img/s, machine and precision."""
    cells = []
    for path in sorted(folder.glob("*.json")):
        cell = formats.read(path, formats.TRANSFER_CELL)
        record = formats.read(ROOT / cell["record"], formats.RECORD)
        cells.append({**cell, "top1": record["top1"], "holdout_top1": record.get("val_top1"),
                      "split": record.get("split"), "selected_on": record.get("selected_on"),
                      "img_per_s": record.get("img_per_s"), "hardware": record.get("hardware"),
                      "precision": record.get("precision"), "epochs": record.get("epochs")})
    return cells


def group_cells(cells: list[dict]) -> list[dict]:
    """Seeds folded: one row per method, backbone, resolution and photos per class (mean, sample std)."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["method"], c["backbone"], c["resolution"], c["per_class"] or 0), []).append(c)
    rows = []
    for (method, backbone, resolution, per_class), cs in groups.items():
        top1 = [c["top1"] for c in cs]
        holdout = [c["holdout_top1"] for c in cs if c["holdout_top1"] is not None]
        rows.append({"method": method, "backbone": backbone, "resolution": resolution, "per_class": per_class,
                     "n": len(cs), "top1": statistics.fmean(top1),
                     "top1_std": statistics.stdev(top1) if len(top1) > 1 else None,
                     "holdout_top1": statistics.fmean(holdout) if holdout else None,
                     "wall_min": statistics.fmean(c["wall_s"] for c in cs) / 60,
                     "img_per_s": statistics.fmean(c["img_per_s"] or 0 for c in cs),
                     "epochs": cs[0]["epochs"], "machine": ", ".join(sorted({str(c["hardware"]) for c in cs})),
                     "precision": ", ".join(sorted({str(c["precision"]) for c in cs})),
                     "command": cs[0]["command"]})
    order = list(METHODS)
    return sorted(rows, key=lambda r: (r["per_class"] or 99, order.index(r["method"]), r["backbone"], r["resolution"]))


def _pct(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def table_markdown(rows: list[dict]) -> str:
    lines = [START, ""]
    if not rows:
        lines += ["No study cells measured yet: `python benchmarks/transfer_study.py cells` lists the commands.", "",
                  END]
        return "\n".join(lines)
    lines += ["| # | method | backbone | px | photos/class | n | aid-dev val top-1 | hold-out top-1 | epochs | "
              "wall | img/s | precision | machine |", "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for i, r in enumerate(rows, 1):
        px = "150 (native)" if r["resolution"] == "native" else "card"
        holdout = "-" if r["holdout_top1"] is None else f"{r['holdout_top1']:.2f}"
        lines.append(f"| {i} | {METHODS[r['method']][0]} | {r['backbone']} | {px} | {r['per_class'] or 40} | "
                     f"{r['n']} | {_pct(r['top1'], r['top1_std'])} | {holdout} | {r['epochs']} | "
                     f"{r['wall_min']:.1f} min | {r['img_per_s']:.0f} | {r['precision']} | {r['machine']} |")
    lines += ["", "aid-dev val: 25 photos per class (750), never used for a choice; hold-out: 10 of each class's 50 "
                  "train photos, on which best.pt is chosen; the other 40 (or the learning curve's 5/10/25) train. "
                  "Top-1 mean ± sample std over n seeds; wall: the whole train.py command (start-up, decoding, "
                  "feature cache, training, both evaluations); img/s: the training loop's (for the probe, the "
                  "classifier on cached features). Generated by "
                  "`python benchmarks/transfer_study.py table` from benchmarks/results/transfer/*.json and their "
                  "records in results/records/aid-dev/.", "",
              f"![aid-dev val top-1 against minutes]({PNG.relative_to(ROOT).as_posix()})", "", END]
    return "\n".join(lines)


def write_png(rows: list[dict], path: Path = PNG) -> Path:
    """aid-dev val top-1 against whole-command minutes, one numbered point per row (all photos per class)."""
    fig = figure(6.5, 4.2)
    ax = fig.add_subplot()
    for i, r in enumerate(rows, 1):
        if r["per_class"]:
            continue
        st = style(i)
        ax.errorbar([r["wall_min"]], [r["top1"]], yerr=None if r["top1_std"] is None else [r["top1_std"]],
                    color=st["color"], marker=st["marker"], markersize=7, linestyle="none", capsize=3,
                    label=f"{i}. {r['method']} {r['backbone']} {r['resolution']} (n={r['n']})")
        ax.annotate(str(i), (r["wall_min"], r["top1"]), xytext=(5, 4), textcoords="offset points", fontsize=8,
                    color=st["color"])
    ax.set(xlabel="wall time of the whole command (min)", ylabel="aid-dev val top-1 (%)",
           title="aid-dev (unseen aerial photos): top-1 vs minutes")
    ax.margins(x=0.15, y=0.15)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    return path


def write_table(readme: Path = ROOT / "README.md", folder: Path = STUDY, png: Path | None = PNG) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"error: {readme} has no {START} ... {END} section")
    rows = group_cells(read_cells(folder))
    head, rest = text.split(START, 1)
    readme.write_text(head + table_markdown(rows) + rest.split(END, 1)[1])
    if png is not None and rows:
        write_png(rows, png)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("method", choices=list(METHODS))
    r.add_argument("--backbone", choices=list(BACKBONES), default="lite0")
    r.add_argument("--resolution", choices=("card", "native"), default="card",
                   help="card: the zoo card's eval size (224/240/260 px); native: the photos' 150 px")
    r.add_argument("--per-class", type=int, help="train photos per class (learning curve); default: all 40")
    r.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("cells")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sub.add_parser("table")
    args = p.parse_args()
    if args.command == "run":
        print(json.dumps(run_cell(args.method, args.backbone, args.resolution, args.per_class, args.seed), indent=2))
    elif args.command == "cells":
        print("\n".join(study_commands(args.seeds)))
    else:
        write_table()
        print(f"README.md: transfer table regenerated; {PNG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
