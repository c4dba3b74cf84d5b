"""ClassificationMeter against direct torch computations, and the confusion-matrix files."""

from __future__ import annotations

import csv
import math

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F

from trainkit.eval.metrics import ClassificationMeter, format_metrics, write_confusion_csv, write_confusion_png

C = 7
SPLITS = (1, 13, 64, 5, 117)   # uneven batch sizes, one of a single sample


def random_data(seed: int = 0, n: int = sum(SPLITS), c: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


def feed(meter: ClassificationMeter, logits: torch.Tensor, targets: torch.Tensor, splits=SPLITS) -> None:
    for x, y in zip(logits.split(list(splits)), targets.split(list(splits))):
        meter.update(x, y, F.cross_entropy(x.float(), y, reduction="sum"))


def reference_ece(logits: torch.Tensor, targets: torch.Tensor, bins: int) -> float:
    """Guo et al. 2017, written out per bin: sum over bins of |bin| / N * |accuracy - confidence|."""
    probs = torch.softmax(logits.float(), dim=1)
    conf, pred = probs.max(dim=1)
    total, n = 0.0, len(targets)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(n) if lo < float(conf[i]) <= hi]
        if members:
            acc = sum(float(pred[i] == targets[i]) for i in members) / len(members)
            avg = sum(float(conf[i]) for i in members) / len(members)
            total += len(members) / n * abs(acc - avg)
    return total


def test_top1_top5_loss_match_torch():
    logits, targets = random_data()
    meter = ClassificationMeter(C)
    feed(meter, logits, targets)
    m = meter.compute()
    n = len(targets)
    top5 = (logits.topk(5, dim=1).indices == targets[:, None]).any(dim=1).sum().item()
    assert m["samples"] == n
    assert m["top1"] == 100 * (logits.argmax(dim=1) == targets).sum().item() / n
    assert m["top5"] == 100 * top5 / n
    assert m["loss"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_topk_clipped_to_number_of_classes():
    logits, targets = random_data(c=3)
    meter = ClassificationMeter(3)
    meter.update(logits, targets, 0.0)
    assert meter.compute()["top5"] == 100.0


def test_confusion_rows_are_per_class_counts():
    logits, targets = random_data(1)
    meter = ClassificationMeter(C)
    feed(meter, logits, targets)
    m = meter.compute()
    confusion = torch.tensor(m["confusion"])
    assert confusion.sum(dim=1).tolist() == torch.bincount(targets, minlength=C).tolist()
    assert confusion.sum(dim=0).tolist() == torch.bincount(logits.argmax(dim=1), minlength=C).tolist()
    expected = [100 * confusion[i, i].item() / confusion[i].sum().item() for i in range(C)]
    assert m["per_class_accuracy"] == pytest.approx(expected)


def test_class_without_samples_has_no_accuracy():
    meter = ClassificationMeter(3)
    meter.update(torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]), torch.tensor([0, 0]), 0.0)
    m = meter.compute()
    assert m["per_class_accuracy"] == [50.0, None, None]
    assert m["confusion"] == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("bins", [15, 4])
def test_ece_matches_reference_loop(bins):
    logits, targets = random_data(2, n=60, c=4)
    meter = ClassificationMeter(4, ece_bins=bins)
    feed(meter, logits, targets, splits=(7, 30, 23))
    assert meter.compute()["ece"] == pytest.approx(reference_ece(logits, targets, bins), abs=1e-12)


def test_ece_zero_for_confident_correct_predictions():
    targets = torch.tensor([0, 2, 1, 2, 0])
    logits = F.one_hot(targets, 3).float() * 200   # softmax rounds to exactly 1.0 in float32
    meter = ClassificationMeter(3)
    meter.update(logits, targets, 0.0)
    m = meter.compute()
    assert m["ece"] == 0.0 and m["top1"] == 100.0


def test_merged_states_equal_one_meter():
    logits, targets = random_data(3)
    whole = ClassificationMeter(C)
    feed(whole, logits, targets)
    a, b = ClassificationMeter(C), ClassificationMeter(C)
    feed(a, logits[:90], targets[:90], splits=(40, 50))
    feed(b, logits[90:], targets[90:], splits=(len(targets) - 90,))
    summed = a.state() + b.state()   # what all_reduce(SUM) hands back to every rank
    from_state = ClassificationMeter.from_state(C, summed)
    a.merge_state(b.state())
    for merged in (a, from_state):
        got, want = merged.compute(), whole.compute()
        # per-batch float32 loss sums differ in the last bits when the batches differ
        assert got["loss"] == pytest.approx(want.pop("loss"), rel=1e-6)
        assert got["ece"] == pytest.approx(want.pop("ece"), abs=1e-12)
        assert {k: got[k] for k in want} == want


def test_state_is_flat_float64_and_checked():
    meter = ClassificationMeter(C, ece_bins=10)
    state = meter.state()
    assert state.dtype == torch.float64 and state.ndim == 1
    with pytest.raises(ValueError):
        meter.load_state(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        ClassificationMeter.from_state(C, state, ece_bins=15)


def test_low_precision_logits_accepted():
    logits, targets = random_data(4)
    for dtype in (torch.bfloat16, torch.float16):
        meter = ClassificationMeter(C)
        low = logits.to(dtype)
        meter.update(low, targets, torch.tensor(1.5, dtype=dtype))
        m = meter.compute()
        assert m["samples"] == len(targets)
        assert m["top1"] == 100 * (low.float().topk(1).indices[:, 0] == targets).sum().item() / len(targets)
        assert 0.0 <= m["ece"] <= 1.0 and m["loss"] == pytest.approx(1.5 / len(targets))


def test_identical_predictions_give_identical_figures():
    logits, targets = random_data(5)
    a, b = ClassificationMeter(C), ClassificationMeter(C)
    feed(a, logits, targets)
    feed(b, logits, targets, splits=(len(targets),))
    assert a.compute()["top1"] == b.compute()["top1"]
    assert a.compute()["top5"] == b.compute()["top5"]


def test_bad_inputs_raise():
    meter = ClassificationMeter(3)
    with pytest.raises(ValueError):
        meter.update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), 0.0)
    with pytest.raises(ValueError):
        meter.update(torch.zeros(2, 3), torch.tensor([0, 3]), 0.0)


def test_empty_meter_reports_nan_not_error():
    m = ClassificationMeter(2).compute()
    assert m["samples"] == 0 and math.isnan(m["top1"]) and m["per_class_accuracy"] == [None, None]


def test_format_metrics_one_line():
    line = format_metrics({"top1": 91.234, "top5": 99.87, "loss": 0.25123, "ece": 0.01234, "samples": 10000})
    assert line == "top1 91.23%  top5 99.87%  loss 0.2512  ece 0.0123  (10000 samples)"


def test_confusion_files(tmp_path):
    logits, targets = random_data(6)
    meter = ClassificationMeter(C)
    feed(meter, logits, targets)
    confusion = meter.compute()["confusion"]
    names = [f"class-{i}" for i in range(C)]
    write_confusion_csv(tmp_path / "c.csv", confusion, names)
    rows = list(csv.reader(open(tmp_path / "c.csv", newline="")))
    assert rows[0][1:] == names
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == confusion
    png = tmp_path / "c.png"
    write_confusion_png(png, confusion, names, "test confusion")
    assert png.stat().st_size > 0
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= 300


def test_confusion_png_grows_with_classes(tmp_path):
    sizes = []
    for c in (3, 40):
        confusion = torch.eye(c, dtype=torch.long).mul(5).tolist()
        write_confusion_png(tmp_path / f"{c}.png", confusion, [f"n{i}" for i in range(c)], f"{c} classes")
        sizes.append(matplotlib.image.imread(tmp_path / f"{c}.png").shape[:2])
    assert sizes[1][0] > sizes[0][0] and sizes[1][1] > sizes[0][1]


def meter_from_confusion(confusion: list[list[int]]) -> ClassificationMeter:
    """A meter fed one sample per confusion-matrix count, with logits that predict its column."""
    c = len(confusion)
    pairs = [(i, j) for i in range(c) for j in range(c) for _ in range(confusion[i][j])]
    targets = torch.tensor([i for i, _ in pairs])
    logits = F.one_hot(torch.tensor([j for _, j in pairs]), c).float() * 5
    meter = ClassificationMeter(c)
    feed(meter, logits, targets, splits=(len(pairs) // 2, len(pairs) - len(pairs) // 2))
    return meter


def test_precision_recall_f1_balanced_accuracy_by_hand():
    # true \ predicted    0  1  2      support 10, 5, 5; predicted 9, 5, 6
    confusion = [[8, 2, 0],
                 [1, 3, 1],
                 [0, 0, 5]]
    m = meter_from_confusion(confusion).compute()
    assert m["confusion"] == confusion
    assert m["top1"] == pytest.approx(100 * 16 / 20)
    assert m["per_class_recall"] == pytest.approx([80.0, 60.0, 100.0])
    assert m["per_class_precision"] == pytest.approx([100 * 8 / 9, 60.0, 100 * 5 / 6])
    # F1 = 2PR / (P + R): class 0: 2 * (8/9) * (8/10) / (8/9 + 8/10) = 16/19
    assert m["per_class_f1"] == pytest.approx([100 * 16 / 19, 60.0, 100 * 10 / 11])
    assert m["balanced_accuracy"] == pytest.approx((80 + 60 + 100) / 3)
    assert m["macro_f1"] == pytest.approx(100 * (16 / 19 + 0.6 + 10 / 11) / 3)
    # top-1 weights the big class: here it equals balanced accuracy only by chance, so check one that differs
    skewed = meter_from_confusion([[18, 0], [2, 0]]).compute()
    assert skewed["top1"] == 90.0 and skewed["balanced_accuracy"] == 50.0
    assert skewed["per_class_precision"] == [90.0, None] and skewed["per_class_f1"][1] == 0.0
    assert skewed["macro_f1"] == pytest.approx((100 * 36 / 38 + 0) / 2)


def test_absent_classes_in_balanced_accuracy_and_macro_f1():
    # class 1 predicted once but never true: recall undefined (left out of balanced accuracy), F1 0 (counted);
    # class 2 neither true nor predicted: left out of both, as scikit-learn's defaults do
    confusion = [[3, 1, 0],
                 [0, 0, 0],
                 [0, 0, 0]]
    m = meter_from_confusion(confusion).compute()
    assert m["per_class_recall"] == [75.0, None, None]
    assert m["per_class_precision"] == [100.0, 0.0, None]
    assert m["per_class_f1"][:2] == pytest.approx([100 * 6 / 7, 0.0]) and m["per_class_f1"][2] is None
    assert m["balanced_accuracy"] == 75.0
    assert m["macro_f1"] == pytest.approx(100 * 6 / 7 / 2)



@pytest.mark.parametrize("metric, values, best_epoch", [
    ("balanced_accuracy", [40.0, 55.0, 50.0], 2), ("macro_f1", [60.0, 30.0, 59.0], 1), ("loss", [0.9, 0.7, 0.8], 2)])
def test_checkpointer_keeps_the_best_by_direction(tmp_path, metric, values, best_epoch):
    from trainkit.train.callbacks import Checkpointer

    ck = Checkpointer(tmp_path, metric, enabled=False)
    for epoch, value in enumerate(values, start=1):
        ck.save({"epoch": epoch, "model": {}}, {metric: value})
    assert ck.best_epoch == best_epoch
