"""Ensembles: combine rules, one model = its ensemble, per-member preprocessing, the evaluate.py table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import trainkit.eval.pipeline
from helpers_distill import run_entry, write_checkpoint
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.config.schema import RecipeError
from trainkit.config.registry import COMBINE_RULES as COMBINE
from trainkit.eval.pipeline import evaluate_ensemble
from trainkit.models.ensemble import combine
from trainkit.models.hub import resolve
from trainkit.zoo.cards import ensemble_card_path, ensembles_dir, load_ensemble_card

ROOT = Path(__file__).resolve().parents[1]
X = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 0.0]])


@pytest.mark.parametrize("rule", COMBINE.names())
def test_ensemble_of_one_or_of_copies_predicts_as_the_model(rule):
    weights = (lambda n: [1.0] * n) if rule == "weighted" else (lambda n: None)
    for copies in (1, 3):
        out = combine([X] * copies, rule, weights(copies))
        assert torch.equal(out.argmax(-1), X.argmax(-1))
        if rule != "vote":   # vote's scores are vote shares, not the model's probabilities
            torch.testing.assert_close(out.softmax(-1), X.softmax(-1))


def test_rules_on_hand_made_members():
    a, b = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(combine([a, b], "mean_logits"), torch.tensor([[2.0, 0.5]]))
    torch.testing.assert_close(combine([a, b], "mean_probs").exp(), (a.softmax(-1) + b.softmax(-1)) / 2)
    torch.testing.assert_close(combine([a, b], "weighted", [3.0, 1.0]).exp(),
                               0.75 * a.softmax(-1) + 0.25 * b.softmax(-1))
    c = torch.tensor([[0.0, 0.5]])
    assert combine([a, b, c], "vote").argmax(-1).item() == 1          # two votes beat one confident member
    assert combine([a, b], "vote").argmax(-1).item() == 0             # a tie goes to the higher mean probability
    with pytest.raises(RecipeError, match="weights: one non-negative weight per member"):
        combine([a, b], "weighted", [1.0])
    with pytest.raises(RecipeError, match="give them exactly when combine=weighted"):
        combine([a, b], "mean_logits", [1.0, 2.0])


@pytest.fixture
def checkpoints(image_folder, tmp_path):
    return [write_checkpoint(tmp_path / f"m{i}.pt", image_folder, seed=i) for i in range(2)]


def test_ensemble_of_identical_copies_equals_the_model_on_real_images(checkpoints):
    member = resolve(str(checkpoints[0]))
    for rule in ("mean_logits", "mean_probs"):
        rows = evaluate_ensemble([member, resolve(str(checkpoints[0]))], rule, None, show_progress=False)["rows"]
        assert rows[0]["top1"] == rows[1]["top1"] == rows[2]["top1"] and rows[2]["samples"] == 18
        assert rows[2]["confusion"] == rows[0]["confusion"]
        assert rows[2]["loss"] == pytest.approx(rows[0]["loss"], rel=1e-5)
        assert rows[2]["ece"] == pytest.approx(rows[0]["ece"], abs=1e-6)


def test_each_preprocessing_loads_the_split_once(checkpoints, monkeypatch):
    a, b = resolve(str(checkpoints[0])), resolve(str(checkpoints[1]))
    c = dataclasses.replace(resolve(str(checkpoints[1])), eval=dataclasses.replace(b.eval, size=12))
    built = []
    real = trainkit.eval.pipeline.make_loader
    monkeypatch.setattr(trainkit.eval.pipeline, "make_loader", lambda *args, **kw: built.append(kw["data"].eval.size)
                        or real(*args, **kw))
    report = evaluate_ensemble([a, b, c], "mean_probs", None, show_progress=False)
    assert sorted(built) == [12, 16]
    alone = evaluate_ensemble([c], "mean_probs", None, show_progress=False)["rows"][0]
    assert report["rows"][2]["top1"] == alone["top1"]   # the 12 px member was fed 12 px images


def test_members_with_other_classes_are_refused(image_folder, tmp_path):
    from conftest import make_image_folder

    other = make_image_folder(tmp_path / "other", classes=("cat", "dog", "owl"))
    a = resolve(str(write_checkpoint(tmp_path / "a.pt", image_folder, 0)))
    b = resolve(str(write_checkpoint(tmp_path / "b.pt", other, 0)))
    with pytest.raises(CheckpointError, match="class 2 is 'fox' in .* but 'owl'"):
        evaluate_ensemble([a, b], "mean_logits", None)


def test_evaluate_py_ensemble_table(checkpoints, tmp_path, monkeypatch, capsys):
    rc = run_entry("evaluate.py", ["--ensemble", *checkpoints, checkpoints[0], "--combine", "weighted", "--weights",
                                   "1", "1", "2", "--workers", "0", "--out", tmp_path / "out"], monkeypatch)
    out = capsys.readouterr()
    assert rc == 0, out.err
    report = json.loads((tmp_path / "out" / "ensemble.json").read_text())
    assert [r["name"] for r in report["rows"]][-1] == "ensemble (weighted, weights 1,1,2)"
    assert "| model | arch | top-1 % | top-5 % | loss | ECE | samples |" in out.out
    rc = run_entry("evaluate.py", ["--ensemble", *checkpoints, "--combine", "weighted", "--weights", "1"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0 and "weights" in err


def test_zoo_ensemble_card_loads(cifar_jpeg):
    pytest.importorskip("trainkit.zoo.cards", reason="the model zoo (issue 4) is not in this branch yet")
    if not ensemble_card_path("cifar10_resnet20_32_44").is_file():
        pytest.skip("no ensemble card yet")
    card = load_ensemble_card("cifar10_resnet20_32_44")
    teacher = resolve("zoo:cifar10_resnet20_32_44")
    assert len(card.members) == 3 and teacher.num_classes == 10 and teacher.classes[0] == "airplane"
    x = torch.randn(2, 3, 32, 32)
    members = [resolve(m).model(x) for m in card.members]
    torch.testing.assert_close(teacher.model(x), combine(members, card.combine, card.weights))


@pytest.mark.parametrize("card_id", sorted(p.stem for p in ensembles_dir().glob("*.yaml")))
def test_every_ensemble_card_passes_its_schema(card_id):
    card = load_ensemble_card(card_id)
    zoo = pytest.importorskip("trainkit.zoo.cards", reason="the model zoo (issue 4) is not in this branch")
    for member in card.members:
        if member.startswith("zoo:"):
            zoo.load_card(member.removeprefix("zoo:"))   # each member's card exists and validates
    assert card.metrics.top1 is None or card.metrics.samples and card.metrics.command


@pytest.mark.parametrize("args, needle", [
    (["{ckpt}", "--update-card"], "--update-card does not apply to a run folder or checkpoint"),
    (["{ckpt}", "--combine", "vote"], "--combine does not apply to a run folder or checkpoint"),
    (["{ckpt}", "--arch", "resnet20_cifar"], "--arch does not apply to a run folder or checkpoint"),
    (["zoo:cifar10_resnet20", "--ema"], "--ema does not apply to a zoo model card"),
    (["zoo:cifar10_resnet20", "--checkpoint", "last"], "--checkpoint does not apply to a zoo model card"),
    (["--ensemble", "{ckpt}", "{ckpt}", "--tta"], "--tta does not apply to --ensemble"),
    (["--ensemble", "{ckpt}", "{ckpt}", "--ema"], "--ema does not apply to --ensemble"),
])
def test_evaluate_py_refuses_a_flag_that_does_not_apply(checkpoints, monkeypatch, capsys, args, needle):
    """Every source goes through one pipeline, so a flag it cannot honour is one error line, never ignored."""
    rc = run_entry("evaluate.py", [a.format(ckpt=checkpoints[0]) for a in args], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0 and needle in err, err
