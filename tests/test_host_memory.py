"""runtime.reuse_freed_memory: after trainkit.runtime.host_memory, a large block freed and allocated again
is reused once the heap has settled (no fresh page faults), where glibc's default maps and faults it in anew
every time."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")

PROBE = """
import json, resource, sys, torch
sys.path.insert(0, {root!r})
from trainkit.runtime.host_memory import reuse_freed_memory
on = reuse_freed_memory() if sys.argv[1] == "on" else False
for _ in range(10):                           # the heap settles (glibc grows it over the first few blocks)
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)                      # 64 MiB of float32, written, freed
print(json.dumps({{"on": on, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}}))
"""


def faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT)), mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    pages = (64 << 20) // 4096                 # one block's 4 KiB pages
    default, reused = faults("off"), faults("on")
    assert reused["on"] is True
    assert default["faults"] > 5 * pages       # glibc's default: each of the 10 blocks faulted in afresh
    assert reused["faults"] < pages            # reused: not even one block's worth in 10


def test_a_cpu_run_logs_it_and_the_key_turns_it_off(tmp_path, monkeypatch):
    from conftest import make_image_folder
    from helpers_distill import run_entry
    from test_distributed import tiny_recipe
    folder = make_image_folder(tmp_path / "f", per_class=(13, 7), size=8)
    for name, extra in (("reuse", []), ("plain", ["runtime.reuse_freed_memory=false"])):
        args = tiny_recipe(folder, tmp_path / "runs", name, "schedule.epochs=1", *extra)[1:]
        assert run_entry("train.py", args, monkeypatch) == 0
    logs = {n: (tmp_path / "runs" / n / "train.log").read_text() for n in ("reuse", "plain")}
    assert "host memory: freed blocks kept for reuse" in logs["reuse"]
    assert "host memory" not in logs["plain"]
