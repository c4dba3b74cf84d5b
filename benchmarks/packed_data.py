"""Resident memory and throughput of the packed format (benchmark, not a test).

    python benchmarks/packed_data.py --source ../shared/data/cifar10-jpeg --packed /tmp/cifar10-packed-160 \\
        --size 160 --cap-mb 1280 --epochs 2

1. Packs the ImageFolder with prepare's writer at ``--size`` px (unless ``--packed`` exists).
2. Memory: a fresh process iterates the packed training split ``--epochs`` times through
   trainkit's per-sample loader (workers=0, so every byte it holds is in one process) and
   reports its peak resident memory (VmHWM, which includes the ~0.9 GB that importing torch
   costs) against ``--cap-mb`` and the size of the data it read.
3. Throughput: the same loader over the packed set and over the ImageFolder (decode +
   resize per image), images/s for each worker count.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def status_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def loader_for(root: Path, fmt: str, size: int, batch: int, workers: int):
    import torch

    from trainkit.data.loaders import LoaderSettings, make_loader
    from trainkit.data.sources import open_source
    from trainkit.config.recipe import AugmentCfg, DataCfg, EvalCfg

    cfg = DataCfg(name="imagefolder", root=str(root), format=fmt, in_memory=False, eval=EvalCfg(size=size))
    split = open_source(cfg).splits["train"]
    settings = LoaderSettings(batch=batch, workers=workers, pin_memory=False, prefetch_factor=2,
                              persistent_workers=False, drop_last=True)
    loader = make_loader(split, train=True, data=cfg, augment=AugmentCfg(hflip=0.5), settings=settings, chans=3,
                         device=torch.device("cpu"), seed=0, channels_last=False)
    return loader, split


def memory_phase(args) -> dict:
    import torch

    torch.set_num_threads(1)
    loader, split = loader_for(args.packed, "packed", args.size, args.batch, workers=0)
    base_kb = status_kb("VmRSS")
    images, rss_max_kb, start = 0, 0, time.perf_counter()
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        for x, _ in loader:
            images += len(x)
            rss_max_kb = max(rss_max_kb, status_kb("VmRSS"))
    seconds = time.perf_counter() - start
    data_mb = len(split) * args.size * args.size * 3 / 2**20
    return {"images": images, "seconds": seconds, "img_per_s": images / seconds, "data_mb": data_mb,
            "read_mb": images * args.size * args.size * 3 / 2**20, "rss_before_mb": base_kb / 1024,
            "rss_max_sampled_mb": rss_max_kb / 1024, "vmhwm_mb": status_kb("VmHWM") / 1024}


def throughput(root: Path, fmt: str, size: int, batch: int, workers: int, batches: int) -> float:
    import torch

    torch.set_num_threads(1)
    loader, _ = loader_for(root, fmt, size, batch, workers)
    loader.set_epoch(0)
    it = iter(loader)
    next(it)                                    # start-up (workers, first batch) not timed
    start, images = time.perf_counter(), 0
    for _, (x, _) in zip(range(batches), it):
        images += len(x)
    return images / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10-jpeg")
    p.add_argument("--packed", type=Path, default=Path("/tmp/cifar10-packed-160"))
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--cap-mb", type=float, default=1280)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=30, help="timed batches per throughput measurement")
    p.add_argument("--repeats", type=int, default=3, help="throughput measurements per setting (median shown)")
    p.add_argument("--phase", choices=("all", "memory"), default="all", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase == "memory":
        print(json.dumps(memory_phase(args)))
        return 0
    if not args.source.is_dir():
        sys.exit(f"error: {args.source} not found (the shared CIFAR-10 JPEG copy, or --source PATH)")

    if not (args.packed / "manifest.json").is_file():
        from trainkit.data.sources import imagefolder
        from trainkit.data.packed import write_packed
        from trainkit.config.recipe import DataCfg

        start = time.perf_counter()
        write_packed(imagefolder(DataCfg(root=str(args.source))), args.packed, size=args.size, chans=3,
                     shard_mb=256, workers=2)
        print(f"prepare: {time.perf_counter() - start:.0f}s")
    manifest = json.loads((args.packed / "manifest.json").read_text())
    print(f"packed set: {args.packed}, {manifest['size']} px, train {manifest['splits']['train']['count']} images")

    out = subprocess.run([sys.executable, __file__, "--phase", "memory", "--packed", str(args.packed),
                          "--size", str(args.size), "--epochs", str(args.epochs), "--batch", str(args.batch)],
                         capture_output=True, text=True, check=True)
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    verdict = "UNDER" if mem["vmhwm_mb"] < args.cap_mb else "OVER"
    print(f"memory: iterated {mem['images']} images ({mem['read_mb']:.0f} MiB read; the train split is "
          f"{mem['data_mb']:.0f} MiB = {mem['data_mb'] / args.cap_mb:.1f}x the cap) in {mem['seconds']:.0f}s")
    print(f"memory: peak resident {mem['vmhwm_mb']:.0f} MiB (VmHWM; {mem['rss_before_mb']:.0f} MiB before the "
          f"first batch, {mem['rss_max_sampled_mb']:.0f} MiB max sampled per batch) -> {verdict} the "
          f"{args.cap_mb:.0f} MiB cap")

    print(f"\nthroughput, per-sample loader, batch {args.batch}, {args.size} px, hflip, {args.batches} batches, "
          f"median (min-max) of {args.repeats} interleaved runs:")
    print("| format | workers | img/s |\n|---|---|---|")
    for workers in args.workers:
        rates: dict[str, list[float]] = {"packed": [], "files": []}
        for _ in range(args.repeats):      # interleaved, so load from other processes hits both alike
            for fmt, root in (("packed", args.packed), ("files", args.source)):
                rates[fmt].append(throughput(root, fmt, args.size, args.batch, workers, args.batches))
        for fmt, values in rates.items():
            values.sort()
            name = "packed" if fmt == "packed" else "ImageFolder (JPEG)"
            print(f"| {name} | {workers} | {values[len(values) // 2]:.0f} ({values[0]:.0f}-{values[-1]:.0f}) |",
                  flush=True)
    return 0 if verdict == "UNDER" else 1


if __name__ == "__main__":
    sys.exit(main())
