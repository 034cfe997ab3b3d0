"""CIFAR pickle batches: the fixture round-trips, CIFAR-100 fine labels, errors name the file and key."""

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from onebit.data import DataSetError
from onebit.data.cifar import CIFAR_MEAN, CIFAR_STD, build_cifar, load_cifar, write_cifar_fixture


def _pickles(folder, names):
    out = {}
    for name in names:
        with (folder / name).open("rb") as f:
            out[name] = pickle.load(f, encoding="latin1")
    return out


def test_cifar10_fixture_round_trips(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar10", n_train=20, n_test=10, seed=1)
    assert folder.name == "cifar-10-batches-py"
    raw = _pickles(folder, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    xt, yt, xv, yv, classes = load_cifar(tmp_path, "cifar10")
    assert classes == [f"class_{i}" for i in range(10)]
    assert xt.shape == (20, 3, 32, 32) and xt.dtype == torch.uint8 and xv.shape == (10, 3, 32, 32)
    data = np.concatenate([raw[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    labels = sum((raw[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert np.array_equal(xt.numpy().reshape(20, -1), data) and yt.tolist() == labels
    assert np.array_equal(xv.numpy().reshape(10, -1), raw["test_batch"]["data"])
    assert yv.tolist() == raw["test_batch"]["labels"]
    # Channel-major layout: the first 1024 values are the red plane, row by row.
    assert np.array_equal(xt[0, 0].numpy().ravel(), data[0, :1024])
    # The archive folder itself works as root too.
    assert torch.equal(load_cifar(folder, "cifar10")[0], xt)


def test_cifar100_fine_labels(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar100", n_train=12, n_test=6)
    raw = _pickles(folder, ["train", "test"])
    xt, yt, xv, yv, classes = load_cifar(tmp_path, "cifar100")
    assert len(classes) == 100 and xt.shape[0] == 12 and xv.shape[0] == 6
    assert yt.tolist() == raw["train"]["fine_labels"] and yv.tolist() == raw["test"]["fine_labels"]


def test_bytes_keys_accepted(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar10")
    path = folder / "test_batch"
    d = _pickles(folder, ["test_batch"])["test_batch"]
    with path.open("wb") as f:
        pickle.dump({k.encode(): v for k, v in d.items()}, f, protocol=2)
    assert load_cifar(tmp_path, "cifar10")[3].tolist() == d["labels"]


def test_missing_batch_file_is_named(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar10")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataSetError, match=r"data_batch_3: missing.*'data', 'labels'"):
        load_cifar(tmp_path, "cifar10")


def test_missing_key_is_named(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar10")
    with (folder / "data_batch_2").open("wb") as f:
        pickle.dump({"labels": [1, 2]}, f, protocol=2)
    with pytest.raises(DataSetError, match=r"data_batch_2: missing key\(s\) \['data'\]"):
        load_cifar(tmp_path, "cifar10")


def test_corrupt_and_misshapen_files(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar100")
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataSetError, match=r"test: not a readable CIFAR pickle"):
        load_cifar(tmp_path, "cifar100")
    with (folder / "test").open("wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}, f)
    with pytest.raises(DataSetError, match=r"test: 'data' must be uint8 \[N, 3072\]"):
        load_cifar(tmp_path, "cifar100")
    with pytest.raises(DataSetError, match="cifar100"):
        load_cifar(tmp_path, "cifar1000")


def test_build_cifar_normalises(tmp_path):
    write_cifar_fixture(tmp_path, "cifar10", n_train=20, n_test=10)
    cfg = SimpleNamespace(
        name="cifar10", root=str(tmp_path), image_size=32, batch_size=8, eval_batch_size=4, limit_train=0, limit_val=0
    )
    bundle = build_cifar(cfg, seed=3)
    assert bundle.num_classes == 10 and bundle.in_chans == 3 and bundle.image_size == 32
    assert len(bundle.train) == 3 and len(bundle.val) == 3
    xt, yt, *_ = load_cifar(tmp_path, "cifar10")
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(bundle.train.images, (xt.float() / 255 - mean) / std)
    assert torch.equal(bundle.train.labels, yt)
    first = [b for b, _ in bundle.train]
    bundle.train.set_epoch(0)
    assert torch.equal(torch.cat(first), torch.cat([b for b, _ in bundle.train]))  # same epoch, same order
    cfg.root = None
    with pytest.raises(DataSetError, match="data.root"):
        build_cifar(cfg)


def test_cifar_is_a_registered_data_set(tmp_path):
    from onebit.config import DataConfig
    from onebit.data import build_data
    from onebit.data.cifar import write_cifar_fixture

    root = write_cifar_fixture(tmp_path, "cifar10", n_train=20, n_test=10)
    data = build_data(DataConfig(name="cifar10", root=str(root), image_size=32, batch_size=8, eval_batch_size=10))
    assert data.num_classes == 10 and data.in_chans == 3 and data.train.num_samples == 20
    x, y = next(iter(data.val))
    assert x.shape == (10, 3, 32, 32) and y.dtype == torch.int64
