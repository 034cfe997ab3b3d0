"""The bundled default data set: scikit-learn's digits.

1797 grey 8x8 images of 10 classes, shipped inside scikit-learn, so no download: a fixed stratified split
(``train_test_split(test_size=0.2, random_state=0, stratify=y)``: 1437 train, 360 val), pixel values 0..16 scaled to
[0, 1], upsampled bilinearly to ``image_size`` and normalised with the training set's mean and std.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from onebit.config import DataConfig
from onebit.data.base import DATASETS, DataBundle, TensorLoader

__all__ = ["digits_normalisation", "load_digits_tensors"]


def load_digits_tensors(
    image_size: int = 16, val_fraction: float = 0.2, split_seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The digits split as normalised tensors: (train_x [N,1,S,S], train_y, val_x, val_y)."""
    return tuple(t.clone() for t in _load_digits(image_size, val_fraction, split_seed)[:4])  # the cache stays intact


def digits_normalisation(image_size: int = 16, val_fraction: float = 0.2, split_seed: int = 0) -> tuple[float, float]:
    """The (mean, std) of the digits' train split (pixels in [0, 1], after resizing) that the loader normalises with."""
    return _load_digits(image_size, val_fraction, split_seed)[4]


@functools.lru_cache(maxsize=8)
def _load_digits(image_size: int, val_fraction: float, split_seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx_train, idx_val = train_test_split(
        torch.arange(len(y)).numpy(), test_size=val_fraction, random_state=split_seed, stratify=y.numpy()
    )
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    xt, xv = x[idx_train], x[idx_val]
    mean, std = xt.mean(), xt.std()
    return (xt - mean) / std, y[idx_train], (xv - mean) / std, y[idx_val], (float(mean), float(std))


@DATASETS.register("digits")
def _digits(cfg: DataConfig, seed: int) -> DataBundle:
    xt, yt, xv, yv = load_digits_tensors(cfg.image_size, cfg.val_fraction, cfg.split_seed)
    if cfg.limit_train:
        xt, yt = xt[: cfg.limit_train], yt[: cfg.limit_train]
    if cfg.limit_val:
        xv, yv = xv[: cfg.limit_val], yv[: cfg.limit_val]
    chans = cfg.channels or 1
    if chans != 1:
        xt, xv = xt.expand(-1, chans, -1, -1).contiguous(), xv.expand(-1, chans, -1, -1).contiguous()
    shift = max(1, cfg.image_size // 8) if cfg.augment else 0
    bundle = DataBundle(
        train=TensorLoader(xt, yt, cfg.batch_size, shuffle=True, shift=shift, seed=seed),
        val=TensorLoader(xv, yv, cfg.eval_batch_size, shuffle=False),
        num_classes=10,
        in_chans=chans,
        image_size=cfg.image_size,
        description=f"digits {cfg.image_size}x{cfg.image_size}: {len(yt)} train / {len(yv)} val",
    )
    # the statistics the tensors were normalised with, so batch augmentation can work in pixel space
    mean, std = digits_normalisation(cfg.image_size, cfg.val_fraction, cfg.split_seed)
    bundle.mean, bundle.std = (mean,) * chans, (std,) * chans
    return bundle


@DATASETS.register("digits_stats")
def _digits_stats(cfg: DataConfig, seed: int) -> DataBundle:
    """The ``digits`` bundle under the name the augmentation study's configs use.

    When the study was written, the ``digits`` loader left ``DataBundle.mean``/``std`` unset, so RandAugment clamped
    normalised values to [0, 1]; this data set attached the statistics. ``digits`` now carries them itself, so this
    is the same bundle (kept so the recorded study configs of the augmentation study still run).
    """
    return _digits(cfg, seed)
