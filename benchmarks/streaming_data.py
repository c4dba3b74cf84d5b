"""Images/s and on-disk size: webdataset shards vs the JPEG ImageFolder vs packed (benchmark, not a test).

    python benchmarks/streaming_data.py            # CIFAR-10 JPEG subset at 32 px + imagenette-dev at 160 px
    python benchmarks/streaming_data.py --only photos --repeats 3

For each data set and format, a fresh process converts the ImageFolder (packed: decode, resize
and write records; webdataset: read, check that PIL decodes each file, write tar shards; files:
nothing) and then reads ``--epochs`` epochs through trainkit's per-sample training loader
(hflip, ``--workers`` workers, one torch thread). The clock covers the conversion and the epochs,
so one-time costs count; the steady rate of the last epoch is shown beside it. ``webdataset
(HTTP)`` serves the freshly written shards from ``python -m http.server`` on 127.0.0.1 and reads
them through a cold cache, so the download is inside the clock too. Formats run interleaved,
``--repeats`` times, in rotating order (load from other processes hits all alike); medians are
shown with the ratio to the ImageFolder. Sizes are those of the files each format keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
FORMATS = ("files", "packed", "webdataset", "webdataset (HTTP)")


def folder_bytes(path: Path) -> tuple[int, int]:
    """Apparent and allocated (file-system blocks) bytes of the files under ``path``, links followed."""
    stats = [f.resolve().stat() for f in path.rglob("*") if f.is_file()]
    return sum(st.st_size for st in stats), sum(st.st_blocks * 512 for st in stats)


def subset_folder(source: Path, out: Path, per_class: int) -> Path:
    """An ImageFolder of the first ``per_class`` train images of each class (symlinks; not timed)."""
    for cls in sorted(p for p in (source / "train").iterdir() if p.is_dir()):
        (out / "train" / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            (out / "train" / cls.name / f.name).symlink_to(f.resolve())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(args) -> dict:
    """One measurement (its own process): convert, then ``epochs`` epochs through the loader."""
    import torch

    from trainkit.config.recipe import AugmentCfg, DataCfg, EvalCfg, RuntimeCfg
    from trainkit.data.loaders import LoaderSettings, make_loader
    from trainkit.data.sources import open_source

    torch.set_num_threads(1)
    work = Path(args.work)
    start = time.perf_counter()
    fmt, root, server = args.format, str(args.source), None
    if fmt != "files":
        prep = ["--format", "webdataset", "--shard-mb", "64"] if fmt.startswith("webdataset") else \
            ["--size", str(args.size)]
        subprocess.run([sys.executable, str(ROOT / "prepare.py"), str(args.source), str(work / "out"),
                        "--workers", "0", *prep], check=True, capture_output=True)
        root = str(work / "out")
    prepare_s = time.perf_counter() - start
    if fmt == "webdataset (HTTP)":
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        root = f"http://127.0.0.1:{port}"
    try:
        cfg = DataCfg(root=root, format={"files": "files", "packed": "packed"}.get(fmt, "webdataset"),
                      in_memory=False, eval=EvalCfg(size=args.size), holdout_fraction=0.1)
        split = open_source(cfg, RuntimeCfg(shard_cache_dir=str(work / "cache"))).splits["train"]
        settings = LoaderSettings(batch=64, workers=args.workers, pin_memory=False, prefetch_factor=2,
                                  persistent_workers=False, drop_last=False)
        loader = make_loader(split, train=True, data=cfg, augment=AugmentCfg(hflip=0.5), settings=settings,
                             chans=3, device=torch.device("cpu"), seed=0, channels_last=False)
        epoch_s, images = [], 0
        for epoch in range(args.epochs):
            t = time.perf_counter()
            loader.set_epoch(epoch)
            images += sum(len(y) for _, y in loader)
            epoch_s.append(time.perf_counter() - t)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    total = time.perf_counter() - start
    size, allocated = folder_bytes(work / "out" if fmt != "files" else Path(args.source))
    return {"images": images, "prepare_s": prepare_s, "epoch_s": epoch_s, "total_s": total, "bytes": size,
            "allocated": allocated,
            "img_per_s": images / total, "last_epoch_img_per_s": images / args.epochs / epoch_s[-1]}


def measure(fmt: str, source: Path, size: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as work:
        out = subprocess.run([sys.executable, __file__, "--phase", "one", "--format", fmt, "--source", str(source),
                              "--size", str(size), "--work", work, "--epochs", str(args.epochs),
                              "--workers", str(args.workers)], capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"measurement failed ({fmt}, {source}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_set(name: str, source: Path, size: int, args) -> None:
    results: dict[str, list[dict]] = {f: [] for f in FORMATS}
    for r in range(args.repeats):
        for fmt in FORMATS[r % len(FORMATS):] + FORMATS[:r % len(FORMATS)]:   # rotate who goes first
            results[fmt].append(measure(fmt, source, size, args))
            print(f"  {name} repeat {r + 1}: {fmt} {results[fmt][-1]['img_per_s']:.0f} img/s", file=sys.stderr)

    def med(fmt, key):
        return statistics.median(x[key] for x in results[fmt])
    base, base_steady = med("files", "img_per_s"), med("files", "last_epoch_img_per_s")
    n = results["files"][0]["images"] // args.epochs
    print(f"\n### {name}: {n} training images per epoch at {size} px, {args.epochs} epochs, "
          f"median of {args.repeats} interleaved runs\n")
    print("| format | img/s incl. one-time costs | vs files | one-time s | last epoch img/s | vs files "
          "| on disk MiB (allocated) |")
    print("|---|---|---|---|---|---|---|")
    for fmt in FORMATS:
        rate, steady = med(fmt, "img_per_s"), med(fmt, "last_epoch_img_per_s")
        print(f"| {fmt} | {rate:.0f} | {rate / base:.2f}x | {med(fmt, 'prepare_s'):.1f} | {steady:.0f} | "
              f"{steady / base_steady:.2f}x | {results[fmt][0]['bytes'] / 2**20:.1f} "
              f"({results[fmt][0]['allocated'] / 2**20:.1f}) |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cifar", type=Path, default=SHARED / "cifar10-jpeg")
    p.add_argument("--cifar-per-class", type=int, default=400, help="train images per class of the 32 px subset")
    p.add_argument("--photos", type=Path, default=SHARED / "imagenette-dev")
    p.add_argument("--photo-size", type=int, default=160, help="px (the photos are 224 px)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="loader workers (0: one process, the steadiest on a "
                                                          "shared machine)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=("cifar", "photos"), help="one of the two sets")
    p.add_argument("--phase", default="all", help=argparse.SUPPRESS)
    p.add_argument("--format", help=argparse.SUPPRESS)
    p.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase == "one":
        print(json.dumps(one(args)))
        return 0
    for path in (args.cifar, args.photos):
        if not path.is_dir():
            sys.exit(f"error: {path} not found (the shared data folder beside the repository)")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"machine: {cpu}, {os.cpu_count()} cores (shared with other jobs while measured), "
          f"python {platform.python_version()}; loader workers {args.workers}, 1 torch thread, batch 64, hflip")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stream-bench-src-") as tmp:
        cifar = subset_folder(args.cifar, Path(tmp) / "cifar", args.cifar_per_class)
        photos = subset_folder(args.photos, Path(tmp) / "photos", 10**9)
        if args.only != "photos":
            run_set("CIFAR-10 JPEG subset", cifar, 32, args)
        if args.only != "cifar":
            run_set("imagenette-dev photos", photos, args.photo_size, args)
    print(f"\nwall time {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
