"""Tasks: what one training step computes, returned as a dict of losses (``loss`` is optimised)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassificationTask"]


class ClassificationTask:
    """Cross-entropy on the labels (optionally label-smoothed). Returns ``{"loss", "output"}``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out = model(x)
        # soft targets (MixUp/CutMix) are class probabilities; F.cross_entropy takes both forms
        return {"loss": F.cross_entropy(out, y, label_smoothing=self.label_smoothing), "output": out}
