"""Data-parallel training across processes: the world a run lives in, and the few collectives the runner needs.

Launch with ``torchrun --nproc_per_node N -m onebit train ...`` (one process per GPU, or N CPU processes). torchrun
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads
them, picks the backend (``nccl`` for CUDA devices, ``gloo`` otherwise) and the device of the local rank. Started
without torchrun, everything here is a no-op world of one process, so the single-process path has no special cases.

Every helper that communicates is a collective: all ranks must call it, in the same order.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "CpuSyncBatchNorm",
    "World",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "convert_sync_batchnorm",
    "device_for",
    "get_world",
    "init_distributed",
    "is_main",
    "launched_world_size",
    "teardown",
]


@dataclass(frozen=True)
class World:
    """Where this process stands: its global rank, the number of processes, its rank on this node, the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, prints and draws progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_SINGLE = World()
_owned = False  # whether init_distributed created the process group (then teardown destroys it)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when not launched by torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def device_for(name: str, local_rank: int = 0) -> torch.device:
    """The device of a run: ``auto`` is CUDA when present, else CPU; a bare ``cuda`` (or ``auto`` on a GPU machine)
    becomes ``cuda:<local_rank>`` so that each process of a node drives its own GPU. An explicit index is kept."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(device: str = "auto") -> tuple[World, torch.device]:
    """Join the process group torchrun prepared (or stay a world of one) and return the world and the device.

    Args:
        device: the run's device setting (``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...), see :func:`device_for`.

    Returns:
        ``(world, device)``. Under torchrun with ``WORLD_SIZE > 1`` the default process group is initialised with
        ``nccl`` on CUDA and ``gloo`` otherwise (or reused when the caller already initialised one).
    """
    global _owned
    if dist.is_available() and dist.is_initialized():  # the caller set it up: use it as it is
        w = World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())
        return w, device_for(device, w.local_rank)
    world_size = launched_world_size()
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = device_for(device, local_rank)
    if world_size <= 1:
        return _SINGLE, dev
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {missing} are not set; launch with torchrun")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # torch.distributed.nn.functional binds ``group=group.WORLD`` as a default argument when it is first imported.
    # DistributedDataParallel's constructor imports it (through torch._dynamo), i.e. after the group exists, so ten
    # functions' defaults held the default group for the life of the interpreter: destroy_process_group() could
    # not free it, and its gloo threads were torn down during interpreter finalisation, where they aborted the
    # process ("terminate called without an active exception", or a SIGSEGV) after a successful run. Imported
    # now, the defaults bind None (which those functions read as the default group).
    importlib.import_module("torch.distributed.nn.functional")
    dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    _owned = True
    return World(dist.get_rank(), dist.get_world_size(), local_rank, backend), dev


def get_world() -> World:
    """The current world (a world of one when no process group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())
    return _SINGLE


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return get_world().is_main


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        dist.barrier()


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over all ranks in place and return it (unchanged in a single process).

    Reduce sums and counts, never means: a mean of per-rank means is wrong when ranks saw different counts.
    """
    if _active():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; for small things such as a run directory or a summary)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Overwrite every buffer of ``module`` (BN running statistics) with rank ``src``'s values (no-op alone)."""
    if not _active():
        return
    with torch.no_grad():
        for b in module.buffers():
            dist.broadcast(b, src=src)


def teardown() -> None:
    """Leave the process group :func:`init_distributed` created (no-op otherwise); call it in a ``finally``.

    The group is destroyed only after everything holding it is released, so that its backend threads (gloo's
    loops, NCCL's watchdog) are joined here, in order, rather than during interpreter shutdown, where a process
    whose training had succeeded aborted with "terminate called without an active exception":

    * on success every rank first waits at a barrier, so that none tears down while another still communicates;
    * when an exception is leaving the caller, there is no barrier (a failing rank cannot count on the others
      reaching one; the coordinated stops, divergence and Ctrl-C, already met at a barrier before raising), and
      the local variables of the frames it left (the runner and its DistributedDataParallel wrapper, whose
      reducer holds the group) are cleared: the exception, its message and its traceback stay intact;
    * then the garbage collector frees the cycles among those objects and the group is destroyed.
    """
    global _owned
    if not _owned:
        return
    _owned = False
    if not (dist.is_available() and dist.is_initialized()):
        return
    failing = _release_failed_frames(sys._getframe(1))
    try:
        if not failing:
            dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def _release_failed_frames(caller: FrameType) -> bool:
    """Whether an exception is propagating through ``caller`` (a ``finally`` block of it is running); if so, clear
    the local variables of the finished frames below ``caller`` that the exception's traceback keeps alive."""
    exc = sys.exc_info()[1]
    tb: TracebackType | None = exc.__traceback__ if exc is not None else None
    if tb is None or tb.tb_frame is not caller:  # no exception, or one the caller is handling from elsewhere
        return False
    if tb.tb_next is not None:
        traceback.clear_frames(tb.tb_next)
    return True


# ------------------------------------------------------------------------------------------------------ SyncBN
class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the backward sums the incoming gradients over ranks, which is the gradient
    of the sum of every rank's loss with respect to this rank's contribution."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class CpuSyncBatchNorm(_BatchNorm):
    """Batch normalisation over the global batch of all ranks, on any device and backend (gloo included).

    torch 2.13's ``nn.SyncBatchNorm`` raises "SyncBatchNorm expected input tensor to be on GPU ..." for CPU tensors,
    so CPU runs use this one: in training mode under a process group of more than one rank, the per-channel sum,
    sum of squares and count are all-reduced (in float64, through a differentiable all-reduce) and the batch is
    normalised with the global mean and biased variance; the running statistics take the unbiased global variance,
    as ``nn.BatchNorm`` does. Otherwise it is exactly the ``nn.BatchNorm*d`` it replaced. The parameter and buffer
    names are ``nn.BatchNorm``'s, so checkpoints load into either.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xd = x.double()  # E[x^2] - E[x]^2 cancels badly in float32; the sums are tiny next to the convolutions
        local = torch.cat([xd.sum(dims), (xd * xd).sum(dims), xd.new_tensor([x.numel() // max(c, 1)])])
        stats = _AllReduceSum.apply(local)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xd - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.double().view(shape) + self.bias.double().view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - f).add_(mean.to(self.running_mean.dtype), alpha=f)
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` by a synchronised one: ``nn.SyncBatchNorm`` on CUDA (torch's, NCCL),
    :class:`CpuSyncBatchNorm` elsewhere. Returns the (possibly new) root module; state-dict keys are unchanged."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module, device)


def _convert_cpu(module: nn.Module, device: torch.device) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, CpuSyncBatchNorm | nn.SyncBatchNorm):
        out = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, device=device
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        new = _convert_cpu(child, device)
        if new is not child:
            out.add_module(name, new)
    return out
