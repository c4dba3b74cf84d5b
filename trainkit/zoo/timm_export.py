"""``trainkit zoo export SOURCE --format timm --out DIR``: a model in timm's own folder format.

DIR gets what ``timm.save_for_hf`` writes (config.json: architecture, num_classes, label_names, model_args and a
pretrained_cfg carrying the source's eval input size, crop, interpolation, mean and std; model.safetensors) and a
README model card. ``timm.create_model('local-dir:DIR', pretrained=True)`` in a process that never imports
trainkit then builds and loads it, and timm's own eval transform (``resolve_data_config`` +
``create_transform``) feeds it as trainkit's evaluate does. ``push_folder`` uploads DIR to the Hugging Face Hub
as timm's ``push_to_hub`` does (``hf-hub:<repo>`` then loads it).

An architecture that only trainkit registers (CIFAR ResNets, speednet, smallcnn) cannot be built by plain timm:
that is one error line, not a folder that would fail on the user's machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
from timm.models import save_for_hf

from trainkit.config.schema import RecipeError
from trainkit.models.hub import LoadedModel, resolve
from trainkit.runtime.checkpoint import CheckpointError

HUB_TIMEOUT_S = 10   # one failed Hub request, not minutes of retries


def timm_builds(arch: str) -> bool:
    """True when timm itself (not a trainkit module registering into timm) provides ``arch``."""
    return timm.is_model(arch) and timm.models.model_entrypoint(arch).__module__.startswith("timm.")


def label_descriptions(classes: list[str]) -> dict[str, str]:
    """ImageNet synset ids -> readable names (timm's ImageNetInfo); other labels are their own description."""
    if not classes or not all(c[:1] == "n" and c[1:].isdigit() for c in classes):
        return {}
    info = timm.data.ImageNetInfo()
    return {c: info.label_name_to_description(c) for c in classes}


def data_config(loaded: LoadedModel) -> dict:
    e = loaded.eval
    return {"input_size": (loaded.in_chans, e.size, e.size), "crop_pct": e.crop_pct, "crop_mode": "center",
            "interpolation": e.interpolation, "mean": tuple(e.mean), "std": tuple(e.std)}


def export_timm(spec: str, out: Path) -> Path:
    """Export the model ``spec`` resolves to (run folder, checkpoint, zoo:<id>) into ``out``."""
    loaded = resolve(spec)
    if not timm_builds(loaded.arch):
        raise RecipeError(f"{spec}: architecture {loaded.arch!r} exists only in trainkit, so plain timm cannot "
                          "build it; export it with --format onnx (safetensors + ONNX) instead")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise RecipeError(f"--out {out}: a folder with other files in it; give an empty or new folder")
    model = loaded.model.float().eval()
    classes = list(loaded.classes or [])
    config: dict = {"label_names": classes} if classes else {}
    descriptions = label_descriptions(classes)
    if descriptions:
        config["label_descriptions"] = descriptions
    save_for_hf(model, out, model_config=config, safe_serialization=True, data_config=data_config(loaded))
    (out / "README.md").write_text(model_card(loaded, spec, out))
    return out


def model_card(loaded: LoadedModel, spec: str, out: Path) -> str:
    """A Hugging Face model card: front matter timm's own cards use, what the weights are, how to load them."""
    cfg = json.loads((out / "config.json").read_text())
    pre = cfg["pretrained_cfg"]
    license_ = (getattr(loaded, "license", None) or loaded.info.get("license") or "other").lower()
    lines = ["---", "tags:", "- image-classification", "- timm", "- trainkit", "library_name: timm",
             f"license: {license_}", "---", "", f"# {out.name}", "",
             f"`{loaded.arch}` with {cfg['num_classes']} classes, exported by `trainkit zoo export {spec} --format "
             f"timm` from trainkit's `{spec}`.", "",
             "## Use it (timm only)", "", "```python", "import timm, torch",
             f"model = timm.create_model('local-dir:{out}', pretrained=True).eval()   # or 'hf-hub:<repo>'",
             "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
             "probs = model(transform(image).unsqueeze(0)).softmax(-1)   # image: a PIL RGB image",
             "label = model.pretrained_cfg['label_names'][probs.argmax()]", "```", "",
             "## Eval preprocessing (the source's, as trainkit evaluates it)", "",
             f"input size {tuple(pre['input_size'])}, crop_pct {pre['crop_pct']}, interpolation "
             f"{pre['interpolation']}, mean {tuple(pre['mean'])}, std {tuple(pre['std'])}.", ""]
    info = {k: v for k, v in loaded.info.items() if isinstance(v, (str, int, float)) and k != "weights"}
    if info:
        lines += ["## Provenance", ""] + [f"- {k}: {v}" for k, v in sorted(info.items())] + [""]
    return "\n".join(lines)


def push_folder(folder: Path, repo_id: str) -> str:
    """Upload an exported folder to the Hub as timm's push_to_hub does; offline is one line with the fix."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise CheckpointError(f"--push {repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded; the export is "
                              f"in {folder} (push it later: unset HF_HUB_OFFLINE and run the same command)")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(HUB_TIMEOUT_S))
    from huggingface_hub import HfApi   # late: only --push talks to the Hub

    try:
        api = HfApi(library_name="timm", library_version=timm.__version__)
        repo_id = api.create_repo(repo_id, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Add model (trainkit export)")
    except Exception as err:   # noqa: BLE001  network, login or HTTP status: the export is done, the upload is not
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"--push {repo_id}: could not upload to the Hugging Face Hub ({first[:160]}); the "
                              f"export is in {folder}: log in (huggingface-cli login) and run the command again") \
            from None
    return f"https://huggingface.co/{repo_id}"
