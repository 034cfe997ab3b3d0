"""On-disk image data in the ImageNet folder layout: ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*``.

Decoding uses Pillow in DataLoader workers. Unreadable or corrupt images are skipped (their slot is dropped from the
batch), counted and listed in one warning per epoch — an epoch never crashes on a bad file. An empty, mis-laid or
class-mismatched data set is an error naming the path, and so is an empty class folder (one without a file of
:data:`EXTENSIONS`), as in torchvision's ``ImageFolder``: it would be counted as a class no sample ever teaches.

Train transform (ReActNet/AdamBNN code): RandomResizedCrop(image_size, scale 0.08-1, ratio 3/4-4/3), horizontal
flip, ImageNet normalisation. Eval: resize the shorter side to ``val_resize``, centre-crop ``image_size``.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from onebit.config import DataConfig, Interpolation
from onebit.data.base import DATASETS, DataBundle, DataSetError, EpochLoader, data_root
from onebit.data.classes import imagenet_wnids

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESAMPLE",
    "FolderLoader",
    "ImageFolder",
    "build_imagenet",
    "write_imagefolder_fixture",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


#: PIL filter of each :data:`onebit.config.Interpolation` choice (``tests/test_config.py`` checks the keys).
RESAMPLE: dict[Interpolation, int] = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _resample(name: Interpolation) -> int:
    # ``DataConfig`` only holds valid names; this guards direct use of ``ImageFolder``, once per split
    try:
        return RESAMPLE[name]
    except KeyError:
        raise DataSetError(f"interpolation must be one of {', '.join(map(repr, RESAMPLE))}, got {name!r}") from None


class ImageFolder(Dataset):
    """One split of an ImageNet-layout folder. Items are ``(image tensor [3,S,S] normalised, label)`` or ``None``
    for an unreadable file (see :func:`collate_skip`)."""

    def __init__(
        self,
        root: str | Path,
        train: bool,
        image_size: int,
        val_resize: int,
        interpolation: Interpolation,
        classes: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            what = "not a directory" if self.root.exists() else "no such directory"
            raise DataSetError(f"{self.root}: {what} (expected <root>/train and <root>/val folders of class folders)")
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not found:
            raise DataSetError(f"{self.root}: no class folders (expected one sub-folder per class)")
        if classes is not None and found != classes:
            extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
            raise DataSetError(
                f"{self.root}: classes differ from the training split (extra {extra[:5]}, missing {missing[:5]})"
            )
        self.classes = found
        self.samples = [
            (p, i)
            for i, c in enumerate(found)
            for p in sorted((self.root / c).iterdir())
            if p.suffix.lower() in EXTENSIONS
        ]
        counts = [0] * len(found)
        for _, i in self.samples:
            counts[i] += 1
        empty = [c for c, n in zip(found, counts, strict=True) if not n]
        if empty:  # torchvision's ImageFolder refuses these too ("Found no valid file for the classes ...")
            more = f" (and {len(empty) - 1} more: {', '.join(empty[1:6])}{' ...' if len(empty) > 6 else ''})"
            raise DataSetError(
                f"{self.root / empty[0]}: empty class folder (no image with extension {', '.join(sorted(EXTENSIONS))})"
                f"{more if len(empty) > 1 else ''}; remove it or add images"
            )
        self.train, self.size, self.val_resize = train, image_size, val_resize
        self.resample = _resample(interpolation)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def _random_resized_crop(self, img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        area = w * h
        for _ in range(10):  # the usual rejection sampling of an area share and aspect ratio
            target = area * rng.uniform(0.08, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
                return img.resize((self.size, self.size), self.resample, box=(x0, y0, x0 + cw, y0 + ch))
        side = min(w, h)  # fallback: central square
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        return img.resize((self.size, self.size), self.resample, box=box)

    def _center(self, img: Image.Image) -> Image.Image:
        """The official evaluation transform, with torchvision's integer conventions (the official scripts use
        ``Resize(val_resize)`` + ``CenterCrop(size)`` on PIL images): the shorter side becomes ``val_resize``, the
        longer one ``int(val_resize * long / short)`` (truncated); the crop's offset is ``round((side - size) / 2)``
        (Python's round, half to even: 235 -> 224 starts at row 6)."""
        w, h = img.size
        short, long = min(w, h), max(w, h)
        new_short, new_long = self.val_resize, int(self.val_resize * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), self.resample)
        x0, y0 = int(round((new_w - self.size) / 2.0)), int(round((new_h - self.size) / 2.0))
        return img.crop((x0, y0, x0 + self.size, y0 + self.size))

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            return {"bad": str(path), "error": f"{type(e).__name__}: {e}"}
        if self.train:
            rng = random.Random(torch.randint(0, 2**31, ()).item())  # follows torch's per-worker seeding
            img = self._random_resized_crop(img, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = self._center(img)
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(self.size, self.size, 3)
        x = x.permute(2, 0, 1).float().div_(255.0)
        return (x - self.mean) / self.std, label


def collate_skip(items: list) -> dict:
    good = [it for it in items if isinstance(it, tuple)]
    bad = [it for it in items if isinstance(it, dict)]
    x = torch.stack([g[0] for g in good]) if good else torch.empty(0, 3, 1, 1)
    y = torch.tensor([g[1] for g in good], dtype=torch.int64)
    return {"x": x, "y": y, "bad": bad}


class FolderLoader(EpochLoader):
    """Epoch-seeded loader over an :class:`ImageFolder` (see ``onebit.data.EpochLoader``).

    Under data parallelism a batch that lost unreadable images is smaller on that rank only; an all-unreadable
    batch is still skipped, which leaves that rank one step short (the other ranks then wait in DDP's all-reduce),
    so clean a data set with unreadable files before a multi-process run.
    """

    def __init__(self, ds: ImageFolder, batch_size: int, shuffle: bool, num_workers: int, seed: int) -> None:
        self.ds, self.batch_size, self.shuffle, self.num_workers, self.seed = ds, batch_size, shuffle, num_workers, seed
        self.epoch = 0
        self.bad: dict[str, str] = {}

    @property
    def num_samples(self) -> int:
        return len(self.ds)

    def iterate(self, skip: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        order, g = self.rank_order()  # this rank's share of the epoch (DistributedSampler's split), see EpochLoader
        order = order[skip * self.local_batch_size :].tolist()
        loader = DataLoader(
            self.ds,
            batch_size=self.local_batch_size,
            sampler=order,
            num_workers=self.num_workers,
            collate_fn=collate_skip,
            pin_memory=torch.cuda.is_available(),
            generator=g,
            persistent_workers=False,
        )
        bad_before = len(self.bad)
        for batch in loader:
            for b in batch["bad"]:
                self.bad[b["bad"]] = b["error"]
            if len(batch["y"]):
                yield batch["x"], batch["y"]
        if len(self.bad) > bad_before:
            new = list(self.bad.items())[bad_before:]
            listing = "; ".join(f"{p} ({e})" for p, e in new[:10])
            warnings.warn(
                f"skipped {len(new)} unreadable image(s) in {self.ds.root}: {listing}"
                + (" ..." if len(new) > 10 else ""),
                stacklevel=2,
            )


@DATASETS.register("imagenet")
def build_imagenet(cfg: DataConfig, seed: int) -> DataBundle:
    """Train/val loaders over an ImageNet-layout folder ``data.root`` (``train/<class>/``, ``val/<class>/``)."""
    root = data_root(cfg, "the ImageNet folder layout train/<class>/*.JPEG and val/<class>/*")
    train = ImageFolder(root / "train", True, cfg.image_size, cfg.val_resize, cfg.interpolation)
    val = ImageFolder(root / "val", False, cfg.image_size, cfg.val_resize, cfg.interpolation, classes=train.classes)
    if cfg.limit_train:
        train.samples = train.samples[:: max(1, len(train.samples) // cfg.limit_train)][: cfg.limit_train]
    if cfg.limit_val:
        val.samples = val.samples[: cfg.limit_val]
    return DataBundle(
        train=FolderLoader(train, cfg.batch_size, True, cfg.num_workers, seed),
        val=FolderLoader(val, cfg.eval_batch_size, False, cfg.num_workers, seed),
        num_classes=len(train.classes),
        in_chans=3,
        image_size=cfg.image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description=f"{root.name} folder {cfg.image_size}px: {len(train)} train / {len(val)} val, "
        f"{len(train.classes)} classes",
    )


def write_imagefolder_fixture(
    root: str | Path,
    classes: int = 4,
    train_per_class: int = 8,
    val_per_class: int = 2,
    size: tuple[int, int] = (56, 48),
    seed: int = 0,
) -> Path:
    """Write a small ImageNet-layout folder (``root/train/<wnid>/*.JPEG``, ``root/val/<wnid>/*.JPEG``) of real JPEG
    files, for rehearsals and tests: each class a noisy colour
    gradient of its own (so a network can learn something), ``size`` = (width, height), not square on purpose so the
    evaluation resize and centre crop have work to do. The class folders are ImageNet's first ``classes`` WordNet ids
    (``n01440764`` tench, ...), so an ImageNet-1k model's class indices and the folder's labels agree. Returns
    ``root``."""
    if classes < 1 or train_per_class < 1 or val_per_class < 1:
        raise ValueError("a fixture needs at least one class and one image per class and split")
    wnids = imagenet_wnids()
    if classes > len(wnids):
        raise ValueError(f"a fixture has at most {len(wnids)} classes (ImageNet's), got {classes}")
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    w, h = size
    ramp = torch.linspace(0, 1, w).view(1, 1, w).expand(3, h, w)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / wnids[c]
            folder.mkdir(parents=True, exist_ok=True)
            colour = torch.rand(3, 1, 1, generator=g)
            for i in range(n):
                noise = 0.15 * torch.randn(3, h, w, generator=g)
                img = (colour * 0.7 + 0.3 * ramp * (c + 1) / classes + noise).clamp(0, 1)
                arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
                Image.fromarray(arr).save(folder / f"{wnids[c]}_{split}_{i}.JPEG", quality=90)
    return root
