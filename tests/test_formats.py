"""Every file the project writes has one typed, versioned format (trainkit.config.formats): writers stamp
format_version, readers upgrade version 0 and refuse a missing field or an unknown version with one line naming
the file and the field; the committed records and benchmark results load; a real run's files carry versions."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit.config import formats
from trainkit.config.formats import FormatError

ROOT = Path(__file__).resolve().parents[1]

# one valid current-version body per format (the fewest fields each declares as required)
MINIMAL = {
    formats.SUMMARY: {"run": "r"},
    formats.PLAN: {"recipe_hash": "h", "world_size": 1, "precision": "fp32", "global_batch": 8, "per_device_batch": 8,
                   "accum_steps": 1, "epochs": 1, "steps_per_epoch": 3},
    formats.METRICS_ROW: {"epoch": 1},
    formats.METRICS: {"metrics": {"top1": 1.0}},
    formats.TRIAL: {"value": 0.5, "best_epoch": 1, "epochs_run": 1, "train_time_s": 1.0},
    formats.RECORD: {"recipe": "recipes/quickstart.yaml", "recipe_hash": "h"},
    formats.BENCHMARK: {"section": "s", "command": "c", "machine": "m", "measured": "d", "git_commit": "g",
                        "repeats": 1, "repeats_planned": 1, "load_average": [0.1, 0.2]},
    formats.PHOTOS_BENCHMARK: {},
    formats.PHOTOS_ROW: {"row": "probe", "top1": 90.0, "epochs": 1, "wall_s": 2.0, "command": "c"},
    formats.FINAL_TEST: {"study": {"best_trial": 0, "trials": 4}},
    formats.TRANSFER_CELL: {"cell": "probe-lite0-card-pcall-s0", "method": "probe", "backbone": "lite0",
                            "resolution": "card", "seed": 0, "wall_s": 60.0, "record": "r.json", "command": "c"},
}


def test_every_format_has_a_minimal_example():
    assert set(MINIMAL) == set(formats.FORMATS)


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=lambda f: f.name)
def test_round_trip_and_one_line_errors(fmt, tmp_path):
    path = formats.write(tmp_path / "f.json", fmt, {**MINIMAL[fmt], "extra_detail": {"kept": True}})
    data = json.loads(path.read_text())
    assert list(data)[0] == "format_version" and data["format_version"] == fmt.version >= 1
    assert formats.read(path, fmt)["extra_detail"] == {"kept": True}, "undeclared keys are kept"
    required = [f.name for f in fmt.schema.__dataclass_fields__.values()
                if f.default is f.default_factory is __import__("dataclasses").MISSING]
    for name in required:
        path.write_text(json.dumps({k: v for k, v in data.items() if k != name}))
        with pytest.raises(FormatError, match=rf"^{path}: missing field '{name}' \({fmt.name}"):
            formats.read(path, fmt)
    path.write_text(json.dumps({**data, "format_version": fmt.version + 1}))
    with pytest.raises(FormatError, match=rf"^{path}: .*format_version {fmt.version + 1} is newer"):
        formats.read(path, fmt)
    path.write_text('{"format_version": 1')   # cut short by a crash
    with pytest.raises(FormatError, match=rf"^{path}: unreadable"):
        formats.read(path, fmt)
    with pytest.raises(FormatError, match="unreadable"):
        formats.read(tmp_path / "missing.json", fmt)


def test_a_wrong_type_names_the_field(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"format_version": 1, "run": "r", "epochs": "three"}))
    with pytest.raises(FormatError, match=rf"^{path}: epochs: expected an integer, got 'three'"):
        formats.read(path, formats.SUMMARY)
    path.write_text(json.dumps({"format_version": 1, "run": "r", "loss": float("nan")}))
    assert formats.read(path, formats.SUMMARY)["loss"] != 0, "a diverged (NaN) loss is a fact, not an error"
    with pytest.raises(FormatError, match="metrics.jsonl:2: missing field 'epoch'"):
        (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"val_top1": 3}\n')
        formats.read_lines(tmp_path / "metrics.jsonl", formats.METRICS_ROW)


def test_version_0_files_are_upgraded_on_read(tmp_path):
    """Files from before formats had versions: a summary without its run name takes its folder's; a record with
    the old "schema": 1 is a record; one with another schema is refused by name."""
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"top1": 50.0, "recipe_hash": "h"}))
    summary = formats.read(run / "summary.json", formats.SUMMARY)
    assert summary["run"] == "old-run" and summary["format_version"] == formats.SUMMARY.version
    committed = next((ROOT / "results" / "records").rglob("*.json"))
    old = {"schema": 1, **{k: v for k, v in json.loads(committed.read_text()).items() if k != "format_version"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    record = formats.read(tmp_path / "old.json", formats.RECORD)
    assert "schema" not in record and record["recipe_hash"] == old["recipe_hash"]
    (tmp_path / "old.json").write_text(json.dumps({**old, "schema": 2}))
    with pytest.raises(FormatError, match=r"old.json: not a result record \(schema 2"):
        formats.read(tmp_path / "old.json", formats.RECORD)


def test_committed_records_and_benchmark_results_load():
    records = sorted((ROOT / "results" / "records").rglob("*.json"))
    assert records
    for path in records:
        assert formats.read(path, formats.RECORD)["format_version"] == formats.RECORD.version
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        formats.read(path, formats.PHOTOS_BENCHMARK if path.stem == "finetune_photos" else formats.BENCHMARK)
    for path in sorted((ROOT / "benchmarks" / "results" / "photos").glob("*.json")):
        formats.read(path, formats.PHOTOS_ROW)


# json.loads/json.load of these files anywhere but the formats module would be a second reader: the remaining
# ones parse other things (data-shard manifests with their own "format" key, a subprocess's stdout line, the
# sweep worker's report pipe, the config.json timm itself writes on export)
OTHER_JSON = {"trainkit/data/streaming.py", "trainkit/data/packed.py", "trainkit/sweep/study.py",
              "trainkit/zoo/timm_export.py",
              "benchmarks/streaming_data.py", "benchmarks/run.py", "benchmarks/packed_data.py"}


def test_no_other_module_parses_the_project_files():
    found = []
    for path in sorted([*(ROOT / "trainkit").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "trainkit/config/formats.py" or rel in OTHER_JSON:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") and \
                    isinstance(node.value, ast.Name) and node.value.id == "json":
                found.append(f"{rel}:{node.lineno}")
    assert not found, f"read these through trainkit.config.formats: {found}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    done = subprocess.run([sys.executable, "train.py", "recipes/quickstart.yaml", "data.limit_train=256",
                           "data.limit_eval=128", "schedule.epochs=1", f"runtime.out_dir={out}", "runtime.run_name=t",
                           "runtime.workers=0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "fashion" in done.stderr.lower() and "not found" in done.stderr.lower():
        pytest.skip("Fashion-MNIST is not installed")
    assert done.returncode == 0, done.stderr
    return out / "t"


def test_a_real_run_writes_versioned_files(tiny_run, tmp_path):
    summary = formats.read(tiny_run / "summary.json", formats.SUMMARY)
    plan = formats.read(tiny_run / "plan.json", formats.PLAN)
    rows = formats.read_lines(tiny_run / "metrics.jsonl", formats.METRICS_ROW)
    assert summary["recipe_hash"] == plan["recipe_hash"] and rows[-1]["epoch"] == 1
    for name in ("summary.json", "plan.json"):
        assert json.loads((tiny_run / name).read_text())["format_version"] >= 1
    # a summary from a newer trainkit: compare.py skips it with one warning naming the file, no traceback
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "summary.json").write_text(json.dumps({**summary, "format_version": 99}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(tiny_run), str(newer), "--out",
                           str(tmp_path / "table"), "--no-charts"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{newer / 'summary.json'}: summary.json format_version 99 is newer" in done.stderr
    assert "Traceback" not in done.stderr
    assert len((tmp_path / "table" / "runs.csv").read_text().strip().splitlines()) == 2, "the one readable run"
