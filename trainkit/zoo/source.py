"""The ``zoo:`` model source of the hub: a model card (or an ensemble card) as a LoadedModel.

Registered in :data:`trainkit.config.registry.MODEL_SOURCES`, which imports this module the first
time the hub is asked for a ``zoo:`` spec; the hub itself does not import the zoo.
"""

from __future__ import annotations

import timm
import torch

from trainkit.config.recipe import DataCfg
from trainkit.config.registry import MODEL_SOURCES
from trainkit.models.hub import LoadedModel, Want, expect, load_pretrained, loaded_ensemble, resolve
from trainkit.models.weights import load_mapped, read_state_dict
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.zoo import cards
from trainkit.zoo.fetch import fetch_weights


@MODEL_SOURCES.register("zoo")
def _from_zoo(card_id: str, want: Want) -> LoadedModel:
    if cards.ensemble_card_path(card_id).is_file():
        card = cards.load_ensemble_card(card_id)
        expect(want, "ensemble", f"model.pretrained=zoo:{card_id} is an ensemble card, not one model's weights")
        members = [resolve(m) for m in card.members]
        return loaded_ensemble(f"zoo:{card_id}", members, card.combine, card.weights)
    card = cards.load_card(card_id)
    expect(want, card.architecture, f"model.pretrained=zoo:{card_id} holds {card.architecture} weights but "
                                     f"model.name is {want.expect_arch}; set model.name={card.architecture}")
    return loaded_card(card)


def overlay(model: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Replace some of ``model``'s tensors; each must be one of its own, of the same shape (else one line)."""
    own = model.state_dict()
    for key, value in tensors.items():
        if key not in own or own[key].shape != value.shape:
            found = f"shape {tuple(own[key].shape)}" if key in own else "no such tensor"
            raise CheckpointError(f"{what}: weights tensor {key} {tuple(value.shape)} does not fit "
                                  f"{type(model).__name__} ({found})")
    model.load_state_dict({**own, **tensors})


def loaded_card(card: cards.ModelCard) -> LoadedModel:
    """The card's architecture with its verified weights, mapped by its key_map, and the card's facts."""
    model = timm.create_model(card.architecture, num_classes=card.num_classes, in_chans=card.in_chans,
                              **card.kwargs)
    what = f"zoo:{card.id}"
    if card.base:   # the base's weights first (fitted as model.pretrained is), then this card's tensors over them
        load_pretrained(model, card.base, card.architecture)
        overlay(model, read_state_dict(fetch_weights(card)), what)
    else:
        load_mapped(model, read_state_dict(fetch_weights(card)), card.source.key_map, what)
    root = str(cards.ROOT / card.dataset.root) if card.dataset.root else None
    # holdout 0: the card's metrics are on the source's own test split, evaluated whole
    data = DataCfg(name=card.dataset.source, root=root, holdout_fraction=0.0, eval=card.eval)
    return LoadedModel(what, card.architecture, model.eval(), card.eval, card.num_classes, card.in_chans,
                       list(card.classes), data, card.dataset.split, class_names=list(card.class_names) or None,
                       info={"checkpoint": what, "epoch": None, "recipe_hash": card.source.recipe_hash})
