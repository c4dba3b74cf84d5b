"""Knowledge distillation as a loss wrapper: the training loop does not change.

:class:`DistillationLoss` takes ``(outputs, targets, images)``: the student's outputs, the
task targets and the student's own input batch, which a frozen :class:`Teacher` converts
to its preprocessing and labels. The loss is

    (1 - alpha) * task(cls_logits, targets) + alpha * distill(dist_logits, teacher_logits)

with ``distill`` soft (``tau**2 * KL(softmax(t / tau) || softmax(s / tau))``, Hinton et al.)
or hard (cross-entropy on the teacher's argmax, DeiT). A student with a distillation token
(timm's ``deit_*_distilled_*``) returns ``(cls, dist)`` logits in training; the task loss
reads the first and the distillation loss the second; any other student uses one set of
logits for both.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F

from trainkit.config.schema import RecipeError
from trainkit.config.recipe import DistillCfg, EvalCfg
from trainkit.config.registry import DISTILL_LOSSES
from trainkit.models.hub import LoadedModel, adapted, loaded_ensemble, resolve

log = logging.getLogger("trainkit")

DistillFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]   # (student, teacher, tau) -> loss


@DISTILL_LOSSES.register("soft")
def soft_distillation(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """``tau**2 * KL(p_t || p_s)`` at temperature ``tau``, averaged over the batch.

    The ``tau**2`` keeps the gradient's scale independent of the temperature (Hinton et al. 2015).
    Averaged per sample ("batchmean", the true KL), not per logit as DeiT's code does.
    """
    log_p_s = F.log_softmax(student.float() / tau, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / tau, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * tau * tau


@DISTILL_LOSSES.register("hard")
def hard_distillation(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy against the teacher's top-1 class (DeiT's hard distillation); ``tau`` is unused."""
    return F.cross_entropy(student.float(), teacher.argmax(dim=-1))


# ---------------------------------------------------------------- class mapping

def class_index(teacher: LoadedModel, student_classes: list[str], class_map: str | dict | None,
                what: str) -> torch.Tensor | None:
    """Teacher output column for each student class; None when the outputs already line up."""
    names = teacher.classes
    same_count = teacher.num_classes == len(student_classes)
    if class_map is None:
        if names == list(student_classes) or (names is None and same_count):
            if names is None:
                log.warning("%s does not record class names; assuming its %d outputs are the data's classes in order",
                            what, teacher.num_classes)
            return None
        shown = f"{teacher.num_classes} classes" + (f" ({', '.join(names[:3])}, ...)" if names else "")
        raise RecipeError(f"distill.class_map: required: {what} predicts {shown} but the data has "
                          f"{len(student_classes)} ({', '.join(student_classes[:3])}, ...); set "
                          f"distill.class_map=by_name or a mapping {{data class: teacher class}}")
    mapping = {c: c for c in student_classes} if class_map == "by_name" else dict(class_map)
    unknown = sorted(set(mapping) - set(student_classes))
    if unknown:
        raise RecipeError(f"distill.class_map: {unknown[0]!r} is not a class of the data "
                          f"({', '.join(student_classes[:5])}, ...)")
    index = []
    for cls in student_classes:
        if cls not in mapping:
            raise RecipeError(f"distill.class_map: data class {cls!r} has no teacher class")
        target = mapping[cls]
        if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < teacher.num_classes:
            index.append(target)
        elif names is not None and target in names:
            index.append(names.index(target))
        else:
            raise RecipeError(f"distill.class_map: {cls!r} -> {target!r}: not a class of {what}"
                              + ("" if names else " (it records no names: give an output index)"))
    return torch.tensor(index, dtype=torch.long)


# ---------------------------------------------------------------- the teacher

class LogitCache:
    """Teacher logits keyed by the exact content of each input image.

    Valid only when a sample's input is the same every epoch (no random augmentation):
    the recipe check refuses ``distill.cache_logits`` otherwise. The key is an integer hash
    of the image's float32 bits (exact integer arithmetic, so the same image gives the
    same key whatever batch it sits in); the first epoch fills the cache.
    """

    def __init__(self):
        self.keys = torch.empty(0, dtype=torch.long)
        self.values: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None
        self.hits = self.misses = 0

    def key(self, images: torch.Tensor) -> torch.Tensor:
        bits = images.detach().float().contiguous().flatten(1).view(torch.int32).long()
        if self._weights is None or self._weights.numel() != bits.shape[1] or self._weights.device != bits.device:
            gen = torch.Generator().manual_seed(0x5EED)
            self._weights = torch.randint(1, 2**31 - 1, (bits.shape[1],), generator=gen).to(bits.device)
        return (bits * self._weights).sum(1)   # int64 arithmetic wraps: exact and deterministic

    def lookup(self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        keys = self.key(images)
        if self.values is None:
            found = torch.zeros_like(keys, dtype=torch.bool)
            pos = torch.zeros_like(keys)
        else:
            self.keys = self.keys.to(keys.device)
            pos = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)
            found = self.keys[pos] == keys
        cached = self.values.to(keys.device)[pos[found]] if bool(found.any()) else None
        # Read the hits before inserting the misses: an insert shifts the positions found above.
        if not bool(found.all()):
            fresh = compute(images[~found]).float()
            self._insert(keys[~found], fresh)
            out = torch.empty(len(keys), fresh.shape[1], device=fresh.device)
            out[~found] = fresh
        else:
            out = torch.empty(len(keys), cached.shape[1], device=cached.device)
        if cached is not None:
            out[found] = cached
        hits = int(found.sum())
        self.hits, self.misses = self.hits + hits, self.misses + len(keys) - hits
        return out

    def _insert(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        all_keys = torch.cat([self.keys.to(keys.device), keys])
        all_values = values if self.values is None else torch.cat([self.values.to(values.device), values])
        order = torch.argsort(all_keys, stable=True)
        self.keys, self.values = all_keys[order], all_values[order]


class Teacher(torch.nn.Module):
    """A frozen model that labels the student's batches: eval mode, no gradient, its own preprocessing."""

    def __init__(self, model: torch.nn.Module, index: torch.Tensor | None, cache: LogitCache | None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("index", index, persistent=False)
        self.cache = cache

    def train(self, mode: bool = True) -> "Teacher":
        super().train(mode)
        self.model.eval()   # a teacher never switches to training (BatchNorm statistics, dropout)
        return self

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images).float()
        return logits if self.index is None else logits.index_select(1, self.index)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            return self._logits(images)
        return self.cache.lookup(images, self._logits)


class DistillationLoss(torch.nn.Module):
    """``(1 - alpha) * base + alpha * distill``; called by TrainStep as ``loss(outputs, targets, images)``."""

    takes_inputs = True   # TrainStep passes the student's input batch as a third argument

    def __init__(self, base: Callable, teacher: Teacher, kind: str, alpha: float, tau: float):
        super().__init__()
        self.base, self.teacher, self.alpha, self.tau = base, teacher, alpha, tau
        self.kind, self.distill = kind, DISTILL_LOSSES.get(kind)

    def forward(self, outputs, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        cls_logits, dist_logits = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        task = self.base(cls_logits, targets)
        if self.alpha == 0.0:
            return task
        teacher_logits = self.teacher(images)
        return (1.0 - self.alpha) * task + self.alpha * self.distill(dist_logits, teacher_logits, self.tau)


# ---------------------------------------------------------------- building

def load_teacher(cfg: DistillCfg) -> LoadedModel:
    """The teacher the recipe names: one model, or an ensemble of several."""
    if isinstance(cfg.teacher, str):
        return resolve(cfg.teacher, arch=cfg.teacher_arch)
    members = [resolve(spec, arch=cfg.teacher_arch) for spec in cfg.teacher]
    return loaded_ensemble(f"ensemble of {len(members)}", members, cfg.combine, cfg.weights)


def build_distillation(base: Callable, cfg: DistillCfg, *, student: torch.nn.Module, student_eval: EvalCfg,
                       in_chans: int, classes: list[str], device: torch.device,
                       teacher: LoadedModel | None = None) -> Callable:
    """Wrap the task loss ``base`` for ``distill:``; without a teacher, ``base`` itself.

    ``student_eval`` is the normalisation of the training batches (the recipe's data.eval);
    the teacher's batches are converted from it to the teacher's own preprocessing.
    A student with a distillation token is switched to return ``(cls, dist)`` in training.
    """
    if cfg.teacher is None:
        return base
    loaded = teacher or load_teacher(cfg)
    index = class_index(loaded, list(classes), cfg.class_map, f"distill.teacher {loaded.spec}")
    module = Teacher(adapted(loaded, student_eval, in_chans), index, LogitCache() if cfg.cache_logits else None)
    if hasattr(student, "set_distilled_training"):
        student.set_distilled_training(True)   # timm's distilled ViTs: (cls, dist) logits in train mode
        log.info("distillation: the student's distillation token learns from the teacher")
    log.info("distillation: %s teacher %s (%s), alpha %g%s%s", cfg.kind, loaded.spec, loaded.arch, cfg.alpha,
             f", tau {cfg.tau:g}" if cfg.kind == "soft" else "", ", cached logits" if cfg.cache_logits else "")
    return DistillationLoss(base, module.to(device), cfg.kind, cfg.alpha, cfg.tau)
