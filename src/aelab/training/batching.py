"""Batches for the training loop: uint8 rows gathered by index, seeded per epoch, sharded per rank.

:func:`batch_factory` is what every training task hands to
:class:`~aelab.training.loop.Trainer`: ``factory(epoch)`` returns that epoch's
batches, reshuffled from ``(seed, epoch)`` so a resumed run sees the same
batches, and under torchrun each process reads its share of every global batch.
:func:`check_dataset` is the one check that images fit a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn

from aelab.data.dataset import ImageDataset
from aelab.data.streaming import ImageRows
from aelab.training import distributed as dist_utils

__all__ = ["batch_factory", "check_dataset", "check_images"]

# Whole uint8 datasets up to this size are copied to the GPU once, so a batch
# is an index on the device rather than a host-to-device copy per step.
_DEVICE_RESIDENT_BYTES = 2 << 30

# ----------------------------------------------------------------------------- batches


class _EpochBatches:
    """One epoch of batches: uint8 rows gathered by index, then float in [0, 1] on the device.

    ``order`` holds this process's rows batch after batch (already sharded and
    with a dropped ragged batch left out, see :func:`batch_factory`).
    Trusts its input.
    """

    def __init__(
        self,
        reader: _Reader,
        labels: torch.Tensor | None,
        order: torch.Tensor,
        batch_size: int,
        device: torch.device,
        unlabeled: tuple[_Reader, torch.Tensor, int, int] | None = None,
        num_workers: int = 0,
        unlabeled_batch_size: int | None = None,
    ) -> None:
        self.reader, self.labels, self.order = reader, labels, order
        self.batch_size, self.device, self.unlabeled = batch_size, device, unlabeled
        self.num_workers = num_workers
        # This process's share of each global unlabeled batch.
        self.unlabeled_batch_size = unlabeled_batch_size or batch_size
        self._len = math.ceil(len(order) / batch_size)

    def __len__(self) -> int:
        return self._len

    def _float(self, u8: torch.Tensor) -> torch.Tensor:
        return u8.to(self.device, non_blocking=True).float().div_(255)

    def _index(self) -> list[torch.Tensor]:
        bs = self.batch_size
        return [self.order[b * bs : (b + 1) * bs] for b in range(self._len)]

    def _images(self) -> Iterator[torch.Tensor]:
        index = self._index()
        if self.num_workers == 0:
            yield from (self.reader(idx) for idx in index)
            return
        from torch.utils.data import DataLoader

        # One task per batch (batch_size=None): a worker reads a whole batch.
        loader = DataLoader(
            self.reader,
            sampler=index,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        yield from loader

    def __iter__(self) -> Iterator[Any]:
        for b, (idx, u8) in enumerate(zip(self._index(), self._images(), strict=True)):
            x = self._float(u8)
            if self.labels is None:
                yield x
                continue
            y = self.labels[idx].to(self.device, non_blocking=True)
            if self.unlabeled is None:
                yield x, y
                continue
            u_reader, u_order, offset, stride = self.unlabeled
            # Unlabeled batches cycle through their own permutation; this
            # process takes its share of the global unlabeled batch.
            ubs = self.unlabeled_batch_size
            pos = b * stride + offset + torch.arange(ubs, device=u_order.device)
            yield x, y, self._float(u_reader(u_order[pos % len(u_order)]))


class _Reader:
    """``reader(idx)``: uint8 images at positions ``idx`` of a dataset or a row view.

    Also a map-style dataset (``reader[idx]``), which is how DataLoader workers call it.
    """

    def __init__(self, images: torch.Tensor | None, rows: ImageRows | None) -> None:
        self.images, self.rows = images, rows

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.images is not None:
            return self.images[idx]
        assert self.rows is not None
        return self.rows.read(idx)

    __getitem__ = __call__


def _place(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        if t.numel() * t.element_size() <= _DEVICE_RESIDENT_BYTES:
            return t.to(device)
        return t.pin_memory()
    return t


def _reader(data: ImageDataset | ImageRows, device: torch.device) -> _Reader:
    if isinstance(data, ImageDataset):
        return _Reader(_place(data.images, device), None)
    return _Reader(None, data)


def batch_factory(
    data: ImageDataset | ImageRows,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    device: torch.device,
    labels: bool,
    unlabeled: ImageDataset | ImageRows | None = None,
    num_workers: int = 0,
    unlabeled_batch_size: int | None = None,
    epoch_over_unlabeled: bool = False,
    min_epoch_steps: int = 0,
) -> Callable[[int], _EpochBatches]:
    """``factory(epoch)``: batches of ``data``, reshuffled from ``(seed, epoch)`` when ``shuffle``.

    ``batch_size`` is the global batch. Under torchrun every process draws the
    same permutation and keeps its share of each global batch (training), or
    every ``world_size``-th row (evaluation, ``shuffle=False``).

    ``unlabeled_batch_size`` (default ``batch_size``) is the global unlabeled
    batch, shared between processes the same way. With ``epoch_over_unlabeled``
    an epoch is one pass over ``unlabeled`` and the labelled images repeat, in
    fresh permutations, as often as that takes: how semi-supervised methods
    count epochs, so their length does not shrink with the number of labels;
    such an epoch has at least ``min_epoch_steps`` steps (the unlabeled
    permutation then wraps round).
    """
    if not isinstance(data, ImageDataset | ImageRows):
        raise ValueError(f"data must be an ImageDataset or ImageRows, got {type(data).__name__}")
    for name, value in (("batch_size", batch_size), ("unlabeled_batch_size", unlabeled_batch_size)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    world = dist_utils.info()
    # ``unlabeled_batch_size`` is global too; each process reads its share.
    u_batch = unlabeled_batch_size or batch_size
    if unlabeled is not None and u_batch % world.world_size:
        raise ValueError(
            f"the global unlabeled batch size {u_batch} is not a multiple of the "
            f"{world.world_size} processes; choose a batch size divisible by {world.world_size}"
        )
    return _Factory(
        data, batch_size, shuffle, seed, device, labels, unlabeled, num_workers, u_batch,
        epoch_over_unlabeled, world, min_epoch_steps,
    )  # fmt: skip


def _perm(seed: int, size: int, epoch: int, stream: int, device: torch.device) -> torch.Tensor:
    # One generator per (seed, epoch, stream): the order of epoch e never
    # depends on what ran before it, which is what makes resume exact.
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7 + stream)
    return torch.randperm(size, generator=g).to(device)


def _repeated_perm(
    seed: int, n: int, epoch: int, length: int, device: torch.device
) -> torch.Tensor:
    # The labelled rows repeat, each pass in a fresh permutation, until
    # ``length`` rows; the same on every rank, sharded like ``_perm``.
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7 + 2)
    reps = math.ceil(length / n)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:length].to(device)


def _where(reader: _Reader | None) -> torch.device:
    """Index tensors live where the images do (the GPU for device-resident data)."""
    return (
        reader.images.device
        if reader is not None and reader.images is not None
        else torch.device("cpu")
    )


class _Factory:
    """What :func:`batch_factory` returns: ``factory(epoch)`` (trusts its input)."""

    def __init__(
        self, data: ImageDataset | ImageRows, batch_size: int, shuffle: bool, seed: int,
        device: torch.device, labels: bool, unlabeled: ImageDataset | ImageRows | None,
        num_workers: int, u_batch: int, epoch_over_unlabeled: bool, world: Any,
        min_epoch_steps: int,
    ) -> None:  # fmt: skip
        self.reader, self.n, self.batch_size, self.shuffle = (
            _reader(data, device),
            len(data),
            batch_size,
            shuffle,
        )
        self.seed, self.device, self.num_workers, self.world = seed, device, num_workers, world
        self.ys = None
        if labels and data.labels is not None:
            self.ys = _place(data.labels, device) if isinstance(data, ImageDataset) else data.labels
        self.unlabeled, self.u_batch, self.epoch_over_unlabeled = (
            unlabeled,
            u_batch,
            epoch_over_unlabeled,
        )
        self.min_epoch_steps = min_epoch_steps
        self.u_reader = _reader(unlabeled, device) if unlabeled is not None else None
        self.u_per = u_batch // world.world_size
        if shuffle:
            self.per = dist_utils.shard_order(
                torch.arange(self.n), batch_size, drop_last=True, rank=world.rank,
                world_size=world.world_size,
            )[1]  # fmt: skip
        else:
            self.per = math.ceil(batch_size / world.world_size)
            self.mine = dist_utils.shard_rows(self.n, rank=world.rank, world_size=world.world_size)

    def _shard(self, order: torch.Tensor) -> torch.Tensor:
        w = self.world
        return dist_utils.shard_order(order, self.batch_size, drop_last=True, rank=w.rank,
                                      world_size=w.world_size)[0]  # fmt: skip

    def __call__(self, epoch: int) -> _EpochBatches:
        where = _where(self.reader)
        if self.shuffle:
            order = self._shard(_perm(self.seed, self.n, epoch, 0, where))
        else:
            order = self.mine.to(where)
        extra = None
        if self.u_reader is not None:
            assert self.unlabeled is not None
            u_order = _perm(self.seed, len(self.unlabeled), epoch, 1, _where(self.u_reader))
            extra = (self.u_reader, u_order, self.world.rank * self.u_per, self.u_batch)
            if self.epoch_over_unlabeled:
                steps = max(1, self.min_epoch_steps, len(self.unlabeled) // self.u_batch)
                length = steps * self.batch_size
                order = self._shard(_repeated_perm(self.seed, self.n, epoch, length, where))
        return _EpochBatches(
            self.reader, self.ys, order, self.per, self.device, extra, self.num_workers, self.u_per
        )


# ----------------------------------------------------------------------------- validation


def expected_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """(channels, height, width) of the images ``model`` takes, or ``None`` when it does not say."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "in_channels"):
        return None
    return (cfg.in_channels, cfg.image_size, cfg.image_size)


def check_images(model: nn.Module, shape: tuple[int, ...], what: str) -> None:
    """Refuse images of ``shape`` that ``model`` does not take (``what`` names them in the error)."""
    want = expected_shape(model)
    if want is not None and tuple(shape) != want:
        raise ValueError(
            f"{what} images are {'x'.join(map(str, shape))} but the model expects "
            f"{'x'.join(map(str, want))}; load the data at the model's size and channels "
            "(e.g. image_size/grayscale options of the loader) or build the model for this data"
        )


def check_dataset(
    model: nn.Module, data: Any, what: str, *, labels: bool = False
) -> ImageDataset | ImageRows:
    """Check that ``data`` is a non-empty image set that fits ``model`` (and is labelled when asked).

    Returns ``data``; raises a ValueError naming ``what`` otherwise.
    """
    if not isinstance(data, ImageDataset | ImageRows):
        raise ValueError(
            f"{what} must be an aelab.data.ImageDataset or ImageRows, got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError(f"{what} is empty")
    check_images(model, data.image_shape, what)
    if labels and data.labels is None:
        raise ValueError(f"{what} has no labels; fine-tuning and evaluation need labelled images")
    return data
