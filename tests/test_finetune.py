"""Fine-tuning keys: frozen parameters (and their BatchNorm statistics) do not change, unfreezing
works at its epoch, per-group lrs follow the layer-decay formula, and the transfer recipe trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import trainkit.models.cifar  # noqa: F401  (registers resnet*_cifar)
from trainkit.config.schema import RecipeError, from_dict
from trainkit.train.finetune import Finetuner, layer_ids
from trainkit.train.optim import build_optimizer, build_scheduler
from trainkit.config.recipe import FinetuneCfg, OptimCfg, ScheduleCfg, load_recipe

from conftest import WEIGHTS, require

ROOT = Path(__file__).resolve().parents[1]
OPTIM = OptimCfg(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)


def finetune(model, **keys) -> tuple[Finetuner, torch.optim.Optimizer, object]:
    cfg = from_dict(FinetuneCfg, keys, "finetune")
    tuner = Finetuner(model, cfg, num_classes=10)
    opt = build_optimizer(model, OPTIM, OPTIM.lr, param_groups=tuner.param_groups(OPTIM))
    return tuner, opt, build_scheduler(opt, ScheduleCfg(name="constant", epochs=2), steps_per_epoch=3)


def train_steps(model, opt, sched, steps=3):
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def module_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def test_frozen_stages_and_their_bn_statistics_do_not_change():
    model = timm.create_model("resnet20_cifar", num_classes=10)
    tuner, opt, sched = finetune(model, freeze="stages", freeze_stages=1, layer_decay=0.7, head_lr_mult=5.0)
    tuner.set_epoch(0)
    before = snapshot(model)
    train_steps(model, opt, sched)
    diff = changed(before, model)
    frozen = {k for k in before if k.startswith(("conv1.", "bn1.", "layer1."))}
    assert frozen and not diff & frozen, sorted(diff & frozen)[:3]
    assert {"layer2.0.conv1.weight", "layer3.2.bn2.running_mean", "linear.weight"} <= diff
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("layer1."))


def test_unfreeze_after_epochs_trains_the_frozen_part_from_that_epoch():
    model = timm.create_model("resnet20_cifar", num_classes=10)
    tuner, opt, sched = finetune(model, freeze="backbone", unfreeze_after_epochs=1)
    tuner.set_epoch(0)
    before = snapshot(model)
    train_steps(model, opt, sched)
    assert changed(before, model) == {"linear.weight", "linear.bias"}
    tuner.set_epoch(1)
    train_steps(model, opt, sched)
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight"} <= changed(before, model)


def test_linear_probe_changes_only_the_head_and_keeps_bn_in_eval():
    model = timm.create_model("resnet20_cifar", num_classes=10)
    head = model.linear
    tuner, opt, sched = finetune(model, linear_probe=True, reset_head=True)
    tuner.set_epoch(0)
    before = snapshot(model)
    train_steps(model, opt, sched)
    assert model.linear is not head  # reset_head: a fresh classifier
    assert changed(before, model) == {"linear.weight", "linear.bias"}


def test_freeze_bn_stats_alone_keeps_running_stats_but_trains_bn_affine():
    model = timm.create_model("resnet20_cifar", num_classes=10)
    tuner, opt, sched = finetune(model, freeze_bn_stats=True)
    tuner.set_epoch(0)
    before = snapshot(model)
    train_steps(model, opt, sched)
    diff = changed(before, model)
    assert not any("running_" in k or "num_batches" in k for k in diff)
    assert {"bn1.weight", "layer1.0.conv1.weight"} <= diff


@pytest.mark.parametrize("arch", ["resnet20_cifar", "resnet18"])
@pytest.mark.parametrize("decay,mult", [(0.75, 1.0), (0.5, 10.0), (None, 3.0)])
def test_per_group_lrs_follow_the_layer_decay_formula(arch, decay, mult):
    model = timm.create_model(arch, num_classes=10)
    tuner, opt, _ = finetune(model, layer_decay=decay, head_lr_mult=mult)
    ids, top = layer_ids(model)
    head = {n for n in ids if ids[n] == top}
    assert head == {n for n, _ in model.named_parameters() if n.startswith(model.pretrained_cfg["classifier"])}
    seen, params = set(), dict(model.named_parameters())
    for group in opt.param_groups:
        for name in group["names"]:
            expected = OPTIM.lr * (decay or 1.0) ** (top - ids[name]) * (mult if name in head else 1.0)
            assert group["lr"] == pytest.approx(expected, rel=1e-12), name
            assert group["weight_decay"] == (0.0 if params[name].ndim <= 1 else OPTIM.weight_decay)
            seen.add(name)
    assert seen == {n for n, _ in model.named_parameters()}  # every parameter in exactly one group


def test_cifar_resnet_layers_are_stem_blocks_head():
    ids, top = layer_ids(timm.create_model("resnet20_cifar"))
    assert (ids["conv1.weight"], ids["layer1.0.conv1.weight"], ids["layer3.2.bn2.bias"], top) == (0, 1, 9, 10)
    coarse, stages_top = layer_ids(timm.create_model("resnet20_cifar"), coarse=True)
    assert (coarse["layer2.2.conv2.weight"], stages_top) == (2, 4)


@pytest.mark.parametrize("override, message", [
    ("finetune.freeze=backbone", "finetune.freeze_stages: set it (>= 1) exactly when freeze=stages"),
    ("finetune.layer_decay=1.5", "finetune.layer_decay: must be in (0, 1]"),
    ("finetune.linear_probe=true", "finetune.linear_probe: implies freeze=backbone"),
    ("finetune.frezee=backbone", "did you mean finetune.freeze?"),
])
def test_bad_finetune_keys_name_the_key(override, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(ROOT / "recipes" / "fashion_mnist_resnet20_transfer.yaml", [override])
    assert message in str(err.value)


def test_too_many_frozen_stages_is_a_recipe_error():
    with pytest.raises(RecipeError, match="has 3 stages after its stem, got 4"):
        finetune(timm.create_model("resnet20_cifar"), freeze="stages", freeze_stages=4)


def test_transfer_recipe_trains_on_another_class_count(image_folder, tmp_path):
    """3 classes (CIFAR's head has 10), 1 grey channel, stem + layer1 frozen for the only epoch."""
    require(WEIGHTS / "resnet20-12fca82f.th")
    proc = subprocess.run(
        [sys.executable, "train.py", "recipes/fashion_mnist_resnet20_transfer.yaml", "data.name=imagefolder",
         f"data.root={image_folder}", "data.train_size=16", "data.eval.size=16", "train.global_batch=8",
         # one epoch: the recipe's unfreeze point (epoch 1) would be past the end, so the frozen part stays frozen
         "schedule.epochs=1", "finetune.unfreeze_after_epochs=null", "train.precision=fp32", "runtime.workers=0",
         "runtime.threads=1", f"runtime.out_dir={tmp_path}", "runtime.run_name=t"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "new classifier" in proc.stdout and "adapted from 3 to 1 input channels" in proc.stdout
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["samples"] == 18
    weights = torch.load(tmp_path / "t" / "last.pt", weights_only=True)["model"]
    from trainkit.models.cifar import load_akamaster_state_dict
    rgb = load_akamaster_state_dict(WEIGHTS / "resnet20-12fca82f.th")
    assert weights["linear.weight"].shape == (3, 64)
    assert torch.allclose(weights["conv1.weight"], rgb["conv1.weight"].sum(1, keepdim=True))  # frozen
    assert torch.equal(weights["layer1.2.bn2.running_var"], rgb["layer1.2.bn2.running_var"])  # frozen BN stats
    assert not torch.equal(weights["layer3.2.conv2.weight"], rgb["layer3.2.conv2.weight"])     # trained


def test_parameters_the_model_keeps_frozen_stay_frozen():
    model = timm.create_model("resnet20_cifar", num_classes=10)
    model.conv1.weight.requires_grad_(False)   # as a model with a fixed (e.g. whitening) stem does
    tuner, _, _ = finetune(model, freeze="backbone", unfreeze_after_epochs=1)
    tuner.set_epoch(1)
    assert not model.conv1.weight.requires_grad and model.layer1[0].conv1.weight.requires_grad
