"""tune_loader.py: measures each combination, prints the table, writes a runtime fragment recipes accept."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import make_image_folder
from test_distributed import ENV, ROOT, tiny_recipe
from trainkit.config.recipe import load_recipe


def test_tune_loader_writes_the_fastest_runtime_settings(tmp_path):
    folder = make_image_folder(tmp_path / "folder", per_class=(13, 7), size=8)
    _, recipe, *_ = tiny_recipe(folder, tmp_path, "x")
    out = tmp_path / "tuned.yaml"
    proc = subprocess.run([sys.executable, "tune_loader.py", str(recipe), "--workers", "0", "1", "--prefetch", "2",
                           "--batch", "5", "6", "--batches", "2", "--repeats", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == 2                                  # batch 6 x workers 0 and 1; 5 does not divide 12
    assert proc.stdout.count("skip batch 5") == 1
    best = yaml.safe_load(out.read_text())["runtime"]
    assert set(best) == {"per_device_batch", "workers", "prefetch_factor", "pin_memory"}
    first = table[0].strip("| ").split(" | ")
    assert [int(first[0]), int(first[1])] == [best["per_device_batch"], best["workers"]]
    tuned = tmp_path / "with-tuned.yaml"
    tuned.write_text(f"base: [{recipe}, {out}]\n")
    assert load_recipe(tuned).runtime.workers == best["workers"]
