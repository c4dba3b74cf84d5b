"""The benchmark suite: ours vs the reference pipeline, side by side, in one run.

    python benchmarks/run.py --root ../shared/data/cifar10-jpeg            # everything but the speedrun
    python benchmarks/run.py --root ../shared/data/cifar10-jpeg --only speedrun

Each comparison runs both sides as fresh processes, repeated and interleaved
(ours/reference order alternates per repeat) so that drift on a shared machine
hits both; the table reports medians and the ratio of medians. Results print as
a Markdown table and go to BENCHMARKS.md with the machine's description.

Benchmarks (``--only`` picks a subset):
  data        data pipeline alone, CIFAR-10 JPEG copy: our loader vs ImageFolder + PIL + DataLoader
  data_large  the same on larger JPEGs (CIFAR images upscaled to --large-px and re-encoded)
  train       end-to-end ResNet-20 training: our train.py vs the timm-train.py-style reference
  eval        evaluate.py vs a reference eval loop, the whole test split
  speedrun    recipes/cifar10_speedrun.yaml: wall time and test top-1 (one run; long)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BENCH = ROOT / "benchmarks"


def sh(cmd: list[str], cwd: Path = ROOT) -> tuple[str, float]:
    """Run a command; return its stdout and wall seconds (stderr shown only on failure)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc.stdout, wall


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {platform.system()} {platform.release()}")


# ---------------------------------------------------------------- one side of each comparison

def data_pair(args, root: Path, size: int, pad_px: int, limit: int | None, epochs: int):
    common = ["--root", str(root), "--batch", str(args.batch), "--workers", str(args.workers),
              "--epochs", str(epochs)] + (["--limit", str(limit)] if limit else [])
    size_keys = [f"data.eval.size={size}", f"augment.pad_px={pad_px}"]

    def ours():
        return last_json(sh([PY, str(BENCH / "ours.py"), *common, *size_keys])[0])

    def ref():
        return last_json(sh([PY, str(BENCH / "reference.py"), "--mode", "data", "--size", str(size),
                             "--pad-px", str(pad_px), *common])[0])
    return ours, ref


def train_pair(args, root: Path):
    def ours():
        with tempfile.TemporaryDirectory() as out:
            cmd = [PY, "train.py", "recipes/cifar10_resnet20.yaml", f"data.root={root}", "schedule.epochs=1",
                   f"data.limit_train={args.train_limit}", "data.limit_eval=256", f"train.global_batch={args.batch}",
                   f"runtime.out_dir={out}", "runtime.run_name=bench", "runtime.progress=false"]
            _, wall = sh(cmd)
            row = json.loads((Path(out) / "bench" / "metrics.jsonl").read_text().splitlines()[-1])
            # Steady state as the reference measures it: from the end of the first step on.
            images = row["train_img_per_s"] * row["train_epoch_s"] - args.batch
            steady = images / (row["train_epoch_s"] - row["train_first_step_s"])
            return {"img_per_s": steady, "total_s": wall, "epoch_s": row["train_epoch_s"]}

    def ref():
        out, wall = sh([PY, str(BENCH / "reference.py"), "--mode", "train", "--root", str(root), "--batch",
                        str(args.batch), "--workers", str(args.workers), "--limit", str(args.train_limit)])
        res = last_json(out)
        return {"img_per_s": res["img_per_s"], "total_s": wall, "epoch_s": res["total_s"]}
    return ours, ref


def eval_pair(args, root: Path, run_dir: Path):
    def ours():
        with tempfile.TemporaryDirectory() as out:
            _, wall = sh([PY, "evaluate.py", str(run_dir), "--split", "test", "--data-root", str(root),
                          "--batch", str(2 * args.batch), "--out", out])
            samples = json.loads((Path(out) / "metrics.json").read_text())["metrics"]["samples"]
        return {"img_per_s": samples / wall, "total_s": wall}

    def ref():
        out, wall = sh([PY, str(BENCH / "reference.py"), "--mode", "eval", "--root", str(root), "--batch",
                        str(2 * args.batch), "--workers", str(args.workers)])
        return {"img_per_s": last_json(out)["images"] / wall, "total_s": wall}
    return ours, ref


def make_large_jpegs(src: Path, dst: Path, px: int, per_class: int) -> Path:
    """Upscale the first ``per_class`` CIFAR images per class to ``px`` and re-encode (quality 90)."""
    from PIL import Image

    for cls_dir in sorted((src / "train").iterdir()):
        out = dst / "train" / cls_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(cls_dir.iterdir())[:per_class]:
            with Image.open(f) as img:
                img.convert("RGB").resize((px, px), Image.BICUBIC).save(out / f.name, quality=90)
    return dst


def compare(name: str, ours, ref, repeats: int, metric: str = "img_per_s") -> dict:
    runs: dict[str, list[dict]] = {"ours": [], "reference": []}
    for r in range(repeats):
        order = [("ours", ours), ("reference", ref)] if r % 2 == 0 else [("reference", ref), ("ours", ours)]
        for side, fn in order:
            res = fn()
            runs[side].append(res)
            print(f"  {name} repeat {r + 1}/{repeats} {side}: {metric} {res[metric]:.0f}, total {res['total_s']:.1f}s",
                  flush=True)
    med = {side: statistics.median(x[metric] for x in rs) for side, rs in runs.items()}
    tot = {side: statistics.median(x["total_s"] for x in rs) for side, rs in runs.items()}
    extra = {k: statistics.median(x[k] for x in runs["ours"]) for k in ("decode_s",) if k in runs["ours"][0]}
    return {"name": name, "ours": med["ours"], "reference": med["reference"], "ratio": med["ours"] / med["reference"],
            "ours_total_s": tot["ours"], "reference_total_s": tot["reference"],
            "total_ratio": tot["reference"] / tot["ours"], **extra, "runs": runs}


def speedrun(root: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        _, wall = sh([PY, "train.py", "recipes/cifar10_speedrun.yaml", f"data.root={root}",
                      f"runtime.out_dir={out}", "runtime.run_name=speedrun", "runtime.progress=false"])
        summary = json.loads((Path(out) / "speedrun" / "summary.json").read_text())
    return {"wall_s": wall, "top1": summary["top1"], "train_time_s": summary["train_time_s"],
            "epochs": summary["epochs"], "measured": time.strftime("%Y-%m-%d %H:%M"),
            "git_commit": summary.get("git_commit")}


# ---------------------------------------------------------------- report

def write_report(rows: list[dict], speed: dict | None, args, path: Path) -> str:
    lines = [f"# Benchmarks", "", f"Machine: {machine()}.", "",
             f"Generated by `python benchmarks/run.py --root {args.root} --repeats {args.repeats}` on "
             f"{time.strftime('%Y-%m-%d %H:%M')}; medians of {args.repeats} interleaved repeats, each side a fresh "
             f"process. Batch {args.batch}, reference DataLoader workers {args.workers}.", "",
             "| benchmark | ours img/s | reference img/s | ratio | ours total s | reference total s | wall ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['ours']:.0f} | {r['reference']:.0f} | {r['ratio']:.2f}x | "
                     f"{r['ours_total_s']:.1f} | {r['reference_total_s']:.1f} | {r['total_ratio']:.2f}x |")
    lines += ["", "img/s: steady state (data, train) or whole-process (eval). total s: the process's wall time "
              "including start-up, our one-time decode, and for train.py its (256-image) validation and test "
              "passes. wall ratio: reference total / ours total."]
    for r in rows:
        if "decode_s" in r:
            lines.append(f"- {r['name']}: our one-time decode into memory took {r['decode_s']:.1f} s (inside 'ours total').")
    if speed:
        lines += ["", "## Speed recipe", "",
                  f"`recipes/cifar10_speedrun.yaml` on the CIFAR-10 JPEG copy: test top-1 {speed['top1']:.2f}% "
                  f"after {speed['epochs']} epochs; {speed['train_time_s']:.0f} s training, {speed['wall_s']:.0f} s "
                  "wall for the whole command (start-up, decode, evaluation included)"
                  + (f"; measured {speed['measured']}" if speed.get("measured") else "") + "."]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="CIFAR-10 ImageFolder root, e.g. ../shared/data/cifar10-jpeg")
    p.add_argument("--only", default="data,data_large,train,eval",
                   help="comma-separated: data, data_large, train, eval, speedrun")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="the reference's DataLoader workers")
    p.add_argument("--data-limit", type=int, default=20000, help="training images per data-pipeline epoch")
    p.add_argument("--data-epochs", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=20000, help="training images for the end-to-end epoch")
    p.add_argument("--large-px", type=int, default=160)
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--json", default=None, help="also write all raw runs here")
    p.add_argument("--speedrun-from", default=None, metavar="JSON",
                   help="report the speedrun recorded in an earlier run's --json instead of running it")
    args = p.parse_args()
    root = Path(args.root).resolve()
    if not (root / "train").is_dir():
        sys.exit(f"error: {root}/train not found (give the CIFAR-10 ImageFolder root with --root)")
    only = set(args.only.split(","))
    print(f"machine: {machine()}", flush=True)
    rows, speed = [], None
    with tempfile.TemporaryDirectory() as tmp:
        if "data" in only:
            rows.append(compare("data pipeline, CIFAR-10 JPEG 32 px",
                                *data_pair(args, root, 32, 4, args.data_limit, args.data_epochs), args.repeats))
        if "data_large" in only:
            large = make_large_jpegs(root, Path(tmp) / "large", args.large_px, per_class=200)
            rows.append(compare(f"data pipeline, {args.large_px} px JPEG",
                                *data_pair(args, large, args.large_px, args.large_px // 8, 1800, args.data_epochs),
                                args.repeats))
        if "train" in only:
            rows.append(compare("train ResNet-20 (1 epoch)", *train_pair(args, root), args.repeats))
        if "eval" in only:
            run_dir = Path(tmp) / "eval-run"
            # A short run only to have a checkpoint; evaluate.py then reads the whole 10,000-image test split.
            sh([PY, "train.py", "recipes/cifar10_resnet20.yaml", f"data.root={root}", "schedule.epochs=1",
                "data.limit_train=1024", f"runtime.out_dir={tmp}", "runtime.run_name=eval-run"])
            rows.append(compare("evaluate ResNet-20, 10k test images", *eval_pair(args, root, run_dir), args.repeats))
        if "speedrun" in only:
            speed = speedrun(root)
        elif args.speedrun_from:
            speed = json.loads(Path(args.speedrun_from).read_text())["speedrun"]
    text = write_report(rows, speed, args, Path(args.out))
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "speedrun": speed}, indent=2))


if __name__ == "__main__":
    main()
