"""BENCHMARKS.md is rendered from the committed result files only, section by section."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_run():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


META = {"command": "python benchmarks/run.py --only X", "repeats": 3, "repeats_planned": 3, "machine": "a test machine",
        "measured": "2026-01-01 00:00 UTC", "git_commit": "0123456789abcdef", "load_average": [0.5, 0.7]}


def write_train(results: Path, ours_wall: list[float]) -> None:
    runs = {"ours train.py, bf16": [{"wall_s": w, "images": 2560, "img_per_s": 2560 / w, "precision": "bf16"}
                                    for w in ours_wall],
            "timm train.py -j 1": [{"wall_s": 128.0, "images": 2560, "img_per_s": 20.0}] * 3,
            "ceiling, bf16": [{"precision": "bf16", "img_per_s": 40.0, "wall_s": 30.0}] * 3}
    res = {**META, "section": "train", "runs": runs, "commands": {k: f"cmd {k}" for k in runs},
           "timm_commit": "aa4b5850c1543fa4", "settings": {"train_images": 2560, "eval_images": 250, "batch": 128,
                                                        "threads": 2, "ceiling_steps": 10}}
    (results / "train.json").write_text(json.dumps(res))


def test_each_section_renders_from_its_own_file_and_missing_ones_say_so(tmp_path):
    run = load_run()
    results = tmp_path / "results"
    results.mkdir()
    write_train(results, [100.0, 80.0, 160.0])
    row = {"name": "data pipeline, CIFAR-10 JPEG 32 px", "ours": 3000.0, "reference": 1000.0,
           "ours_wall_s": 10.0, "reference_wall_s": 30.0, "decode_s": 2.0}
    (results / "data.json").write_text(json.dumps({**META, "section": "data", "rows": [row],
                                                   "commands": {"ours": "o", "reference": "r"}}))
    text = run.render(results, tmp_path / "B.md")
    assert (tmp_path / "B.md").read_text() == text
    # Medians over the repeats: ours 2560 / 100 s = 25.6 img/s; timm 20 -> 1.28x; ceiling 40 -> 0.64x.
    assert "| ours train.py, bf16 | bf16 | 25.6 | 100.0 | 1.28x | 0.64x |" in text
    assert "| data pipeline, CIFAR-10 JPEG 32 px | 3000 | 1000 | 3.00x | 10.0 | 30.0 |" in text
    assert "3 repeat(s). 1-minute load average 0.5 at the start, 0.7 at the end." in text
    assert "`aa4b5850c154`" in text and "- timm train.py -j 1: `cmd timm train.py -j 1`" in text
    assert text.index("`cmd timm train.py -j 1`") < text.index("| side |")   # commands above the table
    assert "Not measured yet" in text.split("## Evaluation")[1].split("##")[0]
    # A re-run of one section replaces that section only.
    write_train(results, [50.0, 50.0, 50.0])
    again = run.render(results, tmp_path / "B.md")
    assert "| ours train.py, bf16 | bf16 | 51.2 | 50.0 | 2.56x | 1.28x |" in again
    assert again.split("## Training")[0] == text.split("## Training")[0]


def test_committed_benchmarks_md_is_exactly_the_rendering_of_the_committed_results(tmp_path):
    run = load_run()
    assert run.render(run.RESULTS, tmp_path / "B.md") == (ROOT / "BENCHMARKS.md").read_text(), \
        "BENCHMARKS.md differs from its result files: run python benchmarks/run.py --render"
