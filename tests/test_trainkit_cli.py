"""The one ``trainkit`` command line (issue 26): every subcommand's --help and one real example each, the shared
spellings and overrides anywhere, deprecated spellings, and a timm-format export loaded by plain timm."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import CIFAR_JPEG, SHARED, WEIGHTS, require

from trainkit.commands import ablate, evaluate, predict, prepare, show_augment, soup, sweep, train, tune_loader, zoo
from trainkit.commands.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.limit_train=400", "data.limit_eval=100", "train.global_batch=100", "schedule.epochs=1",
        "train.precision=fp32", "runtime.workers=0", "runtime.threads=1"]


def trainkit(*args, monkeypatch, capsys) -> tuple[int, str, str]:
    """``trainkit ARGS`` in this process: (exit status, stdout, stderr)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", list(sys.argv))   # main() points sys.argv at the subcommand
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as done:     # --help, argparse errors
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_is_declared_and_lists_every_subcommand():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'trainkit = "trainkit.commands.main:main"' in pyproject and "[build-system]" in pyproject
    done = subprocess.run([sys.executable, "-m", "trainkit", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("train", "evaluate", "predict", "sweep", "zoo", "compare", "ablate", "soup", "prepare",
                 "tune-loader", "show-augment", "imbalance-table"):
        assert f"\n    {name} " in done.stdout or f"\n    {name}\n" in done.stdout, name
    assert "torch" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "trainkit", "trian"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "did you mean 'train'?" in bad.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_help_has_a_trainkit_example(name, monkeypatch, capsys):
    code, out, _ = trainkit(name, "--help", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert out.startswith(f"usage: trainkit {name}")
    assert "examples:" in out and f"trainkit {name} " in out.split("examples:")[1]


def test_evaluate_help_names_the_real_report_folders(monkeypatch, capsys):
    _, out, _ = trainkit("evaluate", "--help", monkeypatch=monkeypatch, capsys=capsys)
    flat = " ".join(out.split())
    for folder in ("runs/zoo-eval/", "runs/model-eval/", "runs/ensemble-eval/", "/eval/"):
        assert folder in flat


# ---------------------------------------------------------------- one dialect

RECIPE_COMMANDS = {   # command -> (parse_args, the arguments it needs besides the recipe)
    "train": (train.parse_args, []),
    "sweep": (sweep.parse_args, ["--space", "recipes/sweeps/quickstart.yaml", "--trials", "2"]),
    "ablate": (ablate.parse_args, []),
    "show-augment": (show_augment.parse_args, []),
    "tune-loader": (tune_loader.parse_args, []),
}


@pytest.mark.parametrize("name", list(RECIPE_COMMANDS))
def test_recipe_commands_take_overrides_anywhere_and_the_shared_flags(name, tmp_path):
    parse_args, extra = RECIPE_COMMANDS[name]
    seeds = ["3"] if name == "train" else ["3", "4"]
    flags = ["--data-root", "/data/x", "--out", str(tmp_path / "o")]
    if name != "show-augment":   # it draws one batch on the CPU
        flags += ["--device", "cpu"]
    if name in ("train", "sweep", "ablate"):
        flags += ["--precision", "bf16", "--seeds", *seeds]
    # overrides before the recipe, between flags and after the flags (after a multi-value --seeds too)
    args = parse_args(["optim.lr=0.5", "recipes/quickstart.yaml", *extra, *flags, "schedule.epochs=2"])
    assert args.recipe == "recipes/quickstart.yaml"
    assert "data.root=/data/x" in args.overrides
    assert args.overrides[-2:] == ["optim.lr=0.5", "schedule.epochs=2"]   # explicit ones last: they win
    if name != "show-augment":
        assert "runtime.device=cpu" in args.overrides
    if name == "train":
        assert {"train.seed=3", "train.precision=bf16", f"runtime.out_dir={tmp_path / 'o'}"} <= set(args.overrides)
    if name in ("sweep", "ablate"):
        assert args.seeds == [3, 4] and "train.precision=bf16" in args.overrides
        out = args.table.parent if name == "ablate" else args.out
        assert out == tmp_path / "o"
    if name in ("show-augment", "tune-loader"):
        assert args.out.parent == tmp_path / "o"   # --out is the folder the one output file goes in


@pytest.mark.parametrize("name, parse_args, argv", [
    ("evaluate", evaluate.parse_args, ["zoo:cifar10_resnet20"]),
    ("soup", soup.parse_args, ["runs/a", "runs/b"]),
    ("prepare", prepare.parse_args, []),
])
def test_data_root_and_out_are_spelled_the_same_everywhere(name, parse_args, argv, tmp_path):
    args = parse_args([*argv, "--data-root", "/data/x", "--out", str(tmp_path / "o")])
    assert str(args.data_root if name != "prepare" else args.root) == "/data/x"
    assert (args.out if name != "soup" else args.out.parent) == tmp_path / "o"


def test_other_commands_take_out_as_a_folder(tmp_path):
    assert predict.parse_args(["zoo:x", "a.jpg", "--out", str(tmp_path)]).out == tmp_path / "predictions.csv"
    assert predict.parse_args(["zoo:x", "a.jpg", "--out", str(tmp_path), "--format", "json"]).out == \
        tmp_path / "predictions.json"
    assert zoo.parse_args(["export", "runs/a", "--format", "timm", "--out", str(tmp_path)]).out == tmp_path


def test_train_refuses_several_seeds_in_one_line(monkeypatch, capsys):
    code, _, err = trainkit("train", "recipes/quickstart.yaml", "--seeds", "0", "1", "--print",
                            monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.strip().startswith("error: --seeds: a training run takes one seed")


@pytest.mark.parametrize("parse_args, argv, check", [
    (sweep.parse_args, ["recipes/quickstart.yaml", "--space", "s.yaml", "--trials", "1", "--final-seeds", "5", "6"],
     lambda a: a.seeds == [5, 6]),
    (sweep.parse_args, ["recipes/quickstart.yaml", "--space", "s.yaml", "--trials", "1", "--seed", "7"],
     lambda a: a.sampler_seed == 7),
    (prepare.parse_args, ["in", "out", "--format", "webdataset", "--seed", "3"], lambda a: a.seed == 3),
    (show_augment.parse_args, ["recipes/quickstart.yaml", "--out", "grid.png"], lambda a: a.out == Path("grid.png")),
    (ablate.parse_args, ["recipes/quickstart.yaml", "--out", "a.md", "--runs-dir", "r"],
     lambda a: a.table == Path("a.md") and a.runs_dir == Path("r")),   # two old spellings: two lines
])
def test_old_spellings_work_with_one_deprecation_line_each(parse_args, argv, check, capsys):
    assert check(parse_args(argv))
    err = capsys.readouterr().err.strip().splitlines()
    old = sum(a in ("--final-seeds", "--seed", "--runs-dir") or a.endswith((".png", ".md")) for a in argv)
    assert len(err) == old and all(e.startswith("warning: ") and "deprecated" in e for e in err)


# ---------------------------------------------------------------- one real example per subcommand

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """``trainkit train`` as a user types it: the recipe, flags, then overrides after the flags."""
    from trainkit.data.sources import debian_fashion_mnist_dir
    if debian_fashion_mnist_dir() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path_factory.mktemp("runs")
    done = subprocess.run([sys.executable, "-m", "trainkit", "train", "recipes/quickstart.yaml", "--out", out,
                           "--seeds", "1", "--device", "cpu", *TINY, "runtime.run_name=tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = out / "tiny"
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert (recipe["train"]["seed"], recipe["runtime"]["device"], recipe["schedule"]["epochs"]) == (1, "cpu", 1)
    return run


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory) -> Path:
    """CIFAR-10 JPEG with 3 test images per class (symlinks) and an ImageFolder train/ of one image each."""
    source = require(CIFAR_JPEG) / "test"
    root = tmp_path_factory.mktemp("cifar") / "cifar-subset"
    for cls in sorted(os.listdir(source)):
        names = sorted(os.listdir(source / cls))[:3]
        for split in ("train", "test"):
            (root / split / cls).mkdir(parents=True)
        for name in names:
            (root / "test" / cls / name).symlink_to(source / cls / name)
        (root / "train" / cls / names[0]).symlink_to(source / cls / names[0])
    return root


def test_example_train_evaluate_soup_compare(tiny_run, tmp_path, monkeypatch, capsys):
    code, out, err = trainkit("evaluate", tiny_run, "--split", "val", "--out", tmp_path / "eval", "--workers", "0",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "eval" / "metrics.json").is_file() and "[val]" in out
    code, _, err = trainkit("soup", tiny_run, tiny_run, "--out", tmp_path / "soup", "--workers", "0",
                            monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "soup" / "soup.pt").is_file(), err
    code, out, err = trainkit("compare", tiny_run.parent, "--out", tmp_path / "table", "--no-charts",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "smallcnn" in out and (tmp_path / "table").is_dir(), err


def test_example_evaluate_split_the_data_set_lacks_is_an_error(cifar_subset, monkeypatch, capsys):
    """--split val on a CIFAR card used to evaluate test silently."""
    require(WEIGHTS)
    code, out, err = trainkit("evaluate", "zoo:cifar10_resnet20", "--data-root", cifar_subset, "--split", "val",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "no val split (it has: train, test" in err


def test_example_predict_and_prepare(cifar_subset, tmp_path, monkeypatch, capsys):
    require(WEIGHTS)
    code, _, err = trainkit("predict", "zoo:cifar10_resnet20", cifar_subset / "test", "--out", tmp_path / "p",
                            "--workers", "0", "--topk", "2", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert len((tmp_path / "p" / "predictions.csv").read_text().splitlines()) == 1 + 30
    code, out, err = trainkit("prepare", "--data-root", cifar_subset, "--out", tmp_path / "packed", "--workers", "0",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "packed" / "manifest.json").is_file(), err


def test_example_zoo_list_and_show(monkeypatch, capsys):
    code, out, _ = trainkit("zoo", "list", "lite", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["name", "arch", "data", "set"] and "license" in header and "size" in header
    names = [r.split()[0] for r in rows]
    assert {f"zoo:imagenet_efficientnet_lite{i}" for i in range(3)} <= set(names)
    assert all("lite" in r.lower() for r in rows) and "zoo:cifar10_resnet20" not in names
    code, out, _ = trainkit("zoo", "show", "zoo:cifar10_resnet20", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "architecture: resnet20_cifar" in out and "license: BSD-2-Clause" in out


def test_example_show_augment_tune_loader_imbalance_table(fashion_dir, tmp_path, monkeypatch, capsys):
    code, out, err = trainkit("show-augment", "recipes/quickstart.yaml", "--count", "4", "--out", tmp_path / "aug",
                              "data.limit_train=50", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "aug" / "augment_grid.png").is_file(), err
    code, out, err = trainkit("tune-loader", "recipes/quickstart.yaml", "--workers", "0", "--batch", "32",
                              "--batches", "1", "--repeats", "1", "--out", tmp_path / "tl", "data.limit_train=100",
                              "runtime.threads=1", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "tl" / "quickstart-runtime.yaml").is_file(), err
    code, out, err = trainkit("imbalance-table", "table", "--out", tmp_path / "lt.md",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "lt.md").read_text() == out, err


def test_example_ablate(fashion_dir, tmp_path, monkeypatch, capsys):
    """The base recipe alone for one seed: one real training process."""
    code, out, err = trainkit("ablate", "recipes/quickstart.yaml", "--seeds", "0", "--out", tmp_path / "abl", *TINY,
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "abl" / "ablation.md").is_file() and (tmp_path / "abl" / "00-s0").is_dir(), err


def test_example_sweep(fashion_dir, tmp_path, monkeypatch, capsys):
    """A one-trial sweep: one real training process."""
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {choice: [0.1]}\n")
    code, out, err = trainkit("sweep", "recipes/quickstart.yaml", "--space", space, "--trials", "1", "--sampler",
                              "grid", "--pruner", "none", "--out", tmp_path / "sw", *TINY,
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "sw" / "best_recipe.yaml").is_file(), err


# ---------------------------------------------------------------- honest hub errors and the timm export

def test_offline_timm_source_fails_in_one_line_within_seconds(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9",   # refused at once
           "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_OFFLINE", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainkit", "predict", "timm:resnet18.a1_in1k",
                           str(ROOT / "README.md")], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "cannot be reached" in lines[0] and "zoo:" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    assert seconds < 45   # interpreter, torch and timm start-up included; the Hub's retries took ~53 s alone


def test_timm_export_loads_in_plain_timm_and_predicts_as_trainkit(tmp_path, monkeypatch, capsys):
    """A fine-tuned timm architecture (the zoo's EfficientNet-Lite0 probe on imagenette) exported in timm's
    format; a process importing only timm and torch loads it with 'local-dir:' and timm's own eval transform,
    and gets trainkit's predictions (all ten log-probabilities per image)."""
    photos = require(SHARED / "data" / "imagenette-dev" / "val")
    try:
        from trainkit.zoo.fetch import fetch_weights
        from trainkit.zoo.cards import load_card
        fetch_weights(load_card("imagenet_efficientnet_lite0"))
    except Exception as err:  # noqa: BLE001 - the base weights come from a pip package that may be absent
        pytest.skip(f"EfficientNet-Lite0 base weights unavailable: {err}")
    out = tmp_path / "lite0-probe"
    code, text, err = trainkit("zoo", "export", "zoo:imagenette_dev_lite0_probe", "--format", "timm", "--out", out,
                               monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and config["num_classes"] == 10
    assert config["label_names"][0] == "n01440764" and config["label_descriptions"]["n01440764"].startswith("tench")
    pre = config["pretrained_cfg"]
    assert (pre["input_size"], pre["crop_pct"], pre["interpolation"], pre["mean"]) == \
        ([3, 224, 224], 1.0, "bilinear", [0.5, 0.5, 0.5])
    assert (out / "model.safetensors").is_file() and "timm.create_model('local-dir:" in (out / "README.md").read_text()
    files = [str(photos / c / sorted(os.listdir(photos / c))[i]) for c in sorted(os.listdir(photos)) for i in (0,)]
    script = (
        "import json, sys\nimport timm, torch\nfrom PIL import Image\n"
        "model = timm.create_model('local-dir:' + sys.argv[1], pretrained=True).eval()\n"
        "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))\n"
        "with torch.no_grad():\n"
        "    x = torch.stack([transform(Image.open(f).convert('RGB')) for f in json.loads(sys.argv[2])])\n"
        "    logp = model(x).log_softmax(-1)\n"
        "print(json.dumps({'labels': model.pretrained_cfg['label_names'], 'logp': logp.tolist(),\n"
        "                  'trainkit': sorted(m for m in sys.modules if m.startswith('trainkit'))}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script, str(out), json.dumps(files)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    plain = json.loads(done.stdout)
    assert plain["trainkit"] == []
    from trainkit.eval.predict import predict as trainkit_predict
    ours = trainkit_predict("zoo:imagenette_dev_lite0_probe", files, topk=10, workers=0)
    for pred, logp in zip(ours, plain["logp"]):
        timm_order = sorted(range(10), key=lambda i: -logp[i])
        assert [plain["labels"][i] for i in timm_order[:3]] == pred.labels[:3]
        ours_logp = {label: math.log(max(p, 1e-30)) for label, p in zip(pred.labels, pred.probs)}
        for i, label in enumerate(plain["labels"]):
            if logp[i] > -15:   # below that float32 softmax rounding dominates
                assert ours_logp[label] == pytest.approx(logp[i], abs=2e-3)


def test_trainkit_only_architecture_says_so_instead_of_exporting(tmp_path, monkeypatch, capsys):
    require(WEIGHTS)
    code, _, err = trainkit("zoo", "export", "zoo:cifar10_resnet20", "--format", "timm", "--out", tmp_path / "x",
                            monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and not (tmp_path / "x").exists()
    assert err.strip() == ("error: zoo:cifar10_resnet20: architecture 'resnet20_cifar' exists only in trainkit, so "
                           "plain timm cannot build it; export it with --format onnx (safetensors + ONNX) instead")


def test_push_offline_is_one_line(tmp_path, monkeypatch):
    from trainkit.runtime.checkpoint import CheckpointError
    from trainkit.zoo.timm_export import push_folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set, so nothing can be uploaded"):
        push_folder(tmp_path, "me/model")


# ---------------------------------------------------------------- progress, class names, hparams

def test_decode_shows_a_bar_with_rate_and_eta(image_folder, capsys):
    from trainkit.config.recipe import DataCfg, EvalCfg
    from trainkit.data.loaders import decode_split
    from trainkit.data.sources import imagefolder
    from trainkit.data.transforms import eval_transform
    split = imagefolder(DataCfg(name="imagefolder", root=str(image_folder))).splits["train"]
    images, targets, skipped = decode_split(split, eval_transform(EvalCfg(size=16, crop_pct=1.0)), 16, 3, "error",
                                            0, show_progress=True)
    assert images.shape == (36, 3, 16, 16) and skipped == 0
    err = capsys.readouterr().err
    assert "decode train (once)" in err and "/36 [" in err and "img/s]" in err   # total, elapsed<ETA, rate


def test_reports_name_imagenet_synsets(tmp_path, monkeypatch):
    from trainkit.eval import pipeline
    drawn = {}
    monkeypatch.setattr(pipeline, "write_confusion_png", lambda path, confusion, labels, title: drawn.update(
        labels=labels))
    metrics = {"top1": 50.0, "confusion": [[1, 1], [0, 2]], "per_class_recall": [50.0, 100.0],
               "per_class_precision": [100.0, 66.7], "per_class_f1": [66.7, 80.0]}
    pipeline.write_report({"model": "m", "split": "val", "classes": ["n01440764", "n03888257"],
                           "metrics": metrics}, tmp_path)
    rows = (tmp_path / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class,name,samples,recall,precision,f1" and rows[1].startswith("n01440764,tench,2,")
    assert rows[2].startswith("n03888257,parachute,2,") and drawn["labels"] == ["tench", "parachute"]
    pipeline.write_report({"model": "m", "split": "val", "classes": ["cat", "dog"], "metrics": metrics}, tmp_path)
    assert (tmp_path / "per_class.csv").read_text().splitlines()[0] == "class,samples,recall,precision,f1"
    assert drawn["labels"] == ["cat", "dog"]


def test_run_has_tensorboard_hparams_and_a_decode_line(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    events = EventAccumulator(str(tiny_run / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["train.seed"].number_value == 1 and hparams["model.name"].string_value == "smallcnn"
    assert hparams["optim.lr"].number_value > 0
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"hparam/top1", "hparam/val_top1", "hparam/loss"} <= {m.name.tag for m in experiment.metric_infos}
    assert "hparam/top1" in events.Tags()["scalars"]
    assert "decoded train once:" in (tiny_run / "train.log").read_text()
