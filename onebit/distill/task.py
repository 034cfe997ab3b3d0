"""The distillation Task and BNext's assistant schedule ("knowledge boosting", Alg. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.distill.losses import KD_LOSSES
from onebit.distill.teachers import Teacher

__all__ = ["AssistantSchedule", "DistillationTask"]


class AssistantSchedule:
    """BNext "knowledge boosting": a fixed strong teacher plus one assistant at a time, switched at equal intervals.

    At epoch ``e`` of ``E`` with ``n`` assistants the active assistant is ``floor(e / (E/n))`` capped at ``n − 1``
    (the official code; computed exactly as ``e·n // E``, so no float rounding moves a switch). E = 512, n = 3
    switches at epochs 171 and 342. The active teachers are ``[assistant, strong]``, or ``[strong]`` without
    assistants. Teachers may be :class:`Teacher` objects or anything else (names in tests).

    Args:
        strong: the strong ("main") teacher.
        assistants: the assistant group in activation order (least to most complex).
        epochs: total training epochs E.
    """

    def __init__(self, strong: Any, assistants: Sequence[Any], epochs: int) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        self.strong, self.assistants, self.epochs = strong, list(assistants), int(epochs)

    def index(self, epoch: int) -> int | None:
        """0-based index of the active assistant (None without assistants)."""
        n = len(self.assistants)
        if n == 0:
            return None
        return min(max(int(epoch), 0) * n // self.epochs, n - 1)

    def teachers(self, epoch: int) -> list[Any]:
        """The active teacher list for ``epoch``: ``[assistant, strong]`` or ``[strong]``."""
        i = self.index(epoch)
        return [self.strong] if i is None else [self.assistants[i], self.strong]

    def active_name(self, epoch: int) -> str | None:
        """Name of the active assistant (for logs), None without assistants."""
        i = self.index(epoch)
        return None if i is None else _name(self.assistants[i])


def _name(teacher: Any) -> str:
    return getattr(teacher, "name", None) or str(teacher)


class DistillationTask:
    """Distil from frozen teachers: ``{"loss", "output", "kd", "ce"}`` for one batch.

    ``loss = kd + label_weight · ce`` where ``kd`` is ``KD_LOSSES[loss](student_logits, teacher_logits, **loss_kw)``
    and ``ce`` the label cross-entropy. The BNext code uses no label term (weight 0, the default); ``ce`` is then
    computed without gradient, for logging only.

    Args:
        teachers: a :class:`Teacher`, a list of them (all active every step), or an :class:`AssistantSchedule`
            (call :meth:`set_epoch` every epoch). Bare ``nn.Module`` s are wrapped in :class:`Teacher`.
        loss: a name in :data:`KD_LOSSES`.
        label_weight: weight of the label cross-entropy.
        **loss_kw: extra arguments of the KD loss (``temperature`` for ``kl``).

    The teachers are kept in plain Python lists, never registered on the student, so they stay out of its
    optimizer, state dict and DDP wrapper.
    """

    def __init__(
        self,
        teachers: Teacher | nn.Module | Sequence[Teacher | nn.Module] | AssistantSchedule,
        loss: str = "soft_ce",
        label_weight: float = 0.0,
        **loss_kw: Any,
    ) -> None:
        self.loss_fn = KD_LOSSES.get(loss)
        self.loss_name, self.label_weight, self.loss_kw = loss, float(label_weight), loss_kw
        self.schedule: AssistantSchedule | None = None
        if isinstance(teachers, AssistantSchedule):
            teachers.strong = _as_teacher(teachers.strong)
            teachers.assistants = [_as_teacher(t) for t in teachers.assistants]
            self.schedule = teachers
            self.teachers: list[Teacher] = teachers.teachers(0)
        else:
            group = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
            if not group:
                raise ValueError("DistillationTask needs at least one teacher")
            self.teachers = [_as_teacher(t) for t in group]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Switch to the assistant of ``epoch`` (no-op without a schedule)."""
        self.epoch = epoch
        if self.schedule is not None:
            self.teachers = self.schedule.teachers(epoch)

    @property
    def active_assistant(self) -> str | None:
        """Name of the current assistant teacher (None without a schedule or assistants)."""
        return None if self.schedule is None else self.schedule.active_name(self.epoch)

    def to(self, device: str | torch.device) -> DistillationTask:
        """Move every teacher (active or scheduled) to ``device``."""
        every = self.teachers if self.schedule is None else [self.schedule.strong, *self.schedule.assistants]
        for t in every:
            t.to(device)
        return self

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out = model(x)
        teacher_logits = [t(x) for t in self.teachers]
        kd = self.loss_fn(out, teacher_logits, **self.loss_kw)
        if self.label_weight:
            ce = F.cross_entropy(out.float(), y)
            loss = kd + self.label_weight * ce
        else:
            with torch.no_grad():
                ce = F.cross_entropy(out.float(), y)
            loss = kd
        return {"loss": loss, "output": out, "kd": kd.detach(), "ce": ce.detach()}


def _as_teacher(t: Any) -> Teacher:
    if isinstance(t, Teacher):
        return t
    if isinstance(t, nn.Module):
        return Teacher(t)
    raise TypeError(f"a teacher must be an nn.Module or a Teacher (see load_teacher), got {type(t).__name__}")
