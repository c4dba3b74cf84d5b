"""The reference we race: what timm's train.py (or torchvision's references) does.

torchvision ImageFolder + per-sample PIL transforms + a DataLoader with worker
processes, and the standard step with the best flags that script offers
(channels_last, bf16 autocast, foreach SGD). It imports trainkit only to get the
same model architecture, nothing of our data or training code.

    python benchmarks/reference.py --root ../shared/data/cifar10-jpeg --mode train --limit 10000

Prints one JSON line: images, steady-state seconds and img/s (timed from the
second batch on, so worker start-up is excluded), and total seconds (included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torchvision import datasets
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def pil_transform(size: int, pad_px: int, hflip: float) -> T.Compose:
    """The standard CIFAR training augmentation, per sample (torchvision's classic API)."""
    steps = [T.Resize(size), T.CenterCrop(size)]
    if pad_px:
        steps.append(T.RandomCrop(size, padding=pad_px))
    if hflip:
        steps.append(T.RandomHorizontalFlip(hflip))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(MEAN, STD)])


def make_loader(root: Path, *, size: int, pad_px: int, hflip: float, batch: int, workers: int,
                limit: int | None, seed: int, split: str = "train") -> torch.utils.data.DataLoader:
    transform = pil_transform(size, pad_px, hflip) if split == "train" else pil_transform(size, 0, 0.0)
    ds = datasets.ImageFolder(str(root / split), transform=transform)
    if limit:
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit]
        ds = torch.utils.data.Subset(ds, order.tolist())
    train = split == "train"
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=train, num_workers=workers, drop_last=train,
                                       persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                                       generator=torch.Generator().manual_seed(seed))


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    loader = make_loader(Path(args.root), size=args.size, pad_px=args.pad_px, hflip=args.hflip, batch=args.batch,
                         workers=args.workers, limit=args.limit, seed=args.seed,
                         split="test" if args.mode == "eval" else "train")
    step = None
    if args.mode in ("train", "eval"):
        import timm
        import trainkit.models.cifar  # noqa: F401  (registers resnet20_cifar with timm: the same architecture)

        model = timm.create_model(args.model, num_classes=10).to(memory_format=torch.channels_last)
    if args.mode == "eval":
        model.eval()
        correct = torch.zeros(())

        @torch.no_grad()
        def step(x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            correct.add_((logits.argmax(1) == y).sum())
    if args.mode == "train":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                              foreach=True)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(x, y):
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    images, seen, t_first = 0, 0, None
    # Eval counts every image (no warm-up exclusion would be fair to a 10k-image pass).
    if args.mode == "eval":
        t_first = t0
    for epoch in range(args.epochs):
        for x, y in loader:
            seen += len(y)
            if step is not None:
                step(x, y)
            if t_first is None:        # steady state starts after the first batch
                t_first = time.perf_counter()
            else:
                images += len(y)
    end = time.perf_counter()
    steady = end - t_first
    out = {"impl": "reference", "mode": args.mode, "images": images, "steady_s": steady,
           "img_per_s": images / steady, "total_s": end - t0, "images_all": seen, "workers": args.workers,
           "threads": torch.get_num_threads()}
    if args.mode == "eval":
        out["top1_untrained"] = float(correct) / images * 100   # a fresh model: only proves it ran
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--mode", choices=["data", "train", "eval"], default="train")
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--pad-px", type=int, default=4)
    p.add_argument("--hflip", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()
