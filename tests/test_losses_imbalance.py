"""Imbalance losses against reference computations: PyTorch's weighted cross-entropy, per-sample
formulas written out from the papers, and Cao et al.'s reference LDAM code transcribed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainkit.config.recipe import LossCfg, load_recipe
from trainkit.config.schema import RecipeError, from_dict
from trainkit.train.losses import build_loss, class_weights

C = 5
COUNTS = torch.tensor([500, 200, 60, 20, 5])


def data(seed: int = 0, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=g) * 2, torch.randint(0, C, (n,), generator=g)


def loss(counts=COUNTS, **keys) -> torch.nn.Module:
    return build_loss(from_dict(LossCfg, keys, "loss"), counts)


def test_class_weights_formulas():
    n = COUNTS.double()
    for kind, raw in (("inverse", 1 / n), ("inverse_sqrt", 1 / n.sqrt()),
                      ("effective_number", (1 - 0.999) / (1 - 0.999 ** n))):
        w = class_weights(COUNTS, kind, beta=0.999)
        assert w.mean().item() == pytest.approx(1.0)
        assert w.double() / w[0].double() == pytest.approx((raw / raw[0]).tolist(), rel=1e-5)
    # effective number: ~inverse for small beta * n, flatter for large n (5000 vs 50 at beta 0.9999: 78.7x, not 100x)
    w = class_weights(torch.tensor([5000, 50]), "effective_number", beta=0.9999)
    assert (w[1] / w[0]).item() == pytest.approx((1 - 0.9999 ** 5000) / (1 - 0.9999 ** 50), rel=1e-5)


@pytest.mark.parametrize("kind", ["inverse", "inverse_sqrt", "effective_number"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_ce_is_torch_weighted_cross_entropy(kind, smoothing):
    logits, y = data()
    w = class_weights(COUNTS, kind)
    ref = F.cross_entropy(logits, y, weight=w, label_smoothing=smoothing)
    fn = loss(class_weights=kind, label_smoothing=smoothing)
    assert fn(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)
    # soft one-hot targets (the mixup path) give the same value: one weighting rule for both
    assert fn(logits, F.one_hot(y, C).float()).item() == pytest.approx(ref.item(), rel=1e-6)


def test_weighted_ce_on_mixed_targets_by_hand():
    logits, y = data(1, n=2)
    t = torch.tensor([[0.7, 0.3, 0, 0, 0], [0, 0, 0, 0.4, 0.6]])
    w = class_weights(COUNTS, "inverse")
    logp = F.log_softmax(logits, dim=1)
    num = -(0.7 * w[0] * logp[0, 0] + 0.3 * w[1] * logp[0, 1] + 0.4 * w[3] * logp[1, 3] + 0.6 * w[4] * logp[1, 4])
    den = 0.7 * w[0] + 0.3 * w[1] + 0.4 * w[3] + 0.6 * w[4]
    assert loss(class_weights="inverse")(logits, t).item() == pytest.approx((num / den).item(), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_matches_per_sample_formula(gamma):
    logits, y = data(2)
    p = torch.softmax(logits.double(), dim=1)
    w = class_weights(COUNTS, "inverse").double()
    # Lin et al. 2017: FL = -alpha_y (1 - p_y)^gamma log p_y; alpha = class weights, weighted mean
    per = [-(w[c] * (1 - p[i, c]) ** gamma * math.log(p[i, c])) for i, c in enumerate(y.tolist())]
    ref = sum(per) / sum(w[c] for c in y.tolist())
    fn = loss(name="focal", focal_gamma=gamma, class_weights="inverse")
    assert fn(logits, y).item() == pytest.approx(float(ref), rel=1e-5)
    if gamma == 0:
        assert fn(logits, y).item() == pytest.approx(F.cross_entropy(logits, y, weight=w.float()).item(), rel=1e-6)
    unweighted = loss(name="focal", focal_gamma=gamma)(logits, y)
    plain = sum(-(1 - p[i, c]) ** gamma * math.log(p[i, c]) for i, c in enumerate(y.tolist())) / len(y)
    assert unweighted.item() == pytest.approx(float(plain), rel=1e-5)


def test_focal_down_weights_easy_examples():
    easy, hard = torch.tensor([[4.0, 0, 0, 0, 0]]), torch.tensor([[0.0, 0, 0, 0, 0]])
    y = torch.tensor([0])
    ce, fl = loss(), loss(name="focal", focal_gamma=2.0)
    assert fl(easy, y) / ce(easy, y) < 0.01 and fl(hard, y) / ce(hard, y) > 0.6


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_balanced_softmax_formula(smoothing):
    logits, y = data(3)
    # Ren et al. 2020: p_y = n_y exp(z_y) / sum_c n_c exp(z_c)
    n = COUNTS.double()
    p = n * logits.double().exp() / (n * logits.double().exp()).sum(dim=1, keepdim=True)
    q = F.one_hot(y, C).double() * (1 - smoothing) + smoothing / C
    ref = -(q * p.log()).sum(dim=1).mean()
    fn = loss(name="balanced_softmax", label_smoothing=smoothing)
    assert fn(logits, y).item() == pytest.approx(ref.item(), rel=1e-5)
    # the soft-target (mixup) path smooths the same way
    assert fn(logits, F.one_hot(y, C).float()).item() == pytest.approx(ref.item(), rel=1e-5)


def test_logit_adjustment_tau():
    logits, y = data(4)
    prior = COUNTS.double() / COUNTS.sum()
    for tau in (0.0, 0.5, 2.0):
        ref = F.cross_entropy(logits.double() + tau * prior.log(), y)
        assert loss(name="balanced_softmax", tau=tau)(logits, y).item() == pytest.approx(ref.item(), rel=1e-5)


def ldam_reference(x: torch.Tensor, target: torch.Tensor, cls_num_list, max_m=0.5, s=30, weight=None):
    """Cao et al.'s LDAMLoss.forward (github.com/kaidic/LDAM-DRW, losses.py), transcribed."""
    m_list = 1.0 / np.sqrt(np.sqrt(cls_num_list))
    m_list = m_list * (max_m / np.max(m_list))
    m_list = torch.tensor(m_list, dtype=torch.float32)
    index = torch.zeros_like(x, dtype=torch.uint8)
    index.scatter_(1, target.data.view(-1, 1), 1)
    batch_m = torch.matmul(m_list[None, :], index.float().transpose(0, 1)).view((-1, 1))
    x_m = x - batch_m
    output = torch.where(index.bool(), x_m, x)
    return F.cross_entropy(s * output, target, weight=weight)


def test_ldam_matches_reference_code():
    cos = torch.tanh(data(5)[0])      # LDAM is meant for cosine logits in [-1, 1]
    y = data(5)[1]
    assert loss(name="ldam")(cos, y).item() == pytest.approx(ldam_reference(cos, y, COUNTS.numpy()).item(), rel=1e-5)
    fn = loss(name="ldam", ldam_max_margin=0.3, ldam_scale=10.0)
    assert fn(cos, y).item() == pytest.approx(ldam_reference(cos, y, COUNTS.numpy(), 0.3, 10).item(), rel=1e-5)
    with pytest.raises(ValueError, match="class indices"):
        fn(cos, F.one_hot(y, C).float())


def test_ldam_drw_switches_weights_on_at_the_epoch():
    cos, y = torch.tanh(data(6)[0]), data(6)[1]
    fn = loss(name="ldam", class_weights="effective_number", reweight_from_epoch=3)
    w = class_weights(COUNTS, "effective_number")
    plain, weighted = ldam_reference(cos, y, COUNTS.numpy()), ldam_reference(cos, y, COUNTS.numpy(), weight=w)
    for epoch, ref in ((0, plain), (2, plain), (3, weighted), (7, weighted), (1, plain)):
        fn.set_epoch(epoch)
        assert fn(cos, y).item() == pytest.approx(ref.item(), rel=1e-5), epoch


def test_margins_largest_for_rarest_class():
    fn = loss(name="ldam")
    assert fn.margins.argmax().item() == C - 1 and fn.margins.max().item() == pytest.approx(0.5)
    assert fn.margins[0].item() == pytest.approx(0.5 * (5 / 500) ** 0.25, rel=1e-5)


@pytest.mark.parametrize("keys, needle", [
    ({"name": "ce", "focal_gamma": 1.0}, "loss.focal_gamma: used only by loss.name=focal"),
    ({"name": "bce", "class_weights": "inverse"}, "loss.class_weights: used only by"),
    ({"name": "ce", "reweight_from_epoch": 5}, "loss.reweight_from_epoch: defers loss.class_weights"),
    ({"name": "ce", "class_weights": "effective_number", "effective_beta": 1.0}, "loss.effective_beta"),
    ({"name": "ldam", "tau": 0.5}, "loss.tau: used only by loss.name=balanced_softmax"),
])
def test_bad_loss_keys_are_one_line_errors(keys, needle):
    with pytest.raises(RecipeError, match=needle.replace(".", r"\.")):
        from_dict(LossCfg, keys, "loss")


def test_ldam_with_mixup_is_refused():
    with pytest.raises(RecipeError, match="loss.name=ldam: refused with mixup/cutmix"):
        load_recipe("recipes/quickstart.yaml", ["loss.name=ldam", "mixup.mixup_alpha=0.2"])


def test_class_without_training_images_is_refused():
    with pytest.raises(RecipeError, match="class index 2 has no training images"):
        loss(counts=torch.tensor([5, 3, 0, 1, 1]), name="balanced_softmax")


def test_cosine_classifier_logits_are_cosines():
    from trainkit.models.hub import build_model
    from trainkit.config.recipe import ModelCfg

    model = build_model(ModelCfg(name="resnet32_cifar", kwargs={"cosine_classifier": True}), 10, 3).eval()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and out.abs().max() <= 1.0 + 1e-6
    assert "linear.bias" not in model.state_dict()
