"""Learning-rate schedules as pure functions of training progress (so a resumed run needs no scheduler state)."""

from __future__ import annotations

import math

import torch

from onebit.config import ScheduleConfig

__all__ = ["lr_at", "set_lr"]


def lr_at(cfg: ScheduleConfig, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based, within the stage).

    * ``linear``: base * (1 - t/T), t and T in steps (``per="step"``) or whole epochs (``per="epoch"``); with
      ``official_offset`` (per epoch) epoch e uses base * (1 - (e + 1)/E), as the released ReActNet/AdamBNN code,
      whose LambdaLR is stepped before the first epoch.
    * ``cosine`` (BNext / timm semantics, warm-up as a prefix): e < W: warmup_lr_init + e (base - init) / W; then
      lr_min + (base - lr_min)(1 + cos(pi (e - W) / E)) / 2, with e in epochs (fractional when per step).
    * ``constant``: base.

    ``cfg.name`` and ``cfg.per`` are among their choices (``ScheduleName``, ``SchedulePer``): the config checks them.
    """
    total_steps = max(steps_per_epoch * epochs, 1)
    e = float(step // max(steps_per_epoch, 1)) if cfg.per == "epoch" else step / max(steps_per_epoch, 1)
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "linear":
        if cfg.per == "epoch":
            return base_lr * max(0.0, 1.0 - (e + (1 if cfg.official_offset else 0)) / max(epochs, 1))
        return base_lr * max(0.0, 1.0 - step / total_steps)
    # "cosine"
    w = cfg.warmup_epochs
    if e < w:
        return cfg.warmup_lr_init + e * (base_lr - cfg.warmup_lr_init) / w
    return cfg.lr_min + 0.5 * (base_lr - cfg.lr_min) * (1 + math.cos(math.pi * (e - w) / max(epochs, 1)))


def set_lr(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, step: int, steps_per_epoch: int, epochs: int
) -> float:
    """Set every group's lr for ``step`` from its ``initial_lr``; returns the first group's lr."""
    lr = 0.0
    for i, g in enumerate(optimizer.param_groups):
        v = lr_at(cfg, g["initial_lr"], step, steps_per_epoch, epochs)
        g["lr"] = v
        if i == 0:
            lr = v
    return lr
