"""Side by side: airbench94 (Keller Jordan, MIT) against our airbench-style speed recipe, same machine, same data.

    pip install -r requirements-bench.txt      # airbench==0.1.8 (this script installs nothing)
    python benchmarks/airbench_side_by_side.py --root ../shared/data/cifar10-jpeg
    python benchmarks/airbench_side_by_side.py --root ../shared/data/cifar10-jpeg --per-class 110 --epochs 1 \\
        --ours-seeds 0 --peer-runs 1 --results /tmp/smoke --out /tmp/smoke/B.md     # smoke mode, a minute

Also reachable as ``python benchmarks/run.py --only airbench`` (section ``airbench`` of BENCHMARKS.md).

- airbench: its ``train94`` unchanged, run through the shared CPU adapter (``--adapter``, default
  ``../shared/peers/airbench_cpu.py``: ``.cuda()`` mapped to the CPU, ``.half()`` to bf16 or fp32, the
  JPEG folder decoded to its tensors inside its process), ``--airbench-runs`` processes;
- ours: ``train.py recipes/cifar10_speedrun_airbench_fast.yaml``, our fastest CIFAR-10 recipe (``--recipe``;
  several recipes, each its own row, e.g. also ``recipes/cifar10_speedrun_airbench.yaml``),
  one process per recipe and seed of ``--ours-seeds``; the final figure is the summary's test top-1 (the
  recipe's 6-view TTA).

Both sides read the same ImageFolder (train/ and test/; ``--per-class`` N: symlinks to the first N
JPEGs per class in both), train on all of train/ and report test/ (neither chooses anything on it).
Runs alternate (airbench, ours, airbench, ours, ...) so drift on a shared machine hits both. The clock
is the whole process, from just before it starts to its exit: start-up, imports, JPEG decode, the
precision probe, training, every evaluation. airbench's per-epoch val (no TTA) is timed as its lines
arrive; ours reports its final figure only (the recipe evaluates once, at the end).

Each full-length seed of ours is also the recipe's result record (results/records/cifar10-jpeg/, its run
folder kept in runs/airbench-side/), so recipes/RESULTS.md has its row; smoke runs leave nothing behind.
The benchmark's record is ``benchmarks/results/airbench.json`` (every run, the commands, machine, precision, load
average, git commit); BENCHMARKS.md's section and ``benchmarks/results/airbench.png`` are rendered
from it alone (``python benchmarks/run.py --render``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # trainkit (charts), when run from anywhere

from trainkit.config import formats  # noqa: E402
from trainkit.config.recipe import load_recipe, schedule_points  # noqa: E402
from trainkit.report.records import RecordError, record_from_run, write_record  # noqa: E402
from trainkit.report.charts import figure  # noqa: E402

PY = sys.executable
DEFAULT_ADAPTER = ROOT.parent / "shared" / "peers" / "airbench_cpu.py"
RECIPE = "recipes/cifar10_speedrun_airbench_fast.yaml"   # our fastest to airbench's accuracy
AIRBENCH_COLUMNS = ("run", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc", "total_time_seconds")


def add_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The section's options; ``prefix`` ("airbench-") when they sit among run.py's other sections'."""
    p.add_argument(f"--{prefix}adapter", default=str(DEFAULT_ADAPTER), help="the shared airbench CPU adapter")
    p.add_argument(f"--{prefix}recipe", nargs="+", default=[RECIPE],
                   help="our side's recipes (each trained with every seed of --ours-seeds)")
    p.add_argument(f"--{prefix}per-class", type=int, default=None,
                   help="only the first N train and N test JPEGs per class (smoke runs); default all")
    p.add_argument(f"--{prefix}epochs", type=float, default=None,
                   help="both sides' epochs (smoke runs); default each side's own (9.9)")
    p.add_argument(f"--{prefix}ours-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument(f"--{prefix}peer-runs", type=int, default=2, help="airbench94 processes")
    p.add_argument(f"--{prefix}precision", choices=("bf16", "fp32"), default="bf16",
                   help="airbench's dtype (AB_DTYPE); ours decides by its amp probe and records it")
    p.add_argument(f"--{prefix}threads", type=int, default=None, help="both sides' torch threads (default: CPUs)")


def settings(args, prefix: str = "") -> dict:
    get = lambda name: getattr(args, (prefix + name).replace("-", "_"))  # noqa: E731
    return {"adapter": get("adapter"), "recipes": list(get("recipe")), "per_class": get("per-class"),
            "epochs": get("epochs"), "ours_seeds": list(get("ours-seeds")), "airbench_runs": get("peer-runs"),
            "precision": get("precision"), "threads": get("threads") or os.cpu_count()}


def airbench_available() -> str | None:
    """None when ``import airbench`` works in this interpreter, else the one-line reason."""
    proc = subprocess.run([PY, "-c", "import airbench"], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return None
    return "airbench is not installed: pip install -r requirements-bench.txt (airbench==0.1.8)"


def airbench_cmd(st: dict, data: Path) -> tuple[list[str], dict]:
    cmd = [PY, st["adapter"], str(data), "94"] + ([f"{st['epochs']:g}"] if st["epochs"] is not None else [])
    env = {"AB_DTYPE": st["precision"], "AB_THREADS": str(st["threads"]), "PYTHONUNBUFFERED": "1"}
    return cmd, env


def recipes_of(st: dict) -> list[str]:
    """Our side's recipes (a record written before several recipes could run holds one, as ``recipe``)."""
    return st.get("recipes") or [st["recipe"]]


def run_name(recipe: str, seed: int) -> str:
    return f"{Path(recipe).stem}-seed{seed}"


def ours_cmd(st: dict, data: Path, out: Path, recipe: str, seed: int) -> list[str]:
    cmd = [PY, str(ROOT / "train.py"), recipe, f"data.root={data}", f"train.seed={seed}",
           f"runtime.out_dir={out}", f"runtime.run_name={run_name(recipe, seed)}", "runtime.progress=false"]
    if st["epochs"] is not None:
        cmd += [f"schedule.epochs={st['epochs']:g}", *shortened_points(recipe, st["epochs"], data)]
    if st["threads"]:
        cmd.append(f"runtime.threads={st['threads']}")
    return cmd


def shortened_points(recipe_path: str, epochs: float, data: Path) -> list[str]:
    """Overrides scaling the recipe's epoch points (the whitening stem's bias freeze) to a shortened smoke
    schedule, as a sweep's short search does: a point past the end is an error, not a silent no-op."""
    recipe = load_recipe(ROOT / recipe_path, [f"data.root={data}"])
    ratio = epochs / recipe.schedule.epochs
    scaled = []
    for key, value in schedule_points(recipe).items():
        value = [int(v * ratio) for v in value] if isinstance(value, list) else int(value * ratio)
        scaled.append(f"{key}={value}".replace(" ", ""))
    return scaled


def timed_lines(cmd: list[str], env: dict | None = None) -> tuple[list[tuple[float, str]], float]:
    """Run ``cmd`` (cwd: the checkout); every stdout line with the wall seconds since the start at which it
    arrived, and the whole process's wall seconds. Exits with the tail of stderr if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    err = proc.stderr.read()
    code = proc.wait()
    wall = time.perf_counter() - start
    if code:
        sys.exit(f"benchmark command failed ({code}): {' '.join(cmd)}\n{err[-3000:]}")
    return lines, wall


def parse_airbench(lines: list[tuple[float, str]]) -> dict:
    """airbench's own table -> per-epoch val top-1 (%, no TTA) with arrival times, the final TTA top-1."""
    epochs, final = [], None
    for at, line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(AIRBENCH_COLUMNS) or cells[1] == "epoch":
            continue
        row = dict(zip(AIRBENCH_COLUMNS, cells))
        if row["epoch"].isdigit() and row["val_acc"]:
            epochs.append({"epoch": int(row["epoch"]) + 1, "wall_s": round(at, 1),
                           "val_top1": round(100 * float(row["val_acc"]), 2),
                           "train_s": float(row["total_time_seconds"])})
        elif row["epoch"] == "eval" and row["tta_val_acc"]:
            final = {"tta_top1": round(100 * float(row["tta_val_acc"]), 2), "train_s": float(row["total_time_seconds"])}
    if final is None:
        raise ValueError("airbench printed no final row (epoch 'eval' with tta_val_acc): " +
                         " / ".join(line for _, line in lines[-5:]))
    return {"epochs": epochs, "top1": final["tta_top1"], "top1_no_tta": epochs[-1]["val_top1"] if epochs else None,
            "own_time_s": final["train_s"]}


def run_airbench(st: dict, data: Path) -> dict:
    cmd, env = airbench_cmd(st, data)
    lines, wall = timed_lines(cmd, env)
    return {**parse_airbench(lines), "wall_s": round(wall, 1), "precision": st["precision"]}


def run_ours(st: dict, data: Path, out: Path, recipe: str, seed: int) -> dict:
    """One seed of one of our recipes, timed, its run folder under ``out``."""
    _, wall = timed_lines(ours_cmd(st, data, out, recipe, seed))
    run_dir = out / run_name(recipe, seed)
    summary = formats.read(run_dir / "summary.json", formats.SUMMARY)
    res = {"recipe": recipe, "seed": seed, "top1": summary["top1"], "wall_s": round(wall, 1),
           "epochs": summary["epochs"], "precision": summary["precision"], "channels_last": summary["channels_last"],
           "numerics_probe": summary.get("numerics_probe"), "train_s": round(summary["train_time_s"], 1),
           "samples": summary["samples"], "recipe_hash": summary["recipe_hash"]}
    return res


def record_ours(res: dict, out: Path) -> None:
    """A full run of ours as its recipe's result record (results/records/, so recipes/RESULTS.md has its row).
    Called once every run has ended: a record rewritten mid-benchmark (a seed recorded before) would leave
    the tree dirty, and every later run's record would be refused."""
    try:
        record = record_from_run(out / run_name(res["recipe"], res["seed"]))
        res["record"] = write_record(record).relative_to(ROOT).as_posix()
    except RecordError as e:   # a run from an uncommitted tree: the benchmark's figures still count
        print(f"  (no result record for {res['recipe']} seed {res['seed']}: {e})", flush=True)


def smoke(st: dict) -> bool:
    return st["per_class"] is not None or st["epochs"] is not None


def schedule(st: dict) -> list[tuple[str, int | tuple[str, int]]]:
    """The run order: airbench and ours alternating, then the rest of the longer side; ours seed by seed,
    each seed through every recipe (so a drift over the session hits every recipe alike)."""
    a = [("airbench", i) for i in range(st["airbench_runs"])]
    o = [("ours", (r, s)) for s in st["ours_seeds"] for r in recipes_of(st)]
    order = [x for pair in zip(a, o) for x in pair]
    return order + a[len(o):] + o[len(a):]


def run_section(args, root: Path, tmp: Path, subset_folder, prefix: str = "") -> dict:
    st = settings(args, prefix)
    why = airbench_available()
    if why:
        sys.exit(f"error: {why}")
    if not Path(st["adapter"]).is_file():
        sys.exit(f"error: --adapter {st['adapter']}: not found (the shared airbench CPU adapter)")
    data = subset_folder(root, tmp / "subset", st["per_class"], st["per_class"]) if st["per_class"] else root
    runs: dict[str, list[dict]] = {"airbench": [], "ours": []}
    # a full run keeps our run folders (each seed is a result record); a smoke run leaves nothing behind
    ours_out = tmp / "runs" if smoke(st) else ROOT / "runs" / "airbench-side" / time.strftime("%Y%m%d-%H%M%S")
    for side, which in schedule(st):
        res = run_airbench(st, data) if side == "airbench" else run_ours(st, data, ours_out, *which)
        runs[side].append(res)
        what = f"run {which}" if side == "airbench" else f"{which[0]} seed {which[1]}"
        print(f"  {side} {what}: top-1 {res['top1']:.2f}%, {res['wall_s']:.0f} s wall", flush=True)
    if not smoke(st):   # a smoke run leaves nothing behind
        for res in runs["ours"]:
            record_ours(res, ours_out)
    shown = lambda cmd: " ".join(str(c) for c in cmd).replace(PY, "python").replace(str(tmp), "$TMP") \
        .replace(f"{ROOT}/", "")  # noqa: E731
    ab_cmd, ab_env = airbench_cmd(st, data)
    env = " ".join(f"{k}={v}" for k, v in ab_env.items() if k != "PYTHONUNBUFFERED")
    return {"settings": st, "runs": runs, "data": str(root) + (f" (first {st['per_class']} per class)"
                                                                 if st["per_class"] else ""),
            "commands": {"airbench": f"{env} {shown(ab_cmd)}",
                         **{f"ours {r}": shown(ours_cmd(st, data, ours_out, r, 0)) for r in recipes_of(st)}}}


# ---------------------------------------------------------------- report

def stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "n": len(values)}


def ours_by_recipe(res: dict) -> dict[str, list[dict]]:
    """Our runs grouped by recipe, in the record's recipe order."""
    recipes = recipes_of(res["settings"])
    return {r: [o for o in res["runs"]["ours"] if o.get("recipe", recipes[0]) == r] for r in recipes}


def summary(res: dict) -> dict:
    """Means over each side's runs; for each of our recipes, the wall ratio and whether the issue's primary
    target (airbench94's TTA top-1 in <= 0.7x its wall time) was met."""
    a = res["runs"]["airbench"]
    peer = {"top1": stats([r["top1"] for r in a]), "wall_s": stats([r["wall_s"] for r in a])}
    ours = {}
    for recipe, runs in ours_by_recipe(res).items():
        o = {"top1": stats([r["top1"] for r in runs]), "wall_s": stats([r["wall_s"] for r in runs])}
        o["wall_ratio"] = o["wall_s"]["mean"] / peer["wall_s"]["mean"]
        o["primary_met"] = o["top1"]["mean"] >= peer["top1"]["mean"] and o["wall_ratio"] <= 0.7
        ours[recipe] = o
    return {"airbench": peer, "ours": ours}


def render(res: dict) -> list[str]:
    s, st = summary(res), res["settings"]
    a = s["airbench"]
    precisions = sorted({r["precision"] for r in res["runs"]["ours"]})
    recipes = ", ".join(f"`{r}`" for r in recipes_of(st))
    lines = [f"Data: {res['data']}, train/ and test/ (both sides the same files; nothing is chosen on test). "
             "Wall: the whole process, start-up and JPEG decode inside. airbench94 unchanged through the "
             f"shared CPU adapter, {st['precision']}; ours: {recipes}, precision by its amp probe "
             f"({', '.join(precisions)}); {st['threads']} threads each.", "",
             "| side | runs | test top-1, mean | std | min | wall s, mean | wall vs airbench94 |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| airbench94 (6-view TTA) | {a['top1']['n']} | {a['top1']['mean']:.2f}% | {a['top1']['std']:.2f} | "
             f"{a['top1']['min']:.2f}% | {a['wall_s']['mean']:.0f} | 1.00x |"]
    for recipe, o in s["ours"].items():
        lines.append(f"| ours, `{Path(recipe).stem}` | {o['top1']['n']} | {o['top1']['mean']:.2f}% | "
                     f"{o['top1']['std']:.2f} | {o['top1']['min']:.2f}% | {o['wall_s']['mean']:.0f} | "
                     f"{o['wall_ratio']:.2f}x |")
    lines.append("")
    for recipe, o in s["ours"].items():
        lines.append(f"`{Path(recipe).stem}` / airbench94 wall time: {o['wall_ratio']:.2f}x; top-1 difference "
                     f"{o['top1']['mean'] - a['top1']['mean']:+.2f} points. Issue 28's primary target (airbench94's "
                     f"TTA top-1 in <= 0.7x its wall time): {'met' if o['primary_met'] else 'not met'}.")
    lines += ["", "Every run (wall s: test top-1):", ""]
    for r in res["runs"]["airbench"]:
        curve = "; ".join(f"{e['wall_s']:.0f}: {e['val_top1']:.1f}" for e in r["epochs"])
        lines.append(f"- airbench94: {r['wall_s']:.0f}: {r['top1']:.2f} (TTA; without: {r['top1_no_tta']}); "
                     f"per epoch, no TTA: {curve}")
    for recipe, runs in ours_by_recipe(res).items():
        for r in runs:
            lines.append(f"- `{Path(recipe).stem}` seed {r['seed']}: {r['wall_s']:.0f}: {r['top1']:.2f} "
                         f"({r['precision']}, {r['epochs']} epochs, {r['train_s']:.0f} s training)")
    return lines + ["", "![test top-1 against wall time](benchmarks/results/airbench.png)"]


OURS_STYLES = (("D", "#1f77b4"), ("s", "#2ca02c"), ("^", "#9467bd"), ("v", "#8c564b"))


def plot(res: dict, path: Path) -> Path:
    """Test top-1 against wall minutes: airbench94's per-epoch curve and TTA end point, our runs' end points
    (one marker a recipe)."""
    fig = figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, r in enumerate(res["runs"]["airbench"]):
        ax.plot([e["wall_s"] / 60 for e in r["epochs"]], [e["val_top1"] for e in r["epochs"]], marker="o", ms=3,
                color="#ff7f0e", alpha=0.6, label="airbench94 per epoch (no TTA)" if i == 0 else None)
        ax.plot([r["wall_s"] / 60], [r["top1"]], marker="*", ms=10, color="#ff7f0e", ls="none",
                label="airbench94 final (TTA)" if i == 0 else None)
    for (recipe, runs), (marker, colour) in zip(ours_by_recipe(res).items(), itertools.cycle(OURS_STYLES)):
        ax.plot([r["wall_s"] / 60 for r in runs], [r["top1"] for r in runs], marker=marker, ms=6, color=colour,
                ls="none", label=f"{Path(recipe).stem}, a point per seed (TTA)")
    ax.set_xlabel("wall time of the whole process, minutes")
    ax.set_ylabel("test top-1, %")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})   # no version stamp: the PNG regenerates byte-identical
    return path


def main() -> None:
    import run as suite   # benchmarks/run.py: the record's metadata, the subset folder and BENCHMARKS.md

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="CIFAR-10 ImageFolder root (train/, test/)")
    add_arguments(p)
    p.add_argument("--results", default=str(suite.RESULTS))
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = p.parse_args()
    root = Path(args.root).resolve()
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        sys.exit(f"error: --root {args.root}: needs train/ and test/ (a CIFAR-10 ImageFolder)")
    import tempfile

    Path(args.results).mkdir(parents=True, exist_ok=True)
    print(f"machine: {suite.machine()}", flush=True)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        res = run_section(args, root, Path(tmp), suite.subset_folder)
    suite.save(args, "airbench", res, 1, load_start, script="benchmarks/airbench_side_by_side.py", planned=1)
    plot(formats.read(Path(args.results) / "airbench.json", formats.BENCHMARK), Path(args.results) / "airbench.png")
    text = suite.render(Path(args.results), Path(args.out))
    print(text.split("## Side by side")[1].split("\n## ")[0] if "## Side by side" in text else text)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
