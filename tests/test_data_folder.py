"""The ImageNet folder layout on a tiny generated fixture (real JPEG/PNG files, one corrupt)."""

import shutil
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


# --- robustness: empty class folders, class mismatches, data.root ---------------------------------------------------


def _cfg(root, **kw):
    return DataConfig(name="imagenet", root=None if root is None else str(root), image_size=16, val_resize=18, **kw)


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_class_folder_is_an_error_naming_it(tmp_path, split):
    root = _make(tmp_path / "inet", corrupt=False)
    for p in (root / split / "n02").iterdir():
        p.unlink()
    with pytest.raises(DataSetError, match=rf"inet/{split}/n02: empty class folder \(no image with extension .*\.jpg"):
        build_data(_cfg(root))
    (root / split / "n02" / "README.txt").write_text("no image here")  # a non-image file does not make it a class
    for p in (root / split / "n03").iterdir():
        p.unlink()
    (root / split / "n03" / "labels.csv").write_text("x")
    with pytest.raises(DataSetError, match=rf"{split}/n02: empty class folder .*\(and 1 more: n03\); remove it"):
        build_data(_cfg(root))


def test_classes_must_match_between_train_and_val(tmp_path):
    root = _make(tmp_path / "a", corrupt=False)
    shutil.rmtree(root / "val" / "n03")  # in train, not in val
    with pytest.raises(
        DataSetError, match=r"a/val: classes differ from the training split \(extra \[\], missing \['n03'\]"
    ):
        build_data(_cfg(root))
    root = _make(tmp_path / "b", corrupt=False)
    shutil.copytree(root / "val" / "n01", root / "val" / "n09")  # in val, not in train (with images)
    with pytest.raises(DataSetError, match=r"b/val: classes differ from the training split \(extra \['n09'\]"):
        build_data(_cfg(root))


def test_data_root_missing_nonexistent_file_or_misshapen(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "novals/train/n01").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "novals/train/n01/a.png")
    (tmp_path / "trainfile").mkdir()
    (tmp_path / "trainfile/train").write_text("x")
    cases = {
        None: r"data.root is required for data.name=imagenet: set data.root to a folder holding the ImageNet folder",
        tmp_path / "nope": rf"data.root={tmp_path}/nope: no such directory \(expected a folder holding the ImageNet",
        tmp_path / "file": rf"data.root={tmp_path}/file: not a directory \(expected a folder holding the ImageNet",
        tmp_path / "novals": rf"{tmp_path}/novals/val: no such directory \(expected <root>/train and <root>/val",
        tmp_path / "trainfile": rf"{tmp_path}/trainfile/train: not a directory \(expected <root>/train",
    }
    for root, message in cases.items():
        with pytest.raises(DataSetError, match=message):
            build_data(_cfg(root))


def _bad_folder_roots(tmp_path):
    (tmp_path / "file").write_text("x")
    root = _make(tmp_path / "inet", corrupt=False)
    for p in (root / "train" / "n03").iterdir():
        p.unlink()
    return {
        "unset": ([], "data.root is required for data.name=imagenet"),
        "nonexistent": ([f"data.root={tmp_path / 'nope'}"], f"data.root={tmp_path / 'nope'}: no such directory"),
        "file": ([f"data.root={tmp_path / 'file'}"], f"data.root={tmp_path / 'file'}: not a directory"),
        "empty class": ([f"data.root={root}"], f"{root}/train/n03: empty class folder"),
    }


@pytest.mark.parametrize("case", ["unset", "nonexistent", "file", "empty class"])
def test_cli_reports_a_bad_imagenet_root_in_one_line(tmp_path, capsys, case):
    from onebit.cli import main

    overrides, message = _bad_folder_roots(tmp_path)[case]
    assert main(["train", "--smoke", "data.name=imagenet", *overrides, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
