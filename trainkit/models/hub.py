"""The hub: one resolver for every "a trained model, from somewhere" string.

:func:`resolve` accepts

* ``zoo:<id>``: a model card in ``zoo/`` (or an ensemble card in ``zoo/ensembles/``);
* ``timm:<name>``: timm's pretrained weights (its hub: needs internet or a filled cache);
* a run folder (its best.pt) or a trainkit checkpoint;
* a plain weights file (.pt/.pth/.th/.safetensors state dict), with ``arch`` naming the architecture.

Whatever the source, the result (:class:`LoadedModel`) carries the model in eval mode *and*
the facts needed to feed, read and evaluate it: its own eval preprocessing, its class names
(when the source records them), the data set it belongs to (when known) and the loader
settings it evaluates with by default. ``model.pretrained``, distillation teachers, ensemble
members, soups, export, evaluate.py and predict.py all come through here; "pretrained" means
:func:`load_pretrained`: fit the resolved state dict into the built model. Every failure is
one line (:class:`CheckpointError`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.data import ImageNetInfo, infer_imagenet_subset
from timm.models import get_pretrained_cfg

from trainkit.config.recipe import DataCfg, EvalCfg, KeyMapCfg, ModelCfg, Recipe, RuntimeCfg, parse_recipe
from trainkit.config.registry import MODEL_SOURCES
from trainkit.models.adapter import InputAdapter
from trainkit.models.build import check_model_name, create_model
from trainkit.models.ensemble import Ensemble
from trainkit.models.timm_hub import weights_access
from trainkit.models.weights import fit_state_dict, load_mapped, read_state_dict, sizes_of, timm_eval_cfg, \
    unwrap_state_dict
from trainkit.runtime.checkpoint import FORMAT, CheckpointError, read_weights_file, resolve_checkpoint

# How a model from outside a run (zoo card, timm, weights file, ensemble) is evaluated unless told
# otherwise: the settings zoo card metrics were measured with (batch 500, 2 workers, fp32).
FOREIGN_RUNTIME = RuntimeCfg(workers=2, pin_memory=False, prefetch_factor=2, persistent_workers=False,
                             channels_last=False)
FOREIGN_EVAL_BATCH = 500


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
    split: str = "test"                   # the split its own metrics are measured on
    class_names: list[str] | None = None  # readable names beside ids such as ImageNet synsets (cards)
    # The source's own evaluation defaults (a run: its runtime, plan eval batch and precision).
    runtime: RuntimeCfg = FOREIGN_RUNTIME
    eval_batch: int = FOREIGN_EVAL_BATCH
    precision: str = "fp32"
    info: dict = field(default_factory=dict)   # facts for reports: checkpoint, epoch, recipe_hash, weights

    def describe_preprocessing(self) -> str:
        e = self.eval
        return f"{e.size}px crop {e.crop_pct:g} {e.interpolation} mean {_fmt(e.mean)} std {_fmt(e.std)}"


def _fmt(values: list[float]) -> str:
    return "(" + ",".join(f"{v:.3g}" for v in values) + ")"


@dataclass(frozen=True)
class Want:
    """What the caller asks of a source besides the spec."""
    arch: str | None = None               # architecture of a plain weights file
    expect_arch: str | None = None        # model.pretrained: the result must be this architecture
    which: str = "best"                   # run folders: best or last checkpoint
    weights: str = "auto"                 # checkpoints: auto (the run's own: plan eval_weights), raw or ema


def resolve(spec: str, *, arch: str | None = None, which: str = "best", weights: str = "auto",
            expect_arch: str | None = None) -> LoadedModel:
    """Resolve ``spec`` (see the module docstring); ``arch`` is needed only for plain weights files."""
    want = Want(arch, expect_arch, which, weights)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in MODEL_SOURCES:
        return MODEL_SOURCES.get(prefix)(rest, want)
    return _from_path(spec, want)


load_model = resolve   # the name before the hub; kept for callers not yet moved over


def load_pretrained(model: torch.nn.Module, spec: str | Path, arch: str, key_map: KeyMapCfg | None = None) -> None:
    """``model.pretrained``: resolve ``spec`` as an ``arch`` and fit its state dict into ``model``.

    A head of another class count is left freshly initialised; weights of another channel count
    go through timm's ``adapt_input_conv`` (:func:`trainkit.models.weights.fit_state_dict`).
    ``key_map`` (``model.pretrained_map``) renames a foreign weights file's tensors first.
    """
    spec = str(spec)
    prefix, sep, _ = spec.partition(":")
    local = not (sep and prefix in MODEL_SOURCES)
    if key_map is not None:
        if not local:
            raise CheckpointError(f"model.pretrained_map: only for a local weights file; {spec} maps its own keys")
        if not Path(spec).is_file():
            raise CheckpointError(f"model.pretrained: file not found: {spec}")
        load_mapped(model, read_state_dict(Path(spec)), key_map, spec)
        return
    try:
        loaded = resolve(spec, arch=arch, expect_arch=arch)
    except CheckpointError as err:
        if not (local and "does not fit" in str(err)):
            raise
        # a file from another code base: say how its names can be mapped
        raise CheckpointError(f"{err}; if it is {arch} under another code base's names, map them with "
                              f"model.pretrained_map={{rule: in_order}} or rename rules (python zoo.py import --help)"
                              ) from None
    fit_state_dict(model, loaded.model.state_dict(), spec)


def build_model(cfg: ModelCfg, num_classes: int, in_chans: int) -> torch.nn.Module:
    """The recipe's model: built by :func:`trainkit.models.build.create_model`, then ``cfg.pretrained`` fitted."""
    model = create_model(cfg, num_classes, in_chans)
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained, cfg.name, cfg.pretrained_map)
    return model


def expect(want: Want, arch: str, message: str) -> None:
    if want.expect_arch is not None and arch != want.expect_arch:
        raise CheckpointError(message)


# ---------------------------------------------------------------- sources

@MODEL_SOURCES.register("timm")
def _from_timm(name: str, want: Want) -> LoadedModel:
    spec = f"timm:{name}"
    expect(want, name.split(".")[0], f"model.pretrained={spec} is a {name.split('.')[0]} but model.name is "
                                      f"{want.expect_arch}")
    try:
        cfg = get_pretrained_cfg(name)   # "resnet18" resolves to its default tag, "resnet18.a1_in1k" to that one
    except RuntimeError:   # timm: an invalid tag for a known architecture
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise CheckpointError(f"{spec}: timm has no pretrained weights under that name "
                              f"(see timm.list_pretrained('{name.split('.')[0]}*'))")
    try:
        with weights_access(spec, cfg.hf_hub_id, cfg.hf_hub_filename):   # offline: one line in seconds
            model = timm.create_model(name, pretrained=True)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - hub, network and cache errors all mean "weights unavailable"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        where = (f"download it on a machine with internet (huggingface-cli download {cfg.hf_hub_id}) into the "
                 f"Hugging Face cache ($HF_HOME, default ~/.cache/huggingface)" if cfg.hf_hub_id
                 else f"download {cfg.url}")
        raise CheckpointError(f"{spec}: cannot get timm's weights ({first}); {where}, or pass the file itself "
                              f"(a .safetensors weights file)") from None
    return LoadedModel(spec, name, model.eval(), timm_eval_cfg(model), model.num_classes,
                       int(model.pretrained_cfg["input_size"][0]), _imagenet_names(model),
                       info={"checkpoint": spec, "epoch": None, "recipe_hash": None})


def _imagenet_names(model: torch.nn.Module) -> list[str] | None:
    """ImageNet class names for timm models trained on an ImageNet subset timm knows; else None."""
    try:
        subset = infer_imagenet_subset(model)
        return [ImageNetInfo(subset).index_to_label_name(i) for i in range(model.num_classes)] if subset else None
    except Exception:  # noqa: BLE001 - names are a convenience; unknown means "not recorded"
        return None


def _from_path(spec: str, want: Want) -> LoadedModel:
    path = Path(spec)
    if path.is_dir():
        path = resolve_checkpoint(path, want.which)
    if not path.is_file() and want.expect_arch:
        raise CheckpointError(f"model.pretrained: file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{spec}: not a zoo:/timm: name, run folder, checkpoint or weights file")
    data = read_weights_file(path)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        expect(want, str(data.get("arch")), f"model.pretrained: {path} is a {data.get('arch')} checkpoint but "
                                             f"model.name is {want.expect_arch}")
        return from_checkpoint(spec, path, data, want.weights)
    arch = want.arch
    if arch is None:
        raise CheckpointError(f"{spec}: a plain weights file does not name its architecture; give it "
                              f"(distill.teacher_arch, or --arch for evaluate.py/soup.py)")
    return _from_weights(spec, path, data, arch)


def run_weights(ckpt: dict) -> str:
    """The one evaluation policy: the weights a run is evaluated with are a property of the run, recorded in its
    plan (``eval_weights``: ema when it chose its best checkpoint by an EMA metric, else raw). Checkpoints from
    before the plan recorded it: the same rule from their recipe."""
    policy = ckpt["plan"].get("eval_weights") or \
        ("ema" if parse_recipe(ckpt["recipe"]).train.best_metric.startswith("ema_") else "raw")
    return "ema" if policy == "ema" and ckpt.get("ema") else "raw"


def pick_weights(ckpt: dict, weights: str, path: Path) -> str:
    """auto: the run's own (:func:`run_weights`); raw or ema: as asked (a comparison, evaluate.py --ema)."""
    if weights == "auto":
        return run_weights(ckpt)
    if weights == "ema" and not ckpt.get("ema"):
        raise CheckpointError(f"{path}: no EMA weights in this checkpoint (the run had no ema.decay)")
    return weights


def checkpoint_state(ckpt: dict, weights: str = "auto") -> dict:
    """The state dict of ``weights`` (auto: the run's own, :func:`run_weights`) in a trainkit checkpoint."""
    weights = run_weights(ckpt) if weights == "auto" else weights
    return ckpt["ema"]["model"] if weights == "ema" else ckpt["model"]


def model_from_checkpoint(ckpt: dict, path: Path, weights: str = "raw") -> torch.nn.Module:
    """The checkpoint's model (its recipe's architecture, no pretrained load) with its raw or EMA weights."""
    recipe = parse_recipe(ckpt["recipe"])
    model = create_model(recipe.model, ckpt["num_classes"], ckpt["in_chans"])
    try:
        model.load_state_dict(checkpoint_state(ckpt, weights))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit model {recipe.model.name}: {first}") from None
    return model


def from_checkpoint(spec: str, path: Path, ckpt: dict, weights: str = "auto") -> LoadedModel:
    """A loaded trainkit checkpoint as a :class:`LoadedModel` with the run's own evaluation defaults."""
    recipe: Recipe = parse_recipe(ckpt["recipe"])
    weights = pick_weights(ckpt, weights, path)
    model = model_from_checkpoint(ckpt, path, weights).eval()
    plan = ckpt["plan"]
    # the memory layout the run used (runtime.channels_last: auto is decided in the plan)
    runtime = dataclasses.replace(recipe.runtime, channels_last=plan.get("channels_last",
                                                                         recipe.runtime.channels_last is True))
    return LoadedModel(spec, recipe.model.name, model, recipe.data.eval, ckpt["num_classes"], ckpt["in_chans"],
                       list(ckpt["classes"]), recipe.data, split="test", runtime=runtime,
                       eval_batch=plan["eval_batch"], precision=plan["precision"],
                       info={"checkpoint": str(path), "epoch": ckpt["epoch"], "recipe_hash": plan["recipe_hash"],
                             "weights": weights})


def _from_weights(spec: str, path: Path, data: object, arch: str) -> LoadedModel:
    check_model_name(arch, "arch")
    state = unwrap_state_dict(data, path)
    model = timm.create_model(arch)
    # The file decides the class and channel counts: rebuild when its classifier or first conv differ.
    num_classes, in_chans = sizes_of(state, model)
    if (num_classes, in_chans) != (model.num_classes, model.pretrained_cfg["input_size"][0]):
        model = timm.create_model(arch, num_classes=num_classes, in_chans=in_chans)
    fit_state_dict(model, state, str(path))
    return LoadedModel(spec, arch, model.eval(), timm_eval_cfg(model), model.num_classes, in_chans,
                       info={"checkpoint": str(path), "epoch": None, "recipe_hash": None})


# ---------------------------------------------------------------- several models as one

def check_same_classes(members: list[LoadedModel]) -> list[str] | None:
    """The members' common class list (None if no member names its classes); one-line error otherwise."""
    first = members[0]
    for m in members[1:]:
        if m.num_classes != first.num_classes:
            raise CheckpointError(f"ensemble members predict different class counts: {first.spec} has "
                                  f"{first.num_classes}, {m.spec} has {m.num_classes}")
    named = [m for m in members if m.classes is not None]
    for m in named[1:]:
        if m.classes != named[0].classes:
            diff = next(i for i, (a, b) in enumerate(zip(m.classes, named[0].classes)) if a != b)
            raise CheckpointError(f"ensemble members' classes differ: class {diff} is {named[0].classes[diff]!r} "
                                  f"in {named[0].spec} but {m.classes[diff]!r} in {m.spec}")
    return named[0].classes if named else None


def loaded_ensemble(spec: str, members: list[LoadedModel], rule: str, weights: list[float] | None) -> LoadedModel:
    """An ensemble as one model whose input is the first member's preprocessing."""
    classes = check_same_classes(members)
    first = members[0]
    module = Ensemble([adapted(m, first.eval, first.in_chans) for m in members], rule, weights).eval()
    return LoadedModel(spec, f"ensemble({','.join(m.arch for m in members)})", module, first.eval,
                       first.num_classes, first.in_chans, classes, first.data, first.split,
                       info={"checkpoint": spec, "epoch": None, "recipe_hash": None})


def adapted(loaded: LoadedModel, src: EvalCfg, src_chans: int) -> torch.nn.Module:
    """``loaded.model`` fed with batches prepared by ``src`` preprocessing."""
    return InputAdapter(loaded.model, src, src_chans, loaded.eval, loaded.in_chans)


def with_data_root(loaded: LoadedModel, root: str) -> LoadedModel:
    """The same model, its data set found at another root."""
    data = loaded.data or DataCfg(name="imagefolder", root=root, holdout_fraction=0.0, eval=loaded.eval)
    return dataclasses.replace(loaded, data=dataclasses.replace(data, root=root))


__all__ = ["LoadedModel", "resolve", "run_weights", "checkpoint_state",
           "load_pretrained", "loaded_ensemble", "adapted", "with_data_root",
           "InputAdapter", "model_from_checkpoint", "pick_weights", "build_model"]
