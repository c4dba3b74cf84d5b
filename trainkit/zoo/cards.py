"""The model zoo: model cards (``zoo/<id>.yaml``), verified weight loading, importers.

``model.pretrained`` (and :func:`load_weights`) accepts three kinds of source:

* ``zoo:<id>``: a card in ``zoo/``. Its weights file is looked up at the card's
  ``weights.path`` (relative to the repository root), then in the cache
  (``$TRAINKIT_CACHE``, default ``~/.cache/trainkit``), then downloaded from
  ``weights.url`` into the cache. Whatever file is used must match the card's sha256.
* ``timm:<name>``: timm's pretrained weights (its hub; needs internet or a filled
  Hugging Face cache).
* a path to a local ``.pt``/``.pth``/``.th``/``.safetensors`` state dict or trainkit checkpoint.

Every failure is a :class:`CheckpointError` with one line that names the file and
what to do, so entry points print it without a traceback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import yaml

from trainkit.runtime.checkpoint import CheckpointError
from trainkit.config.schema import RecipeError, did_you_mean, from_dict, to_dict
from trainkit.config.recipe import DATASETS, EvalCfg, KeyMapCfg
from trainkit.config.registry import Registry
from trainkit.models.importers import map_state_dict, package_file

log = logging.getLogger("trainkit")

ROOT = Path(__file__).resolve().parents[2]   # card paths are relative to the repository root, not the cwd
CARD_HEADER = ("# Model card (schema: trainkit/zoo/cards.py ModelCard). Metrics are written by\n"
               "#   python evaluate.py zoo:{id} --update-card\n"
               "# and zoo/README.md is regenerated from all cards by: python zoo.py readme\n")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def zoo_dir() -> Path:
    """``$TRAINKIT_ZOO`` (a private or test zoo) or the repository's ``zoo/``."""
    return Path(os.environ.get("TRAINKIT_ZOO", ROOT / "zoo"))


def cache_dir() -> Path:
    return Path(os.environ.get("TRAINKIT_CACHE", Path.home() / ".cache" / "trainkit")) / "weights"


# ---------------------------------------------------------------- card schema

@dataclass(frozen=True)
class DatasetRef:
    name: str = ""                        # as tables show it, e.g. "CIFAR-10 (JPEG)"
    source: Literal["imagefolder", "cifar10", "cifar100", "mnist", "fashion_mnist"] = "imagefolder"  # data.name
    root: str | None = None               # data.root, relative to the repository root
    split: Literal["train", "val", "test"] = "test"   # the split the metrics are measured on

    def check(self, key: str) -> None:
        if not self.name:
            raise RecipeError(f"{key}.name: required (the data set's name as tables show it)")
        assert self.source in DATASETS


@dataclass(frozen=True)
class Provenance:
    """Who made the weights: our recipe, or a third party with its license."""
    recipe: str | None = None             # recipes/<name>.yaml that trained the weights
    recipe_hash: str | None = None        # trainkit.config.recipe.recipe_hash of that run's resolved recipe
    third_party: str | None = None        # URL of the foreign project
    license: str | None = None
    key_map: KeyMapCfg = field(default_factory=KeyMapCfg)   # how the file's tensor names become ours

    def check(self, key: str) -> None:
        if not self.recipe and not (self.third_party and self.license):
            raise RecipeError(f"{key}: give recipe (and recipe_hash) for our weights, or third_party and license")


@dataclass(frozen=True)
class WeightsRef:
    sha256: str = ""                      # of the file, lowercase hex
    path: str | None = None               # relative to the repository root (may point into ../shared)
    url: str | None = None                # public download address
    package: str | None = None            # or an installed Python package, pinned: name==version
    package_file: str | None = None       # the file inside it (relative to site-packages)

    def check(self, key: str) -> None:
        if not SHA256_RE.match(self.sha256):
            raise RecipeError(f"{key}.sha256: 64 lowercase hex digits required, got {self.sha256!r}")
        if not self.path and not self.url and not self.package:
            raise RecipeError(f"{key}: give path, url or package (with package_file)")
        if bool(self.package) != bool(self.package_file):
            raise RecipeError(f"{key}.package_file: give package and package_file together")

    @property
    def file_name(self) -> str:
        return Path(self.path or self.package_file or self.url.rsplit("/", 1)[-1]).name


@dataclass(frozen=True)
class Metrics:
    top1: float | None = None             # %, on dataset.split
    top5: float | None = None             # %
    top1_restricted: float | None = None  # %, logits restricted to the data set's classes (a subset of the card's)
    samples: int | None = None            # images evaluated
    seeds: int = 1                        # training seeds the numbers summarise (1 for imported weights)
    date: str | None = None               # YYYY-MM-DD of the measurement
    hardware: str | None = None
    command: str | None = None            # the command that measured them


@dataclass(frozen=True)
class ModelCard:
    id: str = ""                          # = the file name without .yaml; zoo:<id>
    description: str = ""
    architecture: str = ""                # model.name
    num_classes: int = 0
    in_chans: int = 3
    classes: list[str] = field(default_factory=list)   # output order: names, or ids such as ImageNet synsets
    class_names: list[str] = field(default_factory=list)   # human-readable, for display; empty: classes
    params: int = 0                       # parameter count, recomputed by the tests
    dataset: DatasetRef = field(default_factory=DatasetRef)
    source: Provenance = field(default_factory=Provenance)
    weights: WeightsRef = field(default_factory=WeightsRef)
    eval: EvalCfg = field(default_factory=EvalCfg)
    eval_note: str = ""                   # how the eval preprocessing was established
    metrics: Metrics = field(default_factory=Metrics)

    def check(self, key: str) -> None:
        from trainkit.models.build import check_model_name

        if not ID_RE.match(self.id):
            raise RecipeError(f"{key}id: lowercase letters, digits, '_', '.' and '-' only, got {self.id!r}")
        check_model_name(self.architecture, f"{key}architecture")
        if self.num_classes < 1 or len(self.classes) != self.num_classes:
            raise RecipeError(f"{key}classes: {len(self.classes)} names for num_classes={self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise RecipeError(f"{key}class_names: {len(self.class_names)} names for num_classes={self.num_classes}")
        if self.in_chans not in (1, 3) or len(self.eval.mean) not in (1, self.in_chans):
            raise RecipeError(f"{key}in_chans/eval.mean: {self.in_chans} channels with {len(self.eval.mean)} means")


def card_path(card_id: str) -> Path:
    return zoo_dir() / f"{card_id}.yaml"


def card_ids() -> list[str]:
    return sorted(p.stem for p in zoo_dir().glob("*.yaml"))


def load_card(card_id: str) -> ModelCard:
    """Read and validate ``zoo/<id>.yaml``; an unknown id is one line with a did-you-mean."""
    path = card_path(card_id)
    if not path.is_file():
        ids = card_ids()
        raise CheckpointError(f"zoo:{card_id}: no such model card ({path} not found){did_you_mean(card_id, ids)}"
                              f" (known: {', '.join(ids) or 'none'})")
    return read_card(path, ModelCard)


def read_card(path: Path, schema: type):
    """Parse a card file against its schema (unknown keys, types); its id must be its file name."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: invalid YAML: {getattr(err, 'problem', err)}") from None
    card = from_dict(schema, data, "")
    if card.id != path.stem:
        raise RecipeError(f"{path}: id {card.id!r} differs from the file name {path.stem!r}")
    return card


def write_card(card: ModelCard, path: Path | None = None) -> Path:
    path = path or card_path(card.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CARD_HEADER.format(id=card.id) + yaml.safe_dump(to_dict(card), sort_keys=False, default_flow_style=None, width=110))
    return path


# ---------------------------------------------------------------- reading weight files

def _torch_load(path: Path) -> object:
    try:
        # weights_only: a weights file from the internet must not be able to run code when unpickled
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unpickling failure is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot load weights {path} (truncated, not a weights file, or it needs code "
                              f"to unpickle): {first}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict (.pt/.pth/.th/.safetensors), or a trainkit checkpoint's model weights.

    ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers and DataParallel's ``module.`` prefix are removed.
    """
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"cannot load weights {path}: {str(err).splitlines()[0]}") from None
    return unwrap_state_dict(_torch_load(path), path)


def unwrap_state_dict(state: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: ``model``/``state_dict`` wrappers and ``module.`` prefixes removed."""
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def checkpoint_arch(path: Path) -> str | None:
    """The architecture a trainkit checkpoint records (None for plain state dicts)."""
    if path.suffix == ".safetensors":
        return None
    data = _torch_load(path)
    return data.get("arch") if isinstance(data, dict) and isinstance(data.get("arch"), str) else None


# ---------------------------------------------------------------- fetching and verifying

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(f"{what}: {path} has sha256 {actual[:16]}... but the card says {expected[:16]}...: "
                              f"the file is corrupt or was replaced; delete it and fetch it again")


def fetch_weights(card: ModelCard) -> Path:
    """The card's weights file, verified: its local path, else the cache, else downloaded into the cache."""
    what = f"zoo:{card.id}"
    w = card.weights
    local = ROOT / w.path if w.path else package_file(w.package, w.package_file, what) if w.package else None
    cached = cache_dir() / w.sha256[:12] / w.file_name   # the hash in the folder: two versions never collide
    for candidate in (local, cached):
        if candidate is not None and candidate.is_file():
            verify_sha256(candidate, w.sha256, what)
            return candidate
    reason = "no url on the card"
    if w.url:
        try:
            return _download(w.url, cached, w.sha256, what)
        except (urllib.error.URLError, OSError) as err:
            reason = f"download failed: {getattr(err, 'reason', err)}"
    where = f"{local} or {cached}" if local else str(cached)
    source = f" (from {w.url})" if w.url else ""
    raise CheckpointError(f"{what}: weights not found and {reason}; put {w.file_name}{source} "
                          f"with sha256 {w.sha256[:16]}... at {where}")


def _download(url: str, dest: Path, sha256: str, what: str, timeout_s: float = 30.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    log.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
        verify_sha256(tmp, sha256, what)   # before the rename: a bad download never lands in the cache
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------- loading into a model

WEIGHT_SOURCES: Registry[Callable[[torch.nn.Module, str, str], None]] = Registry("weights source",
                                                                                key="model.pretrained")


def load_weights(model: torch.nn.Module, spec: str, *, arch: str, key_map: KeyMapCfg | None = None) -> None:
    """Load ``zoo:<id>``, ``timm:<name>`` or a local file into ``model`` (built as ``arch``).

    A head of another class count is left freshly initialised; RGB weights on a
    model with another channel count go through timm's ``adapt_input_conv``. ``key_map``
    (``model.pretrained_map``) renames a foreign local file's tensors first.
    """
    prefix, sep, rest = spec.partition(":")
    if key_map is not None and sep and prefix in WEIGHT_SOURCES:
        raise CheckpointError(f"model.pretrained_map: only for a local weights file; {spec} maps its own keys")
    if sep and prefix in WEIGHT_SOURCES:
        WEIGHT_SOURCES.get(prefix)(model, rest, arch)
    else:
        _load_local(model, spec, arch, key_map)


@WEIGHT_SOURCES.register("zoo")
def _load_zoo(model: torch.nn.Module, card_id: str, arch: str) -> None:
    card = load_card(card_id)
    if card.architecture != arch:
        raise CheckpointError(f"model.pretrained=zoo:{card_id} holds {card.architecture} weights but model.name is "
                              f"{arch}; set model.name={card.architecture}")
    path = fetch_weights(card)
    load_mapped(model, read_state_dict(path), card.source.key_map, f"zoo:{card_id}")


def load_mapped(model: torch.nn.Module, state: dict[str, torch.Tensor], key_map: KeyMapCfg, what: str) -> None:
    """``state`` renamed by ``key_map`` (trainkit.models.importers), then fitted (new head allowed)."""
    fit_state_dict(model, map_state_dict(state, model, key_map, what, allow_shape=head_state_keys(model)), what)


def head_state_keys(model: torch.nn.Module) -> set[str]:
    """State-dict entries of the classifier (its parameters and buffers)."""
    modules = {n.rsplit(".", 1)[0] for n in head_param_names(model)}
    return {k for k in model.state_dict() if k.rsplit(".", 1)[0] in modules}


@WEIGHT_SOURCES.register("timm")
def _load_timm(model: torch.nn.Module, name: str, arch: str) -> None:
    from timm.models import get_pretrained_cfg, load_pretrained

    if name.split(".")[0] != arch:
        raise CheckpointError(f"model.pretrained=timm:{name} is a {name.split('.')[0]} but model.name is {arch}")
    try:
        cfg = get_pretrained_cfg(name)   # "resnet18" resolves to its default tag, "resnet18.a1_in1k" to that one
    except RuntimeError:   # timm: an invalid tag for a known architecture
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise CheckpointError(f"model.pretrained=timm:{name}: timm has no pretrained weights under that name "
                              f"(see timm.list_pretrained('{arch}*'))")
    try:
        load_pretrained(model, pretrained_cfg=cfg.to_dict(), num_classes=model.num_classes,
                        in_chans=_in_chans(model), strict=False)
    except Exception as err:  # noqa: BLE001 - hub, network and cache errors all mean "weights unavailable"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        hub = getattr(cfg, "hf_hub_id", None)
        where = (f"download it on a machine with internet (huggingface-cli download {hub}) into the Hugging Face "
                 f"cache ($HF_HOME, default ~/.cache/huggingface)" if hub else f"download {cfg.url}")
        raise CheckpointError(f"model.pretrained=timm:{name}: cannot get timm's weights ({first}); {where}, "
                              f"or pass the file itself as model.pretrained=path/to/weights.safetensors") from None


def _load_local(model: torch.nn.Module, spec: str, arch: str, key_map: KeyMapCfg | None) -> None:
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"model.pretrained: file not found: {path}")
    saved_arch = checkpoint_arch(path)
    if saved_arch is not None and saved_arch != arch:
        raise CheckpointError(f"model.pretrained: {path} is a {saved_arch} checkpoint but model.name is {arch}")
    if key_map is not None:
        load_mapped(model, read_state_dict(path), key_map, str(path))
        return
    try:
        fit_state_dict(model, read_state_dict(path), str(path))
    except CheckpointError as err:
        # a file from another code base: say how its names can be mapped
        raise CheckpointError(f"{err}; if it is {arch} under another code base's names, map them with "
                              f"model.pretrained_map={{rule: in_order}} or rename rules (python zoo.py import --help)"
                              ) from None


def _in_chans(model: torch.nn.Module) -> int:
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    weight = model.state_dict().get(f"{first}.weight") if first else None
    return int(weight.shape[1]) if weight is not None else 3


def head_param_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters of ``model.get_classifier()`` (empty when the model has no such API)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    return {n for n, p in model.named_parameters() if id(p) in ids}


def fit_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` strictly, except for a classifier of another class count (kept fresh) and a
    first conv of another channel count (adapted). Anything else that differs is one-line error."""
    from timm.models import adapt_input_conv

    own = model.state_dict()
    name = type(model).__name__
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    key = f"{first}.weight" if first else None
    if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
        log.info("%s: %s adapted from %d to %d input channels", what, key, state[key].shape[1], own[key].shape[1])
        state = dict(state, **{key: adapt_input_conv(own[key].shape[1], state[key])})
    head = head_state_keys(model)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    body = sorted(set(mismatched) - head)
    if body:
        raise CheckpointError(f"{what} does not fit {name}: {body[0]} has shape {tuple(state[body[0]].shape)}, "
                              f"expected {tuple(own[body[0]].shape)} (weights of another architecture?)")
    state = {k: v for k, v in state.items() if k not in mismatched}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in mismatched]
    if missing or unexpected:
        example = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{what} does not fit {name} ({example}; {len(missing)} missing, {len(unexpected)} "
                              f"unexpected keys: weights of another architecture?)")
    if mismatched:
        log.info("%s: new classifier (%s), the backbone is pretrained", what, ", ".join(sorted(mismatched)))


def build_card_model(card: ModelCard, *, pretrained: bool = True) -> torch.nn.Module:
    """The card's architecture with its weights (verified), in eval mode."""
    import timm

    from trainkit.models import cifar  # noqa: F401  (registers our architectures with timm)

    model = timm.create_model(card.architecture, num_classes=card.num_classes, in_chans=card.in_chans)
    if pretrained:
        load_weights(model, f"zoo:{card.id}", arch=card.architecture)
    return model.eval()


# ---------------------------------------------------------------- evaluation of a card

def evaluate_card(card: ModelCard, *, data_root: str | None = None, split: str | None = None, batch: int = 500,
                  workers: int = 2, device: torch.device = torch.device("cpu"), precision: str = "fp32",
                  show_progress: bool | str = "auto", limit: int | None = None) -> dict:
    """Evaluate a zoo model with the card's own preprocessing on its data set (same engine as evaluate.py).

    Returns the same report shape as :func:`trainkit.eval.pipeline.evaluate_checkpoint`. ``limit``:
    a seeded subset of that many images. When the data set's classes are a subset of the card's
    (ImageNet synsets), the metrics are restricted-logit ones plus ``top1_all``/``top5_all``.
    """
    from trainkit.data.loaders import LoaderSettings, make_loader
    from trainkit.data.sources import open_source, resolve_splits
    from trainkit.eval.restricted import class_indices, evaluate_restricted
    from trainkit.train.engine import evaluate
    from trainkit.config.recipe import AugmentCfg, DataCfg

    split = split or card.dataset.split
    root = data_root if data_root is not None else (str(ROOT / card.dataset.root) if card.dataset.root else None)
    # holdout 0: the source's own test split is evaluated whole, never a carved hold-out
    data = DataCfg(name=card.dataset.source, root=root, holdout_fraction=0.0, eval=card.eval,
                   limit_train=limit, limit_eval=limit)
    data.check("data")
    splits = resolve_splits(data, open_source(data))
    classes = list(splits["train"].classes)
    # a subset of the card's classes (10 ImageNet synsets for an ImageNet card): restricted-logit evaluation
    subset = None if classes == card.classes else class_indices(card.classes, classes, f"zoo:{card.id} on {root}")
    model = build_card_model(card).to(device)
    loader = make_loader(splits[split], train=False, data=data, augment=AugmentCfg(),
                         settings=LoaderSettings(batch, workers, False, 2, False, False), chans=card.in_chans,
                         device=device, seed=0, channels_last=False)
    desc = f"eval zoo:{card.id} {split}"
    if subset is None:
        metrics = evaluate(model, loader, num_classes=card.num_classes, device=device, precision=precision,
                           show_progress=show_progress, desc=desc).compute()
    else:
        metrics = evaluate_restricted(model, loader, subset, device=device, precision=precision,
                                      show_progress=show_progress, desc=desc)
    return {"checkpoint": f"zoo:{card.id}", "split": split, "epoch": None, "model": card.architecture,
            "precision": precision, "batch": batch, "classes": classes, "skipped_images": loader.skipped,
            "recipe_hash": card.source.recipe_hash, "metrics": metrics}


def with_metrics(card: ModelCard, report: dict, *, hardware: str, command: str, date: str) -> ModelCard:
    """The card with ``metrics`` replaced by a fresh measurement (rounded as printed)."""
    import dataclasses

    m = report["metrics"]
    if "top1_all" in m:   # restricted-logit evaluation: top1/top5 over all the card's classes, and restricted
        metrics = Metrics(top1=round(m["top1_all"], 2), top5=round(m["top5_all"], 2),
                          top1_restricted=round(m["top1"], 2), samples=m["samples"], seeds=card.metrics.seeds,
                          date=date, hardware=hardware, command=command)
    else:
        metrics = Metrics(top1=round(m["top1"], 2), top5=round(m["top5"], 2), samples=m["samples"],
                          seeds=card.metrics.seeds, date=date, hardware=hardware, command=command)
    return dataclasses.replace(card, metrics=metrics)


# ---------------------------------------------------------------- zoo/README.md

README_HEADER = """# Model zoo

Generated from the model cards in this folder by `python zoo.py readme`; do not edit by hand.
Every number below was measured by `python evaluate.py zoo:<id> --update-card` on the split named
in the card (the command and hardware are in each card). Load any model with
`model.pretrained: zoo:<id>` in a recipe, or `trainkit.zoo.cards.build_card_model(load_card("<id>"))`.
"""


def readme_markdown(cards: list[ModelCard]) -> str:
    """One table per data set: model, architecture, recipe or source, params, top-1, top-5."""
    from trainkit.report.table import format_params

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    def source(card: ModelCard) -> str:
        s = card.source
        if s.recipe:
            return f"[{Path(s.recipe).name}](../{s.recipe})" + (f" `{s.recipe_hash}`" if s.recipe_hash else "")
        return f"[{s.third_party.removeprefix('https://github.com/')}]({s.third_party}) ({s.license})"

    lines = [README_HEADER]
    for dataset in sorted({c.dataset.name for c in cards}):
        rows = sorted((c for c in cards if c.dataset.name == dataset), key=lambda c: -(c.metrics.top1 or -1))
        # cards whose data set holds a subset of their classes (ImageNet models on 10 ImageNet classes)
        restricted = any(c.metrics.top1_restricted is not None for c in rows)
        extra = (" top-1 over all classes | top-5 over all classes | top-1, logits restricted to the data set's "
                 "classes |", "---:|---:|---:|") if restricted else (" top-1 | top-5 |", "---:|---:|")
        lines += [f"## {dataset}", "", f"| model | architecture | recipe / source | params | split |{extra[0]}",
                  f"|---|---|---|---:|---|{extra[1]}"]
        lines += [f"| [{c.id}]({c.id}.yaml) | {c.architecture} | {source(c)} | {format_params(c.params)} | "
                  f"{c.dataset.split} | {pct(c.metrics.top1)} | {pct(c.metrics.top5)} |"
                  + (f" {pct(c.metrics.top1_restricted)} |" if restricted else "") for c in rows]
        lines.append("")
    return "\n".join(lines)


def write_readme() -> Path:
    path = zoo_dir() / "README.md"
    path.write_text(readme_markdown([load_card(i) for i in card_ids()]))
    return path
