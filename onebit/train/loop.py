"""The training loop as plain functions you can read top to bottom."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onebit.metrics import FlipTracker

__all__ = ["EpochMeter", "NonFiniteLossError", "evaluate", "train_one_epoch"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops without overwriting the last good checkpoint."""


@dataclass
class EpochMeter:
    """Running sums of one epoch (kept in checkpoints so a resumed epoch reports the same averages)."""

    loss: float = 0.0
    correct: int = 0
    samples: int = 0
    steps: int = 0
    ff: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def averages(self) -> dict[str, float]:
        return {
            "train_loss": self.loss / max(self.samples, 1),
            "train_acc": self.correct / max(self.samples, 1),
            "ff_ratio": self.ff / max(self.steps, 1),
        }


def train_one_epoch(
    model: nn.Module,
    task: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    lr_for_step: Callable[[int], float],
    start_step: int,
    meter: EpochMeter,
    flips: FlipTracker | None = None,
    grad_clip: float | None = None,
    on_step: Callable[[dict[str, Any]], bool] | None = None,
    dynamics: Any = None,
) -> int:
    """Train over ``batches``; returns the stage step after the last batch.

    ``on_step`` receives each step's record (loss, acc, lr, ff_ratio); returning ``False`` stops the epoch early
    (a requested interrupt). Raises :class:`NonFiniteLossError` before the optimizer touches a non-finite loss.
    ``dynamics`` (a ``DynamicsTracker``) sees the gradients and the update of every step.
    """
    model.train()
    step = start_step
    for x, y in batches:
        lr = lr_for_step(step)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = task(model, x, y)
        loss = out["loss"]
        loss_value = float(loss.detach())  # one sync per step: needed to stop on NaN before the update
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss_value} at stage step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if dynamics is not None:
            dynamics.after_backward()
        if grad_clip:  # BNext clips the global gradient norm at 5
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if dynamics is not None:
            dynamics.before_step()
        optimizer.step()
        if dynamics is not None:
            dynamics.after_step()
        ff = float(flips.update()) if flips is not None else float("nan")
        hard = y.argmax(1) if y.dim() == 2 else y  # MixUp/CutMix soft labels: the dominant class
        correct = int((out["output"].argmax(1) == hard).sum())
        n = y.shape[0]
        meter.loss += loss_value * n
        meter.correct += correct
        meter.samples += n
        meter.steps += 1
        meter.ff += 0.0 if ff != ff else ff
        step += 1
        record = {"loss": loss_value, "acc": correct / n, "lr": lr, "ff_ratio": ff, "step": step}
        if on_step is not None and on_step(record) is False:
            break
    return step


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> dict:
    """Mean cross-entropy and top-1 / top-5 accuracy (fractions) over ``batches`` in eval mode."""
    was_training = model.training
    model.eval()
    loss = 0.0
    top1 = top5 = n = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        k = min(5, out.shape[1])
        pred = out.topk(k, dim=1).indices
        top1 += int((pred[:, 0] == y).sum())
        top5 += int((pred == y[:, None]).any(dim=1).sum())
        n += y.shape[0]
    model.train(was_training)
    return {"val_loss": loss / max(n, 1), "val_top1": top1 / max(n, 1), "val_top5": top5 / max(n, 1)}
