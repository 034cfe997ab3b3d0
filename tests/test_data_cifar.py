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


# --- robustness: the restricted unpickler, damaged files, data.root -------------------------------------------------


def test_fixture_is_written_like_the_official_python2_archives(tmp_path):
    import pickletools

    folder = write_cifar_fixture(tmp_path, "cifar10", n_train=10, n_test=5)
    raw = (folder / "data_batch_1").read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert ops[0] == ("PROTO", 2)
    globals_ = [arg for name, arg in ops if "GLOBAL" in name]
    assert globals_ == ["numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"]  # numpy 1.x spelling
    assert ("SHORT_BINSTRING", "data") in ops and ("SHORT_BINSTRING", "labels") in ops  # Python 2 byte-string keys
    assert not any("UNICODE" in name or "BINBYTES" in name for name, _ in ops)
    d = pickle.loads(raw, encoding="latin1")
    assert d["data"].dtype == np.uint8 and d["data"].shape == (2, 3072) and isinstance(d["labels"], list)
    assert all(isinstance(k, str) for k in d) and all(isinstance(n, str) for n in d["filenames"])
    xt, yt, _, _, classes = load_cifar(tmp_path, "cifar10")
    assert xt.shape == (10, 3, 32, 32) and classes[0] == "class_0"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_batches_repickled_by_python3_load(tmp_path, protocol):
    """The same dicts re-pickled by Python 3 with numpy 2 (``numpy._core``; ``_codecs.encode`` bytes below protocol
    3; ``_frombuffer`` at protocol 5) load to the same tensors."""
    write_cifar_fixture(tmp_path / "a", "cifar100", n_train=12, n_test=6)
    folder = write_cifar_fixture(tmp_path / "b", "cifar100", n_train=12, n_test=6)
    for name, obj in _pickles(folder, ["train", "test", "meta"]).items():
        obj = {k.encode(): v for k, v in obj.items()} if name == "test" else obj  # bytes keys too
        (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    expected, got = load_cifar(tmp_path / "a", "cifar100"), load_cifar(folder, "cifar100")
    assert all(torch.equal(e, g) for e, g in zip(expected[:4], got[:4], strict=True)) and expected[4] == got[4]


def _evil_payloads(marker):
    import os
    import subprocess

    cmd = f"touch {marker}"
    return {
        "os.system": (os.system, (cmd,)),
        "eval": (eval, (f"__import__('os').system({cmd!r})",)),
        "exec": (exec, (f"__import__('os').system({cmd!r})",)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
    }


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("which", ["os.system", "eval", "exec", "subprocess.Popen"])
def test_malicious_batch_is_refused_before_running(tmp_path, which, protocol):
    marker = tmp_path / "pwned"
    payload = _evil_payloads(marker)[which]

    class Evil:
        def __reduce__(self):
            return payload

    folder = write_cifar_fixture(tmp_path, "cifar10")
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}, protocol=protocol))
    name = payload[0].__name__
    with pytest.raises(DataSetError, match=rf"data_batch_1: refuses to load pickled global [\w.]*\.{name}: a CIFAR"):
        load_cifar(tmp_path, "cifar10")
    assert not marker.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"(S'touch {m}'\nios\nsystem\n.",  # protocol 0 INST: the class comes through find_class too
        b"\x80\x02cnumpy\nload\nU\x01x\x85R.",  # a numpy global outside the array reconstruction
        b"\x80\x02cbuiltins\ngetattr\n.",
        b"\x80\x02c__builtin__\neval\n.",  # a Python 2 spelling
        b"\x80\x02ccopy_reg\n_reconstructor\n.",
    ],
)
def test_hand_written_globals_are_refused(tmp_path, raw):
    marker = tmp_path / "pwned"
    folder = write_cifar_fixture(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(raw.replace(b"{m}", str(marker).encode()))
    with pytest.raises(DataSetError, match=r"test_batch: refuses to load pickled global \w"):
        load_cifar(tmp_path, "cifar10")
    assert not marker.exists()


def test_persistent_ids_and_other_codecs_are_refused(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(b"\x80\x02U\x03pidQ.")  # BINPERSID
    with pytest.raises(DataSetError, match=r"test_batch: refuses to load a pickled persistent id"):
        load_cifar(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(b"\x80\x02c_codecs\nencode\nU\x01xU\x05rot13\x86R.")
    with pytest.raises(DataSetError, match=r"test_batch: not a readable CIFAR pickle.*only allowed as encode"):
        load_cifar(tmp_path, "cifar10")


def test_truncated_and_damaged_batches_name_the_file(tmp_path):
    folder = write_cifar_fixture(tmp_path, "cifar10", n_train=20)
    raw = (folder / "data_batch_4").read_bytes()
    (folder / "data_batch_4").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataSetError, match=r"data_batch_4: not a readable CIFAR pickle \(UnpicklingError"):
        load_cifar(tmp_path, "cifar10")
    (folder / "data_batch_4").write_bytes(raw[:100])  # cut inside the array header
    with pytest.raises(DataSetError, match=r"data_batch_4: not a readable CIFAR pickle"):
        load_cifar(tmp_path, "cifar10")
    (folder / "data_batch_4").write_bytes(raw)
    d = _pickles(folder, ["data_batch_2"])["data_batch_2"]
    for labels, got in (
        (["x"] * 4, "<U1"),
        (None, "NoneType"),
        ([0.5] * 4, "float64"),
        ([[0]] * 4, "int64 \\[4, 1\\]"),
    ):
        (folder / "data_batch_2").write_bytes(pickle.dumps({**d, "labels": labels}))
        with pytest.raises(DataSetError, match=rf"data_batch_2: 'labels' must be a list of integer .*got {got}"):
            load_cifar(tmp_path, "cifar10")
    (folder / "data_batch_2").write_bytes(pickle.dumps(d))
    for names in (5, [], [1, 2]):
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
        with pytest.raises(DataSetError, match=r"batches.meta: 'label_names' must be a non-empty list of class names"):
            load_cifar(tmp_path, "cifar10")
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}".encode() for i in range(10)]}))
    assert load_cifar(tmp_path, "cifar10")[4][:2] == ["c0", "c1"]  # bytes names are decoded, not "b'c0'"


def test_data_root_missing_nonexistent_file_or_empty(tmp_path):
    from onebit.config import DataConfig
    from onebit.data import build_data

    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = {
        None: r"data.root is required for data.name=cifar10: set data.root to a folder holding the cifar10 python",
        "": r"data.root is required",
        str(
            tmp_path / "nope"
        ): rf"data.root={tmp_path}/nope: no such directory \(expected a folder holding the cifar10",
        str(tmp_path / "file"): rf"data.root={tmp_path}/file: not a directory \(expected a folder holding the cifar10",
        str(tmp_path / "empty"): rf"{tmp_path}/empty: holds no cifar10 batch files \(expected cifar-10-batches-py/",
    }
    for root, message in cases.items():
        with pytest.raises(DataSetError, match=message):
            build_data(DataConfig(name="cifar10", root=root))
    with pytest.raises(DataSetError, match=rf"{tmp_path}/file: not a directory"):
        load_cifar(tmp_path / "file", "cifar100")


def _bad_cifar_roots(tmp_path):
    (tmp_path / "file").write_text("x")
    evil = tmp_path / "evil"
    write_cifar_fixture(evil, "cifar10")
    (evil / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x02cposix\nsystem\nU\x04trueR.")
    cut = tmp_path / "cut"
    folder = write_cifar_fixture(cut, "cifar10")
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:-50])
    return {
        "unset": ([], "data.root is required"),
        "nonexistent": ([f"data.root={tmp_path / 'nope'}"], f"data.root={tmp_path / 'nope'}: no such directory"),
        "file": ([f"data.root={tmp_path / 'file'}"], f"data.root={tmp_path / 'file'}: not a directory"),
        "malicious": ([f"data.root={evil}"], "data_batch_1: refuses to load pickled global posix.system"),
        "truncated": ([f"data.root={cut}"], "test_batch: not a readable CIFAR pickle"),
    }


@pytest.mark.parametrize("case", ["unset", "nonexistent", "file", "malicious", "truncated"])
def test_cli_reports_a_bad_cifar_root_in_one_line(tmp_path, capsys, case):
    from onebit.cli import main

    overrides, message = _bad_cifar_roots(tmp_path)[case]
    assert main(["train", "--smoke", "data.name=cifar10", *overrides, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
