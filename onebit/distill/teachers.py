"""Teachers: a frozen wrapper (:class:`Teacher`) and :func:`load_teacher`, which builds one from a module or a
teacher spec.

Teacher specs: the strings of ``StageConfig.teachers`` / ``assistants`` (``stages.0.teachers=SPEC`` on the command
line) and of :func:`load_teacher`:

======================  ===================================================================================
``timm:NAME``           ``timm.create_model(NAME, pretrained=False)`` (``pip install "onebit[timm]"``)
``torchvision:NAME``    ``torchvision.models.get_model(NAME, weights=None)`` (a torchvision made for this torch)
``NAME``                a registered onebit model (``onebit.models.list_models()``), e.g. ``resnet34``
``DIR``                 a model directory (``model.json``) or a run directory (its latest checkpoint)
``python:KEY``          an ``nn.Module`` held outside the config: ``onebit.train.run(cfg, teachers={KEY: module})``
``FILE``                a weights file inside a model directory, whose ``model.json`` builds the model
======================  ===================================================================================

Any of the first five may end in ``@FILE``: the weights to load, a local ``.safetensors`` file or a ``.pth``/``.pt``
torch file (read with ``weights_only=True``; a bare state dict or ``{"model": ...}`` / ``{"state_dict": ...}``),
loaded strictly. ``timm:NAME@pretrained`` / ``torchvision:NAME@pretrained`` take the library's own pretrained
weights (timm's ``pretrained=True``, torchvision's ``weights="DEFAULT"``, as the BNext script builds its teachers):
timm/torchvision fetch them into their cache as they would on the user's machine; onebit itself never downloads.
Without ``@FILE`` or ``@pretrained`` a named model is randomly initialised — useful in tests only, so loading one
warns (:class:`RandomTeacherWarning`). Examples: ``timm:efficientnet_b2@pretrained``,
``timm:efficientnet_b2@/w/effnet_b2.safetensors``, ``torchvision:resnet34@resnet34.pth``,
``resnet34@/w/resnet34-b627a593.pth`` (onebit's own ResNet-34 takes torchvision's file), ``runs/teacher@best.pth``.
A spec that is an existing path is taken as that path as a whole (never split at ``@`` or ``:``); ``FILE`` is split
off at the last ``@``.

Classes: a model built from a name (``timm:``, ``torchvision:``, ``NAME``) gets ``num_classes`` classes when it is
given (the training runner passes the student's, so ``@FILE`` must hold a classifier of that width), else its
library's default (1000 for the ImageNet models). Directories and ``python:`` modules come as they are.

Every spec error (unknown source prefix such as ``tim:``, unknown model name with close matches, missing file or
directory, keys or shapes that do not fit) is a one-line :class:`TeacherSpecError`, a ``ValueError`` the command
line reports with exit code 2.

Records: a loaded teacher knows its ``spec``, the architecture it resolved to, its weights file and, when the source
knows it, its accuracy (a run directory without ``@FILE``: the final ``val_top1`` of its ``summary.json``; otherwise
``None``); :meth:`Teacher.record` returns them with the parameter count for run summaries.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from onebit.checkpoint import RunDir
from onebit.models._registry import MODELS, create_model
from onebit.models.external import EXTERNAL_SOURCES, build_external, check_external, load_state, read_state_dict
from onebit.models.io import ModelLoadError, load_model

__all__ = [
    "TEACHER_SOURCES",
    "RandomTeacherWarning",
    "Teacher",
    "TeacherSpec",
    "TeacherSpecError",
    "load_teacher",
    "parse_teacher_spec",
]

#: The prefixes of a teacher spec (``PREFIX:NAME``); a spec without one is a onebit model name or a path.
TEACHER_SOURCES = (*EXTERNAL_SOURCES, "python")


class RandomTeacherWarning(UserWarning):
    """A teacher built from a name without weights (no ``@FILE`` or ``@pretrained``): random logits to distil from."""


class TeacherSpecError(ModelLoadError):
    """A teacher spec that cannot be parsed, resolved or loaded (one line; a ``ValueError``)."""


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

    Where the teacher came from (set by :func:`load_teacher`; see :meth:`record`): ``spec`` (the teacher spec, or
    the name of a module given directly), ``arch`` (the architecture it resolved to), ``weights`` (the ``@FILE``
    loaded, or ``None``) and ``accuracy`` (top-1 as a fraction when the source knows it, else ``None``).
    """

    spec: str | None = None
    arch: str | None = None
    weights: str | None = None
    accuracy: float | None = None

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

    def record(self) -> dict[str, Any]:
        """What a run records of this teacher: ``spec``, ``name``, ``arch``, ``class``, ``weights``, ``params_m``
        (millions of parameters, shared tensors counted once) and ``accuracy`` (``None`` when unknown)."""
        params = {id(p): p.numel() for p in self.model.parameters()}
        return {
            "spec": self.spec if self.spec is not None else self.name,
            "name": self.name,
            "arch": self.arch or type(self.model).__name__,
            "class": type(self.model).__name__,
            "weights": self.weights,
            "params_m": round(sum(params.values()) / 1e6, 4),
            "accuracy": self.accuracy,
        }

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


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed teacher spec.

    Attributes:
        text: the spec as written.
        source: ``timm``, ``torchvision``, ``python``, ``onebit`` (a registered name), ``dir`` (a model or run
            directory) or ``file`` (a weights file inside a model directory).
        name: the model name, module key or path.
        weights: the ``@FILE`` to load, or ``None``.
        pretrained: ``@pretrained`` (timm/torchvision only): the library's pretrained weights.
    """

    text: str
    source: str
    name: str
    weights: Path | None = None
    pretrained: bool = False


_PREFIX = re.compile(r"([A-Za-z][\w-]+):(.*)\Z", re.DOTALL)  # two letters at least: C:\... stays a path
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith((".", "~")) or Path(text).suffix in _WEIGHT_SUFFIXES


def parse_teacher_spec(spec: str | Path) -> TeacherSpec:
    """Parse a teacher spec (grammar: the module docstring) without building anything; syntax errors and paths
    that do not exist raise :class:`TeacherSpecError`."""
    text = str(spec).strip()
    if not text:
        raise TeacherSpecError("empty teacher spec")
    whole = Path(text).expanduser()
    if whole.exists():  # an existing path is never split at '@' or ':'
        return TeacherSpec(text, "dir" if whole.is_dir() else "file", str(whole))
    base, weights = text, None
    if "@" in text:
        base, _, file = text.rpartition("@")
        if not base or not file:
            raise TeacherSpecError(f"teacher {text!r}: '@' joins a model and its weights file (SPEC@FILE)")
        weights = Path(file).expanduser()
    m = _PREFIX.match(base)
    if m is not None and not Path(base).exists():
        prefix, name = m.groups()
        if prefix not in TEACHER_SOURCES:
            close = difflib.get_close_matches(prefix, TEACHER_SOURCES, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}:'?" if close else ""
            known = ", ".join(f"{p}:" for p in TEACHER_SOURCES)
            raise TeacherSpecError(
                f"teacher {text!r}: unknown source '{prefix}:'{hint} (known: {known}; without a prefix: a onebit "
                f"model name or a model/run directory)"
            )
        if not name:
            raise TeacherSpecError(f"teacher {text!r}: '{prefix}:' needs a name after it")
        if weights is not None and str(weights) == "pretrained":
            if prefix not in EXTERNAL_SOURCES:
                raise TeacherSpecError(f"teacher {text!r}: @pretrained is for timm: and torchvision: models")
            return TeacherSpec(text, prefix, name, None, pretrained=True)
        return TeacherSpec(text, prefix, name, weights)
    path = Path(base).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TeacherSpecError(
                f"teacher {text!r}: {base} is a file; SPEC@FILE takes a model name or a model/run directory before '@'"
            )
        return TeacherSpec(text, "dir", str(path), weights)
    if _looks_like_path(base):
        raise TeacherSpecError(f"teacher {text!r}: {base}: no such file or directory")
    return TeacherSpec(text, "onebit", base, weights)


def check_teacher_spec(spec: str | Path | TeacherSpec, modules: Mapping[str, nn.Module] | None = None) -> TeacherSpec:
    """Check a teacher spec without building the model: its syntax, that its model name is known (onebit, timm or
    torchvision, with close matches otherwise), its directory is a model or run directory, its files exist and a
    ``python:KEY`` is among ``modules``. Cheap enough to check every stage's teachers before a run starts."""
    p = spec if isinstance(spec, TeacherSpec) else parse_teacher_spec(spec)
    if p.weights is not None and not p.weights.is_file():
        what = "is a directory" if p.weights.is_dir() else "no such file"
        raise TeacherSpecError(f"teacher {p.text!r}: weights file {p.weights}: {what}")
    if p.source in EXTERNAL_SOURCES:
        try:
            check_external(p.source, p.name)
        except ModelLoadError as e:
            raise _spec_error(p, e) from None
    elif p.source == "onebit" and p.name not in MODELS:
        close = difflib.get_close_matches(p.name, MODELS.list(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TeacherSpecError(
            f"teacher {p.text!r}: not a onebit model name nor a path{hint} (models: onebit.models.list_models(); "
            f"third-party: timm:NAME, torchvision:NAME)"
        )
    elif p.source == "dir":
        d = Path(p.name)
        if not (d / "model.json").exists() and not RunDir(d).has_config():
            raise TeacherSpecError(
                f"teacher {p.text!r}: {d} is neither a model directory (model.json) nor a run directory (config.json)"
            )
    elif p.source == "file" and not (Path(p.name).parent / "model.json").exists():
        raise TeacherSpecError(
            f"teacher {p.text!r}: a weights file needs a model.json beside it that says how to build the model "
            f"(or name the model: NAME@FILE, timm:NAME@FILE, torchvision:NAME@FILE)"
        )
    elif p.source == "python" and p.name not in (modules or {}):
        given = ", ".join(sorted(modules or {})) or "none"
        raise TeacherSpecError(
            f"teacher {p.text!r} names a Python module: pass it as onebit.train.run(..., "
            f"teachers={{{p.name!r}: module}}) (a resumed run needs it again; python teachers given: {given})"
        )
    return p


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
    num_classes: int | None = None,
    modules: Mapping[str, nn.Module] | None = None,
) -> Teacher:
    """Build a :class:`Teacher` from a module or a teacher spec.

    Spec grammar (details in the module docstring); each of the first five may end in ``@FILE`` (local
    ``.safetensors`` or ``.pth``/``.pt`` weights, loaded strictly; onebit never downloads weights)::

        timm:NAME            timm.create_model(NAME, pretrained=False)
        torchvision:NAME     torchvision.models.get_model(NAME, weights=None)
        NAME                 a registered onebit model, e.g. resnet34 (resnet34@resnet34-b627a593.pth)
        DIR                  a model directory (model.json) or a run directory (latest checkpoint)
        python:KEY           modules[KEY] (onebit.train.run(cfg, teachers={KEY: module}))
        FILE                 a weights file inside a model directory (its model.json builds the model)

    Args:
        spec: an ``nn.Module`` (e.g. a pretrained timm model you built; a :class:`Teacher` is re-wrapped with these
            settings) or a spec string/path.
        device: move the teacher there.
        half, mean, std, student_mean, student_std, name: see :class:`Teacher` (``name`` defaults to the spec).
        num_classes: classifier width of a model built from a name (``timm:``, ``torchvision:``, onebit ``NAME``);
            ``None``: the library's default (1000 for ImageNet models). Directories and modules are used as they are.
        modules: the modules ``python:KEY`` specs name.

    Raises:
        TeacherSpecError: a bad spec (one line: unknown prefix or name with close matches, missing file, weights
            whose keys or shapes do not fit).
    """
    if isinstance(spec, nn.Module):
        model = spec.model if isinstance(spec, Teacher) else spec
        label = name or (spec.name if isinstance(spec, Teacher) else type(spec).__name__)
        info: dict[str, Any] = {"spec": label, "arch": _arch(model, type(model).__name__)}
    else:
        model, info = _build(check_teacher_spec(spec, modules), num_classes, modules)
        label = name or info["spec"]
    teacher = Teacher(
        model, name=label, half=half, mean=mean, std=std, student_mean=student_mean, student_std=student_std
    )
    for key, value in info.items():
        setattr(teacher, key, value)
    return teacher.to(device) if device is not None else teacher


def _arch(model: nn.Module, default: str) -> str:
    """The architecture a model was built as: its onebit entrypoint, timm's architecture, else ``default``."""
    spec = getattr(model, "onebit_spec", None)
    if isinstance(spec, dict) and spec.get("name"):
        return str(spec["name"])
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):
        return f"timm:{cfg['architecture']}"
    return default


def _spec_error(p: TeacherSpec, e: Exception) -> TeacherSpecError:
    """``e`` as a TeacherSpecError that starts ``teacher 'SPEC': `` (once)."""
    msg = str(e)
    if msg.startswith("teacher "):
        return TeacherSpecError(msg)
    msg = msg.removeprefix(f"{p.source}:{p.name}: ")
    return TeacherSpecError(f"teacher {p.text!r}: {msg}")


def _run_accuracy(path: Path) -> float | None:
    """The final val top-1 of a completed run directory (``summary.json``), else ``None``."""
    try:
        final = RunDir(path).read_summary().get("final") or {}
    except (OSError, ValueError):
        return None
    acc = final.get("val_top1")
    return float(acc) if isinstance(acc, int | float) else None


def _build(p: TeacherSpec, num_classes: int | None, modules: Mapping[str, nn.Module] | None):
    """``(model, info)`` of a checked spec: ``info`` holds ``spec``, ``arch``, ``weights``, ``accuracy``."""
    accuracy, what = None, p.name
    try:
        if p.source in EXTERNAL_SOURCES:
            classes = None if p.pretrained else num_classes  # pretrained: the library's head (checked at stage start)
            model, arch = build_external(p.source, p.name, classes, p.pretrained), f"{p.source}:{p.name}"
        elif p.source == "onebit":
            model = create_model(p.name, num_classes=num_classes)
            arch = p.name
        elif p.source == "python":
            given = modules[p.name]  # type: ignore[index]  (checked)
            model = given.model if isinstance(given, Teacher) else given
            arch = type(model).__name__
        elif p.source == "dir":
            model = load_model(p.name)[0]
            arch = _arch(model, p.name)
            if p.weights is None and RunDir(p.name).has_config():
                accuracy = _run_accuracy(Path(p.name))
        else:  # a weights file in a model directory
            model = load_model(Path(p.name).parent)[0]
            arch = _arch(model, p.name)
            load_state(model, read_state_dict(p.name), p.name, f"the model of {Path(p.name).parent / 'model.json'}")
    except TypeError as e:  # an entrypoint without num_classes, a model.json with stale kwargs
        raise TeacherSpecError(f"teacher {p.text!r}: cannot build it: {e}") from None
    except ModelLoadError as e:
        raise _spec_error(p, e) from None
    if p.weights is not None:
        if num_classes is not None and p.source in (*EXTERNAL_SOURCES, "onebit"):
            shown = p.name if p.source == "onebit" else f"{p.source}:{p.name}"
            what = f"{shown} built with num_classes={num_classes}"
        try:
            load_state(model, read_state_dict(p.weights), str(p.weights), what)
        except ModelLoadError as e:
            raise _spec_error(p, e) from None
    weights = str(p.weights) if p.weights is not None else (p.name if p.source == "file" else None)
    if p.pretrained:
        weights = "pretrained"
    elif weights is None and p.source in (*EXTERNAL_SOURCES, "onebit"):
        warnings.warn(
            f"teacher {p.text!r} is randomly initialised (no @FILE or @pretrained): fine for a test, useless for "
            "distillation",
            RandomTeacherWarning,
            stacklevel=3,
        )
    return model, {"spec": p.text, "arch": arch, "weights": weights, "accuracy": accuracy}
