"""Fine-tuning photos on a CPU: how close the recipes come to the bare training step.

Three measurements, each side by side in one process (interleaved rounds, so a machine shared
with other jobs slows both sides alike; compare ratios, not absolute times across runs):

  layout   the bare training step of the recipe's model on synthetic in-memory tensors, fp32 and
           bf16, NCHW and channels_last: which layout and precision the recipe should use;
  recipe   recipes/finetune_photos_lite0.yaml (real photos, its augmentation, loss, layer decay)
           through train.py's Trainer vs that trainer's own step on synthetic tensors of the same
           batch, layout and precision: the target is >= 0.9x;
  probe    recipes/linear_probe_photos_aid_lite0.yaml (--probe-recipe, on --probe-data-root: aid-dev) per
           training epoch with finetune.cache_features on vs off (the one-time feature pass reported apart,
           and amortised over the recipe's epochs).

  python benchmarks/finetune_photos.py --data-root ../shared/data/imagenette-dev \
      [--probe-data-root ../shared/data/aid-dev] [--parts layout recipe probe]

Prints one table per part and merges it into --out (JSON): each part keeps its own command, date,
CPU model, torch version, commit and load average, so re-measuring one part leaves the others as
they were measured. BENCHMARKS.md renders the file (`python benchmarks/run.py --render`).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.config import formats  # noqa: E402  (after the sys.path line above)
from trainkit.config.recipe import load_recipe  # noqa: E402  (after the sys.path line above)
from trainkit.models.hub import build_model  # noqa: E402  (after the sys.path line above)
from trainkit.runtime.distributed import DistInfo  # noqa: E402  (after the sys.path line above)
from trainkit.train.engine import autocast, train_one_epoch  # noqa: E402  (after the sys.path line above)
from trainkit.data.sources import prepare_data  # noqa: E402  (after the sys.path line above)
from trainkit.runtime.environment import hardware_description  # noqa: E402  (after the sys.path line above)
from trainkit.train.trainer import Trainer, plan_for, seed_everything  # noqa: E402  (after the sys.path line above)

CPU = torch.device("cpu")
PARTS = ("layout", "recipe", "probe")


def trainer_for(recipe_file: str, overrides: list[str], out: Path) -> Trainer:
    recipe = load_recipe(ROOT / "recipes" / recipe_file, [*overrides, f"runtime.out_dir={out}",
                                                          "runtime.progress=false"])
    seed_everything(recipe.train.seed, False, CPU, False)
    data = prepare_data(recipe)
    plan = plan_for(recipe, data, DistInfo(), CPU)
    return Trainer(recipe, plan, data, DistInfo(), CPU, out / f"{recipe_file}-{time.time_ns()}", recipe_file)


def bare_steps(step, batch: int, size: int, classes: int, channels_last: bool, steps: int) -> float:
    """img/s of ``step`` (a TrainStep) on one synthetic batch kept in memory; one warm-up step first."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
    y = torch.randint(0, classes, (batch,))
    step.micro(x, y, True)
    t0 = time.perf_counter()
    for _ in range(steps):
        step.micro(x, y, True)
    return batch * steps / (time.perf_counter() - t0)


def layout_part(args) -> dict:
    """Bare forward+backward+SGD step of the recipe's model, fp32/bf16 x NCHW/channels_last."""
    recipe = load_recipe(ROOT / "recipes" / "finetune_photos_lite0.yaml", [f"data.root={args.data_root}"])
    batch, size = recipe.train.global_batch, recipe.data.train_size or recipe.data.eval.size
    variants = [(p, cl) for p in ("fp32", "bf16") for cl in (False, True)]
    models = {}
    for precision, cl in variants:
        model = build_model(recipe.model, 10, 3)
        models[(precision, cl)] = model.to(memory_format=torch.channels_last) if cl else model
    speeds: dict = {v: [] for v in variants}
    for _ in range(args.rounds):
        for precision, cl in variants:
            model = models[(precision, cl)].train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            layout = torch.channels_last if cl else torch.contiguous_format
            x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
            y = torch.randint(0, 10, (batch,))
            t0 = None
            for i in range(args.steps + 1):
                if i == 1:
                    t0 = time.perf_counter()   # step 0 warms up (allocations, oneDNN primitives)
                with autocast(CPU, precision):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            speeds[(precision, cl)].append(batch * args.steps / (time.perf_counter() - t0))
    rows = {f"{p} {'channels_last' if cl else 'NCHW'}": max(s) for (p, cl), s in speeds.items()}
    base = rows["fp32 NCHW"]
    print(f"\nbare training step, {recipe.model.name}, batch {batch}, {size} px (best of {args.rounds} rounds):")
    for name, v in rows.items():
        print(f"  {name:20s} {v:7.2f} img/s   {v / base:5.2f}x fp32 NCHW")
    return {"batch": batch, "size": size, "img_per_s": rows}


def recipe_part(args, out: Path) -> dict:
    """The recipe's epoch (real photos, loader, augmentation) vs its own step on synthetic tensors."""
    overrides = [f"data.root={args.data_root}", f"data.limit_train={args.images}", "data.limit_eval=20",
                 "schedule.epochs=1"]
    trainer = trainer_for("finetune_photos_lite0.yaml", overrides, out)
    plan = trainer.plan
    size = trainer.recipe.data.train_size or trainer.recipe.data.eval.size
    recipe_speed, bare_speed = [], []
    for r in range(args.rounds):
        trainer.train_loader.set_epoch(r)
        t0 = time.perf_counter()
        stats = train_one_epoch(trainer.step, trainer.train_loader, steps=plan.steps_per_epoch, log_every=10**9,
                                on_log=lambda *a: None, show_progress=False, desc="recipe")
        recipe_speed.append(stats.images / (time.perf_counter() - t0))
        bare_speed.append(bare_steps(trainer.step, plan.per_device_batch, size, plan.num_classes, plan.channels_last,
                                     steps=max(2, plan.steps_per_epoch // 2)))
    ratio = [a / b for a, b in zip(recipe_speed, bare_speed)]
    print(f"\nfinetune_photos_lite0.yaml vs its bare step ({plan.precision}, "
          f"{'channels_last' if plan.channels_last else 'NCHW'}, batch {plan.per_device_batch}, {args.images} photos "
          f"per round, data path {'in-memory' if plan.in_memory else 'per-sample'}):")
    for i, (a, b, q) in enumerate(zip(recipe_speed, bare_speed, ratio)):
        print(f"  round {i + 1}: recipe {a:6.2f} img/s   bare step {b:6.2f} img/s   ratio {q:.2f}x")
    print(f"  median ratio {sorted(ratio)[len(ratio) // 2]:.2f}x (target >= 0.90x)")
    return {"recipe_img_per_s": recipe_speed, "bare_img_per_s": bare_speed, "ratio": ratio,
            "precision": plan.precision, "channels_last": plan.channels_last, "in_memory": plan.in_memory}


def probe_part(args, out: Path) -> dict:
    """Linear probe epochs with and without the feature cache (same recipe, same photos): --probe-recipe, by
    default the aid-dev probe (photos the backbone never saw; its train/ hold-out split included)."""
    overrides = [f"data.root={args.probe_data_root}", f"data.limit_train={args.images}",
                 f"data.limit_eval={args.images}", "schedule.epochs=2"]
    t0 = time.perf_counter()
    cached = trainer_for(args.probe_recipe, [*overrides, "finetune.cache_features=true"], out)
    one_time = time.perf_counter() - t0   # model build + the feature pass over train and val images
    plain = trainer_for(args.probe_recipe, [*overrides, "finetune.cache_features=false"], out)
    epochs = load_recipe(ROOT / "recipes" / args.probe_recipe,
                         [f"data.root={args.probe_data_root}"]).schedule.epochs
    rows = []
    for epoch in range(2):
        c = cached.fit_epoch(epoch)
        p = plain.fit_epoch(epoch)
        rows.append((p["train_epoch_s"], c["train_epoch_s"]))
    plain_s = min(p for p, _ in rows)
    cached_s = min(c for _, c in rows)
    print(f"\nlinear probe, {args.images} train photos per epoch (val of {args.images} included in neither):")
    for i, (p, c) in enumerate(rows):
        print(f"  epoch {i + 1}: through the frozen backbone {p:8.2f} s   cached features {c:8.4f} s   "
              f"{p / c:8.1f}x")
    total_plain = epochs * plain_s
    total_cached = one_time + epochs * cached_s
    print(f"  one-time feature pass (train + val, model build included): {one_time:.1f} s")
    print(f"  the recipe's {epochs} epochs: {total_plain:.1f} s through the backbone vs {total_cached:.1f} s cached "
          f"(one-time pass included): {total_plain / total_cached:.1f}x")
    return {"epoch_s_plain": [p for p, _ in rows], "epoch_s_cached": [c for _, c in rows],
            "per_epoch_ratio": plain_s / cached_s, "one_time_s": one_time, "recipe_epochs": epochs,
            "recipe_ratio_including_one_time": total_plain / total_cached,
            "recipe": f"recipes/{args.probe_recipe}", "data_root": args.probe_data_root}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "imagenette-dev"))
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="layout: timed steps per round")
    p.add_argument("--images", type=int, default=192, help="recipe/probe: photos per epoch")
    p.add_argument("--probe-recipe", default="linear_probe_photos_aid_lite0.yaml",
                   help="probe: the recipe under recipes/")
    p.add_argument("--probe-data-root", default=str(ROOT.parent / "shared" / "data" / "aid-dev"),
                   help="probe: its photos (aid-dev: photos the backbone never saw)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_photos.json")
    args = p.parse_args()
    for flag, root in (("--data-root", args.data_root), ("--probe-data-root", args.probe_data_root)):
        if not Path(root, "train").is_dir():
            print(f"error: {flag} {root}: no train/ folder (an ImageFolder of photos)", file=sys.stderr)
            return 2
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    previous = formats.read(args.out, formats.PHOTOS_BENCHMARK) if args.out.is_file() else {}
    result = {part: previous[part] for part in PARTS if part in previous}   # parts measured before stay
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            load_start = os.getloadavg()[0]
            if part == "layout":
                figures = layout_part(args)
            elif part == "recipe":
                figures = recipe_part(args, Path(tmp))
            else:
                figures = probe_part(args, Path(tmp))
            result[part] = {**figures, "command": " ".join(["python", *sys.argv]),
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "cpu": hardware_description(CPU), "machine": platform.machine(), "torch": torch.__version__,
                            "git_commit": commit, "load_average": [load_start, os.getloadavg()[0]]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    formats.write(args.out, formats.PHOTOS_BENCHMARK, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
