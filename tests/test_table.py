"""compare.py end to end on fake run folders, plus the table helpers."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit.report.table import collect, format_duration, format_params, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def summary(run: str, recipe: str, model: str, top1: float, dataset: str = "CIFAR10 (data/cifar10)", **extra) -> dict:
    base = {"run": run, "recipe": recipe, "recipe_hash": "abc123", "model": model, "params": 272474, "epochs": 30,
            "top1": top1, "top5": 99.5, "loss": 0.31, "ece": 0.02, "split": "test", "train_time_s": 192.4,
            "img_per_s": 5321.7, "peak_mem_mb": 812.0, "hardware": "NVIDIA H100", "torch": "2.14.1",
            "timm": "1.0", "git_commit": "deadbeef", "dataset": dataset}
    return {**base, **extra}


def write_run(parent: Path, data: dict) -> Path:
    folder = parent / data["run"]
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(data))
    return folder


def compare(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "compare.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_run(root, summary("resnet20-a", "recipes/cifar_resnet20.yaml", "resnet20", 91.5))
    write_run(root, summary("wrn-b", "recipes/cifar_wrn.yaml", "wrn16_4", 94.25, params=2748890, train_time_s=3725,
                             balanced_accuracy=94.134, macro_f1=94.0))
    write_run(root / "nested", summary("mlp-c", "recipes/cifar_mlp.yaml", "mlp", 55.0, train_time_s=42.0))
    return root


def table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ") and not line.startswith(("| # |", "| ---"))]


def test_compare_writes_sorted_tables(runs, tmp_path):
    out = tmp_path / "results" / "table"
    done = compare(runs, "--out", out)
    assert done.returncode == 0, done.stderr
    md = (out / "table.md").read_text()
    assert done.stdout == md
    rows = table_lines(md)
    assert [r.split(" | ")[3] for r in rows] == ["wrn16_4", "resnet20", "mlp"]
    # no recipe.yaml beside these summaries: the variant is unknown ("-"), not "as recipe"
    assert "| 1 | recipes/cifar_wrn.yaml | - | wrn16_4 | 2.75M | 30 | test | 1 | 94.25 | 99.50 | 94.13 | 94.00 | " \
           "1h02m | 5322 |" in rows
    assert "3m12s" in rows[1] and "0.27M" in rows[1] and "42s" in rows[2]
    with open(out / "table.csv", newline="") as f:
        parsed = list(csv.DictReader(f))
    assert [r["run"] for r in parsed] == ["wrn-b", "resnet20-a", "mlp-c"]
    assert float(parsed[0]["top1"]) == 94.25 and int(parsed[0]["params"]) == 2748890
    assert float(parsed[0]["balanced_accuracy"]) == 94.134 and parsed[1]["macro_f1"] == ""
    assert parsed[1]["recipe"] == "recipes/cifar_resnet20.yaml" and float(parsed[2]["train_time_s"]) == 42.0


def test_missing_keys_show_dash_and_datasets_group(tmp_path):
    old = summary("old", "recipes/old.yaml", "resnet8", 80.0, dataset="MNIST")
    for key in ("img_per_s", "train_time_s", "params", "top5"):
        del old[key]
    rows = [old, summary("new", "recipes/new.yaml", "resnet20", 90.0)]
    md = to_markdown(rows)
    assert md.index("### CIFAR10") < md.index("### MNIST")
    assert "| 1 | recipes/old.yaml | - | resnet8 | - | 30 | test | - | 80.00 | - | - | - | - | - |" in md


def test_run_folder_and_parent_counted_once(runs):
    found = collect([runs, runs / "wrn-b"])
    assert sorted(r["run"] for r in found) == ["mlp-c", "resnet20-a", "wrn-b"]


def test_unreadable_summary_skipped_with_warning(runs, tmp_path):
    broken = runs / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    done = compare(runs, "--out", tmp_path / "t")
    assert done.returncode == 0
    assert "warning" in done.stderr and str(broken / "summary.json") in done.stderr
    assert len(table_lines(done.stdout)) == 3


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_user_errors_exit_2_with_one_line(tmp_path, make):
    path = tmp_path / "nowhere"
    if make == "empty":
        path.mkdir()
    done = compare(path, "--out", tmp_path / "t")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]


def test_formatters():
    assert format_params(272474) == "0.27M" and format_params(None) == "-"
    assert format_duration(192.4) == "3m12s" and format_duration(59.6) == "1m00s" and format_duration(7) == "7s"
    assert format_duration(float("nan")) == "-"


def test_compare_writes_charts(tmp_path):
    import json
    import subprocess
    import sys

    for name, top1, loss in (("a", 80.0, [1.0, 0.5]), ("b", 85.5, [0.9, 0.4])):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"run": name, "dataset": "d", "top1": top1,
                                                      "train_time_s": 60.0 * len(name) + top1}))
        (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "train_loss": v, "val_top1": top1 - 1})
                                                   + "\n" for i, v in enumerate(loss)))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "compare.py", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for png in ("accuracy_vs_time-d.png", "curves-d.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


# ---- variants, seed groups and per-data-set charts (synthetic run folders) ---------------------------------------

FASHION, CIFAR = "Fashion-MNIST (Debian package)", "ImageFolder /data/cifar10-jpeg"


def fake_run(parent: Path, name: str, recipe: str, overrides: list[str], top1: float, dataset: str, **extra) -> Path:
    """A run folder as train.py leaves it: the resolved recipe, summary.json and metrics.jsonl."""
    from trainkit.config.recipe import load_recipe, recipe_yaml

    resolved = load_recipe(ROOT / recipe, overrides)
    facts = {"epochs": resolved.schedule.epochs, "world_size": 1, "precision": resolved.train.precision, **extra}
    folder = write_run(parent, summary(name, recipe, resolved.model.name, top1, dataset=dataset, **facts))
    (folder / "recipe.yaml").write_text(recipe_yaml(resolved))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "train_loss": 1.0 / e + top1 / 1000, "val_top1": top1 - 3 + e}) + "\n"
        for e in range(1, 4)))
    return folder


@pytest.fixture
def variant_runs(tmp_path) -> Path:
    """Two data sets; on Fashion-MNIST two seeds of the recipe as it is and one other variant."""
    root = tmp_path / "runs"
    fake_run(root, "q-seed0", "recipes/quickstart.yaml", ["runtime.workers=0"], 90.0, FASHION)
    fake_run(root, "q-seed1", "recipes/quickstart.yaml", ["train.seed=1"], 91.0, FASHION)
    fake_run(root, "q-lr", "recipes/quickstart.yaml", ["optim.lr=0.05", "schedule.epochs=2"], 88.5, FASHION)
    fake_run(root, "c-short", "recipes/cifar10_resnet20.yaml", ["data.root=/data/cifar10-jpeg", "schedule.epochs=1"],
             41.0, CIFAR, split="val", selected_on="last")
    fake_run(root, "c-short-w2", "recipes/cifar10_resnet20.yaml", ["data.root=/data/cifar10-jpeg",
             "schedule.epochs=1"], 42.5, CIFAR, split="val", selected_on="last", world_size=2)
    return root


def test_compare_groups_seeds_names_variants_and_charts_each_data_set(variant_runs, tmp_path):
    out = tmp_path / "out"
    done = compare(variant_runs, "--out", out)
    assert done.returncode == 0, done.stderr
    md = (out / "table.md").read_text()
    fashion = md[md.index(f"### {FASHION}"):md.index(f"### {CIFAR}")]   # data sets in alphabetical order
    cifar = md[md.index(f"### {CIFAR}"):]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table_lines(fashion)]
    # the two seeds of the recipe as it is fold into one row: mean ± sample std, n = 2; the variant stays apart
    assert [(c[0], c[2], c[7], c[8]) for c in cells] == [("1", "as recipe", "2", "90.50 ± 0.71"),
                                                          ("2", "optim.lr=0.05 schedule.epochs=2", "1", "88.50")]
    assert cells[0][5] == "4" and cells[1][5] == "2"          # epochs as each run trained
    # world size differs between the CIFAR runs of one recipe, so it joins the variant; the data root does not
    cifar_cells = [[c.strip() for c in line.strip("|").split("|")] for line in table_lines(cifar)]
    assert [(c[2], c[6]) for c in cifar_cells] == [("schedule.epochs=1 world_size=2", "val (last epoch)"),
                                                   ("schedule.epochs=1 world_size=1", "val (last epoch)")]
    with open(out / "table.csv", newline="") as f:
        grouped = list(csv.DictReader(f))
    assert len(grouped) == 4
    seeds_row = next(r for r in grouped if r["n"] == "2")
    assert seeds_row["runs"] == "q-seed0 q-seed1" and seeds_row["seeds"] == "0 1"
    assert float(seeds_row["top1"]) == 90.5 and abs(float(seeds_row["top1_std"]) - 0.7071) < 1e-3
    with open(out / "runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 5
    # one accuracy chart and one curves chart per data set, named after it
    assert sorted(p.name for p in out.glob("*.png")) == [
        "accuracy_vs_time-cifar10-jpeg.png", "accuracy_vs_time-fashion-mnist.png", "curves-cifar10-jpeg.png",
        "curves-fashion-mnist.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in out.glob("*.png"))


def test_no_group_lists_every_run_with_its_seed(variant_runs, tmp_path):
    done = compare(variant_runs, "--out", tmp_path / "out", "--no-group", "--no-charts")
    assert done.returncode == 0, done.stderr
    fashion = done.stdout[done.stdout.index(f"### {FASHION}"):done.stdout.index(f"### {CIFAR}")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table_lines(fashion)]
    assert [(c[2], c[7], c[8]) for c in cells] == [("train.seed=1", "1", "91.00"), ("train.seed=0", "1", "90.00"),
                                                   ("optim.lr=0.05 schedule.epochs=2", "1", "88.50")]


def test_charts_number_points_like_the_table(variant_runs):
    from trainkit.report.charts import accuracy_vs_time_png, common_variant, legend_label, legend_title, style
    from trainkit.report.records import annotate, group_records
    from trainkit.report.table import by_dataset, collect

    rows = by_dataset(group_records(annotate(collect([variant_runs]))))[FASHION]
    assert [legend_label(r) for r in rows] == ["1. quickstart: as recipe (n=2)",
                                               "2. quickstart: optim.lr=0.05 schedule.epochs=2"]
    # keys every row of a chart shares are said once, in the legend title
    shared = [{**r, "variant": {"schedule.epochs": 2, **r["variant"]}} for r in rows]
    common = common_variant(shared)
    assert common == {"schedule.epochs": 2} and legend_title(common) == "every run here: schedule.epochs=2"
    assert [legend_label(r, common) for r in shared] == ["1. quickstart (n=2)", "2. quickstart: optim.lr=0.05"]
    styles = [tuple(style(n).values()) for n in range(1, 81)]
    assert len(set(styles)) == 80                       # every row of a big table looks different
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in itertools.pairwise(styles))
    fig_path = accuracy_vs_time_png(rows, variant_runs / "a.png", dataset=FASHION, split="test")
    assert fig_path.read_bytes()[:4] == b"\x89PNG"
