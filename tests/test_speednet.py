"""speednet_cifar: the data-set whitening stem does whiten, stays frozen, and the trainer sets it."""

from __future__ import annotations

import json

import timm
import torch

import trainkit.models.build  # noqa: F401  (registers our models with timm)
from tests.test_cli import run


def correlated_images(n: int = 512, seed: int = 0) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are strongly correlated (like real photos)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 17, 17, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)
    return smooth.repeat(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, 32, 32, generator=g)


def test_whitening_stem_decorrelates_patches():
    model = timm.create_model("speednet_cifar", num_classes=10, widths=(8, 8, 8))
    x = correlated_images()
    model.init_from_data(x, eps=1e-6)
    with torch.no_grad():
        out = model.whiten(x) - model.whiten.bias.view(1, -1, 1, 1)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)        # the + filters; the rest are their negatives
    cov = torch.cov(half.T.double())
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=0.05), cov.diag()
    assert torch.allclose(out[:, 12:], -out[:, :12], atol=1e-5)
    assert not model.whiten.weight.requires_grad


def test_trainer_initialises_the_stem_from_training_data(image_folder, tmp_path):
    # 16 px images: the whole net still runs (each group halves the map, max-pool adapts).
    run("train.py", "recipes/cifar10_speedrun.yaml", f"data.root={image_folder}", "data.eval.size=16",
        "model.kwargs={widths: [8, 8, 8]}", "schedule.epochs=1", "train.eval_every_epochs=1",
        "train.global_batch=8", "augment.pad_px=1", f"runtime.out_dir={tmp_path}", "runtime.run_name=sn")
    out = tmp_path / "sn"
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    stem = ckpt["model"]["whiten.weight"]
    fresh = timm.create_model("speednet_cifar", num_classes=3, widths=(8, 8, 8)).whiten.weight
    assert stem.abs().sum() > 0 and not torch.allclose(stem, fresh)
    assert json.loads((out / "summary.json").read_text())["samples"] > 0
