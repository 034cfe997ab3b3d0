"""Batch augmentation on the training device: crops, flips, RandAugment, MixUp, CutMix, repeated augmentation.

The loaders hand out whole normalised batches; :func:`build_train_augment` returns a callable that augments one batch
``(x, y, generator) -> (x, y)``. Every random draw comes from the ``torch.Generator`` passed in (a loader's epoch
generator, seeded from ``(seed, epoch)``), so a resumed epoch sees exactly the augmentations it saw the first time.

Kinds (the geometric part):

* ``none``: identity.
* ``cifar``: zero-pad 4 pixels (zero in pixel space, i.e. before normalisation, as torchvision's ``RandomCrop(32,
  padding=4)``), crop back to the input size at a random offset, horizontal flip with probability 0.5.
* ``imagenet``: RandomResizedCrop to ``image_size`` (scale 0.08-1, ratio 3/4-4/3, box drawn as torchvision does:
  10 attempts, then a centre crop clamped to the ratio range), **bicubic**, horizontal flip 0.5 (BNext / timm).

Optional on top (BNext paper Table 6 studies each of them):

* RandAugment ``rand-m7-mstd0.5``: kornia's :class:`~kornia.augmentation.auto.RandAugment` (kornia >= 0.7). Kornia
  takes one magnitude ``m`` on a 0-30 scale for the whole call and cannot jitter it, so the timm magnitude noise is
  implemented here: each group of images draws ``m ~ N(randaugment_m, randaugment_mstd)`` clipped to [0, 10] (timm's
  scale) and runs kornia with ``3 m``. Kornia also picks the ``n`` operations once per call, whereas timm picks them
  per image; the batch is therefore split into ``randaugment_groups`` groups, each with its own operations and
  magnitude. Differences from timm's ``inc1`` ("increasing") set that kornia cannot express: the colour, contrast,
  brightness and sharpness factors are ``0.1 + 1.8 m / 10`` (timm's plain mapping) rather than ``1 +- 0.9 m / 10``;
  solarize thresholds at ``m / 10`` rather than ``1 - m / 10``; posterize keeps ``8 - 4 m / 10`` bits; each chosen
  operation is applied with probability 1 rather than timm's 0.5. Translation uses timm's 0.45 of the image size.
  RandAugment works on pixel values in [0, 1], so normalised batches are un-normalised around it (``mean``/``std``).
* MixUp / CutMix (own implementation, timm's batch mode): ``lambda ~ Beta(alpha, alpha)``, every image is mixed with
  the batch in reverse order; labels become soft one-hot mixtures ``lambda * y + (1 - lambda) * y_reversed``. CutMix
  pastes a box of side ``sqrt(1 - lambda)`` times the image side centred uniformly at random, clipped to the image,
  and corrects ``lambda`` to the area actually kept. With both enabled each batch uses one of them with probability
  0.5 (timm's ``switch_prob``).

The repeated-augmentation sample order (DeiT ``RASampler`` / timm ``RepeatAugSampler``) is a loader concern:
:func:`onebit.data.repeated_order`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from onebit.config import Interpolation, TrainAugment

__all__ = [
    "AUGMENT_KINDS",
    "BatchAugment",
    "build_train_augment",
    "cifar_crop_flip",
    "cutmix",
    "mixup",
    "rand_augment",
    "random_resized_crop_flip",
    "soft_cross_entropy",
]

#: The choices of :data:`onebit.config.TrainAugment`.
AUGMENT_KINDS: tuple[TrainAugment, ...] = get_args(TrainAugment)
GeneratorLike = torch.Generator | int | None


def _as_generator(generator: GeneratorLike) -> torch.Generator:
    """A CPU generator from a generator, an int seed or None (seed 0, so even the default is reproducible)."""
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def _seed_from(g: torch.Generator) -> int:
    """A 63-bit seed drawn from ``g``, for libraries that only take seeds (kornia's global RNG, numpy)."""
    return int(torch.randint(0, 2**62, (1,), generator=g))


def _flip(x: Tensor, g: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each image horizontally with probability ``p``."""
    mask = (torch.rand(len(x), generator=g) < p).to(x.device)
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def cifar_crop_flip(x: Tensor, g: torch.Generator, padding: int = 4, flip: bool = True) -> Tensor:
    """Random crop with zero padding (torchvision ``RandomCrop(size, padding)``) then horizontal flip.

    Args:
        x: images [B, C, H, W] in pixel space (zero padding means black, as torchvision pads the raw image).
        g: generator for the offsets and flips.
        padding: pixels of zero padding on every side; the content moves by at most this many pixels.
        flip: also flip horizontally with probability 0.5.

    Returns:
        Images of the input shape.
    """
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=g)
    padded = F.pad(x, (padding, padding, padding, padding))
    # Gather each crop with per-image index grids rather than a Python loop over the batch.
    rows = (offsets[:, 0].view(b, 1) + torch.arange(h).view(1, h)).to(x.device)  # [B, H]
    cols = (offsets[:, 1].view(b, 1) + torch.arange(w).view(1, w)).to(x.device)  # [B, W]
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(-1, x.shape[1], -1, padded.shape[3]))
    out = out.gather(3, cols.view(b, 1, 1, w).expand(-1, x.shape[1], h, -1))
    return _flip(out, g) if flip else out


def _rrc_box(
    h: int, w: int, g: torch.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """One RandomResizedCrop box ``(top, left, height, width)``, drawn as torchvision draws it."""
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
        aspect = math.exp(float(torch.empty(1).uniform_(log_lo, log_hi, generator=g)))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    # Fallback: the whole image, cropped to the nearest allowed aspect ratio, centred.
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop_flip(
    x: Tensor,
    g: torch.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    mode: str = "bicubic",
    flip: bool = True,
) -> Tensor:
    """RandomResizedCrop (per-image box, resized to ``size`` x ``size``) then horizontal flip.

    Args:
        x: images [B, C, H, W].
        g: generator for boxes and flips.
        size: output side length.
        scale, ratio: area fraction and aspect-ratio ranges of the box (log-uniform ratio, as torchvision).
        mode: ``bicubic`` (BNext / timm) or ``bilinear`` (ReActNet).
        flip: also flip horizontally with probability 0.5.

    Returns:
        Images [B, C, size, size].
    """
    _, _, h, w = x.shape
    crops = []
    for i in range(len(x)):  # boxes differ in size, so each is resized on its own
        top, left, ch, cw = _rrc_box(h, w, g, scale, ratio)
        crop = x[i : i + 1, :, top : top + ch, left : left + cw]
        crops.append(F.interpolate(crop, size=(size, size), mode=mode, align_corners=False))
    out = torch.cat(crops)
    if mode == "bicubic":
        # Bicubic overshoots; keep pixel values in range as PIL does (the caller works in [0, 1]).
        out = out.clamp(0.0, 1.0)
    return _flip(out, g) if flip else out


def _randaugment_policy() -> list[list[tuple[str, float, float]]]:
    """Kornia's default RandAugment candidates with timm's translation range (0.45 of the side, ``translate_pct``)."""
    return [
        [("auto_contrast", 0, 1)],
        [("equalize", 0, 1)],
        [("invert", 0, 1)],
        [("rotate", -30.0, 30.0)],
        [("posterize", 4.0, 8.0)],
        [("solarize", 0.0, 1.0)],
        [("solarize_add", 0.0, 0.43)],
        [("color", 0.1, 1.9)],
        [("contrast", 0.1, 1.9)],
        [("brightness", 0.1, 1.9)],
        [("sharpness", 0.1, 1.9)],
        [("shear_x", -0.3, 0.3)],
        [("shear_y", -0.3, 0.3)],
        [("translate_x", -0.45, 0.45)],
        [("translate_y", -0.45, 0.45)],
    ]


def rand_augment(
    x: Tensor,
    g: torch.Generator,
    m: float = 7.0,
    mstd: float = 0.5,
    n: int = 2,
    groups: int = 8,
    module: torch.nn.Module | None = None,
) -> Tensor:
    """RandAugment on a batch in [0, 1] with a jittered magnitude (see the module docstring for the timm mapping).

    Args:
        x: images [B, 3, H, W] (or grey [B, 1, H, W]) with values in [0, 1].
        g: generator; kornia draws from torch's global RNG, so it runs inside ``fork_rng`` seeded from ``g``.
        m: mean magnitude on timm's 0-10 scale.
        mstd: standard deviation of the per-group magnitude (0 = fixed).
        n: operations per image.
        groups: the batch is split into this many groups, each with its own operations and magnitude.
        module: a kornia ``RandAugment`` to reuse (built on first use otherwise).

    Returns:
        Augmented images, same shape, clamped to [0, 1].
    """
    from kornia.augmentation.auto import RandAugment

    if x.shape[1] == 1:
        # kornia's colour operations need RGB: a grey image replicated to 3 channels stays grey under every operation
        # of the policy, so its first channel is the augmented grey image
        return rand_augment(x.expand(-1, 3, -1, -1), g, m, mstd, n, groups, module)[:, :1].contiguous()
    if x.shape[1] != 3:
        raise ValueError(f"RandAugment needs 1 or 3 channels, got images of shape {tuple(x.shape)}")
    # m is overwritten per group below; 15 only satisfies the constructor's range check.
    ra = module if module is not None else RandAugment(n=n, m=15, policy=_randaugment_policy())
    chunks = torch.tensor_split(torch.arange(len(x)), min(max(groups, 1), len(x)))
    devices = [x.device] if x.device.type == "cuda" else []
    out = []
    for idx in chunks:
        mag = m + mstd * float(torch.randn(1, generator=g)) if mstd > 0 else m
        # Kornia needs m strictly inside (0, 30); clip on timm's scale first as timm does.
        ra.m = min(max(3.0 * min(max(mag, 0.0), 10.0), 1e-3), 30.0 - 1e-3)
        seed = _seed_from(g)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out.append(ra(x[idx.to(x.device)]))
    return torch.cat(out).clamp(0.0, 1.0)


def _one_hot(y: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(y, num_classes).float() if y.dim() == 1 else y.float()


def _beta(alpha: float, g: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha) from a numpy generator seeded by ``g`` (torch's Beta takes no generator)."""
    return float(np.random.default_rng(_seed_from(g)).beta(alpha, alpha))


def mixup(x: Tensor, y: Tensor, lam: float, num_classes: int) -> tuple[Tensor, Tensor]:
    """Mix each image with the batch in reverse order: ``lam * x + (1 - lam) * x.flip(0)``, labels likewise.

    Args:
        x: images [B, C, H, W]; y: hard labels [B] or soft labels [B, K].
        lam: weight of the original image.
        num_classes: K, for the one-hot labels.

    Returns:
        Mixed images and soft labels [B, K].
    """
    t = _one_hot(y, num_classes)
    return lam * x + (1 - lam) * x.flip(0), lam * t + (1 - lam) * t.flip(0)


def cutmix_box(h: int, w: int, lam: float, g: torch.Generator) -> tuple[int, int, int, int]:
    """CutMix box ``(y0, y1, x0, x1)``: sides ``sqrt(1 - lam)`` of the image's, centre uniform, clipped (timm)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(0, h, (1,), generator=g))
    cx = int(torch.randint(0, w, (1,), generator=g))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return y0, y1, x0, x1


def cutmix(x: Tensor, y: Tensor, box: tuple[int, int, int, int], num_classes: int) -> tuple[Tensor, Tensor, float]:
    """Paste ``box`` of the reversed batch into each image; the label weight is the area actually kept.

    Args:
        x: images [B, C, H, W]; y: hard labels [B] or soft labels [B, K].
        box: ``(y0, y1, x0, x1)`` from :func:`cutmix_box`.
        num_classes: K.

    Returns:
        Images, soft labels [B, K], and the area-corrected ``lam = 1 - box area / image area``.
    """
    y0, y1, x0, x1 = box
    h, w = x.shape[-2:]
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    t = _one_hot(y, num_classes)
    return out, lam * t + (1 - lam) * t.flip(0), lam


class BatchAugment:
    """One training batch's augmentation: geometry, optional RandAugment, normalisation, optional MixUp/CutMix.

    Call as ``aug(x, y, generator)``; returns ``(x, y)`` with ``y`` soft [B, K] float when MixUp or CutMix is on and
    the input labels otherwise. Built by :func:`build_train_augment`, which documents the arguments.
    """

    def __init__(
        self,
        kind: TrainAugment,
        image_size: int,
        *,
        num_classes: int,
        randaugment: bool,
        randaugment_m: float,
        randaugment_mstd: float,
        randaugment_n: int,
        randaugment_groups: int,
        mixup: float,
        cutmix: float,
        mixup_switch_prob: float,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        padding: int,
        interpolation: Interpolation,
    ) -> None:
        if kind not in AUGMENT_KINDS:
            raise ValueError(f"augmentation kind must be one of {AUGMENT_KINDS}, got {kind!r}")
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"mixup and cutmix alphas must be >= 0, got {mixup}, {cutmix}")
        if not 0 <= randaugment_m <= 10:
            raise ValueError(f"randaugment magnitude is on timm's 0-10 scale, got {randaugment_m}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (normalised input) or neither (input in [0, 1])")
        self.kind, self.image_size, self.num_classes = kind, image_size, num_classes
        self.randaugment, self.ra_m, self.ra_mstd = randaugment, randaugment_m, randaugment_mstd
        self.ra_n, self.ra_groups = randaugment_n, randaugment_groups
        self.mixup_alpha, self.cutmix_alpha, self.switch_prob = mixup, cutmix, mixup_switch_prob
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.padding, self.interpolation = padding, interpolation
        self._ra_module = None
        if randaugment:
            from kornia.augmentation.auto import RandAugment

            self._ra_module = RandAugment(n=randaugment_n, m=15, policy=_randaugment_policy())

    @property
    def soft_labels(self) -> bool:
        """Whether the returned labels are soft [B, K] (MixUp or CutMix on)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, x: Tensor, y: Tensor, generator: GeneratorLike = None) -> tuple[Tensor, Tensor]:
        g = _as_generator(generator)
        if self.kind == "none" and not self.randaugment and not self.soft_labels:
            return x, y
        if self.mean is not None:
            mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
            x = x * std + mean  # back to pixel space: zero padding, bicubic clamping and RandAugment expect [0, 1]
        if self.kind == "cifar":
            x = cifar_crop_flip(x, g, self.padding)
        elif self.kind == "imagenet":
            x = random_resized_crop_flip(x, g, self.image_size, mode=self.interpolation)
        if self.randaugment:
            x = rand_augment(x, g, self.ra_m, self.ra_mstd, self.ra_n, self.ra_groups, self._ra_module)
        if self.mean is not None:
            x = (x - mean) / std
        if not self.soft_labels:
            return x, y
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or float(torch.rand(1, generator=g)) < self.switch_prob
        )
        if use_cutmix:
            lam = _beta(self.cutmix_alpha, g)
            x, y, _ = cutmix(x, y, cutmix_box(x.shape[-2], x.shape[-1], lam, g), self.num_classes)
            return x, y
        return mixup(x, y, _beta(self.mixup_alpha, g), self.num_classes)


def build_train_augment(
    kind: TrainAugment,
    image_size: int,
    *,
    num_classes: int,
    randaugment: bool = False,
    randaugment_m: float = 7.0,
    randaugment_mstd: float = 0.5,
    randaugment_n: int = 2,
    randaugment_groups: int = 8,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    mixup_switch_prob: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    padding: int = 4,
    interpolation: Interpolation = "bicubic",
) -> Callable[[Tensor, Tensor, GeneratorLike], tuple[Tensor, Tensor]]:
    """The training-batch augmentation ``(x, y, generator) -> (x, y)``.

    Args:
        kind: ``none``, ``cifar`` (pad-4 random crop + flip) or ``imagenet`` (RandomResizedCrop + flip).
        image_size: output side for ``imagenet`` (the other kinds keep the input size).
        num_classes: K, for the soft labels of MixUp/CutMix.
        randaugment: add RandAugment (BNext: ``rand-m7-mstd0.5-inc1``, 2 operations).
        randaugment_m: magnitude on timm's 0-10 scale (7 in BNext).
        randaugment_mstd: standard deviation of the magnitude noise, drawn per group (0.5 in BNext).
        randaugment_n: operations per image (timm's default 2).
        randaugment_groups: groups of a batch that draw their own operations and magnitude.
        mixup: MixUp Beta alpha (0 = off; timm's usual 0.8).
        cutmix: CutMix Beta alpha (0 = off; timm's usual 1.0).
        mixup_switch_prob: with both on, probability of CutMix for a batch.
        mean, std: per-channel normalisation of the input batches (None = input in [0, 1]); the geometry and
            RandAugment run in pixel space and the output is normalised again.
        padding: ``cifar`` crop padding.
        interpolation: ``bicubic`` or ``bilinear`` for the ``imagenet`` resize.

    Returns:
        A :class:`BatchAugment`; all draws come from the generator given to each call (an int seeds a fresh one).
    """
    return BatchAugment(
        kind,
        image_size,
        num_classes=num_classes,
        randaugment=randaugment,
        randaugment_m=randaugment_m,
        randaugment_mstd=randaugment_mstd,
        randaugment_n=randaugment_n,
        randaugment_groups=randaugment_groups,
        mixup=mixup,
        cutmix=cutmix,
        mixup_switch_prob=mixup_switch_prob,
        mean=mean,
        std=std,
        padding=padding,
        interpolation=interpolation,
    )


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against soft targets [B, K] (MixUp/CutMix), or hard int labels [B]; mean over the batch."""
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
