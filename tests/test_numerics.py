"""train.precision: amp and runtime.channels_last: auto (trainkit.train.numerics): the start-up probe
picks the faster option, explicit settings are obeyed, and a resumed run keeps its decision."""

from __future__ import annotations

import json

import pytest
import torch

from helpers_distill import run_entry
from trainkit.config.recipe import load_recipe, recipe_hash
from trainkit.runtime.checkpoint import load_checkpoint
from trainkit.train import numerics
from trainkit.train.numerics import StepTimer, candidates, decide

CPU = torch.device("cpu")


def recipe(*overrides: str):
    return load_recipe("recipes/quickstart.yaml", list(overrides))


def stub(figures: dict[str, float], calls: list | None = None):
    """A step timer whose img/s per precision is fixed: the probe's only input."""
    def measure(precision: str, channels_last: bool) -> float:
        if calls is not None:
            calls.append((precision, channels_last))
        return figures[precision] + (1.0 if channels_last else 0.0)
    return measure


@pytest.mark.parametrize("figures, expected", [({"bf16": 100.0, "fp32": 120.0}, "fp32"),
                                               ({"bf16": 130.0, "fp32": 100.0}, "bf16")])
def test_probe_picks_the_faster_of_two_step_timings(figures, expected):
    calls: list = []
    got = decide(recipe("train.precision=amp", "runtime.channels_last=false"), CPU, measure=stub(figures, calls))
    assert (got.precision, got.channels_last, got.source) == (expected, False, "probe")
    assert got.probe == {"bf16 contiguous": figures["bf16"], "fp32 contiguous": figures["fp32"]}
    # Interleaved rounds: drift on a shared machine hits both candidates.
    assert calls == [("bf16", False), ("fp32", False)] * numerics.PROBE_ROUNDS


def test_probe_reports_the_median_of_its_rounds():
    timings = iter([40.0, 50.0, 1000.0, 60.0, 30.0, 70.0])   # bf16: 40, 1000, 30 -> 40; fp32: 50, 60, 70 -> 60
    got = decide(recipe("train.precision=amp", "runtime.channels_last=true"), CPU, measure=lambda p, cl: next(timings))
    assert got.precision == "fp32" and got.probe == {"bf16 channels_last": 40.0, "fp32 channels_last": 60.0}


def test_a_decisive_round_ends_the_probe_early():
    """bf16 at 2.9x fp32 (a 2-core Xeon with AVX512-BF16, or an AMD EPYC): one round decides, and the slow
    fp32 steps the other rounds would time are not run; a spike in round 1 is not taken for a decision."""
    calls: list = []
    got = decide(recipe("train.precision=amp", "runtime.channels_last=false"), CPU,
                 measure=stub({"bf16": 992.0, "fp32": 343.0}, calls))
    assert got.precision == "bf16" and calls == [("bf16", False), ("fp32", False)]
    # round 1: 992 vs 700 is 1.4x, not decisive; round 2: bf16's slowest (500) is not 1.5 x fp32's fastest (700)
    timings = iter([992.0, 700.0, 500.0, 343.0, 343.0, 343.0])
    got = decide(recipe("train.precision=amp", "runtime.channels_last=true"), CPU, measure=lambda p, cl: next(timings))
    assert got.probe == {"bf16 channels_last": 500.0, "fp32 channels_last": 343.0}


def test_the_probe_leaves_the_runs_random_state_alone():
    """The probe builds a model and runs steps with dropout; how many depends on the machine's timings (a
    decisive round stops early), so it draws from a forked RNG: the run's init is the same however it went."""
    state = torch.get_rng_state()
    got = numerics.decide_for_run(recipe("train.precision=amp", "runtime.channels_last=false"), CPU, batch=8,
                                  num_classes=10, in_chans=1, run_steps=10**6, saved=None, is_main=True)
    assert got.source == "probe" and torch.equal(torch.get_rng_state(), state)


def test_channels_last_auto_is_decided_by_the_same_probe():
    got = decide(recipe("train.precision=bf16", "runtime.channels_last=auto"), CPU, measure=stub({"bf16": 100.0}))
    assert (got.precision, got.channels_last, got.source) == ("bf16", True, "probe")
    assert set(got.probe) == {"bf16 channels_last", "bf16 contiguous"}


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_explicit_precision_is_obeyed_without_a_probe(precision):
    def never(*_):
        raise AssertionError("an explicit precision must not be probed")
    got = decide(recipe(f"train.precision={precision}", "runtime.channels_last=false"), CPU, measure=never)
    assert (got.precision, got.channels_last, got.source, got.probe) == (precision, False, "recipe", None)


def test_amp_on_cuda_is_fp16_without_a_probe():
    assert candidates("amp", True, torch.device("cuda")) == [("fp16", True)]
    assert candidates("amp", False, CPU) == [("bf16", False), ("fp32", False)]


def test_a_run_shorter_than_ten_probes_is_not_probed():
    r = recipe("train.precision=amp", "runtime.channels_last=true")
    steps = numerics.probe_steps(candidates("amp", True, CPU))
    def never(*_):
        raise AssertionError("a short run must not be probed")
    got = decide(r, CPU, measure=never, run_steps=9 * steps)
    assert (got.precision, got.source, got.probe) == ("bf16", "short run", None)
    assert decide(r, CPU, measure=stub({"bf16": 1.0, "fp32": 2.0}), run_steps=10 * steps).source == "probe"


def test_print_leaves_a_probe_choice_undecided_and_the_hash_keeps_amp():
    amp, bf16 = recipe("train.precision=amp"), recipe("train.precision=bf16")
    assert decide(amp, CPU, measure=None) is None
    assert recipe_hash(amp) != recipe_hash(bf16)   # the intent is hashed, not the device's decision


def test_step_timer_runs_the_real_model_step():
    r = recipe("train.precision=amp", "model.name=resnet20_cifar")
    timer = StepTimer(r, batch=4, num_classes=10, in_chans=1, device=CPU, warmup_steps=1)
    before = [p.detach().clone() for p in timer.model.parameters()]
    assert timer("bf16", True) > 0 and timer("fp32", False) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, timer.model.parameters()))   # it really stepped


class StubTimer:
    """Stands in for StepTimer inside train.py: fixed figures, and a count of every probe built."""
    figures = {"bf16": 50.0, "fp32": 100.0}
    built = 0

    def __init__(self, *args, **kwargs):
        type(self).built += 1

    def __call__(self, precision: str, channels_last: bool) -> float:
        return self.figures[precision]


def test_decision_is_recorded_and_reused_on_resume(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(numerics, "StepTimer", StubTimer)
    monkeypatch.setattr(numerics, "PROBE_MAX_RUN_FRACTION", 1e9)   # probe even this tiny run
    args = ["recipes/cifar10_resnet20.yaml", f"data.root={image_folder}", "data.train_size=16", "data.eval.size=16",
            "train.global_batch=6", "train.precision=amp", "schedule.epochs=1", "runtime.workers=0",
            "runtime.threads=1", "runtime.channels_last=false", f"runtime.out_dir={tmp_path}", "runtime.run_name=r"]
    assert run_entry("train.py", args, monkeypatch) == 0
    run_dir = tmp_path / "r"
    expected = {"precision": "fp32", "precision_requested": "amp", "numerics_source": "probe",
                "numerics_probe": {"bf16 contiguous": 50.0, "fp32 contiguous": 100.0}}
    for record in (json.loads((run_dir / "plan.json").read_text()), json.loads((run_dir / "summary.json").read_text()),
                   load_checkpoint(run_dir / "last.pt")["plan"]):
        assert {k: record[k] for k in expected} == expected
    assert "numerics: fp32, contiguous (probe; train.precision=amp)" in (run_dir / "train.log").read_text()
    assert StubTimer.built == 1

    # The machine now favours bf16; the resumed run must keep fp32 and must not probe again.
    monkeypatch.setattr(StubTimer, "figures", {"bf16": 500.0, "fp32": 100.0})
    assert run_entry("train.py", [*args, "--resume", str(run_dir)], monkeypatch) == 0
    plan = json.loads((run_dir / "plan.json").read_text())
    assert (plan["precision"], plan["numerics_source"]) == ("fp32", "checkpoint")
    assert json.loads((run_dir / "summary.json").read_text())["precision"] == "fp32"
    assert StubTimer.built == 1
