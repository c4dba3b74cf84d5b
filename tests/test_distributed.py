"""DDP through torchrun on the CPU (gloo, 2 processes): the global-batch contract, exact
distributed evaluation, rank-0-only writing, and the CPU SyncBatchNorm."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_image_folder
from trainkit.runtime.checkpoint import load_checkpoint
from trainkit.data.loaders import EpochBatches

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(*args, nproc=2, timeout=240, extra=(), check=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *extra,
           *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def python(*args, timeout=240):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    if proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


RECIPE = """\
base: [{root}/recipes/_base/runtime.yaml, {root}/recipes/_base/optim/sgd_cosine.yaml]
model: {{name: smallcnn}}
data: {{name: imagefolder, root: {folder}, holdout_fraction: 0.0, eval: {{size: 8}}}}
optim: {{lr: 0.1, lr_ref_batch: 12}}
schedule: {{epochs: 2}}
train: {{global_batch: 12, precision: fp32, seed: 0, deterministic: true}}
runtime: {{workers: 0, threads: 1, progress: false, log_every_steps: 1}}
"""


def tiny_recipe(folder: Path, out_dir: Path, name: str, *extra: str) -> list[str]:
    """smallcnn on an 8 px ImageFolder: 39 train images, global batch 12 -> 3 steps/epoch x 2 epochs.

    21 test images: an odd count, so 2 ranks hold 11 and 10. Deterministic, fp32, no
    augmentation or dropout (their random draws depend on the per-rank batch shape).
    """
    recipe = folder.parent / "tiny.yaml"
    recipe.write_text(RECIPE.format(root=ROOT, folder=folder))
    return ["train.py", recipe, f"runtime.out_dir={out_dir}", f"runtime.run_name={name}", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    folder = make_image_folder(base / "folder", per_class=(13, 7), size=8)
    return base, folder


def assert_same_weights(a: dict, b: dict, rtol=1e-5, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    base, folder = runs
    python(*tiny_recipe(folder, base, "one"))
    proc = torchrun(*tiny_recipe(folder, base, "two", "runtime.sync_batchnorm=true"))
    one, two = load_checkpoint(base / "one" / "last.pt"), load_checkpoint(base / "two" / "last.pt")
    assert one["plan"]["accum_steps"] == two["plan"]["accum_steps"] == 1
    assert (one["plan"]["per_device_batch"], two["plan"]["per_device_batch"]) == (12, 6)
    assert one["train_step"]["optimizer_steps"] == two["train_step"]["optimizer_steps"] == 6
    assert_same_weights(one["model"], two["model"])

    # The plan line, printed once (rank 0 logs; other ranks only warn).
    plan_lines = [line for line in proc.stdout.splitlines() if line.startswith("plan:")]
    assert plan_lines == ["plan: world 2 x per-device batch 6 x accum 1 = global batch 12; effective lr 0.1; "
                          "fp32 on cpu; 3 steps/epoch x 2 epochs; in-memory data"], proc.stdout
    # Only rank 0 wrote: TensorBoard files of one process (events.out.tfevents.<time>.<host>.<pid>.<n>: the
    # scalars' file and the hparams' file), one metrics row per epoch, test metrics over all 21 images.
    events = list((base / "two" / "tb").glob("events.*"))
    assert events and len({path.name.split(".")[-2] for path in events}) == 1, events
    assert len((base / "two" / "metrics.jsonl").read_text().splitlines()) == 2
    summary = json.loads((base / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["samples"] == 21


def test_distributed_evaluation_counts_each_sample_once_and_equals_one_process(runs):
    base, folder = runs
    run_dir = base / "one"
    if not (run_dir / "last.pt").exists():
        python(*tiny_recipe(folder, base, "one"))
    python("evaluate.py", run_dir, "--out", base / "eval1")
    torchrun("evaluate.py", run_dir, "--out", base / "eval2")
    one = json.loads((base / "eval1" / "metrics.json").read_text())["metrics"]
    two = json.loads((base / "eval2" / "metrics.json").read_text())["metrics"]
    assert one["samples"] == two["samples"] == 21          # odd: 11 + 10, no padding, no duplicates
    assert one["confusion"] == two["confusion"]
    assert one["top1"] == two["top1"] and one["top5"] == two["top5"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)


@pytest.mark.parametrize("n, world", [(21, 2), (7, 3), (2, 4)])
def test_eval_shards_cover_every_index_exactly_once(n, world):
    seen = []
    for rank in range(world):
        seen += [i for batch in EpochBatches(n, 4, train=False, drop_last=False, seed=0, rank=rank, world=world)
                 for i, _ in batch]
    assert sorted(seen) == list(range(n))


def test_train_shards_of_one_step_are_the_one_process_batch():
    """Rank r takes order[r::world]: step s of any world size covers order[s*G:(s+1)*G]."""
    one = [i for i, _ in next(iter(EpochBatches(39, 12, train=True, drop_last=True, seed=3)))]
    two = [i for rank in range(2) for i, _ in
           next(iter(EpochBatches(39, 6, train=True, drop_last=True, seed=3, rank=rank, world=2)))]
    assert sorted(one) == sorted(two)


def test_cpu_sync_batchnorm_without_a_process_group_is_batchnorm():
    from trainkit.runtime.distributed import CpuSyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    synced = convert_sync_batchnorm(copy.deepcopy(net), torch.device("cpu"))   # converts in place, as torch does
    assert isinstance(synced[1], CpuSyncBatchNorm) and synced.state_dict().keys() == net.state_dict().keys()
    x = torch.randn(5, 3, 6, 6)
    torch.testing.assert_close(synced(x), net(x))


def _sync_bn_rank(rank: int, world: int, store: str, x: torch.Tensor, grad_out: torch.Tensor, out: str) -> None:
    """One rank of the bf16 SyncBatchNorm comparison: its shard, under autocast, forward and backward."""
    import torch.distributed as tdist
    from trainkit.runtime.distributed import CpuSyncBatchNorm

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    bn = CpuSyncBatchNorm(x.shape[1]).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn(x.chunk(world)[rank])
    (y.float() * grad_out.chunk(world)[rank]).sum().backward()
    torch.save({"y": y.detach().float(), "weight_grad": bn.weight.grad, "running_var": bn.running_var,
                "running_mean": bn.running_mean}, f"{out}/{rank}.pt")
    tdist.destroy_process_group()


def test_cpu_sync_batchnorm_under_bf16_reduces_statistics_in_fp32(tmp_path):
    """Two gloo ranks under bf16 autocast against an fp32 BatchNorm over the whole batch: the
    statistics (sums, sums of squares, count) are reduced in fp32, so the errors are no worse
    than torch's own single-process BatchNorm on the same bf16 input (a bf16 reduction was
    2-3x worse on the output and 1000x on running_var)."""
    world = 2
    gen = torch.Generator().manual_seed(0)
    # An offset mean, as after a ReLU: bf16 sums of thousands of such values lose the low bits.
    x = (3.0 + 2.0 * torch.randn(32, 8, 16, 16, generator=gen)).bfloat16()
    grad_out = torch.randn(x.shape, generator=gen)
    torch.multiprocessing.spawn(_sync_bn_rank, args=(world, str(tmp_path / "store"), x, grad_out, str(tmp_path)),
                                nprocs=world)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(world)]
    ours = {"y": torch.cat([r["y"] for r in ranks]), "weight_grad": sum(r["weight_grad"] for r in ranks),
            "running_var": ranks[0]["running_var"], "running_mean": ranks[0]["running_mean"]}

    def batchnorm(inputs: torch.Tensor, bf16: bool) -> dict:
        bn = torch.nn.BatchNorm2d(x.shape[1]).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = bn(inputs)
        (y.float() * grad_out).sum().backward()
        return {"y": y.detach().float(), "weight_grad": bn.weight.grad, "running_var": bn.running_var,
                "running_mean": bn.running_mean}

    exact = batchnorm(x.float(), bf16=False)          # fp32 full-batch BatchNorm on the same values
    torch_bf16 = batchnorm(x, bf16=True)              # torch's BatchNorm on the bf16 input
    for key in ("y", "weight_grad", "running_var", "running_mean"):
        err = (ours[key] - exact[key]).abs().max().item()
        torch_err = (torch_bf16[key] - exact[key]).abs().max().item()
        assert err <= 1.5 * torch_err + 1e-5, f"{key}: error {err:.2e} vs torch BatchNorm's {torch_err:.2e}"
    assert torch.equal(ranks[0]["running_var"], ranks[1]["running_var"])   # every rank saw the global statistics


def test_ddp_fine_tuning_keeps_frozen_parts_and_unfreezes_on_schedule(runs, tmp_path):
    """DDP with a frozen backbone: frozen weights do not move (no zero-grad weight decay either),
    the head trains, and after unfreeze_after_epochs the backbone trains on both ranks in step."""
    base, folder = runs
    start = tmp_path / "start.pt"
    python("-c", "import timm, torch, trainkit.models.build; torch.manual_seed(1); "
                 f"torch.save(timm.create_model('smallcnn', num_classes=3, in_chans=3).state_dict(), '{start}')")
    before = torch.load(start, weights_only=True)
    common = [f"model.pretrained={start}", "finetune.freeze=backbone", "optim.weight_decay=0.01"]
    torchrun(*tiny_recipe(folder, base, "ft-frozen", *common, "schedule.epochs=1"))
    frozen = load_checkpoint(base / "ft-frozen" / "last.pt")["model"]
    for key, value in before.items():
        if key.startswith("head."):
            assert not torch.equal(value, frozen[key]), f"{key} did not train"
        elif value.is_floating_point() and "running" not in key:
            assert torch.equal(value, frozen[key]), f"frozen {key} changed under DDP"
    torchrun(*tiny_recipe(folder, base, "ft-unfreeze", *common, "finetune.unfreeze_after_epochs=1"))
    after = load_checkpoint(base / "ft-unfreeze" / "last.pt")["model"]
    assert not torch.equal(before["features.0.weight"], after["features.0.weight"])
