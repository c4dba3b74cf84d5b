"""Model soups: averaging, greedy selection, BatchNorm re-estimation, the soup.py command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers_distill import run_entry, write_checkpoint
from trainkit.runtime.checkpoint import CheckpointError, load_checkpoint
from trainkit.eval.pipeline import evaluate_checkpoint
from trainkit.eval.soup import average_state_dicts, greedy_soup, load_candidates, recompute_bn

ROOT = Path(__file__).resolve().parents[1]


def soup_py(*args):
    return subprocess.run([sys.executable, "soup.py", *map(str, args), "--threads", "1", "--workers", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_average_is_elementwise_mean_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}
    out = average_state_dicts([a, b])
    assert out["w"].tolist() == [2.0, 4.0] and out["n"].item() == 5
    assert all(torch.equal(v, a[k]) for k, v in average_state_dicts([a]).items())   # a soup of one is itself


def test_greedy_adds_only_when_held_out_accuracy_does_not_drop():
    # score = a made-up "accuracy" that rewards weights near 1.0
    states = [{"w": torch.tensor([v])} for v in (0.0, 1.2, 3.0, 0.8)]
    score = lambda s: 100 - 10 * abs(float(s["w"]) - 1.0)   # noqa: E731
    soup, chosen, rows = greedy_soup(states, score)
    assert [r["candidate"] for r in rows] == ["3", "1", "0", "2"]    # sorted by own held-out score: 98, 98, 90, 80
    assert chosen == [3, 1] and soup["w"].item() == pytest.approx(1.0)
    assert [r["added"] for r in rows] == [True, True, False, False]


def test_recompute_bn_estimates_the_data_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(2)).eval()
    data = [(torch.randn(50, 2) * 3 + 5, None) for _ in range(4)]
    assert recompute_bn(net, data, batches=3) == 150
    xs = torch.cat([x for x, _ in data[:3]])
    torch.testing.assert_close(net[0].running_mean, xs.mean(0))
    assert net[0].momentum == 0.1 and not net.training


def test_soup_of_one_checkpoint_equals_it(image_folder, tmp_path, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "a.pt", image_folder, seed=0)
    assert run_entry("soup.py", [ckpt, "--out", tmp_path / "soup.pt", "--workers", "0"], monkeypatch) == 0
    soup = load_checkpoint(tmp_path / "soup.pt")
    original = load_checkpoint(ckpt)
    assert all(torch.equal(v, original["model"][k]) for k, v in soup["model"].items())
    assert soup["soup"]["method"] == "uniform" and soup["ema"] is None
    a = evaluate_checkpoint(ckpt, show_progress=False)["metrics"]
    b = evaluate_checkpoint(tmp_path / "soup.pt", show_progress=False)["metrics"]
    assert (a["top1"], a["loss"]) == (b["top1"], b["loss"])


@pytest.mark.slow   # three soup.py processes on a shared CPU
def test_soup_py_greedy_with_bn_recompute(image_folder, tmp_path):
    paths = [write_checkpoint(tmp_path / f"m{i}.pt", image_folder, seed=i) for i in range(3)]
    proc = soup_py(*paths, "--greedy", "--recompute-bn", "2", "--out", tmp_path / "g.pt")
    assert proc.returncode == 0, proc.stderr
    info = load_checkpoint(tmp_path / "g.pt")["soup"]
    assert info["method"] == "greedy" and 1 <= len(info["chosen"]) <= 3 and len(info["greedy_log"]) == 3
    other = write_checkpoint(tmp_path / "other.pt", image_folder, 0, "model.kwargs={width: 8}")
    bad = soup_py(paths[0], other, "--out", tmp_path / "x.pt")
    assert bad.returncode == 2 and "other parameter names or shapes" in bad.stderr


def test_candidates_of_other_architectures_are_refused(image_folder, tmp_path):
    a = write_checkpoint(tmp_path / "a.pt", image_folder, 0)
    b = write_checkpoint(tmp_path / "b.pt", image_folder, 0, "model.name=resnet20_cifar", "model.kwargs={}")
    with pytest.raises(CheckpointError, match="a soup needs one architecture"):
        load_candidates([str(a), str(b)])
