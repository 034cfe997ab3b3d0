"""Knowledge distillation as in BNext: frozen teachers, KD losses, the assistant schedule and knowledge complexity.

* :class:`Teacher` wraps any classifier so that it is always in eval mode, frozen and run without gradients, with
  optional half-precision autocast and input re-normalisation; logits come back as float32.
* :data:`KD_LOSSES` holds the KD losses by name (``soft_ce``, ``kl``, ``gap_ensemble_official``,
  ``gap_ensemble_paper``); each is ``fn(student_logits, [teacher_logits, ...], **kw) -> scalar``.
* :class:`DistillationTask` is the Task (``{"loss", "output", "kd", "ce"}``) and :class:`AssistantSchedule` the
  "knowledge boosting" assistant switch of BNext Alg. 1.
* :func:`knowledge_complexity` / :func:`rank_teachers` implement BNext eq. 3 and the teacher-group proposal.

Teachers live outside the student on purpose: the task keeps them in a plain Python list (never an ``nn.ModuleList``
or an attribute of the student), so their parameters never reach the student's optimizer, its ``state_dict``, its
checkpoints or DDP's gradient buckets. Move them to the device yourself (``load_teacher(..., device=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.checkpoint import load_weights
from onebit.models.io import load_model
from onebit.registry import Registry

__all__ = [
    "KD_LOSSES",
    "AssistantSchedule",
    "DistillationTask",
    "Teacher",
    "count_params",
    "gap_ensemble_official",
    "gap_ensemble_paper",
    "kl_loss",
    "knowledge_complexity",
    "load_teacher",
    "rank_teachers",
    "soft_ce",
]

KDLoss = Callable[..., Tensor]
KD_LOSSES: Registry[KDLoss] = Registry("KD loss")


# ----------------------------------------------------------------------------------------------------------------
# Teachers


def _stats(value: float | Sequence[float] | Tensor | None, name: str) -> Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if (t == 0).any() and name.endswith("std"):
        raise ValueError(f"{name} must be non-zero, got {t.tolist()}")
    return t.view(1, -1, 1, 1)  # per channel, broadcast over (N, C, H, W)


def _autocast_dtype(half: bool | str | torch.dtype, device_type: str) -> torch.dtype | None:
    if half is False or half is None:
        return None
    if isinstance(half, torch.dtype):
        return half
    if half is True:
        # fp16 as in the official code on GPUs; CPU autocast is made for bfloat16, so use that there
        return torch.float16 if device_type == "cuda" else torch.bfloat16
    names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if half not in names:
        raise ValueError(f"half must be a bool, a torch dtype or one of {sorted(names)}, got {half!r}")
    return names[half]


class Teacher(nn.Module):
    """A frozen teacher: always eval, ``requires_grad=False``, run under ``torch.no_grad``, float32 logits out.

    Args:
        model: the classifier to wrap (its parameters are frozen in place).
        name: label for logs and tables (default: the class name).
        half: autocast the forward: ``True`` (fp16 on CUDA as in the BNext code, bf16 on CPU), ``"fp16"``,
            ``"bf16"`` or a dtype; ``False`` runs in the input's precision.
        mean, std: per-channel normalisation the teacher expects. When given, ``student_mean``/``student_std``
            (the statistics the batch was normalised with) must be given too, and the input is re-normalised as
            ``x' = (x * student_std + student_mean - mean) / std`` (undo the student's, apply the teacher's).
        student_mean, student_std: see above.

    ``train(mode)`` keeps the wrapped model in eval mode: BN statistics and dropout of a teacher must never change,
    even when the runner calls ``.train()`` on everything it holds.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str | None = None,
        half: bool | str | torch.dtype = False,
        mean: float | Sequence[float] | Tensor | None = None,
        std: float | Sequence[float] | Tensor | None = None,
        student_mean: float | Sequence[float] | Tensor | None = None,
        student_std: float | Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        given = [v is not None for v in (mean, std, student_mean, student_std)]
        if any(given) and not all(given):
            raise ValueError("re-normalisation needs all of mean, std, student_mean and student_std")
        self.model = model
        self.name = name or type(model).__name__
        self.half = half
        _autocast_dtype(half, "cuda")  # validate early rather than at the first batch
        for key, value in (("mean", mean), ("std", std), ("student_mean", student_mean), ("student_std", student_std)):
            # buffers follow .to(device); non-persistent so they are not mistaken for teacher weights
            self.register_buffer(key, _stats(value, key), persistent=False)
        for p in self.model.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """No-op: a teacher stays in eval mode (returns ``self`` like ``nn.Module.train``)."""
        return super().train(False)

    def normalize(self, x: Tensor) -> Tensor:
        """Re-normalise a student batch to the teacher's statistics (identity when none were given)."""
        if self.mean is None:
            return x
        return (x * self.student_std + self.student_mean - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """Teacher logits for a (student-normalised) batch, as float32 and without autograd history."""
        with torch.no_grad():
            x = self.normalize(x)
            dtype = _autocast_dtype(self.half, x.device.type)
            if dtype is None:
                # full precision even when the student runs under autocast (amp=bf16): the teacher has its own setting
                with torch.autocast(device_type=x.device.type, enabled=False):
                    out = self.model(x)
            else:
                with torch.autocast(device_type=x.device.type, dtype=dtype):
                    out = self.model(x)
        return out.float()


def load_teacher(
    spec: nn.Module | str | Path,
    *,
    device: str | torch.device | None = None,
    half: bool | str | torch.dtype = False,
    mean: float | Sequence[float] | Tensor | None = None,
    std: float | Sequence[float] | Tensor | None = None,
    student_mean: float | Sequence[float] | Tensor | None = None,
    student_std: float | Sequence[float] | Tensor | None = None,
    name: str | None = None,
) -> Teacher:
    """Build a :class:`Teacher` from a module, a registered model name, a model/run directory or a weights file.

    Args:
        spec: an ``nn.Module`` (e.g. a pretrained timm model you built), a registered onebit model name (randomly
            initialised: useful for tests only), a model or run directory (``onebit.models.io.load_model``), or a
            weights file (``.safetensors``, or a torch state dict read with ``weights_only=True``) that sits in a
            model directory, whose ``model.json`` says how to build the model.
        device: move the teacher there.
        half, mean, std, student_mean, student_std, name: see :class:`Teacher`.
    """
    if isinstance(spec, nn.Module):
        model, label = spec, name or type(spec).__name__
    else:
        model, label = _load_model_ref(spec), name or str(spec)
    teacher = Teacher(
        model, name=label, half=half, mean=mean, std=std, student_mean=student_mean, student_std=student_std
    )
    return teacher.to(device) if device is not None else teacher


def _load_model_ref(ref: str | Path) -> nn.Module:
    path = Path(ref)
    if not path.is_file():
        return load_model(ref)[0]
    # a single weights file: the architecture comes from the model.json next to it
    model = load_model(path.parent)[0] if (path.parent / "model.json").exists() else None
    if model is None:
        raise ValueError(f"{path}: a weights file needs a model.json beside it that says how to build the model")
    if path.suffix == ".safetensors":
        load_weights(model, path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # weights_only: never unpickle code
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------------------------------------------
# KD losses


def _soft_ce_per_sample(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """−Σ_c softmax(t)_c · log softmax(s)_c per sample (temperature 1)."""
    return -(F.softmax(teacher_logits.float(), dim=1) * F.log_softmax(student_logits.float(), dim=1)).sum(dim=1)


def _check(student_logits: Tensor, teacher_logits: Sequence[Tensor]) -> None:
    if len(teacher_logits) == 0:
        raise ValueError("a KD loss needs at least one teacher's logits")
    for t in teacher_logits:
        if t.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(t.shape)} vs student logits {tuple(student_logits.shape)}")


@KD_LOSSES.register("soft_ce")
def soft_ce(student_logits: Tensor, teacher_logits: Sequence[Tensor]) -> Tensor:
    """Soft cross-entropy of the BNext code: batch mean of −Σ softmax(t) log softmax(s), T = 1.

    With several teachers the per-teacher losses are averaged (the official code uses this loss inside the gap
    ensemble; on its own it has one teacher).
    """
    _check(student_logits, teacher_logits)
    return torch.stack([_soft_ce_per_sample(student_logits, t).mean() for t in teacher_logits]).mean()


@KD_LOSSES.register("kl")
def kl_loss(student_logits: Tensor, teacher_logits: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Hinton KD: τ² · batch mean of KL(softmax(t/τ) ‖ softmax(s/τ)); averaged over teachers.

    The τ² keeps the gradient scale independent of τ.
    """
    _check(student_logits, teacher_logits)
    tau = float(temperature)
    log_s = F.log_softmax(student_logits.float() / tau, dim=1)
    losses = []
    for t in teacher_logits:
        log_t = F.log_softmax(t.float() / tau, dim=1)
        losses.append((log_t.exp() * (log_t - log_s)).sum(dim=1).mean())
    return torch.stack(losses).mean() * tau * tau


@KD_LOSSES.register("gap_ensemble_official")
def gap_ensemble_official(student_logits: Tensor, teacher_logits: Sequence[Tensor]) -> Tensor:
    """The BNext code's gap-sensitive ensemble (``docs/official-code.md``, *Training BNext*), teachers ordered
    ``[assistant, strong]``.

    ``L_i`` = batch-mean soft CE to teacher i (a scalar); ``CE_{b,i}`` the same per sample; the weights
    ``α_{b,·} = softmax_i(CE_{b,i})`` are detached; loss = mean_b[Σ_i α_{b,i} · L_i] / 2. The ½ is the code's fixed
    factor (kept for any number of teachers), so one teacher gives ½·L. Because α sums to one per sample and the
    L_i are batch scalars, the value only depends on the batch-mean weights; the order of teachers does not matter.
    """
    _check(student_logits, teacher_logits)
    per_sample = torch.stack([_soft_ce_per_sample(student_logits, t) for t in teacher_logits], dim=1)  # [B, n]
    batch = per_sample.mean(dim=0)  # L_i, [n]
    alpha = F.softmax(per_sample.detach(), dim=1)  # gap-sensitive weights, no gradient through them
    return (alpha * batch.unsqueeze(0)).sum(dim=1).mean() / 2


@KD_LOSSES.register("gap_ensemble_paper")
def gap_ensemble_paper(student_logits: Tensor, teacher_logits: Sequence[Tensor]) -> Tensor:
    """BNext eq. 4 as printed, for any number of teachers.

    Reading: per sample, ``CE_i = −Σ_c p_S,c log p_{T_i},c`` (student probabilities times log teacher probabilities,
    as the equation writes it), ``σ_i = e^{CE_i} / Σ_j e^{CE_j}`` (= softmax over teachers; for two teachers the
    strong one gets σ and the assistant 1−σ, as in the paper), detached like the official weights since the paper
    treats σ as a weight; loss = batch mean of ``Σ_i σ_i · KL(p_{T_i} ‖ p_S)`` (the usual KD direction; "KL_{S,T}"
    does not fix it). There is no ½ factor here.
    """
    _check(student_logits, teacher_logits)
    log_s = F.log_softmax(student_logits.float(), dim=1)
    log_ts = [F.log_softmax(t.float(), dim=1) for t in teacher_logits]
    ce = torch.stack([-(log_s.exp() * lt).sum(dim=1) for lt in log_ts], dim=1)  # [B, n]
    sigma = F.softmax(ce.detach(), dim=1)
    kl = torch.stack([(lt.exp() * (lt - log_s)).sum(dim=1) for lt in log_ts], dim=1)  # [B, n]
    return (sigma * kl).sum(dim=1).mean()


# ----------------------------------------------------------------------------------------------------------------
# Schedule and task


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


# ----------------------------------------------------------------------------------------------------------------
# Knowledge complexity


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, frozen or not; shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def knowledge_complexity(params_millions: float, accuracy: float) -> float:
    """BNext eq. 3, ``KC = log10(1 + Params / (Accuracy · 10⁶ + 10⁻⁸))`` with Params a raw count.

    Reading (``docs/official-code.md``, *Paper formulas*): the paper's "log" is base 10 and Accuracy is a fraction,
    which reproduces Table 8 (ResNet-34, 21.80 M, 73.31 % -> 1.4877, printed 1.487, i.e. the table truncates;
    EfficientNet-B0, 5.29 M, 77.53 % -> 0.893). The natural log or the accuracy in percent do not.

    Args:
        params_millions: parameters in millions.
        accuracy: top-1 accuracy as a fraction (0.7331) or in percent (73.31); values above 1 are read as percent.
    """
    if accuracy < 0 or params_millions < 0:
        raise ValueError(f"params and accuracy must be non-negative, got {params_millions}, {accuracy}")
    acc = accuracy / 100.0 if accuracy > 1 else accuracy
    return math.log10(1.0 + params_millions * 1e6 / (acc * 1e6 + 1e-8))


def rank_teachers(entries: Iterable[Mapping[str, Any]], include_strong: bool = False) -> list[dict[str, Any]]:
    """Rank teachers by knowledge complexity and propose BNext's teacher group.

    Reading of Tables 8/9 and §4.2: the strong teacher is the most complex one (highest KC); the assistants are the
    others, activated one by one "in increasing order of accuracy and knowledge complexity", i.e. from least to most
    complex. BNext-L's group (b0, b4, ConvNeXt-T with ConvNeXt-T also strong) repeats the strong teacher as the last
    assistant: pass ``include_strong=True`` for that variant.

    Args:
        entries: mappings with ``name``, ``params_millions`` and ``accuracy`` (fraction or percent).
        include_strong: also use the strong teacher as the last assistant.

    Returns:
        One dict per teacher, least complex first: ``name``, ``params_millions``, ``accuracy`` (fraction), ``kc``,
        ``rank`` (1 = least complex), ``role`` (``"strong"``, ``"assistant k"`` (1-based activation order), or
        ``"strong, assistant k"``).
    """
    rows = []
    for e in entries:
        acc = float(e["accuracy"])
        acc = acc / 100.0 if acc > 1 else acc
        p = float(e["params_millions"])
        rows.append({"name": str(e["name"]), "params_millions": p, "accuracy": acc, "kc": knowledge_complexity(p, acc)})
    rows.sort(key=lambda r: (r["kc"], r["name"]))  # name breaks ties so the order is reproducible
    for i, r in enumerate(rows):
        r["rank"] = i + 1
        r["role"] = f"assistant {i + 1}"
    if rows:
        n = len(rows)
        rows[-1]["role"] = f"strong, assistant {n}" if include_strong and n > 1 else "strong"
    return rows
