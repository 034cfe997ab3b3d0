"""Shared model fixtures for the deploy tests (export, ONNX)."""

from __future__ import annotations

import torch
from torch import nn

from onebit.binarize import set_temperature


def trained_like(model: nn.Module, seed: int = 0, affine: bool = True) -> nn.Module:
    """A fresh model made to look trained, in eval mode: binary-regime temperatures (progressive weight binarizers
    give ±1), non-trivial BN running statistics and (with ``affine``) BN scale and shift."""
    g = torch.Generator().manual_seed(seed)
    set_temperature(model, 0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()
