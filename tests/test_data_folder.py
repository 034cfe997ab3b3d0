"""The ImageNet folder layout on a tiny generated fixture (real JPEG/PNG files, one corrupt)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from onebit.config import DataConfig
from onebit.data import DataSetError, build_data


def _make(root, classes=("n01", "n02", "n03"), per_class=4, corrupt=True):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (rng.integers(20, 40), rng.integers(20, 40), 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{c}_{i}.{'JPEG' if i % 2 else 'png'}")
    if corrupt:
        (root / "train" / classes[0] / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_folder_loads_batches_and_reports_corrupt_images(tmp_path):
    root = _make(tmp_path / "inet")
    data = build_data(
        DataConfig(name="imagenet", root=str(root), image_size=16, val_resize=18, batch_size=5, eval_batch_size=5)
    )
    assert data.num_classes == 3 and data.train.num_samples == 13 and data.val.num_samples == 12
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        batches = list(data.train)
    assert sum(len(y) for _, y in batches) == 12  # the corrupt file is dropped, not fatal
    assert any("broken.JPEG" in str(x.message) and "skipped 1" in str(x.message) for x in w)
    x, y = batches[0]
    assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    xv, yv = next(iter(data.val))
    assert xv.shape == (5, 3, 16, 16) and yv.tolist() == [0, 0, 0, 0, 1]
    xv2, _ = next(iter(data.val))
    assert torch.equal(xv, xv2)  # eval transform is deterministic


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataSetError, match="data.root is required"):
        build_data(DataConfig(name="imagenet"))
    with pytest.raises(DataSetError, match="no such directory"):
        build_data(DataConfig(name="imagenet", root=str(tmp_path / "nope")))
    (tmp_path / "empty/train").mkdir(parents=True)
    with pytest.raises(DataSetError, match="empty/train: no class folders"):
        build_data(DataConfig(name="imagenet", root=str(tmp_path / "empty")))
    root = _make(tmp_path / "mismatch", corrupt=False)
    (root / "val" / "n04").mkdir()
    with pytest.raises(DataSetError, match="classes differ.*extra \\['n04'\\]"):
        build_data(DataConfig(name="imagenet", root=str(root)))


def test_digits_replicated_to_three_channels():
    d = build_data(DataConfig(channels=3, limit_train=8, limit_val=8, image_size=8))
    x, _ = next(iter(d.train))
    assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2]) and d.in_chans == 3
