"""Every registered model builds, runs forward and backward at a small size, and is deterministic in eval mode.

The test is driven by ``list_models()``: each registered entrypoint needs a small-size recipe in :data:`RECIPES`
(``test_every_registered_model_has_a_recipe`` fails until a new model gets one), and is then tested automatically.

The BNext-T/S/M/L entrypoints (and their ``bnext_quant.py`` versions) take no width argument and are hundreds of
millions of parameters wide: their recipes narrow :data:`onebit.models.bnext.BNEXT_CHANNELS` for the duration of the
build (the same entrypoint code, stage pattern, depths and stride structure, a stem of 8 channels). Every other model
is built as its entrypoint builds it, at the narrowest width its signature offers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from onebit.layers.quant import QuantConfig, QuantLinear
from onebit.models import MODELS, create_model, list_models
from onebit.models import bnext as bnext_module
from onebit.models.bnext import BNextStem, InfoRCP


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to build a registered model small.

    Attributes:
        kwargs: passed to ``create_model(name, **kwargs)``.
        num_classes: the classifier width the model must produce.
        size: input height = width: the smallest the stride structure allows (the product of all strides).
        in_chans: input channels.
        bnext_size: narrow ``BNEXT_CHANNELS[bnext_size]`` (stem 8, same pattern) while building.
    """

    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_classes: int = 1000
    size: int = 32
    in_chans: int = 3
    bnext_size: str | None = None


_DIGITS = dict(num_classes=10, size=16, in_chans=1)  # two or three stride-2 reductions, stem stride 1
_BNEXT_DIGITS = {"name": "bnext_digits", "kwargs": {"num_classes": 10, "width": 8}}

#: One small-size recipe per registered model. A new model: add its entry here (narrowest width, smallest input).
RECIPES: dict[str, Recipe] = {
    # ResNet-18 family (ImageNet stem 7x7/2 + max pool, three stride-2 stages: /32); 11 M parameters, full width.
    "binary_resnet18": Recipe(),
    "birealnet18": Recipe(),
    "strong_baseline": Recipe(),
    "reactnet_resnet18": Recipe(),
    # Float ResNet-18/34 (torchvision's layout: stem 7x7/2 + max pool, three stride-2 stages: /32); full width.
    "resnet18": Recipe(),
    "resnet34": Recipe(),
    # ReActNet-A (stem /2, four stride-2 blocks: /32); 28 M parameters, full width.
    "reactnet_a": Recipe(),
    # BNext-18 (/32) at stage widths 8..64 (``widths`` goes to BNext18).
    "bnext_18": Recipe({"widths": (8, 16, 32, 64)}),
    "bnext_18_quant": Recipe({"widths": (8, 16, 32, 64)}),
    # BNext-T/S/M/L and their quantised versions (stem /2, four stride-2 blocks: /32), narrowed channel lists.
    **{f"bnext_{s}": Recipe(bnext_size=s) for s in ("tiny", "small", "middle", "large")},
    **{f"bnext_{s}_quant": Recipe(bnext_size=s) for s in ("tiny", "small", "middle", "large")},
    # Digits models (1 channel, stem stride 1).
    "resnet_digits": Recipe({"num_classes": 10, "width": 4, "family": "reactnet_resnet18"}, **_DIGITS),
    "float_resnet_digits": Recipe({"num_classes": 10, "width": 4}, **_DIGITS),
    "reactnet_digits": Recipe({"num_classes": 10, "width": 8}, **_DIGITS),
    "bnext_digits": Recipe({"num_classes": 10, "width": 8}, **_DIGITS),
    "bnext18_digits": Recipe({"num_classes": 10, "width": 8}, **_DIGITS),
    # A small BNext rewritten by quantize_ (the default W4/A8 SE setting).
    "quantized": Recipe({"base": _BNEXT_DIGITS, "quant": QuantConfig().to_dict()}, **_DIGITS),
}

#: Registered models in non-default settings that change which parameters the forward uses (BNext ablations).
VARIANTS: dict[str, tuple[str, Recipe]] = {
    "bnext_digits-no_elm": ("bnext_digits", Recipe({"num_classes": 10, "width": 8, "elm_attention": False}, **_DIGITS)),
    "bnext_digits-no_rcp": (
        "bnext_digits",
        Recipe({"num_classes": 10, "width": 8, "infor_recoupling": False}, **_DIGITS),
    ),
    "resnet_digits-binary_resnet18": (
        "resnet_digits",
        Recipe({"num_classes": 10, "width": 4, "family": "binary_resnet18"}, **_DIGITS),
    ),
    "reactnet_a-step1": ("reactnet_a", Recipe({"step": 1})),
}

CASES = {**{name: (name, recipe) for name, recipe in RECIPES.items()}, **VARIANTS}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _narrow(channels: tuple[int, ...]) -> tuple[int, ...]:
    """The same channel pattern with a stem of 8 (every BNext width is a multiple of the stem width)."""
    return tuple(c * 8 // channels[0] for c in channels)


def build(name: str, recipe: Recipe, monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    torch.manual_seed(0)
    with monkeypatch.context() as mp:
        if recipe.bnext_size is not None:
            channels = bnext_module.BNEXT_CHANNELS
            mp.setitem(channels, recipe.bnext_size, _narrow(channels[recipe.bnext_size]))
        return create_model(name, **recipe.kwargs)


def documented_unused(model: nn.Module) -> set[str]:
    """Parameters the forward never reads, as documented in ``bnext.py`` / ``bnext_quant.py`` (they exist so that
    official state dicts map completely): the BNext-T/S/M/L stem ``prelu``; ``activation1`` of every Info-RCP
    processor; ``norm2`` of an Info-RCP without recoupling; the official quantised classifier's scalar ``scale``."""
    unused: set[str] = set()
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(m, BNextStem):
            unused |= {prefix + n for n, _ in m.prelu.named_parameters(prefix="prelu")}
        elif isinstance(m, InfoRCP):
            unused |= {prefix + n for n, _ in m.activation1.named_parameters(prefix="activation1")}
            if not m.infor_recoupling:
                unused |= {prefix + n for n, _ in m.norm2.named_parameters(prefix="norm2")}
        elif isinstance(m, QuantLinear) and "scale" in m._parameters:
            unused.add(prefix + "scale")
    return unused


def _library_models() -> set[str]:
    """The registered models the package defines (other test files register throw-away entrypoints of their own)."""
    return {n for n in list_models() if MODELS.get(n).__module__.startswith("onebit.")}


def test_every_registered_model_has_a_recipe():
    registered, listed = _library_models(), set(RECIPES)
    assert registered == listed, (
        f"tests/test_models.py RECIPES is out of date: registered models without a recipe: "
        f"{sorted(registered - listed)}; recipes of models no longer registered: {sorted(listed - registered)}. "
        "Add an entry for each new model (narrowest width its entrypoint allows, smallest input its strides allow) "
        "so that it is built and run by this file."
    )


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_forward_backward_eval(case: str, monkeypatch: pytest.MonkeyPatch):
    name, recipe = CASES[case]
    if name not in list_models():
        pytest.fail(f"{name!r} has a recipe but is not registered")
    model = build(name, recipe, monkeypatch)
    assert model.onebit_spec["name"] == name
    x = torch.randn(2, recipe.in_chans, recipe.size, recipe.size, generator=torch.Generator().manual_seed(1))

    model.train()
    out = model(x)
    assert out.shape == (2, recipe.num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = {n for n, p in trainable.items() if p.grad is None}
    assert no_grad == documented_unused(model), (
        f"parameters without a gradient that are not documented unused: {sorted(no_grad - documented_unused(model))}; "
        f"documented unused ones that got a gradient: {sorted(documented_unused(model) - no_grad)}"
    )
    bad = [n for n, p in trainable.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    assert len(no_grad) < len(trainable)

    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (2, recipe.num_classes)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
