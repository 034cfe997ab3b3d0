"""Post-training quantisation workflows over the quantised layers of :mod:`onebit.layers.quant`: static
calibration of activation ranges and BNext's fine-tune of the quantised layers (§7.5).

The layers, :class:`QuantConfig` and the :func:`quantize_` rewrite live in :mod:`onebit.layers.quant` (a model
family such as ``bnext_quant`` builds on them); they are re-exported here::

    model = create_model("bnext_tiny")
    report = quantize_(model, QuantConfig.from_bits("8/8-4/8-4/8-8/8"))   # I-S-E-O, each W/A
    finetune(model, train_loader, epochs=5)                              # optional; AdamW, lr 1e-7, binary frozen
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onebit.layers.quant import (
    DEFAULT_BITS,
    ROLES,
    QuantConfig,
    QuantConv2d,
    QuantLinear,
    QuantMixin,
    asym_dequantize,
    asym_quantize,
    asym_quantize_codes,
    quant_layers,
    quantize_,
)

__all__ = [
    "DEFAULT_BITS",
    "ROLES",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "QuantMixin",
    "asym_dequantize",
    "asym_quantize",
    "asym_quantize_codes",
    "calibrate",
    "finetune",
    "quant_layers",
    "quantize_",
]


# ------------------------------------------------------------------------------------------- calibration, fine-tune
def _batches(loader: Iterable, limit: int | None) -> Iterable:
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            return
        yield batch


@torch.no_grad()
def calibrate(
    model: nn.Module, loader: Iterable, batches: int = 8, device: torch.device | str | None = None
) -> dict[str, tuple[float, float]]:
    """Record the static input range of every layer with ``activations="calibrated"`` over ``batches`` batches.

    The model runs in eval mode (BN statistics untouched); during calibration the calibrated layers see their float
    input. Ranges accumulate over the batches (min of minima, max of maxima) and start afresh on each call. Layers
    with dynamic activations need no calibration; with none to calibrate no batch is run.

    Args:
        model: a model after :func:`quantize_`.
        loader: yields ``(x, y)`` (or ``x``) batches.
        batches: how many batches to use.
        device: where to run (default: the model's device).

    Returns:
        ``{layer name: (min, max)}`` of the calibrated layers.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    todo = [(n, m) for n, m in quant_layers(model) if m.activations == "calibrated" and m.quantizes_input]
    if not todo:
        return {}
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    for _, m in todo:
        m.act_range.fill_(float("nan"))
        m._observing = True
    try:
        seen = 0
        for batch in _batches(loader, batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            seen += 1
        if seen == 0:
            raise ValueError("calibrate: the loader yielded no batch")
    finally:
        for _, m in todo:
            m._observing = False
        model.train(was_training)
    return {n: (float(m.act_range[0]), float(m.act_range[1])) for n, m in todo}


def finetune(
    model: nn.Module,
    loader: Iterable,
    epochs: int = 1,
    lr: float = 1e-7,
    *,
    betas: tuple[float, float] = (0.99, 0.999),
    max_batches: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Fine-tune the quantised layers only (BNext §7.5: AdamW, β = (0.99, 0.999), lr 1e-7, no weight decay).

    Only the weights and biases of the quantised layers are trained; every other parameter is frozen and the rest
    of the network runs in eval mode (BN statistics fixed, BNext latent weights not clamped), so the binary layers
    stay exactly as they were. The loss is cross-entropy on the loader's labels.

    Args:
        model: a model after :func:`quantize_`.
        loader: yields ``(x, y)``; ``set_epoch(e)`` is called when it has one.
        epochs: passes over the loader.
        lr, betas: AdamW settings (weight decay 0).
        max_batches: stop each epoch after this many batches.
        device: where to train (default: the model's device).

    Returns:
        ``{"epochs", "steps", "trained_params": number of scalars trained, "loss": mean loss per epoch}``.

    Raises:
        ValueError: no quantised layer with trainable parameters.
    """
    params = [p for _, m in quant_layers(model) for p in (m.weight, getattr(m, "bias", None)) if p is not None]
    if not params:
        raise ValueError("finetune: the model has no quantised layers; run quantize_ first")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    device = torch.device(device) if device is not None else params[0].device
    trainable = {id(p) for p in params}
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=0.0)
    losses: list[float] = []
    steps = 0
    model.eval()
    try:
        for epoch in range(epochs):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            total, n = 0.0, 0
            for x, y in _batches(loader, max_batches):
                x, y = x.to(device), y.to(device)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * y.shape[0]
                n += y.shape[0]
                steps += 1
            losses.append(total / max(n, 1))
    finally:
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return {"epochs": epochs, "steps": steps, "trained_params": sum(p.numel() for p in params), "loss": losses}
