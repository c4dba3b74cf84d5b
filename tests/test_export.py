"""Export: safetensors that load back through model.pretrained, ONNX that onnxruntime runs the same."""

from __future__ import annotations

import pytest
import timm
import torch

import trainkit.models.cifar  # noqa: F401  (registers smallcnn)
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.zoo.export import export_model, load_for_export, max_abs_diff_onnx
from trainkit.models.hub import load_pretrained

from conftest import WEIGHTS, require

pytest.importorskip("onnxruntime")


def test_zoo_model_exports_and_round_trips(tmp_path):
    require(WEIGHTS / "resnet20-12fca82f.th")
    model, name, size, meta = load_for_export("zoo:cifar10_resnet20")
    result = export_model(model, tmp_path / name, size, meta=meta)
    assert result["max_abs_diff"] < 1e-4 and meta["classes"][0] == "airplane"
    again = timm.create_model("resnet20_cifar")
    load_pretrained(again, str(result["safetensors"]), arch="resnet20_cifar")  # the export is a valid pretrained file
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())
    # a batch size the graph was not traced with
    assert max_abs_diff_onnx(model, result["onnx"], torch.randn(7, *size)) < 1e-4


def test_grey_smallcnn_exports_where_onnx_can_express_it(tmp_path):
    model = timm.create_model("smallcnn", in_chans=1, num_classes=3).eval()
    result = export_model(model, tmp_path / "s", (1, 32, 32), meta={"source": "test"})
    assert result["onnx"].stat().st_size > 1000 and result["max_abs_diff"] < 1e-4
    # 28 px gives a 7x7 map that AdaptiveAvgPool2d(4) cannot pool in ONNX: one clear line, not a trace
    with pytest.raises(CheckpointError, match=r"cannot export SmallCNN at input \(1, 28, 28\) to ONNX"):
        export_model(model, tmp_path / "s28", (1, 28, 28), meta={"source": "test"})
