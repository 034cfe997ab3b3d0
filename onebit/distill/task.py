"""The distillation Task, BNext's assistant schedule ("knowledge boosting", Alg. 1) and the per-teacher KD weight
meter."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.distill.losses import KD_LOSSES
from onebit.distill.teachers import Teacher

__all__ = ["AssistantSchedule", "DistillationTask", "TeacherWeightMeter"]


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


def _labels(teachers: Sequence[Any]) -> tuple[str, ...]:
    """The teachers' names, a repeated name suffixed ``#2``, ``#3`` ... so every teacher keeps its own key."""
    out: list[str] = []
    for t in teachers:
        name, k = _name(t), 1
        while (name if k == 1 else f"{name}#{k}") in out:
            k += 1
        out.append(name if k == 1 else f"{name}#{k}")
    return tuple(out)


Reduce = Callable[[Tensor], Tensor]


class TeacherWeightMeter:
    """Running sums of the per-teacher KD weights of one epoch (``stats["weights"]`` of :mod:`onebit.distill.losses`).

    Per active-teacher list (the assistant switches by epoch) it keeps one float64 device tensor
    ``[Σ_steps w_1, ..., Σ_steps w_n, steps]``: :meth:`add` is two in-place device ops, no host sync; the host reads
    the numbers once, in :meth:`pop` (or :meth:`state_dict`). Under ``torch.distributed`` pass ``reduce`` (a sum over
    ranks) to both: the epoch mean is then the mean over every rank's steps.
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], Tensor] = {}

    def add(self, names: tuple[str, ...], weights: Tensor) -> None:
        acc = self.sums.get(names)
        if acc is None:
            acc = self.sums[names] = torch.zeros(len(names) + 1, dtype=torch.float64, device=weights.device)
        acc[:-1] += weights.detach().reshape(-1)
        acc[-1] += 1

    def _reduced(self, reduce: Reduce | None) -> list[tuple[tuple[str, ...], list[float]]]:
        out = []
        for names in sorted(self.sums):  # the same order on every rank
            v = self.sums[names].clone()
            out.append((names, (reduce(v) if reduce is not None else v).tolist()))
        return out

    def pop(self, reduce: Reduce | None = None) -> dict[str, float]:
        """The epoch mean weight of every teacher (by name; a teacher in several lists: weighted by steps), and
        reset."""
        total: dict[str, list[float]] = {}
        for names, row in self._reduced(reduce):
            steps = row[-1]
            for name, w in zip(names, row[:-1]):
                acc = total.setdefault(name, [0.0, 0.0])
                acc[0] += w
                acc[1] += steps
        self.sums = {}
        return {name: s / n for name, (s, n) in total.items() if n > 0}

    def state_dict(self, reduce: Reduce | None = None) -> list[dict[str, Any]]:
        """The open epoch's sums (reduced over ranks with ``reduce``; a collective then) for a checkpoint."""
        return [{"teachers": list(names), "sums": row} for names, row in self._reduced(reduce)]

    def load_state_dict(
        self, state: list[dict[str, Any]], device: str | torch.device = "cpu", zero: bool = False
    ) -> None:
        """Take back :meth:`state_dict`. Under ``torch.distributed`` every rank but 0 passes ``zero=True``: it gets
        the same teacher lists with zero sums, so the next reduce counts the saved sums once and every rank reduces
        the same tensors."""
        self.sums = {
            tuple(e["teachers"]): torch.tensor(e["sums"], dtype=torch.float64, device=device) * (0.0 if zero else 1.0)
            for e in state or []
        }


class DistillationTask:
    """Distil from frozen teachers: ``{"loss", "output", "kd", "ce"}`` for one batch.

    ``loss = kd + label_weight · ce`` where ``kd`` is ``KD_LOSSES[loss](student_logits, teacher_logits, **loss_kw)``
    and ``ce`` the label cross-entropy. The BNext code uses no label term (weight 0, the default); ``ce`` is then
    computed without gradient, for logging only. When the loss takes ``stats=`` (the built-in ones do), the batch-mean
    weight of each teacher is summed in :attr:`weight_meter` (on the device; the runner logs the epoch means as
    ``kd_weights``).

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
        self.weight_meter = TeacherWeightMeter()
        self._takes_stats = "stats" in inspect.signature(self.loss_fn).parameters and "stats" not in loss_kw
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
        if self._takes_stats:
            stats: dict[str, Tensor] = {}
            kd = self.loss_fn(out, teacher_logits, **self.loss_kw, stats=stats)
            if "weights" in stats:
                self.weight_meter.add(_labels(self.teachers), stats["weights"])
        else:
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
