"""benchmarks/airbench_side_by_side.py: airbench's table is read right, the record renders both rows, the
ratio and the target verdict, and BENCHMARKS.md and the PNG regenerate byte-identical from the record."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CIFAR_JPEG, ROOT, require

sys.path.insert(0, str(ROOT / "benchmarks"))
import airbench_side_by_side as ab  # noqa: E402
import run  # noqa: E402

STEM = Path(ab.RECIPE).stem   # the default recipe of ours, as its rows name it

# airbench 0.1.8's own table (utils.print_training_details), as its train94 prints it
AIRBENCH_OUT = """decoded JPEGs in 41.3 s
---------------------------------------------------------------------------------------------------
|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
---------------------------------------------------------------------------------------------------
|       0  |      0  |      1.5312  |     0.4766  |   0.5102  |               |            101.2345  |
|          |      1  |      1.1021  |     0.6201  |   0.7021  |               |            203.0000  |
|          |      2  |      0.9001  |     0.7002  |   0.8355  |               |            305.5000  |
|          |   eval  |      0.9001  |     0.7002  |   0.8355  |       0.8974  |            330.1000  |
---------------------------------------------------------------------------------------------------
process wall 380.2 s (dtype torch.bfloat16)"""


def test_airbench_table_is_parsed_with_arrival_times():
    lines = [(10.0 * i, line) for i, line in enumerate(AIRBENCH_OUT.splitlines())]
    res = ab.parse_airbench(lines)
    assert [e["epoch"] for e in res["epochs"]] == [1, 2, 3]
    assert [e["val_top1"] for e in res["epochs"]] == [51.02, 70.21, 83.55]
    assert res["epochs"][0]["wall_s"] == 40.0 and res["top1"] == 89.74 and res["top1_no_tta"] == 83.55
    with pytest.raises(ValueError, match="no final row"):
        ab.parse_airbench(lines[:-3])


def test_a_shortened_smoke_run_scales_the_recipes_epoch_points(tmp_path):
    # model.stem_bias_epochs=3 of 9.9 epochs would be past the end of a 1-epoch smoke run (an error since epoch
    # points are checked): the smoke command carries it scaled, and the recipe then loads
    from trainkit.config.recipe import load_recipe
    cmd = ab.ours_cmd({"recipes": [ab.RECIPE], "epochs": 1.0, "threads": 2}, tmp_path, tmp_path / "runs", ab.RECIPE, 0)
    assert "schedule.epochs=1" in cmd and "model.stem_bias_epochs=0" in cmd
    overrides = [a for a in cmd if "=" in a]
    assert load_recipe(ROOT / ab.RECIPE, overrides).model.stem_bias_epochs == 0


def test_records_are_written_once_every_run_has_ended(monkeypatch, tmp_path):
    """A seed recorded before rewrites a tracked record file: written mid-benchmark, it left the tree dirty and
    every later seed's record was refused. Every run first, then the records."""
    events: list[str] = []
    monkeypatch.setattr(ab, "airbench_available", lambda: None)
    monkeypatch.setattr(ab, "run_airbench", lambda st, data: events.append("airbench") or {"top1": 89.0, "wall_s": 9.0})
    monkeypatch.setattr(ab, "run_ours", lambda st, data, out, recipe, seed: events.append(f"ours {seed}")
                        or {"recipe": recipe, "seed": seed, "top1": 90.0, "wall_s": 6.0})
    monkeypatch.setattr(ab, "record_ours", lambda res, out: events.append(f"record {res['seed']}"))
    adapter = tmp_path / "airbench_cpu.py"
    adapter.write_text("")
    p = argparse.ArgumentParser()
    ab.add_arguments(p)
    args = p.parse_args(["--adapter", str(adapter), "--ours-seeds", "0", "1", "--peer-runs", "1"])
    ab.run_section(args, tmp_path, tmp_path, subset_folder=None)
    assert events == ["airbench", "ours 0", "ours 1", "record 0", "record 1"]


def test_runs_alternate_between_the_sides():
    st = {"airbench_runs": 2, "ours_seeds": [0, 1, 2], "recipes": ["a.yaml"]}
    assert ab.schedule(st) == [("airbench", 0), ("ours", ("a.yaml", 0)), ("airbench", 1), ("ours", ("a.yaml", 1)),
                               ("ours", ("a.yaml", 2))]
    # several recipes: each seed goes through every recipe before the next seed
    st = {"airbench_runs": 1, "ours_seeds": [0, 1], "recipes": ["a.yaml", "b.yaml"]}
    assert ab.schedule(st) == [("airbench", 0), ("ours", ("a.yaml", 0)), ("ours", ("b.yaml", 0)),
                               ("ours", ("a.yaml", 1)), ("ours", ("b.yaml", 1))]


def record(ours_top1: list[float], ours_wall: list[float], fast: tuple[float, float] | None = None) -> dict:
    epochs = [{"epoch": 1, "wall_s": 300.0, "val_top1": 80.0, "train_s": 250.0},
              {"epoch": 2, "wall_s": 1100.0, "val_top1": 88.8, "train_s": 1000.0}]
    airbench = [{"epochs": epochs, "top1": t, "top1_no_tta": 88.8, "own_time_s": 1000.0, "wall_s": w,
                 "precision": "bf16"} for t, w in ((89.7, 1170.0), (89.8, 1150.0))]
    ours = [{"recipe": ab.RECIPE, "seed": i, "top1": t, "wall_s": w, "epochs": 10, "precision": "bf16",
             "channels_last": True, "numerics_probe": None, "train_s": w - 60, "samples": 10000, "recipe_hash": "x"}
            for i, (t, w) in enumerate(zip(ours_top1, ours_wall))]
    recipes = [ab.RECIPE]
    if fast is not None:   # a second recipe of ours in the same run
        recipes.append("recipes/fast.yaml")
        ours.append({**ours[0], "recipe": "recipes/fast.yaml", "top1": fast[0], "wall_s": fast[1]})
    st = {"adapter": "a", "recipes": recipes, "per_class": None, "epochs": None, "ours_seeds": [0, 1],
          "airbench_runs": 2, "precision": "bf16", "threads": 2}
    return {"settings": st, "runs": {"airbench": airbench, "ours": ours}, "data": "cifar10-jpeg",
            "commands": {"airbench": "AB_DTYPE=bf16 python a", "ours": "python train.py"}, "section": "airbench",
            "command": "python benchmarks/airbench_side_by_side.py --root R", "repeats": 1, "repeats_planned": 1,
            "machine": "AMD EPYC, 2 cores", "measured": "2026-12-06 03:00 UTC", "git_commit": "0" * 40,
            "load_average": [0.5, 0.6]}


@pytest.mark.parametrize("ours_top1, ours_wall, verdict, ratio", [
    ([89.9, 89.8], [800.0, 780.0], "met", "0.68x"),
    ([89.9, 89.8], [1000.0, 1000.0], "not met", "0.86x"),
    ([88.0, 88.2], [700.0, 700.0], "not met", "0.60x"),
])
def test_record_renders_both_rows_the_ratio_and_the_verdict_and_regenerates_identically(
        tmp_path, ours_top1, ours_wall, verdict, ratio):
    results = tmp_path / "results"
    results.mkdir()
    (results / "airbench.json").write_text(json.dumps(record(ours_top1, ours_wall)))
    text = run.render(results, tmp_path / "B.md")
    section = text.split("## Side by side with airbench94")[1].split("\n## ")[0]
    assert "| airbench94 (6-view TTA) | 2 | 89.75% | 0.07 | 89.70% | 1160 |" in section
    assert f"| ours, `{STEM}` | 2 | {sum(ours_top1) / 2:.2f}% |" in section
    assert f"wall time: {ratio}" in section and f"<= 0.7x its wall time): {verdict}." in section
    png = (results / "airbench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert run.render(results, tmp_path / "B2.md") == text and (results / "airbench.png").read_bytes() == png


def test_each_recipe_of_ours_gets_its_row_ratio_and_verdict(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "airbench.json").write_text(json.dumps(record([90.0, 89.9], [1000.0, 1000.0], fast=(89.9, 760.0))))
    section = run.render(results, tmp_path / "B.md").split("## Side by side with airbench94")[1].split("\n## ")[0]
    assert f"| ours, `{STEM}` | 2 | 89.95% |" in section and "| 0.86x |" in section
    assert "| ours, `fast` | 1 | 89.90% | 0.00 | 89.90% | 760 | 0.66x |" in section
    verdicts = [line for line in section.splitlines() if "primary target" in line]
    assert len(verdicts) == 2 and verdicts[0].endswith("not met.") and verdicts[1].startswith("`fast`") \
        and verdicts[1].endswith(": met.")


def test_a_record_from_before_several_recipes_still_renders(tmp_path):
    old = record([90.5, 90.4], [880.0, 890.0])
    old["settings"] = {**{k: v for k, v in old["settings"].items() if k != "recipes"}, "recipe": ab.RECIPE}
    for r in old["runs"]["ours"]:
        del r["recipe"]
    results = tmp_path / "results"
    results.mkdir()
    (results / "airbench.json").write_text(json.dumps(old))
    assert f"| ours, `{STEM}` | 2 | 90.45% |" in run.render(results, tmp_path / "B.md")


def test_committed_airbench_png_matches_its_record_when_there_is_one(tmp_path):
    record_path = run.RESULTS / "airbench.json"
    if not record_path.is_file():
        pytest.skip("no airbench record committed yet (the side-by-side run is long: see BENCHMARKS.md)")
    ab.plot(json.loads(record_path.read_text()), tmp_path / "airbench.png")
    assert (tmp_path / "airbench.png").read_bytes() == (run.RESULTS / "airbench.png").read_bytes()


@pytest.mark.slow
def test_smoke_mode_runs_both_sides_and_writes_the_record(tmp_path):
    root = require(CIFAR_JPEG)
    why = ab.airbench_available()
    if why and os.environ.get("CI") == "true":   # .ci/run installs requirements-bench.txt: the real peer runs there
        pytest.fail(f"CI=true: {why}")
    if why:
        pytest.skip(why)
    out = subprocess.run([sys.executable, "benchmarks/airbench_side_by_side.py", "--root", str(root),
                          "--per-class", "110", "--epochs", "1", "--ours-seeds", "0", "--peer-runs", "1",
                          "--results", str(tmp_path), "--out", str(tmp_path / "B.md")],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "airbench.json").read_text())
    assert len(res["runs"]["airbench"]) == 1 and len(res["runs"]["ours"]) == 1
    assert res["runs"]["ours"][0]["samples"] == 1100 and res["git_commit"] and res["machine"]
    assert f"| ours, `{STEM}` | 1 |" in (tmp_path / "B.md").read_text()
    assert (tmp_path / "airbench.png").is_file()
