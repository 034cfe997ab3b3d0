"""`onebit eval` and `onebit predict`: the family preprocessing against hand-computed pixels, top-1 / top-5 against
hand-counted predictions on generated ImageNet-layout and CIFAR data, packed files, run directories, class names,
and the one-line errors."""

import json

import numpy as np
import pytest
import torch
from model_helpers import trained_like
from PIL import Image
from torch import nn

from onebit.checkpoint import RunDir, save_checkpoint
from onebit.cli import main
from onebit.config import DataConfig, ModelConfig, RunConfig, save_json
from onebit.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSetError,
    load_cifar,
    write_cifar_fixture,
)
from onebit.data.cifar import normalise
from onebit.data.classes import CIFAR10_CLASSES, imagenet_classes
from onebit.data.preprocess import PRESETS, ImageFiles, cifar_inputs, folder_dataset, model_family, preprocess_for
from onebit.evaluate import EvalResult, class_counts, evaluate, load_eval_model, topk_hits
from onebit.export import export_packed
from onebit.layers.quant import quantize_
from onebit.models import create_model
from onebit.models.io import save_model_dir

CLASSES = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331")
# (width, height): shorter side 18 = the test's --resize, so the resize is the identity, and every crop offset is an
# integer under any rounding convention: what the model sees is a plain slice of the stored pixels
SIZES = ((36, 18), (18, 36), (18, 18), (20, 18))


def _run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _normalised(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 H x W x 3 -> [3, H, W] float: /255, then (x - mean) / std per channel, written out step by step."""
    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _folder(root, per_class=3, with_val=True):
    """An ImageNet-layout folder of random RGB PNG/JPEG-free images; returns (root, [(pixels, label)] in file order)."""
    rng = np.random.default_rng(0)
    base = root / "val" if with_val else root
    items = []
    for label, wnid in enumerate(CLASSES):
        d = base / wnid
        d.mkdir(parents=True)
        for i in range(per_class):
            w, h = SIZES[(label + i) % len(SIZES)]
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"img_{i}.png")  # lossless: the test knows every pixel
            items.append((arr, label))
    return root, items


def _crop16(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    top, left = (h - 16) // 2, (w - 16) // 2  # 0, 1 or 10: exact halves
    return arr[top : top + 16, left : left + 16]


def _small_model(num_classes=6, seed=0):
    torch.manual_seed(seed)
    return trained_like(create_model("resnet_digits", num_classes=num_classes, in_chans=3, width=4), seed=seed)


@torch.no_grad()
def _hand_counts(model, items, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Top-1 and top-5 hits counted one image at a time, from the stored pixels."""
    model.eval()
    top1 = top5 = 0
    per_class = {}
    for arr, label in items:
        logits = model(_normalised(_crop16(arr), mean, std)[None])[0]
        order = sorted(range(len(logits)), key=lambda i: -float(logits[i]))
        top1 += order[0] == label
        top5 += label in order[:5]
        per_class.setdefault(label, []).append(order[0] == label)
    return top1, top5, per_class


# ------------------------------------------------------------------------------------------------------ class names
def test_imagenet_class_names_are_the_standard_order():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[:3] == ("tench", "goldfish", "great white shark")
    assert names[207] == "golden retriever" and names[999] == "toilet tissue"
    assert CIFAR10_CLASSES[0] == "airplane" and len(CIFAR10_CLASSES) == 10


# ---------------------------------------------------------------------------------------------------- preprocessing
def test_family_presets_are_the_official_eval_transforms(tmp_path):
    assert (PRESETS["reactnet"].resize, PRESETS["reactnet"].crop, PRESETS["reactnet"].interpolation) == (
        256,
        224,
        "bilinear",
    )
    assert (PRESETS["bnext"].resize, PRESETS["bnext"].crop, PRESETS["bnext"].interpolation) == (235, 224, "bicubic")
    assert PRESETS["bnext"].resize == int(224 / 0.95)
    assert PRESETS["cifar"].resize is None and (PRESETS["cifar"].mean, PRESETS["cifar"].std) == (CIFAR_MEAN, CIFAR_STD)
    for name in ("bnext_tiny", "bnext_large_quant", "bnext_18", "bnext_18_quant"):
        assert model_family(name) == "bnext"
    for name in ("reactnet_a", "reactnet_resnet18", "birealnet18", "binary_resnet18", "strong_baseline"):
        assert model_family(name) == "reactnet"
    quantized = create_model("bnext_digits", num_classes=6, in_chans=3)
    quantize_(quantized)
    save_model_dir(quantized, tmp_path / "q")
    loaded = load_eval_model(tmp_path / "q")
    assert (loaded.name, loaded.family, loaded.num_classes, loaded.kind) == ("bnext_digits", "bnext", 6, "model_dir")
    with pytest.raises(DataSetError, match="larger than the resize"):
        preprocess_for("reactnet", crop=300)
    with pytest.raises(DataSetError, match="three numbers"):
        preprocess_for("reactnet", mean=[0.5, 0.5])


def test_reactnet_default_is_a_plain_centre_slice_of_an_image_already_256(tmp_path):
    # 512 x 256: the shorter side is already 256 (the resize is the identity), crop 224 starts at (144, 16)
    arr = np.random.default_rng(1).integers(0, 256, (256, 512, 3), dtype=np.uint8)
    (tmp_path / "c" / "k").mkdir(parents=True)
    Image.fromarray(arr).save(tmp_path / "c" / "k" / "a.png")
    want = _normalised(arr[16:240, 144:368], IMAGENET_MEAN, IMAGENET_STD)
    x, label = folder_dataset(tmp_path / "c", PRESETS["reactnet"])[0]
    assert label == 0 and torch.equal(x, want)
    x2, _ = ImageFiles([tmp_path / "c" / "k" / "a.png"], PRESETS["reactnet"])[0]
    assert torch.equal(x2, want)


def test_bnext_default_resizes_to_235_bicubic_then_crops_224(tmp_path):
    # 470 x 470, left half colour A, right half colour B: resized by exactly 1/2 to 235 x 235. Output column j
    # samples source 2j + 1 with a filter of radius 2 x (filter support): 4 for bicubic, 2 for bilinear. So
    # columns j <= 115 are pure A, j >= 119 pure B, and bicubic mixes three columns (116, 117, 118) where
    # bilinear mixes one (117). The 224 crop starts at 5 (or 6 under round-half-even), both covered below.
    a, b = (200, 30, 60), (10, 220, 120)
    arr = np.zeros((470, 470, 3), np.uint8)
    arr[:, :235], arr[:, 235:] = a, b
    path = tmp_path / "halves.png"
    Image.fromarray(arr).save(path)
    x, _ = ImageFiles([path], PRESETS["bnext"])[0]
    assert x.shape == (3, 224, 224)
    assert torch.equal(x, x[:, :1].expand_as(x))  # every row alike: the image is constant vertically
    pure_a = _normalised(np.full((1, 1, 3), a, np.uint8), IMAGENET_MEAN, IMAGENET_STD).view(3, 1)
    pure_b = _normalised(np.full((1, 1, 3), b, np.uint8), IMAGENET_MEAN, IMAGENET_STD).view(3, 1)
    row = x[:, 0, :]
    assert torch.equal(row[:, :110], pure_a.expand(3, 110))
    assert torch.equal(row[:, 114:], pure_b.expand(3, 110))
    mixed = [
        c for c in range(224) if not (torch.equal(row[:, c], pure_a[:, 0]) or torch.equal(row[:, c], pure_b[:, 0]))
    ]
    assert len(mixed) == 3 and mixed[0] in (110, 111)  # bicubic's three columns
    xl, _ = ImageFiles([path], preprocess_for("bnext", interpolation="bilinear"))[0]
    assert len([c for c in range(224) if not torch.equal(xl[:, 0, c], row[:, c])]) >= 2  # the filter matters


def test_overrides_follow_pil_step_by_step(tmp_path):
    # 300 x 200 -> shorter side 100: 150 x 100 (exact); crop 64 at ((150 - 64) / 2, (100 - 64) / 2) = (43, 18)
    arr = np.random.default_rng(2).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    path = tmp_path / "r.png"
    Image.fromarray(arr).save(path)
    step = Image.fromarray(arr).resize((150, 100), Image.BICUBIC).crop((43, 18, 107, 82))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    want = _normalised(np.asarray(step), mean, std)
    pre = preprocess_for("reactnet", resize=100, crop=64, interpolation="bicubic", mean=mean, std=std)
    x, _ = ImageFiles([path], pre)[0]
    assert torch.equal(x, want)


def test_cifar_inputs_are_the_training_normalisation(tmp_path):
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    want = (x.float() / 255 - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    got = cifar_inputs(x, PRESETS["cifar"])
    assert torch.equal(got, normalise(x)) and torch.allclose(got, want, atol=1e-6)
    with pytest.raises(DataSetError, match="native 32"):
        cifar_inputs(x, preprocess_for("cifar", crop=24, resize=32))


# ---------------------------------------------------------------------------------------------- counting (core)
def test_topk_and_per_class_counts():
    logits = torch.tensor([[0.0, 3, 2, 1, -1, -2], [5, 0, 0, 0, 0, 1], [-1, 0, 0, 0, 9, 8]])
    labels = torch.tensor([2, 0, 0])
    hits = topk_hits(logits, labels, (1, 5))
    assert hits.tolist() == [[False, True, False], [True, True, False]]  # sample 2: class 0 ranks 6th
    counts = class_counts(hits, labels, 6)
    assert counts[:, 0].tolist() == [2, 1, 1] and counts[:, 2].tolist() == [1, 0, 1]
    r = EvalResult((1, 5), counts, 1.0)
    assert (r.images, r.top1, r.top5) == (3, 1 / 3, 2 / 3)
    assert r.per_class(list("abcdef"))[0] == {"index": 0, "images": 2, "class": "a", "top1": 0.5, "top5": 0.5}


# -------------------------------------------------------------------------------------------------------- eval
def test_eval_folder_top1_equals_the_hand_count(tmp_path, capsys):
    root, items = _folder(tmp_path / "inet")
    model = _small_model()
    save_model_dir(model, tmp_path / "m")
    top1, top5, per_class = _hand_counts(model, items)
    args = ["--data", str(root), "--resize", "18", "--crop", "16", "--workers", "0", "--device", "cpu"]
    code, out, err = _run(capsys, "eval", str(tmp_path / "m"), *args, "--json", "--out", str(tmp_path / "r.json"))
    assert code == 0, err
    got = json.loads(out)
    assert got == json.loads((tmp_path / "r.json").read_text())
    assert (got["images"], got["top1_correct"], got["top5_correct"]) == (18, top1, top5)
    assert top5 > 0 and got["top1"] == top1 / 18
    assert [r["class"] for r in got["per_class"]] == list(CLASSES)
    assert [r["top1"] for r in got["per_class"]] == [sum(v) / len(v) for _, v in sorted(per_class.items())]
    assert got["preprocess"]["family"] == "reactnet" and got["data"]["kind"] == "imagenet"
    # the folder of class folders itself is accepted too; --limit takes evenly spaced images (every third here)
    code, out, _ = _run(capsys, "eval", str(tmp_path / "m"), *args, "--json", "--limit", "6")
    limited = _hand_counts(model, items[::3])
    assert (json.loads(out)["images"], json.loads(out)["top1_correct"]) == (6, limited[0])
    code, out, _ = _run(capsys, "eval", str(tmp_path / "m"), "--data", str(root / "val"), *args[2:], "--per-class")
    assert code == 0 and f"{100 * top1 / 18:.2f} %" in out and "n01496331" in out and "Per-class" in out


def test_eval_packed_file_equals_the_unpacked_model(tmp_path, capsys):
    root, items = _folder(tmp_path / "inet")
    model = _small_model(seed=3)
    save_model_dir(model, tmp_path / "m")
    export_packed(model, tmp_path / "m.safetensors")
    args = ["--data", str(root), "--resize", "18", "--crop", "16", "--workers", "0", "--json"]
    results = []
    for ref in (tmp_path / "m", tmp_path / "m.safetensors"):
        code, out, err = _run(capsys, "eval", str(ref), *args)
        assert code == 0, err
        results.append(json.loads(out))
    keys = ("images", "top1_correct", "top5_correct", "per_class")
    assert [results[1][k] for k in keys] == [results[0][k] for k in keys]
    assert results[1]["model"]["kind"] == "packed" and results[1]["top1_correct"] == _hand_counts(model, items)[0]


def test_eval_library_api_on_cifar(tmp_path):
    write_cifar_fixture(tmp_path, "cifar10", n_train=5, n_test=30, seed=4)
    model = _small_model(num_classes=10, seed=4)
    _, _, x, y, _ = load_cifar(tmp_path, "cifar10")
    with torch.no_grad():
        pred = model.eval()(normalise(x)).argsort(dim=1, descending=True)
    r = evaluate(model, [(normalise(x[:17]), y[:17]), (normalise(x[17:]), y[17:])])
    assert r.correct(1) == int((pred[:, 0] == y).sum()) and r.correct(5) == int((pred[:, :5] == y[:, None]).sum())


def _cifar_run(tmp_path, data_root, weights: dict[str, nn.Module]):
    """A run directory trained (so to speak) on CIFAR-10 with a checkpoint per tag."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    cfg = RunConfig(
        model=ModelConfig(name="resnet_digits", num_classes=10, kwargs={"in_chans": 3, "width": 4}),
        data=DataConfig(name="cifar10", root=str(data_root), image_size=32),
    )
    save_json(cfg, run.config)
    for tag, model in weights.items():
        save_checkpoint(run.checkpoints, tag, model, {}, {"stage_index": 0})
    return run.path


def test_eval_cifar_fixture_and_run_checkpoints(tmp_path, capsys):
    folder = write_cifar_fixture(tmp_path / "data", "cifar10", n_train=5, n_test=40, seed=5)
    _, _, x, y, _ = load_cifar(folder, "cifar10")
    best, last = _small_model(10, seed=6), _small_model(10, seed=7)
    with torch.no_grad():
        want = {k: int((m.eval()(normalise(x)).argmax(dim=1) == y).sum()) for k, m in (("best", best), ("last", last))}
    run = _cifar_run(tmp_path, tmp_path / "data", {"best": best, "last": last})
    for extra, tag in (([], "best"), (["--checkpoint", "last"], "last")):
        code, out, err = _run(capsys, "eval", str(run), "--data", str(tmp_path / "data"), "--json", *extra)
        assert code == 0, err
        got = json.loads(out)
        assert got["top1_correct"] == want[tag] and got["images"] == 40 and got["data"]["kind"] == "cifar10"
        assert got["model"]["checkpoint"].endswith(tag) and got["preprocess"]["family"] == "cifar"
        assert [r["class"] for r in got["per_class"]] == [f"class_{i}" for i in range(10)]
    # no best checkpoint: the last one, said so
    (tmp_path / "solo").mkdir()
    solo = _cifar_run(tmp_path / "solo", tmp_path / "data", {"last": last})
    loaded = load_eval_model(solo)
    assert loaded.checkpoint.endswith("last") and "no best" in loaded.note and loaded.family == "cifar"
    code, out, err = _run(capsys, "eval", str(solo), "--data", str(folder), "--checkpoint", "stage9_x")
    assert code == 2 and "no checkpoint 'stage9_x' (the run has last)" in err and not out


# ----------------------------------------------------------------------------------------------------- predict
def _biased_imagenet_model():
    """A 1000-class model whose logits are its classifier bias: 207 (golden retriever) first, then 1, 999, 0, 500."""
    model = create_model("resnet_digits", num_classes=1000, in_chans=3, width=4).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        for value, idx in zip((10.0, 8.0, 6.0, 4.0, 2.0), (207, 1, 999, 0, 500)):
            model.fc.bias[idx] = value
    return model


def test_predict_prints_imagenet_names_for_models_and_packed_files(tmp_path, capsys):
    model = _biased_imagenet_model()
    save_model_dir(model, tmp_path / "m")
    export_packed(model, tmp_path / "m.safetensors")
    img = tmp_path / "dog.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(img)
    z = torch.tensor([10.0, 8, 6, 4, 2] + [0.0] * 995).softmax(0)
    for ref in (tmp_path / "m", tmp_path / "m.safetensors"):
        code, out, err = _run(
            capsys, "predict", str(ref), str(img), str(img), "--json", "--crop", "32", "--resize", "36"
        )
        assert code == 0, err
        got = json.loads(out)
        assert len(got["predictions"]) == 2
        top = got["predictions"][0]["top"]
        assert [t["index"] for t in top] == [207, 1, 999, 0, 500]
        assert [t["name"] for t in top] == ["golden retriever", "goldfish", "toilet tissue", "tench", "cliff dwelling"]
        assert [t["prob"] for t in top] == pytest.approx(z[:5].tolist(), rel=1e-5)
    code, out, err = _run(capsys, "predict", str(tmp_path / "m"), str(img))
    assert code == 0 and "golden retriever" in out and "reactnet: resize 256 bilinear" in out


def test_predict_uses_cifar_names_and_preprocessing_of_a_cifar_run(tmp_path, capsys):
    write_cifar_fixture(tmp_path / "data", "cifar10", n_train=5, n_test=5)
    model = _small_model(10, seed=8)
    run = _cifar_run(tmp_path, tmp_path / "data", {"last": model})
    arr = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    code, out, err = _run(capsys, "predict", str(run), str(tmp_path / "x.png"), "--json", "--top", "3")
    assert code == 0, err
    got = json.loads(out)
    with torch.no_grad():
        want = model.eval()(_normalised(arr, CIFAR_MEAN, CIFAR_STD)[None])[0].softmax(0).topk(3)
    top = got["predictions"][0]["top"]
    assert [t["index"] for t in top] == want.indices.tolist()
    assert [t["name"] for t in top] == [f"class_{i}" for i in want.indices.tolist()]  # the run's data folder's names
    assert got["preprocess"]["family"] == "cifar"


# ------------------------------------------------------------------------------------------------------- errors
def test_errors_are_one_line_exit_2(tmp_path, capsys):
    root, _ = _folder(tmp_path / "inet", per_class=1)
    save_model_dir(_small_model(), tmp_path / "m")
    save_model_dir(_small_model(num_classes=10), tmp_path / "m10")
    m = str(tmp_path / "m")
    quick = ["--workers", "0", "--resize", "18", "--crop", "16"]
    (tmp_path / "empty" / "n01").mkdir(parents=True)
    (tmp_path / "trainonly" / "train" / "n01").mkdir(parents=True)
    write_cifar_fixture(tmp_path / "cifar", "cifar10", n_train=5, n_test=5)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    cases = [
        (["eval", m, "--data", str(tmp_path / "nope")], "nope: no such directory"),
        (["eval", m, "--data", str(tmp_path / "empty"), *quick], "empty class folder"),
        (["eval", m, "--data", str(tmp_path / "trainonly")], "has train/ but no val/"),
        (["eval", str(tmp_path / "m10"), "--data", str(root), *quick], "the model has 10 classes"),
        (["eval", str(tmp_path / "m10"), "--data", str(tmp_path / "cifar"), "--resize", "40"], "native 32"),
        (["eval", str(tmp_path / "junk.safetensors"), "--data", str(root)], "junk.safetensors: not a readable"),
        (["eval", str(tmp_path / "gone.safetensors"), "--data", str(root)], "no such packed file"),
        (["eval", m, "--data", str(root), "--batch-size", "0"], "--batch-size must be at least 1"),
        (["predict", m, str(tmp_path / "missing.jpg")], "missing.jpg: no such image file"),
        (["predict", m, str(tmp_path / "junk.safetensors")], "junk.safetensors: unreadable image"),
    ]
    for argv, message in cases:
        code, out, err = _run(capsys, *argv)
        assert code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert not out
    # an unreadable image in the data set stops the evaluation, or is left out with --skip-unreadable
    (root / "val" / CLASSES[0] / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, out, err = _run(capsys, "eval", m, "--data", str(root), *quick)
    assert code == 2 and "broken.JPEG: unreadable image" in err and "--skip-unreadable" in err
    code, out, err = _run(capsys, "eval", m, "--data", str(root), *quick, "--skip-unreadable", "--json")
    got = json.loads(out)
    assert code == 0 and got["images"] == 6 and list(got["skipped"]) == [str(root / "val" / CLASSES[0] / "broken.JPEG")]
