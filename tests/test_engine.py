"""The training step, losses, optimizers, schedules and the plan."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainkit.models.hub import build_model
from trainkit.config.schema import RecipeError
from trainkit.train.engine import TrainStep
from trainkit.train.losses import BinaryCrossEntropy, CrossEntropy
from trainkit.train.optim import LrFactor, build_optimizer, build_scheduler
from trainkit.train.plan import batch_split, make_plan
from trainkit.config.recipe import ModelCfg, OptimCfg, ScheduleCfg, load_recipe

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def make_step(model, precision="fp32", accum=1, clip=None, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = build_scheduler(opt, ScheduleCfg(name="constant", epochs=1), steps_per_epoch=100)
    return TrainStep(model, CrossEntropy(), opt, sched, device=CPU, precision=precision, accum_steps=accum,
                     clip_grad_norm=clip)


def batches(n, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 2, 2, generator=g), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


def run(step, data, accum):
    for i, (x, y) in enumerate(data):
        step.micro(x, y, last_in_step=(i + 1) % accum == 0)


def test_accumulation_of_halves_matches_full_batch():
    full = batches(3, 16)
    halves = [(x[s], y[s]) for x, y in full for s in (slice(0, 8), slice(8, 16))]
    a, b = tiny_mlp(), tiny_mlp()
    run(make_step(a, accum=1), full, 1)
    run(make_step(b, accum=2), halves, 2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert not torch.equal(a[1].weight, tiny_mlp()[1].weight)  # it did train


@pytest.mark.parametrize("sizes, accum", [([4, 4, 4, 4, 4, 2], 2),   # two full groups, then [4, 2]
                                          ([4, 4, 2], 4),               # one group of 3 micro-batches
                                          ([4, 4, 4, 4, 4], 2)])        # a trailing group of one
def test_trailing_partial_group_equals_one_batch_of_its_images(sizes, accum):
    """drop_last: false leaves a last group with fewer (and smaller) micro-batches: each step,
    the trailing one included, must equal one big batch of the same images."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(sum(sizes), 3, 2, 2, generator=g), torch.randint(0, 3, (sum(sizes),), generator=g)
    micro = list(zip(x.split(sizes), y.split(sizes)))
    groups = [micro[i:i + accum] for i in range(0, len(micro), accum)]
    a, b = tiny_mlp(), tiny_mlp()
    step_a, step_b = make_step(a, accum=1), make_step(b, accum=accum)
    for group in groups:
        step_a.micro(torch.cat([m[0] for m in group]), torch.cat([m[1] for m in group]), last_in_step=True)
        for i, (xm, ym) in enumerate(group):
            step_b.micro(xm, ym, last_in_step=i + 1 == len(group))
    assert step_a.optimizer_steps == step_b.optimizer_steps == len(groups)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("accum", [1, 2, 4])
def test_optimizer_steps_once_per_accumulation_group(precision, accum):
    model = tiny_mlp()
    step = make_step(model, precision=precision, accum=accum)
    calls = []
    original = step.optimizer.step
    step.optimizer.step = lambda *a, **k: calls.append(1) or original(*a, **k)
    run(step, batches(8, 4), accum)
    assert step.optimizer_steps == 8 // accum
    assert len(calls) == 8 // accum          # GradScaler (fp16) skipped none and doubled none
    assert step.scheduler.step_count == 8 // accum


def test_bf16_autocast_runs_the_model_in_bf16_and_learns():
    model = tiny_mlp()
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    step = make_step(model, precision="bf16", lr=0.5)
    data = batches(1, 64)
    losses = [float(step.micro(*data[0], last_in_step=True)) for _ in range(30)]
    assert seen[0] == torch.bfloat16
    assert losses[-1] < 0.7 * losses[0]
    assert model[1].weight.dtype == torch.float32   # master weights stay fp32


def test_clip_grad_norm_limits_the_update():
    model = tiny_mlp()
    step = make_step(model, clip=1e-3, lr=1.0)
    step.optimizer.param_groups[0]["momentum"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batches(1, 8)[0]
    step.micro(x * 100, y, True)
    delta = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(model.parameters(), before)))
    assert float(delta.detach()) <= 1e-3 * 1.001


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_torch_for_hard_and_one_hot_targets(smoothing):
    logits, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    ref = F.cross_entropy(logits, y, label_smoothing=smoothing)
    loss = CrossEntropy(smoothing)
    torch.testing.assert_close(loss(logits, y), ref)
    torch.testing.assert_close(loss(logits, F.one_hot(y, 5).float()), ref)


def test_bce_uses_smoothed_one_hot_targets():
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    target = F.one_hot(y, 3).float() * 0.9 + 0.1 / 3
    torch.testing.assert_close(BinaryCrossEntropy(0.1)(logits, y), F.binary_cross_entropy_with_logits(logits, target))


def test_no_weight_decay_on_norm_and_bias():
    model = build_model(ModelCfg(name="resnet20_cifar"), 10, 3)
    opt = build_optimizer(model, OptimCfg(name="sgd", weight_decay=5e-4, no_decay_norm_bias=True), lr=0.1)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 0.0 if p.ndim <= 1 else 5e-4
        assert decay_of[id(p)] == expected, name
    opt = build_optimizer(model, OptimCfg(name="sgd", weight_decay=5e-4, no_decay_norm_bias=False), lr=0.1)
    assert all(g["weight_decay"] == 5e-4 for g in opt.param_groups)


@pytest.mark.parametrize("name, nesterov, cls", [("sgd", True, torch.optim.SGD), ("sgd", False, torch.optim.SGD),
                                                 ("adamw", False, torch.optim.AdamW)])
def test_optimizers_from_timm_factory(name, nesterov, cls):
    opt = build_optimizer(tiny_mlp(), OptimCfg(name=name, nesterov=nesterov), lr=0.05)
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.05
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] is nesterov


def factor(**kw):
    steps = kw.pop("steps_per_epoch", 10)
    return LrFactor(ScheduleCfg(**kw), steps)


def test_warmup_then_cosine():
    f = factor(name="cosine", epochs=10, warmup_epochs=2, warmup_start_factor=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(10) == pytest.approx(0.55)
    assert f(20) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)


def test_step_multistep_onecycle():
    assert [factor(name="step", epochs=9, step_epochs=3, gamma=0.5)(s) for s in (0, 29, 30, 60)] == [1, 1, 0.5, 0.25]
    ms = factor(name="multistep", epochs=10, milestones=[5, 8], gamma=0.1)
    assert [ms(s) for s in (49, 50, 80)] == pytest.approx([1, 0.1, 0.01])
    oc = factor(name="onecycle", epochs=4, onecycle_pct_start=0.25, warmup_start_factor=0.04)
    assert oc(0) == pytest.approx(0.04) and oc(10) == pytest.approx(1.0) and oc(40) == pytest.approx(0.0, abs=1e-12)
    assert max(oc(s) for s in range(41)) == pytest.approx(1.0)


def test_scheduler_state_round_trip_and_per_group_lr():
    model = tiny_mlp()
    opt = torch.optim.SGD([{"params": model[1].parameters(), "lr": 0.1},
                           {"params": model[3].parameters(), "lr": 1.0}], lr=0.1)
    sched = build_scheduler(opt, ScheduleCfg(name="cosine", epochs=2), steps_per_epoch=5)
    for _ in range(5):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])
    opt2 = torch.optim.SGD([{"params": model[1].parameters(), "lr": 0.1},
                            {"params": model[3].parameters(), "lr": 1.0}], lr=0.1)
    sched2 = build_scheduler(opt2, ScheduleCfg(name="cosine", epochs=2), steps_per_epoch=5)
    sched2.load_state_dict(sched.state_dict())
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([0.05, 0.5])


def recipe(*overrides):
    return load_recipe(ROOT / "recipes" / "quickstart.yaml", list(overrides))


def test_plan_derives_accumulation_and_scales_lr():
    r = recipe("train.global_batch=512", "runtime.per_device_batch=64", "optim.lr=0.1", "optim.lr_ref_batch=256")
    plan = make_plan(r, device=CPU, world=2, split_sizes={"train": 10000, "val": 10, "test": 10}, num_classes=10,
                     in_chans=1, in_memory=True)
    assert (plan.per_device_batch, plan.accum_steps, plan.lr) == (64, 4, pytest.approx(0.2))
    assert plan.steps_per_epoch == (10000 // 2 // 64) // 4
    assert batch_split(r, 1) == (64, 8)


def test_plan_rejects_a_batch_that_does_not_divide():
    with pytest.raises(RecipeError, match=r"train.global_batch=256 is not divisible by runtime.per_device_batch=48"):
        batch_split(recipe("runtime.per_device_batch=48"), 1)


def test_plan_leaves_amp_to_the_start_up_probe():
    plan = make_plan(recipe("train.precision=amp"), device=CPU, world=1,
                     split_sizes={"train": 1000, "val": 1, "test": 1}, num_classes=10, in_chans=1, in_memory=True)
    assert (plan.precision, plan.numerics_source) == ("amp", "")   # decided at start-up (trainkit.train.numerics)


def test_recipe_is_not_mutated_by_planning():
    r = recipe("train.global_batch=128")
    before = dataclasses.asdict(r)
    make_plan(r, device=CPU, world=1, split_sizes={"train": 1000, "val": 1, "test": 1}, num_classes=10, in_chans=1,
              in_memory=True)
    assert dataclasses.asdict(r) == before and r.optim.lr == 0.2
    assert math.isclose(r.optim.lr, 0.2)
