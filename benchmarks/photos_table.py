"""The ImageNet weight-mapping check: ImageNet EfficientNet-Lite0 on imagenette-dev, logits restricted to its
10 classes, no training.

  python benchmarks/photos_table.py run pretrained|probe|finetune|scratch [--data-root DIR] [--seed N]
      runs one row's command (timed, wall clock), writes benchmarks/results/photos/<row>.json; the
      run folder stays in runs/photos-table/<row>-s<seed> (for result records and a zoo card)
  python benchmarks/photos_table.py table
      regenerates the README section between the photos-table markers from those files

imagenette-dev's photos are ImageNet-1k TRAINING images: the backbones were trained on them, so a score
there measures memory, not transfer. Only the ``pretrained`` row (the weight mapping and preprocessing are
right when the restricted top-1 is near 100%) is shown; the probe, fine-tune and from-scratch rows can
still be run (their records are in recipes/RESULTS.md, marked as ImageNet training photos) but make no
transfer claim: that is benchmarks/transfer_study.py's, on aid-dev, photos ImageNet never saw.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit.config import formats  # noqa: E402  (after the sys.path line above)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "photos"
DEFAULT_DATA = "../shared/data/imagenette-dev"
START, END = "<!-- photos-table:start -->", "<!-- photos-table:end -->"

# Every training row: all 1,200 train photos, all 500 val photos, each recipe as shipped (so its runs are
# the recipe's own rows in recipes/RESULTS.md).
RUNS = ROOT / "runs" / "photos-table"
ROWS = {
    "pretrained": ("ImageNet EfficientNet-Lite0, logits restricted to the 10 classes (no training)",
                   ["evaluate.py", "zoo:imagenet_efficientnet_lite0", "--data-root", "{data}", "--split", "val",
                    "--update-card"]),
    "probe": ("linear probe (frozen backbone, cached features)",
              ["train.py", "recipes/linear_probe_photos_lite0.yaml", "data.root={data}"]),
    "finetune": ("full fine-tune", ["train.py", "recipes/finetune_photos_lite0.yaml", "data.root={data}"]),
    "scratch": ("the fine-tuning recipe from random weights (lr 0.1: a from-scratch lr)",
                ["train.py", "recipes/finetune_photos_lite0.yaml", "data.root={data}", "model.pretrained=null",
                 "finetune.layer_decay=null", "finetune.head_lr_mult=1.0", "optim.lr=0.1"]),
}


def run_row(name: str, data: str, seed: int) -> dict:
    _, template = ROWS[name]
    argv = [a.format(data=data) for a in template]
    if argv[0] == "train.py" and seed:
        argv.append(f"train.seed={seed}")
    run_name = f"{name}-s{seed}"
    with tempfile.TemporaryDirectory() as tmp:
        out = RUNS if argv[0] == "train.py" else Path(tmp)
        if (out / run_name).exists():
            raise SystemExit(f"error: {out / run_name} exists: move it away first (nothing was overwritten)")
        # evaluate.py writes its default report folder (an --out would end up in the card's command)
        extra = [] if argv[0] == "evaluate.py" else \
            [f"runtime.out_dir={out}", f"runtime.run_name={run_name}", "runtime.progress=false"]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv, *extra], cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        RESULTS.mkdir(parents=True, exist_ok=True)
        suffix = f"-s{seed}" if seed else ""
        (RESULTS / f"{name}{suffix}.log").write_text(proc.stdout + proc.stderr)   # the run's own log: epochs, timings
        if proc.returncode != 0:
            raise SystemExit(f"error: {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
        if argv[0] == "evaluate.py":
            metrics_json = ROOT / "runs" / "zoo-eval" / f"{argv[1][4:]}-val" / "metrics.json"
            m = formats.read(metrics_json, formats.METRICS)["metrics"]
            result = {"top1": m["top1"], "top1_all_classes": m["top1_all"], "epochs": 0, "train_s": 0.0}
        else:
            rows = formats.read_lines(out / run_name / "metrics.jsonl", formats.METRICS_ROW)
            epochs = [r for r in rows if "val_top1" in r]
            summary = formats.read(out / run_name / "summary.json", formats.SUMMARY)
            result = {"top1": epochs[-1]["val_top1"], "epochs": epochs[-1]["epoch"],
                      "train_s": summary["train_time_s"], "hardware": summary["hardware"]}
    result.update(row=name, command="python " + " ".join(argv), wall_s=wall, split="val",
                  date=time.strftime("%Y-%m-%d"), seed=seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # the table shows seed 0; other seeds' runs are for the result records (recipes/RESULTS.md)
    formats.write(RESULTS / f"{name}{'-s' + str(seed) if seed else ''}.json", formats.PHOTOS_ROW, result)
    return result


SHOWN = ("pretrained",)   # the weight-mapping check; the other rows would be memory, not transfer (see above)


def table_markdown() -> str:
    lines = [START, "", "| | val top-1 | wall time | command |", "|---|---:|---:|---|"]
    hardware = set()
    for name in SHOWN:
        label = ROWS[name][0]
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            lines.append(f"| {label} | not measured | | |")
            continue
        r = formats.read(path, formats.PHOTOS_ROW)
        hardware.add(r.get("hardware", ""))
        lines.append(f"| {label} | {r['top1']:.2f}% (all 1000 outputs: {r['top1_all_classes']:.2f}%) | "
                     f"{r['wall_s'] / 60:.1f} min | `{r['command']}` |")
    hw = ", ".join(sorted(h for h in hardware if h)) or "this machine"
    lines += ["", (f"imagenette-dev val: 500 ImageNet-1k training photos of 10 classes, so this checks the weight "
                   f"mapping and preprocessing, not what the model does on photos it never saw. Wall time of the "
                   f"whole command on {hw}. Generated by `python benchmarks/photos_table.py table` from "
                   f"benchmarks/results/photos/pretrained.json."), "", END]
    return "\n".join(lines)


def write_table(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"error: {readme} has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    readme.write_text(head + table_markdown() + rest.split(END, 1)[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("row", choices=list(ROWS))
    r.add_argument("--data-root", default=DEFAULT_DATA)
    r.add_argument("--seed", type=int, default=0, help="train.seed of a training row")
    sub.add_parser("table")
    args = p.parse_args()
    if args.command == "run":
        result = run_row(args.row, args.data_root, args.seed)
        print(json.dumps(result, indent=2))
    else:
        write_table()
        print("README.md: photos table regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
