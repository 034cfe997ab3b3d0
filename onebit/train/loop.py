"""The training loop as plain functions you can read top to bottom."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args

import torch
import torch.nn.functional as F
from torch import nn

from onebit.config import AmpMode
from onebit.metrics import FlipTracker
from onebit.train.distributed import all_reduce_sum

__all__ = [
    "AMP_MODES",
    "EpochMeter",
    "NonFiniteLossError",
    "StepRecord",
    "StopFlag",
    "evaluate",
    "train_one_epoch",
    "train_steps",
]


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


#: the choices of ``RunConfig.amp`` (validated by the config)
AMP_MODES: tuple[str, ...] = get_args(AmpMode)


class _AutocastStudent:
    """The student under bfloat16 autocast, handing float32 logits back to the task: the loss is then taken in
    float32 and a teacher the task runs stays outside the autocast region (it keeps its own precision setting)."""

    def __init__(self, model: nn.Module, device_type: str) -> None:
        self.model, self.device_type = model, device_type

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


class StopFlag(Protocol):
    """A stop request the loop reads once per step (``threading.Event`` fits; the runner's Ctrl-C flag too)."""

    def is_set(self) -> bool: ...


@dataclass
class StepRecord:
    """One optimizer step, as the global batch saw it (every rank yields the same numbers)."""

    loss: float
    acc: float
    lr: float
    ff_ratio: float  # NaN without a flip tracker
    step: int  # the stage step after this one
    interrupted: bool = False  # the stop flag was set on some rank: the epoch ends after this step

    def values(self) -> dict[str, float | int]:
        """The logged fields, in metrics.jsonl order."""
        return {"loss": self.loss, "acc": self.acc, "lr": self.lr, "ff_ratio": self.ff_ratio, "step": self.step}


def train_steps(
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
    dynamics: Any = None,
    amp: AmpMode = "none",
    stop: StopFlag | None = None,
) -> Iterator[StepRecord]:
    """Train over ``batches``, yielding a :class:`StepRecord` after every optimizer step.

    The caller iterates: it logs, checkpoints and may ``break`` between steps. ``lr_for_step(step)`` sets the
    optimizer's lr for a stage step and returns it (e.g. ``functools.partial(set_lr, opt, schedule,
    steps_per_epoch=..., epochs=...)``). ``stop`` (e.g. a Ctrl-C flag) is read once per step; when it is set on any
    rank the step is finished, yielded with ``interrupted=True`` and the generator ends on every rank.
    Raises :class:`NonFiniteLossError` before the optimizer touches a non-finite loss (on every rank at once).
    ``meter`` is updated in place; ``dynamics`` (a ``DynamicsTracker``) sees the gradients and the update of every
    step. ``amp="bf16"`` runs the student's forward under bfloat16 autocast.

    Under ``torch.distributed`` (``model`` wrapped in DistributedDataParallel, ``batches`` this rank's share) the
    step's loss sum, correct count, sample count and stop flag are all-reduced, so ``meter`` and the records hold
    the global batch's numbers on every rank.
    """
    # bf16 autocast: about half the activation memory and faster matmuls; bf16 keeps float32's range, so no scaler
    student = _AutocastStudent(model, device.type) if amp == "bf16" else model
    model.train()
    step = start_step
    for x, y in batches:
        lr = lr_for_step(step)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = task(student, x, y)
        loss = out["loss"]
        hard = y.argmax(1) if y.dim() == 2 else y  # MixUp/CutMix soft labels: the dominant class
        n = y.shape[0]
        stop_now = bool(stop.is_set()) if stop is not None else False
        stats = torch.stack(
            [
                loss.detach().double() * n,
                (out["output"].detach().argmax(1) == hard).sum().double(),
                torch.tensor(float(n), dtype=torch.float64, device=loss.device),
                torch.tensor(float(stop_now), dtype=torch.float64, device=loss.device),
            ]
        )
        # one all-reduce and one host sync per step, before backward: every rank sees the same loss and stop flag,
        # so a NaN on any rank stops all of them before DDP's gradient all-reduce could leave one waiting
        loss_sum, correct_f, n_f, stop_f = all_reduce_sum(stats).tolist()
        loss_value = loss_sum / n_f
        if not math.isfinite(loss_value):
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
        correct, total = int(correct_f), int(n_f)
        meter.loss += loss_sum
        meter.correct += correct
        meter.samples += total
        meter.steps += 1
        meter.ff += 0.0 if ff != ff else ff
        step += 1
        interrupted = stop_f > 0
        yield StepRecord(loss_value, correct / total, lr, ff, step, interrupted)
        if interrupted:
            return


def train_one_epoch(*args: Any, **kwargs: Any) -> int:
    """:func:`train_steps` (the same arguments) run to the end of ``batches`` (or to a stop); returns the stage step
    after the last batch."""
    step = kwargs["start_step"]
    for rec in train_steps(*args, **kwargs):
        step = rec.step
    return step


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> dict:
    """Mean cross-entropy and top-1 / top-5 accuracy (fractions) over ``batches`` in eval mode.

    Under ``torch.distributed`` every rank passes its share of the validation set and must call this; the sums and
    counts are all-reduced, so every rank returns the numbers of the whole set.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top-1 hits, top-5 hits, samples
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        out = model(x)
        k = min(5, out.shape[1])
        pred = out.topk(k, dim=1).indices
        sums += torch.stack(
            [
                F.cross_entropy(out.float(), y, reduction="sum").double(),
                (pred[:, 0] == y).sum().double(),
                (pred == y[:, None]).any(dim=1).sum().double(),
                torch.tensor(float(y.shape[0]), dtype=torch.float64, device=out.device),
            ]
        ).cpu()
    model.train(was_training)
    loss, top1, top5, n = all_reduce_sum(sums.to(device)).tolist()
    n = max(n, 1)
    return {"val_loss": loss / n, "val_top1": top1 / n, "val_top5": top5 / n}
