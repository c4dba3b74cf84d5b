"""airbench's techniques as recipe keys (issue 28): each key does what it says, and the new speed recipe
is the old one plus the ablation's steps."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

import trainkit.models.build  # noqa: F401  (registers our models with timm)
from tests.test_cli import run
from trainkit.config.recipe import LookaheadCfg, ModelCfg, OptimCfg, ScheduleCfg, load_recipe, parse_recipe, \
    recipe_hash
from trainkit.commands.ablate import read_steps_file
from trainkit.config.schema import RecipeError
from trainkit.data.augment import AlternateFlips, image_coins, pad_crops
from trainkit.data.loaders import LoaderSettings, choose_path, make_loader
from trainkit.data.sources import open_source, resolve_splits
from trainkit.data.transforms import BatchAugment, train_sample_transform
from trainkit.eval.tta import FlipTranslateTTA, with_tta
from trainkit.models.build import create_model
from trainkit.report.ablation import cumulative, parse_step
from trainkit.train.lookahead import Lookahead
from trainkit.train.optim import SCHEDULES, build_optimizer, build_scheduler
from trainkit.train.plan import total_steps

from conftest import ROOT

CPU = torch.device("cpu")
SPEED = ROOT / "recipes" / "cifar10_speedrun.yaml"
AIRBENCH = ROOT / "recipes" / "cifar10_speedrun_airbench.yaml"
STEPS = ROOT / "recipes" / "ablations" / "cifar10_speedrun_airbench.steps"


# ---------------------------------------------------------------- augment.flip: alternate, pad_mode: reflect

def test_alternate_flips_each_image_on_every_other_epoch():
    x = torch.arange(64 * 3 * 2 * 4, dtype=torch.float32).view(64, 3, 2, 4)
    index = torch.arange(1000, 1064)
    flip, gen = AlternateFlips(), torch.Generator()
    views = [flip(x, gen, index, epoch, seed=7) for epoch in range(4)]
    flipped = [(v != x).flatten(1).any(1) for v in views]
    assert 20 < int(flipped[0].sum()) < 44                      # about half each epoch, not all or none
    assert torch.equal(flipped[0], ~flipped[1])                 # each image: one way, then the other
    assert torch.equal(flipped[0], flipped[2]) and torch.equal(flipped[1], flipped[3])
    assert torch.equal(views[1][flipped[1]], x[flipped[1]].flip(3))
    # the coin belongs to the image, not to its place in the batch, and moves with the seed
    assert torch.equal(image_coins(index.flip(0), 7), image_coins(index, 7).flip(0))
    assert not torch.equal(image_coins(index, 7), image_coins(index, 8))


def test_alternate_flip_runs_on_the_in_memory_loader_and_refuses_the_per_sample_path(image_folder):
    tree = {"data": {"name": "imagefolder", "root": str(image_folder), "eval": {"size": 16}},
            "augment": {"hflip": 0.5, "flip": "alternate"}}
    recipe = parse_recipe(tree)
    split = resolve_splits(recipe.data, open_source(recipe.data))["train"]
    settings = LoaderSettings(batch=len(split), workers=0, pin_memory=False, prefetch_factor=2,
                              persistent_workers=False, drop_last=True)
    loader = make_loader(split, train=True, data=recipe.data, augment=recipe.augment, settings=settings, chans=3,
                         device=CPU, seed=0, channels_last=False)
    assert loader.in_memory and loader.augment.wants_position
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        x, _ = next(iter(loader))
        order = loader.batches.indices()
        seen.append(x[torch.argsort(torch.tensor(order))])     # back to split order
    assert torch.allclose(seen[0], seen[1].flip(3))             # every image mirrored between the two epochs
    per_sample = parse_recipe({**tree, "data": {**tree["data"], "in_memory": False}})
    with pytest.raises(RecipeError, match="augment.hflip: exists only on the in-memory path, and data.in_memory"):
        choose_path(per_sample.data, split, train=True, augment=per_sample.augment, chans=3, seed=0)


def test_alternate_flip_needs_hflip_one_half():
    with pytest.raises(RecipeError, match="augment.flip: alternate .* set augment.hflip: 0.5"):
        parse_recipe({"augment": {"flip": "alternate", "hflip": 0.3}})


def test_reflect_padding_fills_the_border_with_the_image():
    x = torch.full((64, 3, 8, 8), 200, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    assert (pad_crops(x, gen, pad_px=2) == 0).any()                       # zeros: shifted windows show the pad
    assert torch.equal(pad_crops(x, gen, pad_px=2, mode="reflect"), x)    # reflect: a flat image stays flat
    cfg = parse_recipe({"augment": {"crop": "pad", "pad_px": 2, "pad_mode": "reflect"}}).augment
    crop = [t for t in train_sample_transform(cfg, 8, "bilinear").transforms if type(t).__name__ == "RandomCrop"]
    assert crop[0].padding_mode == "reflect"
    batched = BatchAugment.from_cfg(cfg)
    assert torch.equal(batched(x, gen), x)


# ---------------------------------------------------------------- optim: BatchNorm groups, decoupled wd, Muon

def test_batchnorm_group_lr_weight_decay_and_frozen_gamma():
    model = timm.create_model("speednet_cifar", num_classes=10, widths=(8, 8, 8))
    cfg = OptimCfg(lr=0.5, weight_decay=0.002, no_decay_norm_bias=False, bn_lr_mult=64, bn_weight_decay=0.002,
                   bn_freeze_weight=True, wd_independent_of_lr=True)
    opt = build_optimizer(model, cfg, lr=0.5)
    sched = build_scheduler(opt, ScheduleCfg(name="constant", epochs=1), steps_per_epoch=10)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.weight.requires_grad for m in bn)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(m.weight) in in_opt for m in bn)
    norm = next(g for g in opt.param_groups if any(p is bn[0].bias for p in g["params"]))
    other = next(g for g in opt.param_groups if any(p is model.head.weight for p in g["params"]))
    assert norm["lr"] == pytest.approx(64 * other["lr"]) and other["lr"] == pytest.approx(0.5)
    # decoupled: the shrink per step (lr x torch's weight_decay) is weight_decay in every group, scaled with
    # the batch as the lr is (a global batch of 2 x lr_ref_batch: the scaled lr 1.0 for lr 0.5)
    for group in (norm, other):
        assert group["lr"] * group["weight_decay"] == pytest.approx(0.002)
    doubled = build_optimizer(model, cfg, lr=1.0)
    assert all(g["lr"] * g.get("lr_scale", 1.0) * g["weight_decay"] == pytest.approx(0.004)
               for g in doubled.param_groups)   # before a scheduler applies lr_scale
    sched.step()
    with torch.no_grad():
        before = bn[0].weight.clone()
    loss = model(torch.randn(4, 3, 32, 32)).square().mean()
    loss.backward()
    opt.step()
    assert torch.equal(bn[0].weight, before)   # gamma frozen at 1


def test_muon_builds_through_timm_and_learns():
    torch.manual_seed(0)
    model = timm.create_model("speednet_cifar", num_classes=10, widths=(8, 8, 8))
    opt = build_optimizer(model, OptimCfg(name="muon", lr=0.02), lr=0.02)   # timm's Muon takes no foreach
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert type(opt).__name__ == "Muon" and losses[-1] < losses[0] - 0.15


# ---------------------------------------------------------------- optim.lookahead

def test_lookahead_pulls_back_every_k_steps_and_ends_on_the_slow_weights():
    model = torch.nn.Linear(3, 2)
    start = model.weight.detach().clone()
    hook = Lookahead(model, LookaheadCfg(k=2, alpha=0.25), total_steps=5)
    with torch.no_grad():
        model.weight.add_(4.0)
    hook(1)
    assert torch.allclose(model.weight, start + 4)          # between synchronisations: untouched
    hook(2)
    assert torch.allclose(model.weight, start + 1)          # slow moved a quarter of the way; fast restarts there
    with torch.no_grad():
        model.weight.add_(4.0)
    hook(5)                                                 # the last step, off-phase: back to the slow weights
    assert torch.allclose(model.weight, start + 1)
    again = Lookahead(model, LookaheadCfg(k=2, alpha=0.25), total_steps=5)
    again.load_state_dict(hook.state_dict())                # a resumed run continues from the same slow weights
    assert torch.equal(again.slow["weight"], hook.slow["weight"])
    ramp = Lookahead(model, LookaheadCfg(k=5, alpha=0.226, alpha_ramp_power=3), total_steps=100)
    assert ramp.alpha(0) == 1.0 and ramp.alpha(100) == pytest.approx(0.226)
    assert ramp.alpha(50) == pytest.approx(1 - 0.774 * 0.125)


# ---------------------------------------------------------------- model: dirac init, BatchNorm momentum/eps

def test_dirac_init_and_batchnorm_keys():
    cfg = ModelCfg(name="speednet_cifar", init="dirac", bn_momentum=0.4, bn_eps=1e-12, kwargs={"widths": [8, 16, 16]})
    model = create_model(cfg, 10, 3)
    conv = model.layers[1][4]                                # 16 -> 16 3x3: its first 16 outputs are the identity
    identity = torch.zeros_like(conv.weight)
    torch.nn.init.dirac_(identity)
    assert torch.equal(conv.weight, identity)
    widening = model.layers[0][0]                            # 24 -> 8: fewer outputs than inputs, left alone
    assert not torch.equal(widening.weight[:, :8, 1, 1], torch.eye(8))
    assert all(m.momentum == 0.4 and m.eps == 1e-12 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    plain = create_model(ModelCfg(name="speednet_cifar", kwargs={"widths": [8, 16, 16]}), 10, 3)
    assert not torch.equal(plain.layers[1][4].weight, identity)
    assert all(m.momentum == 0.1 for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ---------------------------------------------------------------- data.eval.tta

def test_flip_translate_tta_is_airbench_six_views():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8)
    net(x)

    def mirror(v):
        return 0.5 * net(v) + 0.5 * net(v.flip(-1))
    padded = torch.nn.functional.pad(x, (1,) * 4, "reflect")
    expected = 0.5 * mirror(x) + 0.25 * (mirror(padded[:, :, 0:8, 0:8]) + mirror(padded[:, :, 2:10, 2:10]))
    assert torch.allclose(FlipTranslateTTA(net)(x), expected, atol=1e-6)
    assert torch.allclose(with_tta(net, "flip")(x), mirror(x), atol=1e-6)
    assert with_tta(net, "none") is net


# ---------------------------------------------------------------- schedule: triangular, fractional epochs

def test_triangular_schedule_is_airbench_triangle():
    cfg = ScheduleCfg(name="triangular", epochs=10, warmup_start_factor=0.2, onecycle_pct_start=0.23,
                      min_lr_factor=0.07)
    f = SCHEDULES.get("triangular")
    assert f(0, 10, cfg) == pytest.approx(0.2) and f(23, 10, cfg) == pytest.approx(1.0)
    assert f(100, 10, cfg) == pytest.approx(0.07) and f(60, 10, cfg) == pytest.approx(1 - 0.93 * 37 / 77)


def test_fractional_epochs_end_part_way_through_the_last_epoch(image_folder, tmp_path):
    assert total_steps(9.9, 48) == math.ceil(9.9 * 48) and total_steps(10, 48) == 480
    run("train.py", "recipes/cifar10_speedrun_airbench.yaml", f"data.root={image_folder}", "data.eval.size=16",
        "model.kwargs={widths: [8, 8, 8]}", "schedule.epochs=2.5", "train.global_batch=8", "augment.pad_px=1",
        "model.stem_bias_epochs=1", "optim.lookahead=null", "runtime.keep_epoch_checkpoints=true",
        f"runtime.out_dir={tmp_path}", "runtime.run_name=frac")
    out = tmp_path / "frac"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["epochs"] == 3 and plan["steps_per_epoch"] == 4 and plan["total_steps"] == 10
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert last["train_step"]["optimizer_steps"] == 10
    # model.stem_bias_epochs=1: the whitening bias moves in epoch 1 only (lookahead off: as in airbench, its
    # pull towards the slow weights would still move a frozen parameter)
    biases = [torch.load(out / f"epoch_{e:03d}.pt", map_location="cpu", weights_only=False)["model"]["whiten.bias"]
              for e in (1, 2, 3)]
    assert biases[0].abs().sum() > 0 and torch.equal(biases[0], biases[1]) and torch.equal(biases[1], biases[2])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] > 0


def test_stem_bias_epochs_needs_a_whitening_stem(image_folder, tmp_path):
    result = run("train.py", "recipes/cifar10_resnet20.yaml", f"data.root={image_folder}", "model.stem_bias_epochs=1",
                 "train.global_batch=8", "data.eval.size=16",
                 f"runtime.out_dir={tmp_path}", check=False)
    assert result.returncode == 2 and "error: model.stem_bias_epochs:" in result.stderr


# ---------------------------------------------------------------- the recipe and its ablation

def test_new_speed_recipe_is_the_old_one_plus_the_ablation_steps():
    steps = [parse_step(line) for line in read_steps_file(STEPS)]
    plan = cumulative(["data.root=/data"], steps)
    in_recipe = [overrides for step, overrides in plan if not step.name.startswith("extra")]
    new = load_recipe(AIRBENCH, ["data.root=/data"])
    stepped = load_recipe(SPEED, [*in_recipe[-1], f"description={json.dumps(new.description)}"])
    assert recipe_hash(stepped) == recipe_hash(new)
    for step, overrides in plan:     # every step loads (extras too)
        load_recipe(SPEED, overrides)
    keys = {o.split("=")[0].split(".")[-1] for s in steps for o in s.overrides}
    for technique in ("flip", "pad_mode", "lookahead", "bn_lr_mult", "init", "tta", "epochs", "name"):
        assert technique in keys, f"no ablation step sets {technique}"


# ---------------------------------------------------------------- a whitening stem for the CIFAR ResNets

def test_resnet_whitening_stem_whitens_the_top_patch_directions():
    from tests.test_speednet import correlated_images

    model = timm.create_model("resnet20_cifar", num_classes=10, whiten_stem=True)
    assert not model.conv1.weight.requires_grad and model.whiten is model.conv1
    x = correlated_images()
    model.init_from_data(x, eps=1e-6)
    with torch.no_grad():
        out = model.conv1(x)[:, :, 1:-1, 1:-1] - model.conv1.bias.view(1, -1, 1, 1)   # no padded border
    half = out[:, :8].permute(0, 2, 3, 1).reshape(-1, 8)
    cov = torch.cov(half.T.double())
    assert torch.allclose(cov, torch.eye(8, dtype=torch.float64), atol=0.05), cov.diag()
    assert torch.allclose(out[:, 8:], -out[:, :8], atol=1e-5)
    assert not hasattr(timm.create_model("resnet20_cifar"), "init_from_data")   # off: the plain ResNet


def test_trainer_initialises_the_resnet_whitening_stem_and_freezes_its_bias(image_folder, tmp_path):
    run("train.py", "recipes/cifar10_resnet20.yaml", f"data.root={image_folder}", "data.eval.size=16",
        "model.kwargs={whiten_stem: true}", "model.stem_bias_epochs=1", "schedule.epochs=2",
        "train.global_batch=8", "augment.pad_px=1", "runtime.keep_epoch_checkpoints=true",
        f"runtime.out_dir={tmp_path}", "runtime.run_name=rw")
    first, second = (torch.load(tmp_path / "rw" / f"epoch_{e:03d}.pt", map_location="cpu", weights_only=True)["model"]
                     for e in (1, 2))
    fresh = timm.create_model("resnet20_cifar", num_classes=3, whiten_stem=True).conv1.weight
    assert not torch.allclose(first["conv1.weight"], fresh) and torch.equal(first["conv1.weight"],
                                                                            second["conv1.weight"])
    assert first["conv1.bias"].abs().sum() > 0 and torch.equal(first["conv1.bias"], second["conv1.bias"])


def test_the_stem_bias_point_follows_the_one_rule_and_cached_features_refuse_tta():
    """model.stem_bias_epochs is an epoch point like the others; val over cached features has no image to flip."""
    airbench = ROOT / "recipes" / "cifar10_speedrun_airbench.yaml"
    with pytest.raises(RecipeError, match=r"model.stem_bias_epochs=3: past the end of the run \(schedule.epochs=2\)"):
        load_recipe(airbench, ["data.root=/x", "schedule.epochs=2"])
    load_recipe(airbench, ["data.root=/x", "schedule.epochs=2", "model.stem_bias_epochs=1"])
    probe = ROOT / "recipes" / "linear_probe_photos_aid_lite0.yaml"
    with pytest.raises(RecipeError, match=r"cache_features: refused with data.eval.tta=flip"):
        load_recipe(probe, ["data.root=/x", "data.eval.tta=flip"])
