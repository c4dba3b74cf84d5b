"""Bad recipe input found by the fuzzer (tests/test_recipe_fuzz.py), each as one named case:
an empty or non-UTF-8 file, 300-character paths, non-finite and out-of-range numbers, and
``train.py --print`` writing nothing. Each is one ``error:`` line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_distill import run_entry

ROOT = Path(__file__).resolve().parents[1]
LONG = "a" * 300


def train_py(args: list, monkeypatch, capsys) -> tuple[int, list[str]]:
    code = run_entry("train.py", [*args, "--print"], monkeypatch)
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_error(code: int, err: list[str], needle: str) -> None:
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


@pytest.mark.parametrize("text, needle", [(b"", "empty recipe"), (b"---\n", "empty recipe"), (b"~\n", "empty recipe"),
                                          (b"\xff\xfe\x00a: 1\n", "not UTF-8"),
                                          (b"model: {name: smallcnn}\n", "data.root: required")])
def test_empty_or_unreadable_recipe_file(text, needle, tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text)
    assert_one_error(*train_py([recipe], monkeypatch, capsys), needle)


@pytest.mark.parametrize("override, needle", [
    (f"data.root={LONG}", "data.root: not a usable path"),
    (f"data.root=/tmp/{LONG}/x", "data.root: not a usable path"),
    (f"model.pretrained={LONG}.pt", "model.pretrained: not a usable path"),
    (f"distill.teacher=[zoo:cifar10_resnet44, {LONG}]", "distill.teacher[1]: not a usable path"),
    (f"runtime.run_name={LONG}", "runtime.run_name: not a usable path"),
    (f"runtime.out_dir=/tmp/{LONG}", "runtime.out_dir: not a usable path"),
])
def test_300_character_paths_are_one_error_line(override, needle, image_folder, monkeypatch, capsys):
    args = ["recipes/cifar10_resnet20.yaml", f"data.root={image_folder}", override]
    assert_one_error(*train_py(args, monkeypatch, capsys), needle)


def test_300_character_base_file_name(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: [{LONG}.yaml]\n")
    assert_one_error(*train_py([recipe], monkeypatch, capsys), "File name too long")


@pytest.mark.parametrize("override, needle", [
    ("optim.lr=.nan", "optim.lr: expected a finite number"), ("optim.lr=.inf", "optim.lr: expected a finite number"),
    ("data.eval.mean=[.nan, 0.5, 0.5]", "data.eval.mean[0]: expected a finite number"),
    (f"train.seed={2**70}", "train.seed: 1180591620717411303424 is out of range"),
    ("runtime.threads=100000", "runtime.threads: at most 1024"),
])
def test_non_finite_and_out_of_range_numbers(override, needle, image_folder, monkeypatch, capsys):
    args = ["recipes/cifar10_resnet20.yaml", f"data.root={image_folder}", override]
    assert_one_error(*train_py(args, monkeypatch, capsys), needle)


def test_print_with_a_torchvision_data_set_writes_nothing(tmp_path, monkeypatch, capsys):
    """quickstart.yaml has data.download: true; --print must neither download nor create folders."""
    root = tmp_path / "data"
    root.mkdir()
    code, err = train_py(["recipes/quickstart.yaml", f"data.root={root}", f"runtime.out_dir={tmp_path / 'runs'}"],
                         monkeypatch, capsys)
    assert_one_error(code, err, "--print never downloads")
    assert sorted(tmp_path.rglob("*")) == [root]              # no FashionMNIST/raw, no runs/
