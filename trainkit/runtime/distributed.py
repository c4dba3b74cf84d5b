"""Process-group setup for torchrun (gloo on CPU, NCCL on CUDA) and small helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainkit.config.schema import RecipeError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device=cuda but no CUDA device is available (use runtime.device=auto or cpu)")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)   # one device per process
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_choice: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment; join the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)
    device = pick_device(device_choice, info.local_rank)
    if world > 1 and not dist.is_initialized():
        check_restartable()
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = attempt_store(info.rank, world)
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=info.rank, world_size=world)
    return info, device


SHARE_STORE_OFF = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def shares_agent_store() -> bool:
    """Whether torchrun's agents keep one TCP store for every rendezvous round (torch's default)
    rather than starting a fresh one, hosted by the new rank 0 worker, for each round."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def check_restartable() -> None:
    """Refuse, before training, a multi-node torchrun job whose restart would hang.

    With torch's default shared agent store, the store outlives each attempt and still holds the
    failed attempt's keys, so a restarted attempt needs a key prefix that every node agrees on.
    Nothing in the workers' environment is one: TORCHELASTIC_RESTART_COUNT counts each node's own
    restarts, and a membership change does not count as a restart on the other nodes
    (pytorch/pytorch#108158), so the nodes' new workers look for each other under different keys
    and wait forever in init_process_group. With TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 every
    rendezvous round gets a new store on a new port, which is consistent by construction.
    """
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if nodes > 1 and restarts > 0 and shares_agent_store():
        raise RecipeError(f"torchrun over {nodes} nodes with --max-restarts {restarts}: set {SHARE_STORE_OFF}=1 in "
                          "the environment of torchrun on every node (torch's shared rendezvous store keeps the "
                          "failed attempt's keys, and the restarted workers would wait for each other forever) and "
                          "use --rdzv-backend c10d (the static backend has no per-round store); docs/distributed.md")


def attempt_store(rank: int, world: int) -> "dist.Store | None":
    """After a torchrun restart (--max-restarts) on one node, a store whose keys are this attempt's only.

    With the shared agent store (torch's default), the restarted workers share the store with the
    failed attempt, whose keys (the dead peers' addresses) the process group would otherwise read,
    failing with "Gloo connectFullMesh failed ... Connection refused". On one node every worker has
    the same TORCHELASTIC_RESTART_COUNT, so it keys the attempt. Across nodes it does not (see
    check_restartable): there the store is not shared, and env:// starts a fresh one per attempt.
    None: let env:// do it (a first attempt, or a store that is new for every rendezvous round).
    """
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0 or "MASTER_ADDR" not in os.environ or not shares_agent_store():
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world,
                          is_master=False)
    return dist.PrefixStore(f"trainkit/attempt{attempt}", store)


def peer_lost(err: BaseException) -> bool:
    """Whether a collective failed because another process of the job is gone (its node died, or
    torchrun stopped it): gloo and NCCL report it as a RuntimeError naming the broken connection."""
    text = str(err)
    return isinstance(err, RuntimeError) and (
        isinstance(err, getattr(dist, "DistError", ())) or any(s in text for s in PEER_LOST))


PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused",
             "NCCL communicator was aborted", "remote process exited")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_main(obj):
    """Rank 0's ``obj`` on every rank (any picklable value); ``obj`` itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree_any(flags: list[bool], device: torch.device) -> list[bool]:
    """For each flag, whether it is set on any rank (one tiny all-reduce; local values when not distributed).

    Ranks must take the same decision at the same step (stop for SIGTERM, skip a
    non-finite step): a rank that left the loop alone would hang the others in
    their next gradient all-reduce.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [bool(v > 0) for v in t.tolist()]


# ---------------------------------------------------------------- SyncBatchNorm

class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) with a gradient: the gradient of a sum over ranks is the sum of the upstream gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the whole global batch, for gloo/CPU.

    torch's SyncBatchNorm runs only on GPUs (DDP refuses it on CPU modules), so
    CPU runs use this: two differentiable all-reduces per layer (sum, then the
    centred sum of squares: the same two-pass variance as single-process
    BatchNorm). The backward of the all-reduce sums the upstream gradients, so
    after DDP's gradient average the result is the gradient of the global batch.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        # Statistics and normalisation in fp32 whatever the input dtype (bf16 under autocast): a
        # bf16 sum over thousands of values keeps 8 mantissa bits (torch's CUDA SyncBatchNorm and
        # its single-process BatchNorm also reduce in fp32). The output returns to the input dtype.
        out_dtype, x = x.dtype, x.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        totals = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)   # unbiased, as BatchNorm
        return y.to(out_dtype)


def _to_cpu_sync(module: torch.nn.Module) -> torch.nn.Module:
    out = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        out.load_state_dict(module.state_dict())    # weight, bias, running stats, num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_cpu_sync(child))
    return out


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm over all processes: torch's SyncBatchNorm on GPUs, :class:`CpuSyncBatchNorm` elsewhere.

    State-dict keys are unchanged, so checkpoints load into a model with plain BatchNorm.
    """
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_cpu_sync(model)


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The autocast context of a resolved precision (fp32: a no-op)."""
    dtype = AUTOCAST_DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
