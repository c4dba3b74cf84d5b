"""Mixup/CutMix targets and boxes, and the losses that follow soft targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainkit.train.losses import BinaryCrossEntropy, CrossEntropy
from trainkit.data.mixup import Mixup, box_lam, cutmix_box
from trainkit.config.recipe import MixupCfg

C = 5


def batch(b=8, h=12, w=10):
    """Image i is constant i+1 (so pasted regions are identifiable); labels all differ from their partner."""
    x = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, h, w).contiguous()
    y = torch.tensor({8: [0, 1, 2, 3, 4, 0, 2, 4], 6: [0, 1, 2, 3, 4, 2]}.get(b, [i % C for i in range(b)]))
    return x, y


def partner_labels_differ(y):
    return bool((y != y.flip(0)).all())


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixup_targets_are_convex_combinations_summing_to_one(mode, alphas):
    mix = Mixup(MixupCfg(mixup_alpha=alphas[0], cutmix_alpha=alphas[1], mode=mode), C)
    x, y = batch()
    assert partner_labels_differ(y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        xm, t = mix(x, y, gen, epoch=0)
        assert t.shape == (len(y), C) and (t >= 0).all()
        torch.testing.assert_close(t.sum(1), torch.ones(len(y)))
        lam = t[torch.arange(len(y)), y]          # weight of the own label
        expected = lam[:, None] * F.one_hot(y, C) + (1 - lam[:, None]) * F.one_hot(y.flip(0), C)
        torch.testing.assert_close(t, expected.float())
        # The image is the same combination: its mean is lam * own + (1 - lam) * partner's constant.
        own, other = x[:, 0, 0, 0], x.flip(0)[:, 0, 0, 0]
        torch.testing.assert_close(xm.mean((1, 2, 3)), lam * own + (1 - lam) * other)
    assert torch.equal(x, batch()[0])   # the input batch is not modified


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_cutmix_box_area_matches_lambda(mode):
    mix = Mixup(MixupCfg(cutmix_alpha=1.0, mode=mode), C)
    x, y = batch(b=6, h=16, w=20)
    gen = torch.Generator().manual_seed(1)
    seen_partial = 0
    for _ in range(30):
        xm, t = mix(x, y, gen, epoch=0)
        lam = t[torch.arange(len(y)), y]
        for i in range(len(y)):
            pasted = (xm[i, 0] == x[len(y) - 1 - i, 0, 0, 0]).float().mean()
            assert pasted.item() == pytest.approx(1 - lam[i].item(), abs=1e-6)
            seen_partial += 0 < pasted < 1
    assert seen_partial > 10


def test_cutmix_box_matches_lambda_before_clipping_and_minmax_range():
    rng = np.random.default_rng(0)
    h, w = 64, 64
    for lam in (0.2, 0.5, 0.9):
        box = cutmix_box(h, w, lam, rng)
        y0, y1, x0, x1 = box
        assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w
        assert box_lam(box, h, w) >= lam - 0.05   # clipping only ever shrinks the box
        side = int(h * (1 - lam) ** 0.5)          # the unclipped side, as timm's rand_bbox
        assert (y1 - y0) <= side + 1 and (x1 - x0) <= side + 1
    for _ in range(50):
        y0, y1, x0, x1 = cutmix_box(h, w, 0.5, rng, minmax=[0.25, 0.5])
        assert 16 <= y1 - y0 <= 32 and 16 <= x1 - x0 <= 32 and y1 <= h and x1 <= w


def test_prob_zero_and_off_epoch_leave_batch_and_hard_targets():
    x, y = batch()
    gen = torch.Generator().manual_seed(0)
    xm, t = Mixup(MixupCfg(mixup_alpha=1.0, off_epoch=3), C)(x, y, gen, epoch=3)
    assert xm is x and t is y
    xm, t = Mixup(MixupCfg(mixup_alpha=1.0, prob=0.0), C)(x, y, gen, epoch=0)
    assert xm is x and t is y
    # Mixing on but a batch not drawn for it: unchanged images, one-hot soft targets.
    mix = Mixup(MixupCfg(mixup_alpha=1.0, prob=0.5), C)
    unmixed = [(xm, t) for xm, t in (mix(x, y, gen, epoch=0) for _ in range(20)) if torch.equal(xm, x)]
    assert unmixed and all(torch.equal(t, F.one_hot(y, C).float()) for _, t in unmixed)


def test_switch_prob_picks_cutmix_or_mixup():
    x, y = batch(h=8, w=8)
    gen = torch.Generator().manual_seed(0)
    for switch, want_cutmix in ((0.0, False), (1.0, True)):
        mix = Mixup(MixupCfg(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch), C)
        for _ in range(5):
            xm, _ = mix(x, y, gen, epoch=0)
            # CutMix pastes whole pixels: every value is one of the two constants
            integral = bool(torch.isin(xm, x).all())
            assert integral == want_cutmix or torch.equal(xm, x)


def test_pair_mode_needs_an_even_batch():
    x, y = batch(b=7)
    with pytest.raises(ValueError, match="even batch"):
        Mixup(MixupCfg(mixup_alpha=1.0, mode="pair"), C)(x, y, torch.Generator(), epoch=0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch_for_hard_and_soft_targets(smoothing):
    logits = torch.randn(16, C, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, C, (16,), generator=torch.Generator().manual_seed(1))
    ref = F.cross_entropy(logits, y, label_smoothing=smoothing)
    loss = CrossEntropy(smoothing)
    torch.testing.assert_close(loss(logits, y), ref)
    torch.testing.assert_close(loss(logits, F.one_hot(y, C).float()), ref)
    # A mixed target: the loss is linear in the target, so it mixes the two smoothed losses.
    y2, lam = y.flip(0), 0.3
    soft = lam * F.one_hot(y, C).float() + (1 - lam) * F.one_hot(y2, C).float()
    both = lam * ref + (1 - lam) * F.cross_entropy(logits, y2, label_smoothing=smoothing)
    torch.testing.assert_close(loss(logits, soft), both)


def test_bce_on_mixed_smoothed_targets():
    logits = torch.randn(8, C, generator=torch.Generator().manual_seed(0))
    soft = torch.softmax(torch.randn(8, C, generator=torch.Generator().manual_seed(1)), -1)
    target = soft * 0.9 + 0.1 / C
    ref = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(BinaryCrossEntropy(0.1)(logits, soft), ref)
