"""Every recipe's hyper-parameters pinned to the papers and the released code.

The expected values are written out here, each with its source: "official-code: <section>" is
``docs/official-code.md`` (what the authors' scripts compute), "BNext §5.1" / "Table 9" / "Table 10" the BNext paper,
"AdamBNN §..." the AdamBNN paper, and "header" the recipe's own documented digits scaling (no paper value exists
for the bundled digits). A recipe that drifts from its source fails here, whatever its code says.
"""

import re

import pytest

from onebit.recipes import get_recipe, list_recipes, recipe_header

# ------------------------------------------------------------------------------------------------ shared settings
# official-code: Training BNext (AdamW lr 1e-3, betas (0.9, 0.999) [paper §5.1: beta1 0.99, paper != code], eps 1e-8,
# decoupled decay 1e-8 on 4-D / "binary_conv" tensors and 1e-3 on the rest, i.e. the split by rank)
BNEXT_OPTIM = {
    "name": "adamw",
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "wd_mode": "official",
    "weight_decay": 1e-8,
    "other_weight_decay": 1e-3,
}
# official-code: Training BNext (timm cosine per epoch, 5-epoch warm-up prefix from 1e-5, lr_min 1e-7; BNext §5.1:
# "5 epochs of warmup ... then ... Cosine")
BNEXT_SCHEDULE = {
    "name": "cosine",
    "per": "epoch",
    "warmup_epochs": 5,
    "warmup_lr_init": 1e-5,
    "lr_min": 1e-7,
    "official_offset": False,
}
# official-code: Training BNext (grad-norm clip 5; T = 0.9^epoch from 1; binary activations and weights from the
# start; no label smoothing, no label term; teachers under fp16 autocast, student float32)
BNEXT_STAGE = {
    "binarize_activations": True,
    "binarize_weights": True,
    "init": "scratch",
    "grad_clip": 5.0,
    "temperature": 1.0,
    "temperature_decay": 0.9,
    "label_smoothing": 0.0,
    "label_weight": 0.0,
    "teacher_half": True,
}
# official-code: Training BNext, *Data (ImageNet)*: RandomResizedCrop 224 bicubic + flip, RandAugment
# rand-m7-mstd0.5 (timm's 2 ops; BNext §5.1 "RandAugment (7, 0.5)"), no mixup/cutmix, one aug-repeat; eval resize
# 235 = floor(224 / 0.95) bicubic, centre crop 224
BNEXT_IMAGENET_DATA = {
    "name": "imagenet",
    "image_size": 224,
    "val_resize": 235,
    "interpolation": "bicubic",
    "train_augment": "none",  # the folder loader crops and flips per image
    "randaugment": True,
    "randaugment_m": 7.0,
    "randaugment_mstd": 0.5,
    "randaugment_n": 2,
    "mixup": 0.0,
    "cutmix": 0.0,
    "aug_repeats": 1,
}
# official-code: Training ReActNet and AdamBNN (Adam, coupled decay on 4-D / "conv" tensors, 0 on the rest; LambdaLR
# (1 - k/epochs) stepped before each epoch; RandomResizedCrop 224 bilinear + flip; eval resize 256 + centre crop 224)
REACTNET_SCHEDULE = {
    "name": "linear",
    "per": "epoch",
    "official_offset": True,
    "warmup_epochs": 0,
    "lr_min": 0.0,
}
REACTNET_DATA = {
    "name": "imagenet",
    "image_size": 224,
    "val_resize": 256,
    "interpolation": "bilinear",
    "batch_size": 256,
    "train_augment": "none",
    "randaugment": False,
    "mixup": 0.0,
    "cutmix": 0.0,
}


def _check(obj, expected: dict, where: str) -> None:
    for key, want in expected.items():
        got = getattr(obj, key)
        assert got == want, f"{where}.{key}: {got!r}, expected {want!r}"


def _header(name: str) -> str:
    return re.sub(r"\s+", " ", recipe_header(name))


# -------------------------------------------------------------------------------------------- BNext on ImageNet
@pytest.mark.parametrize(
    ("name", "batch", "strong", "assistants", "top1"),
    [
        # BNext Table 9 (teachers); official-code: Training BNext (batch 512 for T/S/M, 128 for L: the shipped
        # script; BNext §5.1 says 512 for all); BNext Table 2 / §5.2 (top-1)
        ("bnext_tiny", 512, "efficientnet_b2", ["efficientnet_b0"], "72.4"),
        ("bnext_small", 512, "efficientnet_b2", ["efficientnet_b0"], "76.1"),
        ("bnext_middle", 512, "efficientnet_b4", ["efficientnet_b0", "efficientnet_b2"], "78.3"),
        ("bnext_large", 128, "convnext_tiny", ["efficientnet_b0", "efficientnet_b4", "convnext_tiny"], "80.57"),
    ],
)
def test_bnext_imagenet_recipes_are_the_official_script(name, batch, strong, assistants, top1):
    cfg = get_recipe(name)
    assert cfg.model.name == name and cfg.model.num_classes == 1000
    _check(cfg.data, {**BNEXT_IMAGENET_DATA, "batch_size": batch}, "data")
    assert len(cfg.stages) == 1
    stage = cfg.stages[0]
    assert stage.epochs == 512  # official-code: Training BNext; BNext §5.1 "512 epochs"
    _check(stage, BNEXT_STAGE, "stage")
    _check(stage.optim, BNEXT_OPTIM, "optim")
    _check(stage.schedule, BNEXT_SCHEDULE, "schedule")
    # official-code: Training BNext, *Knowledge distillation* (gap-sensitive ensemble as the code computes it)
    assert stage.kd_loss == "gap_ensemble_official"
    # the teachers are the user's model directories; the header documents Table 9's choice for this size
    header = _header(name)
    assert f"strong {strong}; assistant group [{', '.join(assistants)}]" in header
    assert f"Expected: {top1} % top-1" in header


def test_bnext_18_imagenet_recipe():
    cfg = get_recipe("bnext_18")
    assert cfg.model.name == "bnext_18" and cfg.model.num_classes == 1000
    # BNext §5.1: batch 512, 512 epochs; §5.2 "standard data augmentation" (no RandAugment) for BNext-18
    _check(cfg.data, {**BNEXT_IMAGENET_DATA, "batch_size": 512, "randaugment": False}, "data")
    stage = cfg.stages[0]
    assert len(cfg.stages) == 1 and stage.epochs == 512
    _check(stage, BNEXT_STAGE, "stage")
    _check(stage.optim, BNEXT_OPTIM, "optim")
    _check(stage.schedule, BNEXT_SCHEDULE, "schedule")
    # BNext Table 9 / §7.3: ResNet-34 only, "standard KD setting", no assistant group
    assert stage.kd_loss == "soft_ce" and stage.assistants == []
    header = _header("bnext_18")
    assert "strong ResNet-34" in header and "no assistant group" in header
    assert "Expected: 68.4 % top-1" in header  # BNext Table 2


@pytest.mark.parametrize(
    ("name", "data", "classes", "expected"),
    [
        # BNext Table 3 (93.6 ± 0.12, five runs); Table 10 lists them
        ("bnext_18_cifar10", "cifar10", 10, "Expected: 93.6 ± 0.12 % top-1"),
        # BNext Table 10 (72.18 ± 0.1845 top-1, 91.55 ± 0.1945 top-5, five runs)
        ("bnext_18_cifar100", "cifar100", 100, "Expected: 72.18 ± 0.18 % top-1 / 91.55 ± 0.19 % top-5"),
    ],
)
def test_bnext_18_cifar_recipes(name, data, classes, expected):
    cfg = get_recipe(name)
    assert cfg.model.name == "bnext_18" and cfg.model.num_classes == classes
    # BNext §5.1 CIFAR: batch 128, 256 epochs, random crop + flip + normalisation; official-code: Training BNext,
    # *CIFAR* (RandomCrop 32 pad 4, flip, stem stride 1 through num_classes != 1000)
    _check(cfg.data, {"name": data, "image_size": 32, "batch_size": 128, "train_augment": "cifar"}, "data")
    _check(cfg.data, {"randaugment": False, "mixup": 0.0, "cutmix": 0.0}, "data")
    stage = cfg.stages[0]
    assert len(cfg.stages) == 1 and stage.epochs == 256
    _check(stage, BNEXT_STAGE, "stage")
    _check(stage.optim, BNEXT_OPTIM, "optim")
    _check(stage.schedule, BNEXT_SCHEDULE, "schedule")
    # BNext §5.1: "cross entropy loss" on CIFAR: no teachers
    assert stage.teachers == [] and stage.assistants == []
    header = _header(name)
    assert expected in header and "--seeds 5" in header  # "Results on CIFAR are the average of five runs"


# ---------------------------------------------------------------------------------- ReActNet-A and AdamBNN (ImageNet)
@pytest.mark.parametrize(
    ("name", "epochs", "wd", "init_from", "top1"),
    [
        # official-code: Training ReActNet and AdamBNN, table: ReActNet mobilenet 128 epochs per step, decay 1e-5 -> 0,
        # step 2 from step 1's checkpoint.pth.tar (the last); ReActNet paper 69.4
        ("reactnet_a", 128, (1e-5, 0.0), "last", "69.4"),
        # AdamBNN: 256 epochs per step, decay 5e-6 -> 0, step 2 from step 1's model_best.pth.tar; AdamBNN Table 2 70.5
        ("adambnn_reactnet_a", 256, (5e-6, 0.0), "best", "70.5"),
    ],
)
def test_reactnet_a_imagenet_recipes(name, epochs, wd, init_from, top1):
    cfg = get_recipe(name)
    assert cfg.model.name == "reactnet_a" and cfg.model.num_classes == 1000
    _check(cfg.data, REACTNET_DATA, "data")
    # AdamBNN §3.3 / official-code: two steps, binary activations first (BABW), then weights as well
    assert [(s.binarize_activations, s.binarize_weights) for s in cfg.stages] == [(True, False), (True, True)]
    assert [s.epochs for s in cfg.stages] == [epochs, epochs]
    assert cfg.stages[0].init == "scratch" and cfg.stages[1].init == "previous"
    assert cfg.stages[1].init_from == init_from
    for stage, decay in zip(cfg.stages, wd):
        # official-code: Adam lr 1.25e-3 at batch 256, betas (0.9, 0.999) passed explicitly (AdamBNN)
        want = {"name": "adam", "lr": 1.25e-3, "betas": (0.9, 0.999), "eps": 1e-8, "wd_mode": "official"}
        _check(stage.optim, {**want, "weight_decay": decay, "other_weight_decay": 0.0}, "optim")
        _check(stage.schedule, REACTNET_SCHEDULE, "schedule")
        # official-code: no clipping, no progressive binarization; soft cross-entropy to a ResNet-34, no label term
        _check(stage, {"grad_clip": None, "temperature": None, "label_smoothing": 0.0}, "stage")
        _check(stage, {"kd_loss": "soft_ce", "label_weight": 0.0, "teachers": [], "assistants": []}, "stage")
    header = _header(name)
    assert "ResNet-34" in header and f"Expected: {top1} % top-1" in header


# ------------------------------------------------------------------------------------------- AdamBNN on the digits
# header (digits scaling): reactnet_digits width 16 on the digits at 16 px, batch 64, Adam lr 2e-3, betas
# (0.9, 0.999) (AdamBNN §3.3), linear decay to 0 per step; decay 5e-6 on the binary latent weights in step 1, 0 in
# step 2 (official-code: AdamBNN 5e-6 -> 0), 12 epochs per step
DIGITS_OPTIM = {"name": "adam", "lr": 2e-3, "betas": (0.9, 0.999), "wd_mode": "paper", "other_weight_decay": 0.0}
DIGITS_SCHEDULE = {"name": "linear", "per": "step", "warmup_epochs": 0, "lr_min": 0.0, "official_offset": False}


@pytest.mark.parametrize(
    ("name", "order", "epochs", "wd"),
    [
        ("adambnn_digits", [(True, False), (True, True)], [12, 12], [5e-6, 0.0]),  # BABW (AdamBNN §3.3)
        ("adambnn_digits_bwba", [(False, True), (True, True)], [12, 12], [5e-6, 0.0]),  # BWBA (AdamBNN Table 4)
        ("adambnn_digits_onestep", [(True, True)], [24], [5e-6]),  # one step with the budget of both
    ],
)
def test_digits_recipes(name, order, epochs, wd):
    cfg = get_recipe(name)
    _check(cfg.model, {"name": "reactnet_digits", "num_classes": 10, "kwargs": {"width": 16}}, "model")
    _check(cfg.data, {"name": "digits", "image_size": 16, "batch_size": 64, "randaugment": False}, "data")
    assert [(s.binarize_activations, s.binarize_weights) for s in cfg.stages] == order
    assert [s.epochs for s in cfg.stages] == epochs
    assert [s.optim.weight_decay for s in cfg.stages] == wd
    for stage in cfg.stages:
        _check(stage.optim, DIGITS_OPTIM, "optim")
        _check(stage.schedule, DIGITS_SCHEDULE, "schedule")
        _check(stage, {"grad_clip": None, "temperature": None, "teachers": [], "kd_loss": "soft_ce"}, "stage")
    if len(cfg.stages) == 2:  # as the official AdamBNN step 2, which loads step 1's model_best
        assert cfg.stages[1].init == "previous" and cfg.stages[1].init_from == "best"


# --------------------------------------------------------------------------------------------------- every recipe
PINNED = {
    "adambnn_digits",
    "adambnn_digits_bwba",
    "adambnn_digits_onestep",
    "adambnn_reactnet_a",
    "bnext_18",
    "bnext_18_cifar10",
    "bnext_18_cifar100",
    "bnext_large",
    "bnext_middle",
    "bnext_small",
    "bnext_tiny",
    "reactnet_a",
}


def test_every_recipe_is_pinned():
    assert set(list_recipes()) == PINNED, "a new recipe needs its pinned values here"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_smoke_variants_keep_the_stage_settings(name):
    """A smoke variant changes the data, the model size and the epochs, never how a stage trains."""
    full, smoke = get_recipe(name), get_recipe(name, smoke=True)
    assert len(full.stages) == len(smoke.stages)
    for f, s in zip(full.stages, smoke.stages):
        assert s.optim == f.optim
        assert (s.schedule.name, s.schedule.per, s.schedule.official_offset) == (
            f.schedule.name,
            f.schedule.per,
            f.schedule.official_offset,
        )
        assert (s.binarize_activations, s.binarize_weights, s.init, s.init_from) == (
            f.binarize_activations,
            f.binarize_weights,
            f.init,
            f.init_from,
        )
        assert (s.grad_clip, s.temperature, s.temperature_decay, s.kd_loss) == (
            f.grad_clip,
            f.temperature,
            f.temperature_decay,
            f.kd_loss,
        )
