"""Teachers: a frozen wrapper (:class:`Teacher`) and :func:`load_teacher`, which builds one from a module, a name or a
path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from onebit.checkpoint import load_weights
from onebit.models.io import load_model

__all__ = ["Teacher", "load_teacher"]


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
