"""The benchmark suite: ours vs the peers, side by side, in one run; BENCHMARKS.md from result files.

    python benchmarks/run.py --root ../shared/data/cifar10-jpeg --only train --timm-dir ../timm-peer
    python benchmarks/run.py --root ../shared/data/cifar10-jpeg --only data,data_large,eval
    python benchmarks/run.py --render                    # BENCHMARKS.md from benchmarks/results/*.json

Each section that runs writes ``benchmarks/results/<section>.json`` (every repeat of every side,
the command that produced it, machine, load average, git commit); BENCHMARKS.md is then rendered
from all result files present, section by section, so ``--only X`` replaces section X and keeps
the others. Nothing in BENCHMARKS.md is typed by hand.

Every side runs as a fresh process, repeated and interleaved (the order rotates per repeat) so
drift on a shared machine hits every side; tables report medians. img/s are end-to-end: images
over the process's wall time, with start-up, our one-time JPEG decode, the precision probe and the
end-of-run evaluation inside the clock; ratios are derived from those.

Sections (``--only`` picks a subset):
  data        data pipeline alone, CIFAR-10 JPEG copy: our loader vs ImageFolder + PIL + DataLoader
  data_large  the same on larger JPEGs (CIFAR images upscaled to --large-px and re-encoded)
  train       one epoch of ResNet-20: our train.py vs timm's own train.py (a pytorch-image-models
              checkout given by --timm-dir, its commit recorded; -j 1 and -j 2) vs reference.py,
              beside the ceiling: the bare model step on synthetic tensors (ceiling.py), bf16 and fp32
  eval        evaluate.py vs a reference eval loop, the whole test split
  host_memory recipes/cifar10_speedrun_airbench.yaml for 3 epochs on 10,000 images with freed host memory
              kept for reuse (runtime.reuse_freed_memory, the default on a CPU) vs glibc's default
  tta         time to accuracy (time_to_accuracy.py): recipes/cifar10_speedrun.yaml with
              schedule.budget_minutes (--tta-budget-minutes) vs timm's train.py on ResNet-20, the same
              train/val/test JPEGs; val top-1 every epoch against wall time, test top-1 of every epoch
              after the runs; the speed recipe's test top-1 at the budget (long: about
              budget + timm's run + the per-epoch test evaluations, per repeat)
  airbench    airbench94 through the shared CPU adapter vs recipes/cifar10_speedrun_airbench_fast.yaml, whole
              process each, same data (airbench_side_by_side.py; --airbench-* options; long: 2 airbench
              runs of 15-20 min + 5 seeds of ours of about 10 min on 2 cores by default)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import airbench_side_by_side as airbench
import time_to_accuracy as tta
from trainkit.config import formats   # importable: time_to_accuracy put the checkout on sys.path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
SECTIONS = ("data", "data_large", "train", "eval", "host_memory", "tta", "airbench")


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


def git_head(path: Path) -> str:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def shown(cmd: list[str], tmp: Path | None = None) -> str:
    """A command as a reader would type it: repository-relative script paths, temp folders named."""
    text = " ".join(shlex.quote(str(c)) for c in cmd).replace(PY, "python").replace(f"{ROOT}/", "")
    return text.replace(str(tmp), "$TMP") if tmp else text


def subset_folder(src: Path, dst: Path, train_per_class: int, test_per_class: int) -> Path:
    """An ImageFolder of symlinks to the first N JPEGs per class (sorted names): every side reads
    exactly the same files. Nothing is copied."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for cls_dir in sorted((src / split).iterdir()):
            out = dst / split / cls_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(cls_dir.iterdir())[:count]:
                (out / f.name).symlink_to(f.resolve())
    return dst


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


def interleave(sides: dict, repeats: int, label: str, on_repeat=None) -> dict[str, list[dict]]:
    """Run every side ``repeats`` times, rotating the order each repeat; all results per side.
    ``on_repeat(runs, done)`` after each complete repeat (to save what is measured so far)."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            res = sides[name]()
            runs[name].append(res)
            print(f"  {label} repeat {r + 1}/{repeats} {name}: {res['img_per_s']:.0f} img/s, "
                  f"{res['wall_s']:.1f} s wall", flush=True)
        if on_repeat is not None:
            on_repeat(runs, r + 1)
    return runs


def rate(x: float) -> str:
    """img/s as printed: a decimal below 100 (a busy machine's figures are small)."""
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# ---------------------------------------------------------------- sections

def data_sides(args, root: Path, size: int, pad_px: int, limit: int | None, tmp: Path) -> tuple[dict, dict]:
    common = ["--root", str(root), "--batch", str(args.batch), "--workers", str(args.workers),
              "--epochs", str(args.data_epochs)] + (["--limit", str(limit)] if limit else [])
    cmds = {"ours": [PY, str(BENCH / "ours.py"), *common, f"data.eval.size={size}", f"augment.pad_px={pad_px}"],
            "reference": [PY, str(BENCH / "reference.py"), "--mode", "data", "--size", str(size),
                          "--pad-px", str(pad_px), *common]}

    def side(cmd):
        def go():
            out, wall = sh(cmd)
            res = last_json(out)
            return {**res, "wall_s": wall, "img_per_s": res["images_all"] / wall}
        return go
    return {k: side(c) for k, c in cmds.items()}, {k: shown(c, tmp) for k, c in cmds.items()}


def pair_rows(runs: dict[str, list[dict]], name: str) -> dict:
    ours, ref = runs["ours"], runs["reference"]
    row = {"name": name, "ours": median(ours, "img_per_s"), "reference": median(ref, "img_per_s"),
           "ours_wall_s": median(ours, "wall_s"), "reference_wall_s": median(ref, "wall_s")}
    if "decode_s" in ours[0]:
        row["decode_s"] = median(ours, "decode_s")
    return row


def section_data(args, root: Path, tmp: Path) -> dict:
    sides, cmds = data_sides(args, root, 32, 4, args.data_limit, tmp)
    runs = interleave(sides, args.repeats, "data")
    return {"rows": [pair_rows(runs, "data pipeline, CIFAR-10 JPEG 32 px")], "commands": cmds, "runs": runs,
            "settings": {"images_per_epoch": args.data_limit, "epochs": args.data_epochs, "batch": args.batch,
                         "reference_workers": args.workers}}


def section_data_large(args, root: Path, tmp: Path) -> dict:
    large = make_large_jpegs(root, tmp / "large", args.large_px, per_class=200)
    sides, cmds = data_sides(args, large, args.large_px, args.large_px // 8, 1800, tmp)
    runs = interleave(sides, args.repeats, "data_large")
    return {"rows": [pair_rows(runs, f"data pipeline, {args.large_px} px JPEG")], "commands": cmds, "runs": runs,
            "settings": {"images_per_epoch": 1800, "epochs": args.data_epochs, "batch": args.batch,
                         "reference_workers": args.workers, "px": args.large_px}}


def timm_cmd(args, subset: Path, out: Path, workers: int) -> list[str]:
    """timm's train.py with the flags that match our recipe: ResNet-20 at 32 px, SGD + nesterov, cosine,
    bf16 autocast + channels_last, its prefetcher (batched uint8 -> float normalise), one epoch.
    Augmentation of the same strength: timm has no pad-crop, so its RandomResizedCrop (scale 0.64-1,
    i.e. up to 20% translation and a mild zoom) + flip 0.5, with colour jitter and random interpolation
    off (both on by default there, neither in our recipe)."""
    return [PY, str(BENCH / "timm_train.py"), "--timm-dir", str(args.timm_dir), "--",
            "--data-dir", str(subset), "--train-split", "train", "--val-split", "test",
            "--model", "resnet20_cifar", "--num-classes", "10", "--input-size", "3", "32", "32", "--crop-pct", "1.0",
            "--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225",
            "--scale", "0.64", "1.0", "--hflip", "0.5", "--color-jitter", "0", "--train-interpolation", "bilinear",
            "-b", "128", "--epochs", "1", "--opt", "sgd", "--lr", "0.1", "--momentum", "0.9",
            "--weight-decay", "5e-4", "--sched", "cosine", "--warmup-epochs", "0", "--device", "cpu",
            "--amp", "--amp-dtype", "bfloat16", "--channels-last", "-j", str(workers), "--log-interval", "50",
            "--output", str(out), "--experiment", "bench", "--seed", "0"]


def section_train(args, root: Path, tmp: Path) -> dict:
    if not args.timm_dir or not (Path(args.timm_dir) / "train.py").is_file():
        sys.exit("error: --only train needs --timm-dir PATH, a pytorch-image-models checkout (timm's own train.py)")
    per_class = args.train_limit // 10
    subset = subset_folder(root, tmp / "subset", per_class, args.eval_images // 10)
    images = per_class * 10
    ours = [PY, "train.py", "recipes/cifar10_resnet20.yaml", f"data.root={subset}", "data.holdout_fraction=0",
            "schedule.epochs=1", f"train.global_batch={args.batch}", "runtime.channels_last=true",
            "runtime.progress=false", f"runtime.out_dir={tmp / 'runs'}", "runtime.run_name=bench"]
    cmds = {
        "ours train.py, bf16": ours + ["train.precision=bf16"],
        "ours train.py, fp32": ours + ["train.precision=fp32"],
        "timm train.py -j 1": timm_cmd(args, subset, tmp / "timm", 1),
        "timm train.py -j 2": timm_cmd(args, subset, tmp / "timm", 2),
        "reference.py, 2 workers": [PY, str(BENCH / "reference.py"), "--mode", "train", "--root", str(subset),
                                    "--batch", str(args.batch), "--workers", "2"],
        **{f"ceiling, {p}": [PY, str(BENCH / "ceiling.py"), "--precision", p, "--batch", str(args.batch),
                             "--steps", str(args.ceiling_steps)] for p in ("bf16", "fp32")},
    }

    def side(name, cmd):
        def go():
            for folder in (tmp / "runs", tmp / "timm"):
                subprocess.run(["rm", "-rf", str(folder)], check=False)
            out, wall = sh(cmd)
            if name.startswith("ceiling"):
                return {**last_json(out), "wall_s": wall}
            res = {"wall_s": wall, "images": images, "img_per_s": images / wall}
            if name.startswith("ours"):
                summary = formats.read(tmp / "runs" / "bench" / "summary.json", formats.SUMMARY)
                res.update({k: summary.get(k) for k in ("precision", "numerics_source", "numerics_probe")})
            return res
        return go
    def result(runs: dict) -> dict:
        return {"runs": runs, "commands": {n: shown(c, tmp) for n, c in cmds.items()},
                "timm_commit": git_head(Path(args.timm_dir)),
                "settings": {"train_images": images, "eval_images": args.eval_images, "batch": args.batch,
                             "threads": torch.get_num_threads(), "ceiling_steps": args.ceiling_steps}}
    # Long on a busy machine: every complete repeat is saved, so a run stopped early keeps what it measured.
    runs = interleave({n: side(n, c) for n, c in cmds.items()}, args.repeats, "train",
                      on_repeat=lambda runs, done: save(args, "train", result(runs), done, args.load_start))
    return result(runs)


def section_eval(args, root: Path, tmp: Path) -> dict:
    run_dir = tmp / "eval-run"
    # A short run only to have a checkpoint; evaluate.py then reads the whole 10,000-image test split.
    sh([PY, "train.py", "recipes/cifar10_resnet20.yaml", f"data.root={root}", "schedule.epochs=1",
        "data.limit_train=1024", "train.precision=bf16", f"runtime.out_dir={tmp}", "runtime.run_name=eval-run"])
    cmds = {"ours": [PY, "evaluate.py", str(run_dir), "--split", "test", "--data-root", str(root),
                     "--batch", str(2 * args.batch), "--out", str(tmp / "eval-out")],
            "reference": [PY, str(BENCH / "reference.py"), "--mode", "eval", "--root", str(root), "--batch",
                          str(2 * args.batch), "--workers", str(args.workers)]}

    def ours():
        _, wall = sh(cmds["ours"])
        samples = formats.read(tmp / "eval-out" / "metrics.json", formats.METRICS)["metrics"]["samples"]
        return {"img_per_s": samples / wall, "wall_s": wall}

    def ref():
        out, wall = sh(cmds["reference"])
        return {"img_per_s": last_json(out)["images"] / wall, "wall_s": wall}
    runs = interleave({"ours": ours, "reference": ref}, args.repeats, "eval")
    return {"rows": [pair_rows(runs, "evaluate ResNet-20, 10k test images")], "runs": runs,
            "commands": {k: shown(c, tmp) for k, c in cmds.items()}, "settings": {"batch": 2 * args.batch}}


def section_airbench(args, root: Path, tmp: Path) -> dict:
    return airbench.run_section(args, root, tmp, subset_folder, prefix="airbench-")


HOST_MEMORY_RUN = ["recipes/cifar10_speedrun_airbench.yaml", "data.train_per_class=1000", "data.limit_eval=2000",
                   "schedule.epochs=3", "model.stem_bias_epochs=1", "runtime.progress=false"]


def section_host_memory(args, root: Path, tmp: Path) -> dict:
    """The same short training run with runtime.reuse_freed_memory on (ours) and off (reference: glibc's
    default, a fresh mmap per large block); img/s: training images over training seconds (summary.json)."""
    cmds = {side: [PY, "train.py", *HOST_MEMORY_RUN, f"data.root={root}", f"runtime.out_dir={tmp}",
                   f"runtime.run_name={side}", f"runtime.reuse_freed_memory={str(side == 'ours').lower()}"]
            for side in ("ours", "reference")}

    def side(name):
        def go():
            _, wall = sh(cmds[name])
            summary = formats.read(tmp / name / "summary.json", formats.SUMMARY)
            images = sum(summary["train_class_counts"].values()) * summary["epochs"]
            shutil.rmtree(tmp / name)
            return {"img_per_s": images / summary["train_time_s"], "wall_s": wall,
                    "train_time_s": summary["train_time_s"]}
        return go
    runs = interleave({k: side(k) for k in cmds}, args.repeats, "host_memory")
    return {"rows": [pair_rows(runs, "speednet_cifar training, freed memory reused (ours) vs glibc default")],
            "runs": runs, "commands": {k: shown(c, tmp) for k, c in cmds.items()},
            "settings": {"run": HOST_MEMORY_RUN}}


def section_tta(args, root: Path, tmp: Path) -> dict:
    res = tta.run_section(args, root, tmp, subset_folder)
    tta.plot(res, Path(args.results) / "tta.png")
    return {**res, "commands": {n: shown(c, tmp) for n, c in res["commands"].items()},
            "timm_commit": git_head(Path(args.timm_dir))}


# ---------------------------------------------------------------- report

def render_pairs(res: dict) -> list[str]:
    lines = ["| benchmark | ours img/s | reference img/s | ratio | ours wall s | reference wall s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        ratio = r['ours'] / r['reference']
        lines.append(f"| {r['name']} | {rate(r['ours'])} | {rate(r['reference'])} | {ratio:.2f}x | "
                     f"{r['ours_wall_s']:.1f} | {r['reference_wall_s']:.1f} |")
    for r in res["rows"]:
        if "decode_s" in r:
            lines.append(f"\nOur one-time decode into memory: {r['decode_s']:.1f} s, inside 'ours wall s' "
                         f"and our img/s.")
    return lines


def render_train(res: dict) -> list[str]:
    runs, st = res["runs"], res["settings"]
    timm_best = max(median(v, "img_per_s") for k, v in runs.items() if k.startswith("timm"))
    ceiling = {k.split(", ")[1]: median(v, "img_per_s") for k, v in runs.items() if k.startswith("ceiling")}
    lines = [f"One epoch of {st['train_images']:,} CIFAR-10 JPEGs (the first {st['train_images'] // 10} per class; "
             f"every side reads the same files), ResNet-20, batch {st['batch']}, channels_last, "
             f"{st['threads']} threads; each training side then evaluates {st['eval_images']} test images. "
             f"timm: pytorch-image-models `{res['timm_commit'][:12]}`.", "",
             "| side | precision | img/s | wall s | vs timm train.py | vs ceiling (same precision) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, rs in runs.items():
        speed = median(rs, "img_per_s")
        if name.startswith("ceiling"):
            lines.append(f"| {name} (bare step, synthetic tensors) | {rs[0]['precision']} | {rate(speed)} | "
                         f"{median(rs, 'wall_s'):.1f} | | 1.00x |")
            continue
        precisions = sorted({r.get("precision") or ("fp32" if "fp32" in name else "bf16") for r in rs})
        prec = "/".join(precisions)
        vs_ceiling = f"{speed / ceiling[prec]:.2f}x" if prec in ceiling else ""
        lines.append(f"| {name} | {prec} | {rate(speed)} | {median(rs, 'wall_s'):.1f} | {speed / timm_best:.2f}x | "
                     f"{vs_ceiling} |")
    lines += ["", "img/s: training images / the process's wall time (interpreter start-up, imports, our one-time "
              "JPEG decode, DataLoader worker start-up, the end-of-run evaluation: all inside the clock). "
              "vs timm train.py: against its faster worker count. Ceiling: `ceiling.py`, the bare "
              f"forward/backward/SGD step on in-memory synthetic tensors (median of {st['ceiling_steps']} timed steps "
              "after 3 warm-up steps), its img/s steady state; wall s is its whole process."]
    return lines


TITLES = {"data": "Data pipeline, CIFAR-10 JPEG", "data_large": "Data pipeline, larger JPEGs",
          "train": "Training: train.py vs timm's train.py, with the ceiling", "eval": "Evaluation",
          "tta": "Time to accuracy: the speed recipe vs timm's train.py",
          "host_memory": "Host memory reuse on a CPU (runtime.reuse_freed_memory)",
          "airbench": "Side by side with airbench94 on this CPU"}
RENDER = {"data": render_pairs, "data_large": render_pairs, "train": render_train, "eval": render_pairs,
          "host_memory": render_pairs,
          "tta": tta.render, "airbench": airbench.render}
# sections whose chart is drawn from the record at every rendering (so it regenerates byte-identical)
CHARTS = {"airbench": airbench.plot}


FINETUNE_PHOTOS = "finetune_photos"   # written by benchmarks/finetune_photos.py, one entry per part


def render_finetune_photos(res: dict) -> list[str]:
    """The photo fine-tuning section: each part with its own command, date and machine."""
    lines = ["Measured side by side in one process by `benchmarks/finetune_photos.py` (224 px; layout and recipe: "
             "imagenette-dev photos, recipes/finetune_photos_lite0.yaml; probe: the recipe and photos it names); "
             "each part names its own command."]
    titles = {"layout": "Bare training step: precision and memory format",
              "recipe": "The fine-tuning recipe vs its own bare step",
              "probe": "Linear probe: cached features vs the frozen backbone every epoch"}
    for part, title in titles.items():
        lines += ["", f"### {title}", ""]
        r = res.get(part)
        if r is None:
            lines.append(f"Not measured yet: `python benchmarks/finetune_photos.py --parts {part}`.")
            continue
        load = r.get("load_average")
        lines += [f"`{r['command']}`", "",
                  f"Measured {r['date']} on {r['cpu']}, torch {r['torch']}; trainkit `{r['git_commit'][:12]}`"
                  + (f"; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end." if load
                     else "; load average not recorded."), ""]
        if part == "layout":
            base = r["img_per_s"]["fp32 NCHW"]
            lines += [f"tf_efficientnet_lite0, batch {r['batch']}, {r['size']} px, best of the rounds:", "",
                      "| precision, layout | img/s | vs fp32 NCHW |", "|---|---:|---:|"]
            lines += [f"| {name} | {v:.2f} | {v / base:.2f}x |" for name, v in r["img_per_s"].items()]
        elif part == "recipe":
            lines += [f"{r['precision']}, {'channels_last' if r['channels_last'] else 'NCHW'}, "
                      f"{'in-memory' if r['in_memory'] else 'per-sample DataLoader'} data path; the same trainer's "
                      "step on one synthetic batch kept in memory is the bare step.", "",
                      "| round | recipe img/s | bare step img/s | ratio |", "|---:|---:|---:|---:|"]
            lines += [f"| {i + 1} | {a:.2f} | {b:.2f} | {a / b:.2f}x |"
                      for i, (a, b) in enumerate(zip(r["recipe_img_per_s"], r["bare_img_per_s"]))]
            lines += ["", f"Median ratio {median([{'q': q} for q in r['ratio']], 'q'):.2f}x (target >= 0.90x)."]
        else:
            lines += [f"`{r.get('recipe', 'recipes/linear_probe_photos_lite0.yaml')}` on "
                      f"`{r.get('data_root', '../shared/data/imagenette-dev')}`:", "",
                      "| epoch | through the frozen backbone s | cached features s | ratio |", "|---:|---:|---:|---:|"]
            lines += [f"| {i + 1} | {p:.2f} | {c:.4f} | {p / c:.0f}x |"
                      for i, (p, c) in enumerate(zip(r["epoch_s_plain"], r["epoch_s_cached"]))]
            lines += ["", f"Per epoch {r['per_epoch_ratio']:.0f}x faster cached; the one-time feature pass (train and "
                      f"val, model build included) took {r['one_time_s']:.0f} s; over the recipe's "
                      f"{r['recipe_epochs']} epochs, one-time pass included: "
                      f"{r['recipe_ratio_including_one_time']:.1f}x."]
    return lines


def render(results: Path, out: Path) -> str:
    lines = ["# Benchmarks", "",
             "Generated by `python benchmarks/run.py --render` from the result files in `benchmarks/results/`; "
             "never edited by hand. Each section names, above its table, the command that measured it and each "
             "side's own command ($TMP: a temporary folder the suite makes). Sides ran as fresh processes, "
             "interleaved; figures are medians over the repeats."]
    for section in SECTIONS:
        lines += ["", f"## {TITLES[section]}", ""]
        path = results / f"{section}.json"
        if not path.is_file():
            lines.append(f"Not measured yet: `python benchmarks/run.py --root ../shared/data/cifar10-jpeg --only "
                         f"{section}`{' --timm-dir PATH' if section in ('train', 'tta') else ''}.")
            continue
        res = formats.read(path, formats.BENCHMARK)
        if section in CHARTS:
            CHARTS[section](res, results / f"{section}.png")
        load = res["load_average"]
        lines += [f"`{res['command']}`", "",
                  f"Measured {res['measured']} on {res['machine']}; trainkit `{res['git_commit'][:12]}`; "
                  f"{res['repeats']} repeat(s)"
                  + (f" of {res['repeats_planned']} planned (stopped early)" if res["repeats"] < res["repeats_planned"]
                     else "") + f". 1-minute load average {load[0]:.1f} at the start, "
                  f"{load[1]:.1f} at the end (its own processes included)"
                  # only the start says whether other jobs were running: at the end the average is the benchmark's own
                  + ("; the machine was busy when it started." if load[0] > 1.5 else "."), "",
                  "Each side's command:", ""]
        lines += [f"- {name}: `{cmd}`" for name, cmd in res["commands"].items()]
        lines += [""] + RENDER[section](res)
    lines += ["", "## Fine-tuning photos on a CPU", ""]
    path = results / f"{FINETUNE_PHOTOS}.json"
    lines += (render_finetune_photos(formats.read(path, formats.PHOTOS_BENCHMARK)) if path.is_file() else
              ["Not measured yet: `python benchmarks/finetune_photos.py --data-root ../shared/data/imagenette-dev`."])
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="CIFAR-10 ImageFolder root, e.g. ../shared/data/cifar10-jpeg")
    p.add_argument("--only", default="data,data_large,train,eval", help=f"comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--render", action="store_true", help="only render BENCHMARKS.md from the result files")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="the reference's DataLoader workers")
    p.add_argument("--timm-dir", default=None, help="pytorch-image-models checkout whose train.py is the peer")
    p.add_argument("--data-limit", type=int, default=20000, help="training images per data-pipeline epoch")
    p.add_argument("--data-epochs", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=20000, help="training images for the one-epoch train rows")
    p.add_argument("--ceiling-steps", type=int, default=20, help="timed bare steps per ceiling process")
    p.add_argument("--eval-images", type=int, default=250, help="test images each training side evaluates")
    p.add_argument("--large-px", type=int, default=160)
    p.add_argument("--tta-budget-minutes", type=float, default=15.0, help="tta: the speed recipe's wall-clock budget")
    p.add_argument("--tta-timm-epochs", type=int, default=10, help="tta: timm's epochs (its cosine spans them)")
    p.add_argument("--tta-target", type=float, default=80.0, help="tta: the top-1 %% whose first crossing is timed")
    p.add_argument("--tta-per-class", type=int, default=None,
                   help="tta: only the first N train and N test JPEGs per class (smoke runs); default all")
    p.add_argument("--timm-workers", type=int, default=None, help="tta: timm's -j (default: the train section's best)")
    p.add_argument("--timm-precision", choices=("bf16", "fp32"), default=None,
                   help="tta: timm's precision (default: the faster ceiling of the train section)")
    airbench.add_arguments(p, prefix="airbench-")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = p.parse_args()
    results = Path(args.results)
    if not args.render:
        only = [s for s in args.only.split(",") if s]
        for s in only:
            if s not in SECTIONS:
                sys.exit(f"error: --only {s}: unknown section; choose from {', '.join(SECTIONS)}")
        if not args.root or not (Path(args.root) / "train").is_dir():
            sys.exit(f"error: --root {args.root}: no train/ folder there (give the CIFAR-10 ImageFolder root)")
        root = Path(args.root).resolve()
        results.mkdir(parents=True, exist_ok=True)
        print(f"machine: {machine()}", flush=True)
        for section in SECTIONS:
            if section not in only:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                args.load_start = os.getloadavg()[0]
                res = globals()[f"section_{section}"](args, root, Path(tmp))
            # airbench counts its own runs (--airbench-peer-runs, --airbench-ours-seeds): one pass
            repeats = 1 if section == "airbench" else args.repeats
            save(args, section, res, repeats, args.load_start, planned=repeats)
    print(render(results, Path(args.out)))


def save(args, section: str, res: dict, repeats_done: int, load_start: float,
         script: str = "benchmarks/run.py", planned: int | None = None) -> None:
    """benchmarks/results/<section>.json: the section's runs with the command and machine that made them."""
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = {**res, "section": section, "command": f"python {script} {argv}", "repeats": repeats_done,
           "repeats_planned": planned if planned is not None else args.repeats,
           "machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "git_commit": git_head(ROOT), "load_average": [load_start, os.getloadavg()[0]]}
    formats.write(Path(args.results) / f"{section}.json", formats.BENCHMARK, res)


if __name__ == "__main__":
    main()
