"""Time to accuracy: the speed recipe against timm's own train.py, on the same images, same machine.

Used by ``benchmarks/run.py --only tta`` (see there for the command line). Both sides read one
ImageFolder of symlinks (nothing copied): train/ and val/ are our hold-out split of CIFAR-10's
training JPEGs (``data.holdout_fraction=0.1``, seed 0: 45,000 / 5,000), test/ the 10,000 test
JPEGs. Each side:

- ours: ``train.py recipes/cifar10_speedrun.yaml`` with ``schedule.budget_minutes`` (the epochs
  that fit, decided at start-up), val every epoch, every epoch's checkpoint kept;
- timm: its own ``train.py`` (benchmarks/timm_train.py) on ResNet-20 with its own schedule (SGD
  lr 0.1, batch 128, cosine over ``--tta-timm-epochs``), the worker count and precision the
  ``train`` section found fastest on this machine, ``--checkpoint-hist`` keeping every epoch.

The clock: wall seconds from just before the process is started (interpreter start-up, imports,
decode: all inside) to the modification time of each epoch's checkpoint, written after that
epoch's val evaluation, on both sides. Val top-1 per epoch is each side's own in-run figure on the
same 5,000 val images; test top-1 of every epoch is measured after the runs, outside the clock,
from the kept checkpoints through our one evaluation path (trainkit.eval.pipeline) for both sides,
with the same eval preprocessing (timm's pretrained config of resnet20_cifar equals the recipe's
data.eval: 32 px, crop 1.0, ImageNet mean/std), so the two test columns differ only by the weights.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # trainkit, for the split and the evaluation (run.py runs from benchmarks/)

from trainkit.config import formats  # noqa: E402
from trainkit.config.recipe import DataCfg  # noqa: E402
from trainkit.data.sources import open_source, resolve_splits  # noqa: E402
from trainkit.eval.pipeline import evaluate_model  # noqa: E402
from trainkit.models.hub import resolve, with_data_root  # noqa: E402
from trainkit.report.charts import figure  # noqa: E402

PY = sys.executable
HOLDOUT = DataCfg(name="imagefolder", holdout_fraction=0.1, holdout_seed=0)


def split_folder(src: Path, dst: Path) -> dict[str, int]:
    """dst/{train,val,test}/<class>/ as symlinks: our hold-out split of src/train, and src/test."""
    splits = resolve_splits(HOLDOUT, open_source(dataclasses.replace(HOLDOUT, root=str(src))))
    for name in ("train", "val", "test"):
        split = splits[name]
        for cls in split.classes:   # every class, even one the hold-out drew no image of
            (dst / name / cls).mkdir(parents=True, exist_ok=True)
        for path, target in zip(split.paths, split.targets):
            (dst / name / split.classes[target] / Path(path).name).symlink_to(Path(path).resolve())
    return {name: len(splits[name]) for name in ("train", "val", "test")}


def timm_best_flags(train_json: Path) -> tuple[int, str]:
    """(workers, precision) the train section found fastest here: timm's quicker ``-j``, the quicker
    ceiling precision. (1, bf16) when that section was not measured."""
    if not train_json.is_file():
        return 1, "bf16"
    runs = formats.read(train_json, formats.BENCHMARK)["runs"]
    walls = {int(k.rsplit(" ", 1)[1]): min(r["wall_s"] for r in v) for k, v in runs.items() if k.startswith("timm")}
    ceil = {k.split(", ")[1]: max(r["img_per_s"] for r in v) for k, v in runs.items() if k.startswith("ceiling")}
    return (min(walls, key=walls.get) if walls else 1), (max(ceil, key=ceil.get) if ceil else "bf16")


def ours_cmd(data: Path, out: Path, budget_minutes: float) -> list[str]:
    return [PY, "train.py", "recipes/cifar10_speedrun.yaml", f"data.root={data}",
            f"schedule.budget_minutes={budget_minutes:g}", "train.eval_every_epochs=1",
            "runtime.keep_epoch_checkpoints=true", "runtime.progress=false", f"runtime.out_dir={out}",
            "runtime.run_name=ours"]


def timm_cmd(timm_dir: Path, data: Path, out: Path, epochs: int, workers: int, precision: str) -> list[str]:
    """Its own schedule for ResNet-20 (SGD + nesterov lr 0.1 at batch 128, cosine, no warm-up: timm
    steps the lr per epoch, so a warm-up epoch runs whole at --warmup-lr 1e-5 and is lost; its default
    label smoothing 0.1); augmentation as in the train section (RandomResizedCrop
    scale 0.64-1 + flip, no colour jitter); every epoch's checkpoint kept."""
    amp = ["--amp", "--amp-dtype", "bfloat16"] if precision == "bf16" else []
    return [PY, str(ROOT / "benchmarks" / "timm_train.py"), "--timm-dir", str(timm_dir), "--",
            "--data-dir", str(data), "--train-split", "train", "--val-split", "val",
            "--model", "resnet20_cifar", "--num-classes", "10", "--input-size", "3", "32", "32", "--crop-pct", "1.0",
            "--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225",
            "--scale", "0.64", "1.0", "--hflip", "0.5", "--color-jitter", "0", "--train-interpolation", "bilinear",
            "-b", "128", "--epochs", str(epochs), "--opt", "sgd", "--lr", "0.1", "--momentum", "0.9",
            "--weight-decay", "5e-4", "--sched", "cosine", "--warmup-epochs", "0", "--device", "cpu",
            *amp, "--channels-last", "-j", str(workers), "--log-interval", "50", "--checkpoint-hist", str(epochs + 1),
            "--output", str(out), "--experiment", "timm", "--seed", "0"]


def run_clocked(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; (its start on the time.time() clock, its wall seconds). Output kept only on failure."""
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return start, time.time() - start


def ours_epochs(run_dir: Path, start: float) -> list[dict]:
    rows = {r["epoch"]: r for r in formats.read_lines(run_dir / "metrics.jsonl", formats.METRICS_ROW)}
    return [{"epoch": e, "wall_s": (run_dir / f"epoch_{e:03d}.pt").stat().st_mtime - start,
             "val_top1": rows[e]["val_top1"], "checkpoint": str(run_dir / f"epoch_{e:03d}.pt")} for e in sorted(rows)]


def timm_epochs(run_dir: Path, start: float) -> list[dict]:
    with open(run_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        e = int(r["epoch"])   # timm counts from 0
        path = run_dir / f"checkpoint-{e}.pth.tar"
        out.append({"epoch": e + 1, "wall_s": path.stat().st_mtime - start, "val_top1": float(r["eval_top1"]),
                    "checkpoint": str(path)})
    return out


def test_top1(checkpoint: str, data: Path, arch: str | None) -> float:
    """Test top-1 of one checkpoint through trainkit's evaluation pipeline (a run's own preprocessing;
    timm's file with timm's pretrained config of ``arch``, which is the recipe's data.eval)."""
    if arch:
        # timm's checkpoint carries its argparse Namespace of flags (plain values): allowed by name, so the
        # load stays weights_only=True
        with torch.serialization.safe_globals([argparse.Namespace]):
            loaded = resolve(checkpoint, arch=arch)
    else:
        loaded = resolve(checkpoint)
    loaded = with_data_root(loaded, str(data))
    return evaluate_model(loaded, split="test", show_progress=False)["metrics"]["top1"]


def first_reach(epochs: list[dict], key: str, target: float) -> float | None:
    return next((e["wall_s"] for e in epochs if e[key] >= target), None)


def side_result(name: str, epochs: list[dict], wall: float, data: Path, target: float, extra: dict) -> dict:
    arch = "resnet20_cifar" if name == "timm" else None
    for e in epochs:   # outside the clock: the runs are over
        e["test_top1"] = test_top1(e.pop("checkpoint"), data, arch)
    return {"epochs": epochs, "wall_s": wall, "final_val_top1": epochs[-1]["val_top1"],
            "final_test_top1": epochs[-1]["test_top1"], "to_target_val_s": first_reach(epochs, "val_top1", target),
            "to_target_test_s": first_reach(epochs, "test_top1", target), **extra}


def run_section(args, root: Path, tmp: Path, subset_folder) -> dict:
    """Every repeat of both sides, interleaved (the order alternates), then the per-epoch test top-1."""
    if not args.timm_dir or not (Path(args.timm_dir) / "train.py").is_file():
        sys.exit("error: --only tta needs --timm-dir PATH, a pytorch-image-models checkout (timm's own train.py)")
    src = subset_folder(root, tmp / "subset", args.tta_per_class, args.tta_per_class) if args.tta_per_class else root
    data = tmp / "tta"
    sizes = split_folder(src, data)
    workers, precision = timm_best_flags(Path(args.results) / "train.json")
    if args.timm_workers:
        workers = args.timm_workers
    if args.timm_precision:
        precision = args.timm_precision
    cmds = {"ours": ours_cmd(data, tmp / "runs", args.tta_budget_minutes),
            "timm": timm_cmd(Path(args.timm_dir), data, tmp / "timm", args.tta_timm_epochs, workers, precision)}
    runs: dict[str, list[dict]] = {"ours": [], "timm": []}
    for r in range(args.repeats):
        for name in (["ours", "timm"] if r % 2 == 0 else ["timm", "ours"]):
            subprocess.run(["rm", "-rf", str(tmp / "runs"), str(tmp / "timm")], check=False)
            start, wall = run_clocked(cmds[name])
            if name == "ours":
                summary = formats.read(tmp / "runs" / "ours" / "summary.json", formats.SUMMARY)
                extra = {k: summary.get(k) for k in ("precision", "budget", "process_wall_s", "top1", "checkpoint")}
                res = side_result(name, ours_epochs(tmp / "runs" / "ours", start), wall, data, args.tta_target, extra)
            else:
                res = side_result(name, timm_epochs(tmp / "timm" / "timm", start), wall, data, args.tta_target,
                                  {"precision": precision, "workers": workers})
            runs[name].append(res)
            print(f"  tta repeat {r + 1}/{args.repeats} {name}: {len(res['epochs'])} epochs, {wall:.0f} s wall, "
                  f"final val {res['final_val_top1']:.2f}% test {res['final_test_top1']:.2f}%", flush=True)
    return {"runs": runs, "commands": cmds, "split_sizes": sizes, "target_top1": args.tta_target,
            "settings": {"budget_minutes": args.tta_budget_minutes, "timm_epochs": args.tta_timm_epochs,
                         "timm_workers": workers, "timm_precision": precision, "per_class": args.tta_per_class}}


# ---------------------------------------------------------------- report

def plot(res: dict, path: Path) -> Path:
    """Val top-1 against wall minutes, every repeat of both sides, the target as a dashed line."""
    fig = figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    sides = {"ours": ("#1f77b4", "ours: speed recipe, train.py"), "timm": ("#ff7f0e", "timm train.py, ResNet-20")}
    for name, (colour, side_label) in sides.items():
        for i, run in enumerate(res["runs"][name]):
            minutes = [e["wall_s"] / 60 for e in run["epochs"]]
            label = side_label if i == 0 else None   # one legend entry per side
            ax.plot(minutes, [e["val_top1"] for e in run["epochs"]], marker="o", ms=3, color=colour, label=label)
    ax.axhline(res["target_top1"], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("wall time from process start, minutes")
    ax.set_ylabel(f"val top-1, % ({res['split_sizes']['val']:,} held-out train images)")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _s(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.0f}"


def render(res: dict) -> list[str]:
    st, target = res["settings"], res["target_top1"]
    sizes = res["split_sizes"]
    lines = [f"Train {sizes['train']:,} / val {sizes['val']:,} / test {sizes['test']:,} CIFAR-10 JPEGs (val: our "
             "hold-out of the training JPEGs, seed 0; both sides read the same files). Wall time from process start "
             "(start-up and decode inside) to each epoch's checkpoint. Val top-1: each side's own evaluation every "
             "epoch; test top-1: every epoch's checkpoint measured after the runs through trainkit.eval.pipeline "
             f"for both sides. timm: pytorch-image-models `{res['timm_commit'][:12]}`, -j {st['timm_workers']}, "
             f"{st['timm_precision']}, {st['timm_epochs']} epochs.", "",
             f"| side | run | epochs | to {target:g}% val, s | to {target:g}% test, s | final val top-1 | "
             "final test top-1 | wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, runs in res["runs"].items():
        for i, r in enumerate(runs):
            lines.append(f"| {name} | {i + 1} | {len(r['epochs'])} | {_s(r['to_target_val_s'])} | "
                         f"{_s(r['to_target_test_s'])} | {r['final_val_top1']:.2f}% | {r['final_test_top1']:.2f}% | "
                         f"{r['wall_s']:.0f} |")
    for r in res["runs"]["ours"]:
        b = r["budget"]
        lines += ["", f"The speed recipe with `schedule.budget_minutes={st['budget_minutes']:g}` (issue 20's "
                  f"\"what it reaches in {st['budget_minutes']:g} min on this machine\"): {b['epochs']} epoch(s) "
                  f"decided at start-up (estimate {b['estimate_s']:.0f} s, cap {b['cap_epochs']}), "
                  f"{r['wall_s']:.0f} s wall, test top-1 {r['final_test_top1']:.2f}% at its last epoch "
                  f"({r['precision']}; trained on {sizes['train']:,} images, {sizes['val']:,} held out for the curve)."]
    per_epoch = ["", "Per epoch (wall s: val top-1 / test top-1):", ""]
    for name, runs in res["runs"].items():
        for i, r in enumerate(runs):
            per_epoch.append(f"- {name} run {i + 1}: " + "; ".join(
                f"{e['wall_s']:.0f}: {e['val_top1']:.1f} / {e['test_top1']:.1f}" for e in r["epochs"]))
    return lines + per_epoch + ["", "![val top-1 against wall time](benchmarks/results/tta.png)"]
