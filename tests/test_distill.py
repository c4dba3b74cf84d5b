"""Distillation: the loss maths, the frozen teacher, its preprocessing, class maps, the logit cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from helpers_distill import run_entry, tiny_recipe, write_checkpoint
from trainkit.config.registry import AUGMENT_OPS
from trainkit.config.schema import RecipeError
from trainkit.train.distill import (DistillationLoss, LogitCache, Teacher, build_distillation, class_index,
                              hard_distillation, soft_distillation)
from trainkit.train.engine import TrainStep
from trainkit.train.losses import CrossEntropy
from trainkit.train.optim import build_scheduler
from trainkit.config.recipe import DistillCfg, EvalCfg, ScheduleCfg
from trainkit.models.hub import InputAdapter, LoadedModel
from trainkit.models.hub import resolve

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
S = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
T = torch.tensor([[1.0, 1.5, 0.0], [-2.0, 0.0, 1.0]])


def test_soft_loss_is_tau_squared_kl_at_temperature():
    tau = 2.0
    p_t, log_p_s = (T / tau).softmax(-1), (S / tau).log_softmax(-1)
    expected = tau ** 2 * (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    torch.testing.assert_close(soft_distillation(S, T, tau), expected)
    assert soft_distillation(S, S, 3.0).abs() < 1e-6


def test_hard_loss_is_cross_entropy_on_teacher_argmax():
    torch.testing.assert_close(hard_distillation(S, T, 1.0), F.cross_entropy(S, torch.tensor([1, 2])))


class Fixed(torch.nn.Module):
    """A 'teacher' that returns preset logits whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: len(x)]


@pytest.mark.parametrize("kind, fn", [("soft", soft_distillation), ("hard", hard_distillation)])
def test_loss_mixes_task_and_distillation_by_alpha(kind, fn):
    y = torch.tensor([0, 2])
    loss = DistillationLoss(CrossEntropy(), Teacher(Fixed(T), None, None), kind, alpha=0.3, tau=1.0 if kind == "hard"
                            else 4.0)
    expected = 0.7 * F.cross_entropy(S, y) + 0.3 * fn(S, T, loss.tau)
    torch.testing.assert_close(loss(S, y, torch.zeros(2, 3, 4, 4)), expected)
    # a (cls, dist) pair: the task reads cls, the distillation reads dist
    torch.testing.assert_close(loss((S, T), y, torch.zeros(2, 3, 4, 4)),
                               0.7 * F.cross_entropy(S, y) + 0.3 * fn(T, T, loss.tau))


def bn_teacher():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))


def test_teacher_gets_no_gradient_and_stays_in_eval_mode_through_train_steps():
    teacher_net = bn_teacher()
    before = {k: v.clone() for k, v in teacher_net.state_dict().items()}
    loss = DistillationLoss(CrossEntropy(), Teacher(teacher_net, None, None), "soft", 0.5, 2.0)
    loss.train()   # whatever the caller does to the loss module
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    step = TrainStep(student, loss, opt, build_scheduler(opt, ScheduleCfg(name="constant", epochs=1), 10),
                     device=CPU, precision="fp32", accum_steps=1, clip_grad_norm=None)
    for _ in range(2):
        step.micro(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), last_in_step=True)
    assert not teacher_net.training and all(not m.training for m in teacher_net.modules())
    assert all(p.grad is None and not p.requires_grad for p in teacher_net.parameters())
    for k, v in teacher_net.state_dict().items():   # BatchNorm running stats untouched too
        assert torch.equal(v, before[k]), k
    assert step.optimizer_steps == 2


def loaded(classes, num_classes=None, model=None):
    n = num_classes or len(classes)
    return LoadedModel("test-teacher", "x", model or Fixed(torch.zeros(8, n)), EvalCfg(), n, 3,
                       list(classes) if classes else None)


def test_class_mismatch_without_map_is_one_line_error():
    with pytest.raises(RecipeError) as err:
        class_index(loaded(["cat", "dog", "fox", "owl"]), ["cat", "dog"], None, "teacher")
    assert "distill.class_map: required" in str(err.value) and "\n" not in str(err.value)


def test_class_map_by_name_and_explicit():
    teacher = loaded(["cat", "dog", "fox", "owl"])
    assert class_index(teacher, ["fox", "cat"], "by_name", "t").tolist() == [2, 0]
    assert class_index(teacher, ["wolf", "kitten"], {"wolf": "dog", "kitten": 0}, "t").tolist() == [1, 0]
    assert class_index(teacher, ["cat", "dog", "fox", "owl"], None, "t") is None
    with pytest.raises(RecipeError, match="data class 'kitten' has no teacher class"):
        class_index(teacher, ["wolf", "kitten"], {"wolf": "dog"}, "t")
    with pytest.raises(RecipeError, match="'wolf' -> 'bear': not a class"):
        class_index(teacher, ["wolf"], {"wolf": "bear"}, "t")


def test_mapped_teacher_logits_are_the_mapped_columns():
    logits = torch.arange(8.0).view(2, 4)
    t = Teacher(Fixed(logits), torch.tensor([2, 0]), None)
    assert t(torch.zeros(2, 1)).tolist() == [[2.0, 0.0], [6.0, 4.0]]


def test_input_adapter_renormalises_and_resizes_for_the_teacher():
    src = EvalCfg(size=16, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    dst = EvalCfg(size=8, mean=[0.4, 0.4, 0.4], std=[0.2, 0.2, 0.2])
    pixels = torch.rand(2, 3, 16, 16)
    adapter = InputAdapter(torch.nn.Identity(), src, 3, dst, 3)
    expected = (F.interpolate(pixels, size=(8, 8), mode="bilinear", antialias=True, align_corners=False) - 0.4) / 0.2
    torch.testing.assert_close(adapter((pixels - 0.5) / 0.25), expected)
    x = torch.randn(2, 3, 16, 16)
    assert InputAdapter(torch.nn.Identity(), src, 3, src, 3)(x) is x   # nothing differs: untouched


def test_logit_cache_returns_the_teachers_logits_and_skips_seen_images():
    calls = []

    def teacher(x):
        calls.append(len(x))
        return x.flatten(1)[:, :3] * 2

    # Seeded so that a seen image sorts after a new one (the case where an insert shifts positions).
    cache, images = LogitCache(), torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    first = cache.lookup(images[:6], teacher)
    mixed = cache.lookup(images[[7, 2, 9, 0]], teacher)   # two seen, two new, in another batch
    again = cache.lookup(images[[9, 7, 2]], teacher)
    torch.testing.assert_close(first, teacher(images[:6]))
    torch.testing.assert_close(mixed, teacher(images[[7, 2, 9, 0]]))
    torch.testing.assert_close(again, teacher(images[[9, 7, 2]]))
    assert calls[:3] == [6, 2, 6] and (cache.hits, cache.misses) == (5, 8)


def test_logit_cache_accepted_without_random_inputs(image_folder):
    assert tiny_recipe(image_folder, "distill.teacher=runs/x", "distill.cache_logits=true").distill.cache_logits


@pytest.mark.parametrize("override, needle", [
    ("distill.alpha=1.5", "distill.alpha: must be in [0, 1]"),
    ("distill.kind=hard distill.tau=2", "distill.tau: a positive temperature, used only by kind=soft"),
    ("distill.class_map=byname", "distill.class_map: 'by_name' or a mapping"),
    ("distill.combine=weighted", "distill.weights: give them exactly when combine=weighted"),
    ("distill.kidn=soft", "unknown key distill.kidn; did you mean distill.kind?"),
])
def test_distill_section_validation(image_folder, override, needle):
    with pytest.raises(RecipeError) as err:
        tiny_recipe(image_folder, "distill.teacher=runs/x", *override.split())
    assert needle in str(err.value)


def test_teacher_from_checkpoint_path_matches_the_checkpoint(image_folder, tmp_path):
    ckpt = write_checkpoint(tmp_path / "teacher.pt", image_folder, seed=3)
    teacher = resolve(str(ckpt))
    assert teacher.classes == ["cat", "dog", "fox"] and teacher.arch == "smallcnn" and not teacher.model.training
    recipe = tiny_recipe(image_folder, f"distill.teacher={ckpt}")
    student = timm.create_model("smallcnn", num_classes=3, in_chans=3, width=4)
    loss = build_distillation(CrossEntropy(), recipe.distill, student=student, student_eval=recipe.data.eval,
                              in_chans=3, classes=["cat", "dog", "fox"], device=CPU)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loss.teacher(x), teacher.model(x))


def test_deit_distillation_token_gets_the_teacher_and_cls_gets_the_labels():
    student = timm.create_model("deit_tiny_distilled_patch16_224", img_size=32, depth=1, num_classes=3)
    cfg = DistillCfg(teacher="unused", kind="hard", alpha=0.5)
    teacher = loaded(["a", "b", "c"], model=Fixed(torch.tensor([[0.0, 0.0, 5.0]] * 4)))
    loss = build_distillation(CrossEntropy(), cfg, student=student, student_eval=EvalCfg(size=32), in_chans=3,
                              classes=["a", "b", "c"], device=CPU, teacher=teacher)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    cls, dist = student.train()(x)
    torch.testing.assert_close(loss((cls, dist), y, x),
                               0.5 * F.cross_entropy(cls, y) + 0.5 * F.cross_entropy(dist, torch.full((4,), 2)))
    assert torch.is_tensor(student.eval()(x))   # evaluation averages the two heads, as timm does


def test_train_py_class_mismatch_is_one_line(image_folder, tmp_path, monkeypatch, capsys):
    weights = tmp_path / "teacher.pt"
    torch.save(timm.create_model("smallcnn", num_classes=10, in_chans=3).state_dict(), weights)
    rc = run_entry("train.py", ["recipes/quickstart.yaml", "data.name=imagefolder", f"data.root={image_folder}",
                                "data.eval.size=16", "data.eval.mean=[0.5]", "data.eval.std=[0.25]",
                                "train.global_batch=8", "model.kwargs={width: 4}", f"distill.teacher={weights}",
                                "distill.teacher_arch=smallcnn", "runtime.workers=0", f"runtime.out_dir={tmp_path}"],
                   monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: distill.class_map: required:"), err


def test_zoo_teacher_resolves_with_its_card(cifar_jpeg):
    pytest.importorskip("trainkit.zoo.cards", reason="the model zoo (issue 4) is not in this branch yet")
    teacher = resolve("zoo:cifar10_resnet44")
    assert teacher.arch == "resnet44_cifar" and teacher.num_classes == 10 and teacher.classes[0] == "airplane"
    assert teacher.eval.size == 32 and not teacher.model.training


def test_ensemble_teacher_of_copies_labels_as_the_model(image_folder, tmp_path):
    from trainkit.train.distill import load_teacher

    ckpt = str(write_checkpoint(tmp_path / "t.pt", image_folder, seed=5))
    single, pair = load_teacher(DistillCfg(teacher=ckpt)), load_teacher(DistillCfg(teacher=[ckpt, ckpt]))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(pair.model(x), single.model(x))
    assert pair.classes == single.classes == ["cat", "dog", "fox"]


# Every registered augmentation op turned on by its own example (a new op is covered without editing
# this list), then the batch-level techniques.
RANDOM_INPUTS = [(AUGMENT_OPS.get(name).example, f"augment.{name}") for name in AUGMENT_OPS.names()] + [
    ("mixup.mixup_alpha=0.2", "mixup"), ("multiscale.sizes=[12,16]", "multiscale")]


@pytest.mark.parametrize("override, reason", RANDOM_INPUTS)
def test_logit_cache_refused_for_every_random_input_technique(image_folder, override, reason):
    with pytest.raises(RecipeError) as err:
        tiny_recipe(image_folder, "distill.teacher=runs/x", "distill.cache_logits=true", override)
    assert "distill.cache_logits: refused because" in str(err.value) and reason in str(err.value)
