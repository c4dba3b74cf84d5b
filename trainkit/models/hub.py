"""One resolver for every "a trained model, from somewhere" string: teachers, ensemble members.

:func:`load_model` accepts

* ``zoo:<id>``: a model card in ``zoo/`` (or an ensemble card in ``zoo/ensembles/``);
* ``timm:<name>``: timm's pretrained weights (its hub: needs internet or a filled cache);
* a run folder (its best.pt) or a trainkit checkpoint;
* a plain weights file (.pt/.pth/.th/.safetensors state dict), with ``arch`` naming the architecture.

Whatever the source, the result carries the model in eval mode *and* the facts needed to
feed and read it: its own eval preprocessing, its class names (when the source records
them) and the data set it belongs to (when known). Every failure is one line
(:class:`CheckpointError`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from trainkit.runtime.checkpoint import FORMAT, CheckpointError, resolve_checkpoint
from trainkit.config.recipe import DataCfg, EvalCfg
from trainkit.config.registry import Registry


@dataclass
class LoadedModel:
    spec: str                             # as the user wrote it
    arch: str
    model: torch.nn.Module                # eval mode
    eval: EvalCfg                         # the preprocessing it expects
    num_classes: int
    in_chans: int
    classes: list[str] | None = None      # output order; None when the source does not record names
    data: DataCfg | None = None           # the data set it was trained or carded on, when known

    def describe_preprocessing(self) -> str:
        e = self.eval
        return f"{e.size}px crop {e.crop_pct:g} {e.interpolation} mean {_fmt(e.mean)} std {_fmt(e.std)}"


def _fmt(values: list[float]) -> str:
    return "(" + ",".join(f"{v:.3g}" for v in values) + ")"


SOURCES: Registry[Callable[[str, str | None], LoadedModel]] = Registry("model source")


def load_model(spec: str, *, arch: str | None = None) -> LoadedModel:
    """Resolve ``spec`` (see the module docstring); ``arch`` is needed only for plain weights files."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES:
        return SOURCES.get(prefix)(rest, arch)
    return _from_path(spec, arch)


# ---------------------------------------------------------------- sources

@SOURCES.register("zoo")
def _from_zoo(card_id: str, arch: str | None) -> LoadedModel:
    try:
        from trainkit.zoo import cards as zoo  # late: the zoo is optional, and it imports the model builders
    except ImportError:
        raise CheckpointError(f"zoo:{card_id}: this checkout has no model zoo (trainkit/zoo/cards.py)") from None
    from trainkit.eval.ensemble import ensemble_card_path, load_ensemble_card, loaded_ensemble

    if ensemble_card_path(card_id).is_file():
        card = load_ensemble_card(card_id)
        members = [load_model(m) for m in card.members]
        return loaded_ensemble(f"zoo:{card_id}", members, card.combine, card.weights)
    card = zoo.load_card(card_id)
    root = str(zoo.ROOT / card.dataset.root) if card.dataset.root else None
    # holdout 0: the card's metrics are on the source's own test split
    data = DataCfg(name=card.dataset.source, root=root, holdout_fraction=0.0, eval=card.eval)
    return LoadedModel(f"zoo:{card_id}", card.architecture, zoo.build_card_model(card), card.eval, card.num_classes,
                       card.in_chans, list(card.classes), data)


@SOURCES.register("timm")
def _from_timm(name: str, arch: str | None) -> LoadedModel:
    import timm
    from timm.data import resolve_data_config

    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as err:  # noqa: BLE001 - unknown name, no network, no cache: one user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"timm:{name}: cannot load timm's pretrained weights: {first}") from None
    cfg = resolve_data_config({}, model=model)
    ev = EvalCfg(size=int(cfg["input_size"][-1]), crop_pct=float(cfg["crop_pct"]), interpolation=cfg["interpolation"]
                 if cfg["interpolation"] in ("nearest", "bilinear", "bicubic") else "bicubic",
                 mean=list(cfg["mean"]), std=list(cfg["std"]))
    return LoadedModel(f"timm:{name}", name, model.eval(), ev, model.num_classes, int(cfg["input_size"][0]),
                       _imagenet_names(model))


def _imagenet_names(model: torch.nn.Module) -> list[str] | None:
    """ImageNet class names for timm models trained on an ImageNet subset timm knows; else None."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        return [ImageNetInfo(subset).index_to_label_name(i) for i in range(model.num_classes)] if subset else None
    except Exception:  # noqa: BLE001 - names are a convenience; unknown means "not recorded"
        return None


def _from_path(spec: str, arch: str | None) -> LoadedModel:
    path = Path(spec)
    if path.is_dir():
        path = resolve_checkpoint(path, "best")
    if not path.is_file():
        raise CheckpointError(f"{spec}: not a zoo:/timm: name, run folder, checkpoint or weights file")
    data = _read(path)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return _from_checkpoint(spec, path, data)
    if arch is None:
        raise CheckpointError(f"{spec}: a plain weights file does not name its architecture; give it "
                              f"(distill.teacher_arch, or --arch for evaluate.py/soup.py)")
    return _from_weights(spec, path, data, arch)


def _read(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"cannot load weights {path}: {str(err).splitlines()[0]}") from None
    try:
        # weights_only: a downloaded file must not be able to run code when unpickled
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot load {path} (truncated or not a weights file): {first}") from None


def _from_checkpoint(spec: str, path: Path, ckpt: dict) -> LoadedModel:
    from trainkit.eval.pipeline import model_from_checkpoint
    from trainkit.config.recipe import parse_recipe

    recipe = parse_recipe(ckpt["recipe"])
    model = model_from_checkpoint(ckpt, path).eval()
    return LoadedModel(spec, recipe.model.name, model, recipe.data.eval, ckpt["num_classes"], ckpt["in_chans"],
                       list(ckpt["classes"]), recipe.data)


def _from_weights(spec: str, path: Path, data: object, arch: str) -> LoadedModel:
    import timm

    from trainkit.models.build import check_model_name

    from trainkit.zoo.cards import unwrap_state_dict

    check_model_name(arch, "arch")
    state = unwrap_state_dict(data, path)
    model = timm.create_model(arch)
    # The file decides the class and channel counts: rebuild when its classifier or first conv differ.
    head_w = next((n for n in sorted(head_param_names(model)) if n.endswith("weight")), None)
    first_w = f"{model.pretrained_cfg.get('first_conv')}.weight"
    sizes = {"num_classes": state[head_w].shape[0] if head_w in state else model.num_classes,
             "in_chans": state[first_w].shape[1] if first_w in state else model.pretrained_cfg["input_size"][0]}
    if (sizes["num_classes"], sizes["in_chans"]) != (model.num_classes, model.pretrained_cfg["input_size"][0]):
        model = timm.create_model(arch, **{k: int(v) for k, v in sizes.items()})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err)]
        raise CheckpointError(f"{path} does not fit {arch}: {detail[0][:300]}") from None
    cfg = model.pretrained_cfg
    ev = EvalCfg(size=int(cfg["input_size"][-1]), crop_pct=float(cfg.get("crop_pct", 1.0)),
                 interpolation=cfg.get("interpolation", "bilinear"), mean=list(cfg["mean"]), std=list(cfg["std"]))
    return LoadedModel(spec, arch, model.eval(), ev, model.num_classes, int(sizes["in_chans"]))


def head_param_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters of ``model.get_classifier()`` (empty when the model has no such API)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    return {n for n, p in model.named_parameters() if id(p) in ids}


def with_data_root(loaded: LoadedModel, root: str) -> LoadedModel:
    """The same model, its data set found at another root."""
    data = loaded.data or DataCfg(name="imagefolder", root=root, holdout_fraction=0.0, eval=loaded.eval)
    return dataclasses.replace(loaded, data=dataclasses.replace(data, root=root))


# ---------------------------------------------------------------- feeding a batch prepared for another model

class InputAdapter(torch.nn.Module):
    """Re-express a batch normalised for one model (``src``) as the input ``model`` expects (``dst``).

    Undo the source normalisation, repeat a grey channel for an RGB model, resize to
    the destination size, normalise with the destination statistics. No crop: the batch
    is already the crop the student sees, and cropping again would hide part of it from
    the teacher. When nothing differs the batch passes through untouched (bit-exact).
    """

    def __init__(self, model: torch.nn.Module, src: EvalCfg, src_chans: int, dst: EvalCfg, dst_chans: int):
        super().__init__()
        if src_chans != dst_chans and not (src_chans == 1 and dst_chans == 3):
            raise CheckpointError(f"cannot feed {src_chans}-channel images to a model that expects {dst_chans}")
        self.model, self.size, self.mode = model, dst.size, dst.interpolation
        self.repeat = dst_chans if src_chans != dst_chans else 1
        self.same_stats = (list(src.mean), list(src.std)) == (list(dst.mean), list(dst.std)) and self.repeat == 1

        def stats(values: list[float], chans: int) -> torch.Tensor:
            return torch.tensor(values * (chans // len(values)), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("src_mean", stats(src.mean, src_chans), persistent=False)
        self.register_buffer("src_std", stats(src.std, src_chans), persistent=False)
        self.register_buffer("dst_mean", stats(dst.mean, dst_chans), persistent=False)
        self.register_buffer("dst_std", stats(dst.std, dst_chans), persistent=False)

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        same_size = x.shape[-2:] == (self.size, self.size)
        if self.same_stats and same_size:
            return x
        x = x.float() * self.src_std + self.src_mean            # back to [0, 1] pixels
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        if not same_size:
            smooth = self.mode != "nearest"
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode=self.mode,
                                                align_corners=False if smooth else None, antialias=smooth)
        return (x - self.dst_mean) / self.dst_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.convert(x))


def adapted(loaded: LoadedModel, src: EvalCfg, src_chans: int) -> torch.nn.Module:
    """``loaded.model`` fed with batches prepared by ``src`` preprocessing."""
    return InputAdapter(loaded.model, src, src_chans, loaded.eval, loaded.in_chans)
