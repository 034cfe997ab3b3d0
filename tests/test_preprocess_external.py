"""The evaluation preprocessing against torchvision's transforms (the official evaluation scripts use
``Resize(r) + CenterCrop(224) + ToTensor + Normalize`` on PIL images). Runs in the second CI environment
(``.ci/teachers.sh``), where torchvision imports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from onebit.data.preprocess import PRESETS, folder_dataset

pytestmark = pytest.mark.external
transforms = pytest.importorskip("torchvision.transforms")
InterpolationMode = transforms.InterpolationMode


@pytest.mark.parametrize("family", ["reactnet", "bnext"])
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (333, 333), (640, 427), (241, 239)])
def test_eval_transform_equals_torchvision(tmp_path, family, size):
    pre = PRESETS[family]
    rng = np.random.default_rng(sum(size))
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    d = tmp_path / "val" / "n01"
    d.mkdir(parents=True)
    Image.fromarray(arr).save(d / "a.png")
    ours, _ = folder_dataset(tmp_path / "val", pre)[0]
    mode = InterpolationMode.BICUBIC if pre.interpolation == "bicubic" else InterpolationMode.BILINEAR
    official = transforms.Compose(
        [
            transforms.Resize(pre.resize, interpolation=mode),
            transforms.CenterCrop(pre.crop),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    want = official(Image.fromarray(arr))
    assert ours.shape == want.shape
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)
