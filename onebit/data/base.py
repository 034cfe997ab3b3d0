"""The data layer's core: the registry of data sets, the bundle a run trains on, and deterministic epoch loaders.

Loaders are deterministic functions of ``(seed, epoch)``: the order and the augmentation of an epoch are drawn at
the epoch's start, so a run resumed in the middle of an epoch skips exactly the batches it already trained on.
Each data set lives in a module of its own that registers a builder in :data:`DATASETS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from onebit.config import DataConfig
from onebit.registry import Registry

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataSetError",
    "EpochLoader",
    "TensorLoader",
    "build_data",
    "data_root",
    "repeated_order",
]


class DataSetError(ValueError):
    """A data set that cannot be used; the message names the path and what was expected."""


DATASETS: Registry[Callable[[DataConfig, int], DataBundle]] = Registry("data set")


@dataclass
class DataBundle:
    """What a training run needs from a data set."""

    train: TensorLoader
    val: TensorLoader
    num_classes: int
    in_chans: int
    image_size: int
    description: str
    #: normalisation the loaders applied (batch augmentation works on un-normalised pixels; teachers may re-normalise)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class EpochLoader(ABC):
    """What every loader shares: batches drawn from ``(seed, epoch)``, so a resumed epoch skips exactly the batches
    it already trained on. Subclasses set ``batch_size``, ``shuffle``, ``seed`` and implement ``num_samples`` and
    ``iterate(skip)``.

    Data parallelism (:meth:`set_world`): ``batch_size`` stays the *global* batch. Every rank draws the same epoch
    order from ``(seed, epoch)``; torch's ``DistributedSampler`` (``shuffle=False``: the order is already shuffled)
    then hands rank ``r`` the positions ``r, r + W, r + 2W, ...`` of it, and the rank cuts those into batches of
    ``batch_size / W``. Global batch ``k`` of the single-process run is thus exactly the union of the ranks' batch
    ``k``. Training shards are padded by wrapping around to the start of the order (``DistributedSampler``'s rule)
    so every rank runs the same number of steps; evaluation shards are not padded (each sample counted once).
    """

    batch_size: int
    shuffle: bool
    seed: int
    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    #: pad the last shard so every rank gets the same number of samples (training); off for evaluation
    even_shards: bool = True

    @property
    @abstractmethod
    def num_samples(self) -> int: ...

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_world(self, rank: int, world_size: int, even: bool = True) -> None:
        """Make this loader yield rank ``rank``'s share of every global batch of ``batch_size`` samples.

        Args:
            rank, world_size: this process and the number of processes.
            even: training (every rank the same number of steps: ``batch_size`` must be divisible by
                ``world_size``); ``False`` for evaluation (unpadded shards, local batch rounded up).

        Raises:
            ValueError: ``even`` and ``batch_size`` not divisible by ``world_size``, or a rank out of range.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
        if even and self.batch_size % world_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch and must be divisible by the number of "
                f"processes ({world_size}); each rank would take batch_size / {world_size}"
            )
        self.rank, self.world_size, self.even_shards = rank, world_size, even

    @property
    def local_batch_size(self) -> int:
        """This rank's share of a global batch (``batch_size`` in a single process)."""
        return -(-self.batch_size // self.world_size)

    def shard_positions(self, n: int) -> Tensor:
        """Positions in an epoch order of length ``n`` that belong to this rank, in order."""
        if self.world_size == 1:
            return torch.arange(n)
        if not self.even_shards:
            return torch.arange(self.rank, n, self.world_size)
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(
            range(n), num_replicas=self.world_size, rank=self.rank, shuffle=False, drop_last=False
        )
        sampler.set_epoch(self.epoch)  # a no-op without its own shuffle; kept so the sampler is used as documented
        return torch.tensor(list(sampler), dtype=torch.int64)

    def _shard_size(self) -> int:
        n, w = self.num_samples, self.world_size
        if w == 1:
            return n
        return -(-n // w) if self.even_shards else len(range(self.rank, n, w))

    def __len__(self) -> int:
        b = self.local_batch_size
        return (self._shard_size() + b - 1) // b

    #: repeated augmentation: copies of each drawn image per epoch (see :func:`repeated_order`)
    repeats: int = 1

    def epoch_order(self) -> tuple[Tensor, torch.Generator]:
        """This epoch's sample order and the generator that drew it (for the epoch's augmentation draws)."""
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n), g
        if self.repeats > 1:
            return repeated_order(n, self.repeats, g), g
        return torch.randperm(n, generator=g), g

    def rank_order(self) -> tuple[Tensor, torch.Generator]:
        """This rank's samples of the epoch, in order (the whole :meth:`epoch_order` in a single process)."""
        order, g = self.epoch_order()
        if self.world_size == 1:
            return order, g
        return order[self.shard_positions(len(order))], g

    @abstractmethod
    def iterate(self, skip: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the epoch's batches, leaving out the first ``skip``."""

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iterate()


class TensorLoader(EpochLoader):
    """Batches of an in-memory (images, labels) pair; reshuffled and augmented per epoch from ``(seed, epoch)``.

    Args:
        images: float tensor [N, C, H, W]; labels: int64 tensor [N].
        batch_size: (global) batch size; the last partial batch is kept. See :meth:`EpochLoader.set_world`.
        shuffle: draw a new order every epoch.
        shift: random translation by up to ``shift`` pixels (zero padding then crop), 0 = none.
        seed: base seed; epoch e uses a generator seeded with ``seed * 100003 + e``.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool, shift: int = 0, seed: int = 0
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(images) == 0:
            raise ValueError("empty data set")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.shift, self.seed = batch_size, shuffle, shift, seed
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def iterate(self, skip: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the epoch's batches, leaving out the first ``skip`` (a resumed epoch)."""
        n = len(self.images)
        order, g = self.rank_order()
        if self.shift:  # drawn for every sample on every rank: a sample's shift does not depend on the world size
            offsets = torch.randint(0, 2 * self.shift + 1, (n, 2), generator=g)
        bs = self.local_batch_size
        for b in range(skip, len(self)):
            idx = order[b * bs : (b + 1) * bs]
            x = self.images[idx]
            if self.shift:
                x = _translate(x, offsets[idx], self.shift)
            yield x, self.labels[idx]


def _translate(x: Tensor, offsets: Tensor, shift: int) -> Tensor:
    """Translate each image by its offset: replicate-pad by ``shift`` (the normalised background is not 0), crop."""
    n, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    out = torch.empty_like(x)
    for i in range(n):  # per-sample crops of a small batch; cheap next to the network
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


def build_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Build the train/val loaders named by ``cfg.name``."""
    if cfg.aug_repeats < 1:
        raise ValueError(f"data.aug_repeats must be >= 1, got {cfg.aug_repeats}")
    bundle = DATASETS.get(cfg.name)(cfg, seed)
    bundle.train.repeats = cfg.aug_repeats
    return bundle


def data_root(cfg: Any, expected: str) -> Path:
    """``cfg.root`` (a :class:`onebit.config.DataConfig`-like object with ``name`` and ``root``) as an existing folder.

    Args:
        cfg: the data configuration.
        expected: what the folder should hold, for the messages (e.g. ``"train/<class>/ and val/<class>/ folders"``).

    Raises:
        DataSetError: ``data.root`` unset or empty, missing, or not a folder; the message names the path and
            ``expected``.
    """
    if not cfg.root:
        raise DataSetError(
            f"data.root is required for data.name={cfg.name}: set data.root to a folder holding {expected}"
        )
    root = Path(cfg.root)
    if not root.exists():
        raise DataSetError(f"data.root={root}: no such directory (expected a folder holding {expected})")
    if not root.is_dir():
        raise DataSetError(f"data.root={root}: not a directory (expected a folder holding {expected})")
    return root


def repeated_order(n: int, repeats: int, generator: torch.Generator | int | None = None) -> Tensor:
    """Sample order with repeated augmentation (Hoffer et al. 2020; DeiT ``RASampler``, timm ``RepeatAugSampler``).

    A random permutation with every index repeated ``repeats`` times in a row, truncated to ``n`` entries so the epoch
    keeps its length: the epoch covers the first ``ceil(n / repeats)`` images of the permutation, each ``repeats``
    times (the last one possibly fewer), and the copies of an image are adjacent, so they land in the same batch (DeiT
    hands them to different GPUs of one step) and get different augmentations. ``repeats == 1`` is a plain shuffle.
    BNext Table 6: repeated augmentation costs BNext-T 11 points top-1 at 128 epochs.

    Args:
        n: data set size (and epoch length).
        repeats: copies of each drawn image (>= 1).
        generator: the epoch's generator (or a seed; ``None``: seed 0).

    Returns:
        int64 tensor [n] of sample indices.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator().manual_seed(0 if generator is None else int(generator))
    perm = torch.randperm(n, generator=generator)
    return perm.repeat_interleave(repeats)[:n]
