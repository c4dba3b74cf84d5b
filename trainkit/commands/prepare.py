"""Convert an ImageFolder into shards: ``trainkit prepare <imagefolder> --out DIR [--format packed|webdataset]``.

``--format packed`` (default): fixed-size decoded uint8 records (``--size``), fastest for sets
that fit one disk; see trainkit/data/packed.py. Train with ``data.format=packed data.root=<out>``.

``--format webdataset``: the original encoded bytes in webdataset tar shards of ``--shard-mb``,
in a seeded random order (``--shuffle-seed``), plus an index; copy the folder to an object store and
train with ``data.format=webdataset data.root=<folder or URL>``; see trainkit/data/streaming.py
and docs/streaming.md.

Both write a manifest (classes, counts, sha256 of every file) last; ``--verify <out>``
re-checks the checksums.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from trainkit.commands.common import add_shared, new_parser, parse
from trainkit.cli import one_line_errors
from trainkit.config.recipe import DataCfg
from trainkit.data import streaming
from trainkit.data.packed import sha256_file, verify, write_packed
from trainkit.data.sources import DataError, imagefolder


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, ["trainkit prepare ../shared/data/imagenette-dev --out data/imagenette-packed --size 64",
                             "trainkit prepare --data-root ../shared/data/cifar10-jpeg --out data/cifar-wds "
                             "--format webdataset --shuffle-seed 1",
                             "trainkit prepare --verify data/imagenette-packed"])
    p.add_argument("root_arg", type=Path, nargs="?", metavar="ROOT",
                   help="ImageFolder with train/ and val/ and/or test/ (or --data-root)")
    p.add_argument("out_arg", type=Path, nargs="?", metavar="OUT", help="output folder (or --out)")
    add_shared(p, "data_root", "out", help={"data_root": "the ImageFolder (same as ROOT)",
                                            "out": "the output folder (same as OUT)"})
    p.add_argument("--format", choices=("packed", "webdataset"), default="packed",
                   help="packed: decoded fixed-size records; webdataset: original bytes in tar shards")
    p.add_argument("--size", type=int, help="packed: square side, px (default: the first image's short side)")
    p.add_argument("--chans", type=int, choices=(1, 3), default=3, help="packed: channels")
    p.add_argument("--shard-mb", type=float, default=256.0, help="largest shard file, MiB")
    p.add_argument("--shuffle-seed", type=int, default=0, dest="seed",
                   help="webdataset: seed of the order samples are written in (was --seed)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (listed in the manifest)")
    p.add_argument("--verify", type=Path, metavar="PACKED", help="check a packed folder's sha256 sums and exit")
    args = parse(p, argv, "prepare", overrides=False)
    if args.data_root is not None and args.root_arg is not None or args.out is not None and args.out_arg is not None:
        p.error("give the ImageFolder and the output folder once each (ROOT or --data-root, OUT or --out)")
    args.root = Path(args.data_root) if args.data_root is not None else args.root_arg
    args.out = args.out if args.out is not None else args.out_arg
    if args.verify is None and (args.root is None or args.out is None):
        p.error("give an ImageFolder root and an output folder (or --verify PACKED)")
    if args.size is not None and args.size < 1 or args.shard_mb <= 0:
        p.error("--size and --shard-mb must be positive")
    if args.format == "webdataset" and (args.size is not None or args.chans != 3):
        p.error("--size and --chans apply to --format packed; webdataset shards keep the original bytes")
    return args


def natural_size(path: str) -> int:
    from PIL import Image   # late: only this helper opens an image

    with Image.open(path) as img:
        return min(img.size)


def write_webdataset(args: argparse.Namespace, source, on_corrupt: str) -> int:
    start = time.perf_counter()
    manifest = streaming.write_shards(source, args.root, args.out, shard_mb=args.shard_mb, seed=args.seed,
                                      workers=args.workers, on_corrupt=on_corrupt)
    seconds = time.perf_counter() - start
    for name, info in manifest["splits"].items():
        mb = sum(s["bytes"] for s in info["shards"]) / 2**20
        print(f"{name}: {info['count']} images, {len(info['shards'])} shards ({info['pattern']}), {mb:.1f} MiB"
              + (f", {len(info['skipped'])} skipped" if info["skipped"] else ""))
    print(f"wrote {args.out} (webdataset, original bytes) in {seconds:.1f}s; "
          f"manifest sha256 {sha256_file(args.out / 'manifest.json')[:12]}")
    return 0


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.verify is not None:
        bad = streaming.verify(args.verify) if streaming.is_shard_folder(args.verify) else verify(args.verify)
        if bad:
            raise DataError(f"{args.verify}: checksum mismatch in {', '.join(bad)}")
        print(f"{args.verify}: all checksums match")
        return 0
    if args.out.resolve() == args.root.resolve():
        raise DataError("the output folder must differ from the ImageFolder root")
    source = imagefolder(DataCfg(name="imagefolder", root=str(args.root)))
    on_corrupt = "skip" if args.skip_corrupt else "error"
    if args.format == "webdataset":
        return write_webdataset(args, source, on_corrupt)
    size = args.size or natural_size(source.splits["train"].paths[0])
    start = time.perf_counter()
    manifest = write_packed(source, args.out, size=size, chans=args.chans, shard_mb=args.shard_mb,
                            workers=args.workers, on_corrupt=on_corrupt)
    seconds = time.perf_counter() - start
    for name, info in manifest["splits"].items():
        mb = sum((args.out / s["file"]).stat().st_size for s in info["shards"]) / 2**20
        print(f"{name}: {info['count']} images, {len(info['shards'])} shards, {mb:.1f} MiB"
              + (f", {len(info['skipped'])} skipped" if info["skipped"] else ""))
    print(f"wrote {args.out} ({size}x{size}x{args.chans}) in {seconds:.1f}s; "
          f"manifest sha256 {sha256_file(args.out / 'manifest.json')[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
