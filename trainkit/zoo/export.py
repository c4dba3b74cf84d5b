"""Export a zoo model or a trainkit checkpoint to safetensors and ONNX, and prove the ONNX file
computes what PyTorch computes (onnxruntime on random inputs, max absolute difference)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from safetensors.torch import save_file

from trainkit.config.schema import to_dict
from trainkit.models.hub import resolve
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.zoo import cards


def load_for_export(source: str) -> tuple[torch.nn.Module, str, tuple[int, int, int], dict]:
    """Any hub spec (``zoo:<id>``, a run folder, a checkpoint, ...) -> (eval-mode model, export name, (C, H, W),
    metadata)."""
    loaded = resolve(source)
    path = Path(loaded.info.get("checkpoint") or source)
    name = source.removeprefix("zoo:") if source.startswith("zoo:") else \
        (path.parent.name if path.stem in ("best", "last") else path.stem)
    meta = {"source": source if source.startswith("zoo:") else str(path), "architecture": loaded.arch,
            "classes": loaded.classes, "eval": to_dict(loaded.eval)}
    if source.startswith("zoo:"):
        meta["sha256_of_source"] = cards.load_card(name).weights.sha256
    else:
        meta["recipe_hash"] = loaded.info.get("recipe_hash")
    return loaded.model, name, (loaded.in_chans, loaded.eval.size, loaded.eval.size), meta


def export_model(model: torch.nn.Module, out_stem: Path, input_size: tuple[int, int, int], *, meta: dict,
                 opset: int = 17, batch: int = 4, atol: float = 1e-4) -> dict:
    """Write ``<out_stem>.safetensors`` (+ ``.json`` metadata) and ``<out_stem>.onnx`` (dynamic batch);
    raise :class:`CheckpointError` when onnxruntime's outputs differ from PyTorch's by more than ``atol``."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    st_path = out_stem.with_suffix(".safetensors")
    save_file(tensors, str(st_path), metadata={"trainkit": json.dumps(meta)})
    out_stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")

    onnx_path = out_stem.with_suffix(".onnx")
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter's constant-folding notes are not actionable
        # dynamo=False: the TorchScript exporter needs no onnxscript and handles our models
        try:
            torch.onnx.export(model, (x,), str(onnx_path), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
        except (torch.onnx.errors.OnnxExporterError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CheckpointError(f"cannot export {type(model).__name__} at input {input_size} to ONNX: "
                                  f"{first}") from None
    diff = max_abs_diff_onnx(model, onnx_path, torch.randn(batch + 1, *input_size,
                                                           generator=torch.Generator().manual_seed(1)))
    if diff > atol:
        raise CheckpointError(f"{onnx_path}: onnxruntime's outputs differ from PyTorch's by {diff:.2e} > {atol:.0e}")
    return {"safetensors": st_path, "onnx": onnx_path, "max_abs_diff": diff, "batch": batch + 1}


def max_abs_diff_onnx(model: torch.nn.Module, onnx_path: Path, x: torch.Tensor) -> float:
    """Largest |onnxruntime - PyTorch| over the logits of ``x`` (a batch size other than the traced one)."""
    onnx.checker.check_model(str(onnx_path))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    return float((torch.from_numpy(got) - expected).abs().max())
