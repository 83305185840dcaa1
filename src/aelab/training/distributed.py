"""Data-parallel training across processes and machines, launched by ``torchrun``.

Everything here is a no-op in a plain single process: ``torchrun`` sets the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and
``MASTER_ADDR``/``MASTER_PORT``), and :func:`init_from_env` joins the process
group only when ``WORLD_SIZE > 1``. The backend is NCCL when CUDA is present
and the run is not forced onto the CPU, else gloo.

How the pieces fit (see :class:`aelab.training.Trainer`):

- Every rank draws the same per-epoch permutation from the same seed.
  :func:`shard_order` cuts each *global* batch of that permutation into
  ``world_size`` equal parts and keeps this rank's part, so the global batch
  is ``per-rank batch x world_size`` and the samples that form global batch
  ``j`` do not depend on the number of processes.
- The trainer wraps the model in ``DistributedDataParallel`` (gradients are
  averaged across ranks), all-reduces the epoch metrics (sums and counts, so
  the averages are those of one process over the whole epoch), and only rank 0
  writes checkpoints, metrics and progress bars.
- Batch norm can be synchronised (:func:`convert_sync_batchnorm`): on CUDA
  with PyTorch's ``SyncBatchNorm``, on the CPU with :class:`SyncBatchNormCPU`
  (PyTorch's refuses CPU tensors), so statistics are those of the global batch.
- Checkpoints hold the unwrapped module's weights and world-size independent
  state, so a run can be resumed with a different number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = [
    "DistInfo",
    "wrap_step",
    "SyncBatchNormCPU",
    "all_reduce_sums",
    "barrier",
    "convert_sync_batchnorm",
    "info",
    "init_from_env",
    "is_distributed",
    "is_main",
    "rank",
    "revert_sync_batchnorm",
    "shard_order",
    "shard_rows",
    "world_size",
]

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes
    ----------
    rank : int
        Global rank, 0 to ``world_size - 1``.
    world_size : int
        Number of processes.
    local_rank : int
        Rank on this machine (the GPU index it uses).
    backend : str
        ``"nccl"``, ``"gloo"`` or ``"none"`` (a single process).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(device: str | torch.device = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Idempotent: later calls return the group already joined. Without
    ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and the
    process runs alone.

    Parameters
    ----------
    device : str or torch.device
        The device the run asked for. NCCL is used when it is (or ``"auto"``
        resolves to) CUDA; then this process is pinned to GPU ``LOCAL_RANK``.
        Otherwise gloo.

    Returns
    -------
    DistInfo

    Raises
    ------
    ValueError
        When the environment variables are inconsistent, or a machine has
        fewer GPUs than processes.
    """
    if dist.is_available() and dist.is_initialized():
        return info()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo(0, 1, 0, "none")
    if not dist.is_available():
        raise ValueError(
            "WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; "
            "install a PyTorch with distributed support or run a single process"
        )
    missing = [k for k in _ENV_KEYS if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun "
            "(e.g. torchrun --nproc-per-node 2 -m aelab pretrain ...)"
        )
    r, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= r < world:
        raise ValueError(f"RANK={r} is outside [0, WORLD_SIZE={world})")
    name = str(device).lower()
    use_cuda = torch.cuda.is_available() and (name == "auto" or name.startswith("cuda"))
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
    backend = "nccl" if use_cuda else "gloo"
    timeout = timedelta(seconds=_env_int("AELAB_DIST_TIMEOUT", 1800))
    dist.init_process_group(backend=backend, timeout=timeout)
    return DistInfo(r, world, local, backend)


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    """Rank, world size, local rank and backend of this process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo(0, 1, 0, "none")
    return DistInfo(
        dist.get_rank(),
        dist.get_world_size(),
        _env_int("LOCAL_RANK", 0),
        str(dist.get_backend()),
    )


def rank() -> int:
    """Global rank (0 in a single process)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 in a single process)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or a single process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if is_distributed():
        dist.barrier()


def shard_order(
    order: torch.Tensor, batch_size: int, *, drop_last: bool, rank: int, world_size: int
) -> tuple[torch.Tensor, int]:
    """This rank's share of every global batch of ``order``.

    Global batch ``j`` is ``order[j * batch_size : (j + 1) * batch_size]``; rank
    ``r`` keeps its ``r``-th of ``world_size`` consecutive, equal parts (a
    ragged last batch is cut into parts that differ by at most one).

    Parameters
    ----------
    order : torch.Tensor of shape (n_samples,), int64
        The epoch's sample order, the same on every rank.
    batch_size : int
        Global batch size; must be a multiple of ``world_size``.
    drop_last : bool
        Drop a ragged last global batch (when a full one exists).
    rank, world_size : int

    Returns
    -------
    rows : torch.Tensor of shape (n_rows,), int64
        This rank's samples, batch after batch.
    per_rank : int
        Samples per full batch on this rank (``batch_size // world_size``); the
        caller cuts ``rows`` into batches of this size, except a ragged last one.

    Raises
    ------
    ValueError
        When ``batch_size`` is not a multiple of ``world_size``, or a rank would
        get an empty batch.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
    if batch_size % world_size:
        raise ValueError(
            f"the global batch size {batch_size} is not a multiple of the {world_size} "
            f"processes; choose a batch size divisible by {world_size}"
        )
    per = batch_size // world_size
    n = order.numel()
    full = n // batch_size
    if world_size == 1:
        stop = full * batch_size if drop_last and full else n
        return order[:stop], per
    body = order[: full * batch_size].view(full, world_size, per)[:, rank].reshape(-1)
    rest = order[full * batch_size :]
    if rest.numel() == 0 or (drop_last and full):
        return body, per
    if rest.numel() < world_size:
        raise ValueError(
            f"the last batch holds {rest.numel()} sample(s), fewer than the {world_size} "
            "processes; give more data or a batch size that divides the number of samples"
        )
    return torch.cat([body, torch.tensor_split(rest, world_size)[rank]]), per


def shard_rows(n: int, *, rank: int, world_size: int) -> torch.Tensor:
    """Rows ``rank, rank + world_size, ...`` of ``range(n)``: a rank's share of data
    evaluated without shuffling (validation, inference).

    Raises
    ------
    ValueError
        When there are fewer rows than processes.
    """
    if n < world_size:
        raise ValueError(
            f"{n} sample(s) cannot be shared by {world_size} processes; give at least "
            f"{world_size} (e.g. a larger validation share) or start fewer processes"
        )
    return torch.arange(rank, n, world_size)


def all_reduce_sums(sums: dict[str, torch.Tensor], count: int) -> tuple[dict[str, float], int]:
    """Sum per-rank metric sums and sample counts over all ranks.

    Parameters
    ----------
    sums : dict of str to scalar tensor
        Per-rank sums of ``metric * n``; every rank must hold the same keys in
        the same order (the order is kept in the result).
    count : int
        Per-rank number of samples.

    Returns
    -------
    sums : dict of str to float
    count : int
    """
    keys = list(sums)
    if not is_distributed():
        return {k: float(sums[k]) for k in keys}, count
    device = next(iter(sums.values())).device if sums else torch.device("cpu")
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    flat = torch.stack(
        [torch.tensor(float(count), dtype=torch.float64, device=device)]
        + [sums[k].to(device=device, dtype=torch.float64) for k in keys]
    )
    dist.all_reduce(flat)
    values = flat.tolist()
    return dict(zip(keys, values[1:], strict=True)), int(round(values[0]))


# ----------------------------------------------------------------------------- batch norm


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class SyncBatchNormCPU(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all ranks, for any device and backend.

    PyTorch's ``nn.SyncBatchNorm`` runs on GPUs only; this one all-reduces
    ``(sum x, sum x^2, count)`` per channel with a differentiable
    all-reduce, so autograd gives the exact gradient
    of the global-batch normalisation. Outside training, or in a single
    process, it is plain batch norm. Holds the same parameters and buffers as
    ``BatchNorm1d/2d`` (state dicts are interchangeable).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        x = input.float()
        local_n = torch.tensor(
            [float(input.numel() // input.shape[1])], dtype=x.dtype, device=x.device
        )
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), local_n])
        stats = _AllReduceSum.apply(stats)
        c = input.shape[1]
        total = stats[2 * c]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (total / (total - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _swap_bn(module: nn.Module, make: type[nn.modules.batchnorm._BatchNorm] | None) -> nn.Module:
    """Replace batch-norm layers, keeping parameters, buffers and train/eval mode.

    ``make`` is the new class; ``None`` restores each layer's original class.
    """
    out = module
    if make is not None and isinstance(module, _BN_TYPES):
        new = make(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        new._aelab_bn_class = type(module)  # type: ignore[assignment]
        out = new
    elif make is None and hasattr(module, "_aelab_bn_class"):
        cls = module._aelab_bn_class  # type: ignore[attr-defined]
        out = cls(
            module.num_features,  # type: ignore[arg-type]
            module.eps,  # type: ignore[arg-type]
            module.momentum,  # type: ignore[arg-type]
            module.affine,  # type: ignore[arg-type]
            module.track_running_stats,  # type: ignore[arg-type]
        )
    if out is not module:
        with torch.no_grad():
            if module.affine:  # type: ignore[union-attr]
                out.weight = module.weight  # type: ignore[union-attr]
                out.bias = module.bias  # type: ignore[union-attr]
            out.running_mean = module.running_mean  # type: ignore[union-attr]
            out.running_var = module.running_var  # type: ignore[union-attr]
            out.num_batches_tracked = module.num_batches_tracked  # type: ignore[union-attr]
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _swap_bn(child, make))
    return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch-norm layers of ``model`` synchronised across ranks (in place where possible).

    Uses ``nn.SyncBatchNorm`` on CUDA and :class:`SyncBatchNormCPU` elsewhere.
    Parameters and buffers are shared with the original layers, so the state
    dict keeps its keys and shapes. Undo with :func:`revert_sync_batchnorm`.
    """
    if device.type == "cuda":
        make: type[nn.modules.batchnorm._BatchNorm] = nn.SyncBatchNorm
    else:
        make = SyncBatchNormCPU
    return _swap_bn(model, make)


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm` (layers get back their original class)."""
    return _swap_bn(model, None)


class _StepModule(nn.Module):
    """``step(model, batch, stage)`` as a module, so DDP sees one forward per step."""

    def __init__(self, model: nn.Module, step: Any) -> None:
        super().__init__()
        self.model = model
        self._step = step

    def forward(self, batch: Any, stage: str) -> dict[str, Any]:
        return dict(self._step(self.model, batch, stage))


def wrap_step(model: nn.Module, step: Any, device: torch.device) -> nn.Module:
    """``model`` and its step function ``step(model, batch, stage)`` as one
    DistributedDataParallel module (the process group must be up)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a step may leave parts of the model out (the
    # decoder in plain fine-tuning, the head in pre-training, a frozen encoder).
    return DistributedDataParallel(
        _StepModule(model, step), device_ids=ids, find_unused_parameters=True
    )
