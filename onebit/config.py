"""Typed run configuration: dataclasses, dotted ``key=value`` overrides, JSON round-trip.

A run is a :class:`RunConfig` holding a model, a data set and a list of :class:`StageConfig` (multi-stage training
is a list; adding a stage is adding an element). Overrides address any field by its dotted path; list elements by
index or, for stages, by name, and ``*`` addresses every element::

    data.batch_size=128  stages.1.optim.lr=5e-4  stages.step2.epochs=3  stages.*.optim.weight_decay=0

Closed choices (``training_path``, ``amp``, ``data.interpolation``, ...) are ``typing.Literal`` aliases defined here,
the single source of truth (``onebit.layers.TRAINING_PATHS`` and the like are ``typing.get_args`` of them). A config
never holds a value outside its field's choices: every assignment to such a field is checked (the dataclass
``__init__``, ``from_dict``/``load_json``, ``apply_overrides`` and plain ``cfg.amp = ...`` alike), so the code that
uses a config does not check again. Open sets (models, data sets, optimizers, KD losses: registries) stay ``str``
and are checked against their registry where it is looked up.

Numeric fields with an obvious domain carry it as ``typing.Annotated`` metadata (a :class:`Range`, mostly through the
aliases :data:`PositiveInt`, :data:`NonNegativeInt`, :data:`FiniteFloat`, :data:`NonNegativeFloat`,
:data:`PositiveFloat`, :data:`UnitFraction`), checked by the same mechanism on every assignment: a config never holds
``data.batch_size=0``, ``stages.0.epochs=0`` or ``lr=nan``, so a bad value fails when it is set (the override or the
JSON file names its dotted key), before any run directory exists. Float domains are finite.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from onebit.report import atomic_write_text

__all__ = [
    "AmpMode",
    "ConfigError",
    "DataConfig",
    "FiniteFloat",
    "InitFrom",
    "Interpolation",
    "ModelConfig",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OptimConfig",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "RunConfig",
    "ScheduleConfig",
    "ScheduleName",
    "SchedulePer",
    "StageConfig",
    "TrainAugment",
    "TrainingPath",
    "UnitFraction",
    "WdMode",
    "apply_overrides",
    "from_dict",
    "load_json",
    "save_json",
    "to_dict",
    "valid_keys",
]


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key and what was expected."""


# ------------------------------------------------------------------------------------------------- closed choices
#: How binary layers run in training (``onebit.layers.set_training_path``; ``onebit.layers.TRAINING_PATHS``).
TrainingPath = Literal["lean", "module", "reference"]
#: Mixed precision of the student's forward (``onebit.train.loop``).
AmpMode = Literal["none", "bf16"]
#: Resampling filter of the image resizes (``onebit.data.folder``).
Interpolation = Literal["bilinear", "bicubic"]
#: Geometric batch augmentation (``onebit.augment.AUGMENT_KINDS``).
TrainAugment = Literal["none", "cifar", "imagenet"]
#: Weight-decay grouping rule (``onebit.train.optim.param_groups``).
WdMode = Literal["paper", "official"]
#: Learning-rate schedule shape and update granularity (``onebit.train.schedules.lr_at``).
ScheduleName = Literal["linear", "cosine", "constant"]
SchedulePer = Literal["step", "epoch"]
#: Which checkpoint of the previous stage a stage starts from (``StageConfig.init_from``).
InitFrom = Literal["last", "best"]


def _check_choice(value: Any, tp: Any, key: str) -> Any:
    """``value`` if it is one of the choices of the ``Literal`` ``tp``, else a ConfigError naming ``key``, the value,
    the choices and the closest choice."""
    choices = typing.get_args(tp)
    if any(value == c and type(value) is type(c) for c in choices):
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")


# ------------------------------------------------------------------------------------------------ numeric domains
class _OutOfDomain(ConfigError):
    """A value of the right type outside its field's domain (not retried against the other members of a union)."""


@dataclass(frozen=True)
class Range:
    """The domain of a numeric config field, as ``typing.Annotated`` metadata: ``Annotated[int, Range(ge=1)]``.

    ``ge``/``gt`` and ``le``/``lt`` are inclusive/exclusive bounds (``None``: unbounded). A float value must also be
    finite, so ``Range()`` on a float field means "any finite number".
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __str__(self) -> str:
        lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else ""
        hi = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else ""
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        if hi:
            return f"{'<=' if self.le is not None else '<'} {hi[:-1]}"
        return ""

    def check(self, value: Any, key: str) -> None:
        """Raise a ConfigError naming ``key`` unless the number ``value`` lies in this range (and is finite)."""
        bound = str(self)
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):  # numpy floats too
            raise _OutOfDomain(f"{key} must be a finite number{' ' + bound if bound else ''}, got {value!r}")
        ok = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        if not ok:
            raise _OutOfDomain(f"{key} must be {bound}, got {value!r}")


#: Common numeric domains of the config fields.
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
FiniteFloat = Annotated[float, Range()]
NonNegativeFloat = Annotated[float, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
UnitFraction = Annotated[float, Range(ge=0, lt=1)]  # [0, 1): label smoothing, Adam betas


def _check_number(value: Any, tp: Any, key: str) -> None:
    """The base-type check of an assignment to an ``Annotated`` numeric field (no coercion: that is for overrides
    and JSON): an int field takes an integral number, a float field any real number; never a bool."""
    base, *meta = typing.get_args(tp)
    kind = numbers.Integral if base is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{key} expects {_type_name(base)}, got {value!r}")
    for m in meta:
        if isinstance(m, Range):
            m.check(value, key)


def _check_value(value: Any, tp: Any, key: str) -> None:
    """Check an assigned ``value`` against the choices and domains in its field type ``tp`` (a ``Literal``, an
    ``Annotated`` number, or an optional, list or tuple of those); list elements are named ``key.<index>``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        _check_choice(value, tp, key)
    elif origin is Annotated:
        _check_number(value, tp, key)
    elif origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            _check_value(value, members[0], key)
    elif origin in (list, tuple) and isinstance(value, list | tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            elems = list(args)
        else:
            elems = [args[0] if args else Any] * len(value)
        for i, (v, a) in enumerate(zip(value, elems)):
            _check_value(v, a, f"{key}.{i}")


def _has_checks(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return True
    if origin is Annotated:
        return any(isinstance(m, Range) for m in typing.get_args(tp)[1:])
    return any(_has_checks(a) for a in typing.get_args(tp))


@functools.cache
def _checked_fields(cls: type) -> dict[str, Any]:
    """The fields of a config class whose values are checked on assignment (``Literal`` choices, ``Range``
    domains, alone or inside an optional/list/tuple), by name, with their full (``Annotated``) types."""
    return {k: tp for k, tp in _hints(cls).items() if _has_checks(tp)}


class _Choices:
    """Base of the config dataclasses: every assignment to a ``Literal``-typed field or a numeric field with a
    :class:`Range` (``__init__`` included) is checked against the field's choices or domain, so a config never holds
    a value outside them."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        tp = _checked_fields(type(self)).get(name)
        if tp is not None:
            _check_value(value, tp, f"{type(self).__name__}.{name}")
        super().__setattr__(name, value)


@dataclass
class ModelConfig(_Choices):
    """Which registered model to build (``onebit.create_model(name, num_classes, **kwargs)``)."""

    name: str = "reactnet_digits"
    num_classes: PositiveInt = 10
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig(_Choices):
    """Data set and loader settings.

    Attributes:
        name: ``digits`` (bundled, scikit-learn), or another name registered in ``onebit.data.DATASETS``.
        root: folder of an on-disk data set (unused for ``digits``).
        image_size: side length the images are resized to (digits: 8x8 upsampled bilinearly).
        batch_size, eval_batch_size: loader batch sizes; under ``torchrun`` the *global* batch over all processes
            (each rank takes ``batch_size / world_size``; ``batch_size`` must be divisible by it).
        augment: random translation (digits: pad 2 then random crop) on the training set.
        val_fraction, split_seed: the fixed stratified train/val split of the digits (20 %, seed 0: 1437/360).
        limit_train, limit_val: keep only the first N samples (0 = all); smoke variants use this.
        num_workers: DataLoader workers for on-disk data sets.
        channels: replicate single-channel images to this many channels (0 = native; 3 lets ImageNet models
            such as ``reactnet_a`` run on the bundled digits).
        val_resize: ImageNet-folder evaluation: resize the shorter side to this, then centre-crop ``image_size``
            (256 -> 224 in the ReActNet/AdamBNN code; BNext uses 235 with bicubic).
        interpolation: ``bilinear`` (ReActNet/AdamBNN) or ``bicubic`` (BNext) for the ImageNet-folder resizes.
        train_augment: batch augmentation on the training device (``onebit.augment``): ``none``, ``cifar``
            (pad-4 crop + flip) or ``imagenet`` (random resized crop + flip, for in-memory data; the ImageNet folder
            loader already crops per image).
        randaugment, randaugment_m, randaugment_mstd, randaugment_n: RandAugment (BNext: m 7, std 0.5, 2 ops).
        mixup, cutmix: Beta alphas of MixUp / CutMix (0 = off); labels become soft.
        aug_repeats: repeated augmentation (DeiT/timm ``RepeatAugSampler``): each drawn image appears this many times
            in a row within an epoch of unchanged length (1 = plain shuffle; BNext Table 6).
    """

    name: str = "digits"
    root: str | None = None
    image_size: PositiveInt = 16
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 256
    augment: bool = True
    val_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.2
    split_seed: NonNegativeInt = 0
    limit_train: NonNegativeInt = 0
    limit_val: NonNegativeInt = 0
    num_workers: NonNegativeInt = 0
    channels: NonNegativeInt = 0
    val_resize: PositiveInt = 256
    interpolation: Interpolation = "bilinear"
    train_augment: TrainAugment = "none"
    randaugment: bool = False
    randaugment_m: Annotated[float, Range(ge=0, le=10)] = 7.0
    randaugment_mstd: NonNegativeFloat = 0.5
    randaugment_n: NonNegativeInt = 2
    mixup: NonNegativeFloat = 0.0
    cutmix: NonNegativeFloat = 0.0
    aug_repeats: PositiveInt = 1


@dataclass
class OptimConfig(_Choices):
    """Optimizer of one stage, built on parameter groups by role (see ``onebit.train.optim``).

    Attributes:
        name: ``adam``, ``adamw``, ``sgd``, ... (``onebit.train.optim.OPTIMIZERS``).
        lr: peak learning rate.
        weight_decay: decay of the binary latent weights (``wd_mode="paper"``) or of the 4-D/"conv" group
            (``wd_mode="official"``, the rule of the released AdamBNN/ReActNet code). Negative values are allowed.
        other_weight_decay: decay of the remaining real-valued weights (paper mode) / the other group (official).
        wd_mode: ``paper`` (by role) or ``official`` (by tensor rank and name).
        no_decay_norm_bias: in paper mode, keep BN/bias/PReLU/shift parameters out of any decay.
        betas, eps: Adam-family settings; momentum, nesterov: SGD/RMSprop settings.
    """

    name: str = "adam"
    lr: NonNegativeFloat = 1e-3
    weight_decay: FiniteFloat = 0.0
    other_weight_decay: FiniteFloat = 0.0
    wd_mode: WdMode = "paper"
    no_decay_norm_bias: bool = True
    betas: tuple[UnitFraction, UnitFraction] = (0.9, 0.999)
    eps: NonNegativeFloat = 1e-8
    momentum: NonNegativeFloat = 0.9
    nesterov: bool = False


@dataclass
class ScheduleConfig(_Choices):
    """Learning-rate schedule of one stage.

    Attributes:
        name: ``linear`` (to 0 at the end), ``cosine`` (with warm-up), ``constant``.
        per: ``step`` (updated every optimizer step) or ``epoch`` (constant within an epoch).
        warmup_epochs: linear warm-up prefix from ``warmup_lr_init`` (cosine only).
        warmup_lr_init, lr_min: warm-up start and cosine floor.
        official_offset: linear per-epoch variant of the released ReActNet/AdamBNN code, which steps the scheduler
            before the first epoch, so epoch e trains with lr * (1 - (e + 1) / epochs).
    """

    name: ScheduleName = "linear"
    per: SchedulePer = "step"
    warmup_epochs: NonNegativeInt = 0
    warmup_lr_init: NonNegativeFloat = 0.0
    lr_min: NonNegativeFloat = 0.0
    official_offset: bool = False


@dataclass
class StageConfig(_Choices):
    """One training stage.

    Attributes:
        name: used in checkpoint names and tables.
        epochs: epochs of this stage.
        binarize_activations, binarize_weights: what the binary layers binarize in this stage.
        init: ``previous`` (continue from the previous stage, every latent weight inherited; ``scratch`` for the
            first stage), ``scratch`` (a freshly initialised model), or a checkpoint path (``.safetensors`` or run
            directory).
        init_from: with ``init="previous"`` (not the first stage), which weights of the previous stage this stage
            starts from: ``last`` (the model as the previous stage ended, every latent weight carried on) or
            ``best`` (every weight and buffer, BN statistics included, reloaded from the previous stage's best
            checkpoint by validation top-1, ``checkpoints/stage<i>_<name>_best/``; the official AdamBNN step 2 loads
            step 1's ``model_best``). Ignored for other ``init`` values and for the first stage.
        optim, schedule: optimizer and learning-rate schedule.
        grad_clip: global gradient-norm clip (``None``: off).
        label_smoothing: of the classification loss.
        temperature, temperature_decay: progressive binarization: T = temperature * decay**epoch at each epoch
            start (``None``: leave the model's temperatures alone; 0: binary from the start, as
            ``onebit.binarize.set_temperature(model, 0.0)``; the decay is > 0).
        teachers: knowledge distillation (``onebit.distill``): the strong teacher first (a registered name, a
            model or run directory); empty = no distillation.
        assistants: BNext's assistant group, switched every epochs/n epochs (used with one strong teacher).
        kd_loss: ``soft_ce`` (official), ``kl``, ``gap_ensemble_official``, ``gap_ensemble_paper``.
        label_weight: weight of the label cross-entropy added to the KD loss (0 in the official code).
        teacher_half: run the teachers in half precision (fp16 on CUDA, bf16 on CPU), as the BNext code does.
        teacher_mean, teacher_std: the input normalisation the teachers expect, when it differs from the data's
            (the batch is re-normalised for them; empty = the student's input as is).
    """

    name: str = "stage"
    epochs: PositiveInt = 1
    binarize_activations: bool = True
    binarize_weights: bool = True
    init: str = "previous"
    init_from: InitFrom = "last"
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: PositiveFloat | None = None
    label_smoothing: UnitFraction = 0.0
    temperature: NonNegativeFloat | None = None
    temperature_decay: PositiveFloat = 1.0
    teachers: list[str] = field(default_factory=list)
    assistants: list[str] = field(default_factory=list)
    kd_loss: str = "soft_ce"
    label_weight: NonNegativeFloat = 0.0
    teacher_half: bool = False
    teacher_mean: list[FiniteFloat] = field(default_factory=list)
    teacher_std: list[PositiveFloat] = field(default_factory=list)


@dataclass
class RunConfig(_Choices):
    """Everything a run needs; written to ``config.json`` first so a run can be repeated exactly.

    Attributes:
        recipe: name of the recipe this config came from (informational).
        seed: seeds model init, data order and augmentation.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``...
        threads: torch intra-op threads (0 = torch's default).
        log_every: steps between ``metrics.jsonl`` step records.
        checkpoint_every: steps between rolling resume checkpoints inside an epoch (0 = at epoch ends only).
        track_flips: compute the FF ratio every step and C2I per epoch.
        track_dynamics: record the AdamBNN §3.2 statistics per epoch (activation saturation, CAM/SDAM, update CAM
            of the first binary layer, zero-gradient share) and latent-weight histograms per stage.
        keep_epochs: also keep a checkpoint after these epochs of every stage (e.g. 1: the paper's "after one
            epoch" figures), as ``checkpoints/stage<i>_<name>_epoch<k>``.
        layer_ff_per_step: also write each layer's FF ratio into every step record (per-layer FF is always in the
            epoch and stage records, averaged over their steps).
        sync_bn: under ``torchrun`` with more than one process, normalise with the statistics of the global batch
            (``nn.SyncBatchNorm`` on CUDA; on CPU, where torch 2.13's ``SyncBatchNorm`` refuses to run,
            ``onebit.train.distributed.CpuSyncBatchNorm`` over gloo). Off: each rank uses its own share's statistics.
        amp: ``none`` (float32) or ``bf16``: ``torch.autocast`` to bfloat16 around the student's forward (CPU and
            CUDA); the loss is taken in float32 and teachers keep their own ``teacher_half`` setting.
        tensorboard: also mirror every numeric scalar of ``metrics.jsonl`` into ``<run_dir>/tensorboard/``
            (needs ``pip install "onebit[tensorboard]"``; written by rank 0 only).
        training_path: how binary layers run in training (``onebit.layers.set_training_path``): ``lean`` (one
            autograd Function per binary conv that keeps int8 signs and bool masks for backward; same forward bit for
            bit), ``module`` (the binarizer modules) or ``reference`` (the official code's arithmetic, the way it
            computes it: float copies kept for backward).
        channels_last: keep the model's 4-d tensors in channels-last memory format (often faster convolutions).
        plots: draw the run's plots (``plots/*.png``) when it finishes; smoke studies turn them off.
    """

    recipe: str = "custom"
    seed: NonNegativeInt = 0
    device: str = "auto"
    threads: NonNegativeInt = 0
    log_every: NonNegativeInt = 1
    checkpoint_every: NonNegativeInt = 0
    track_flips: bool = True
    layer_ff_per_step: bool = False
    track_dynamics: bool = True
    keep_epochs: list[PositiveInt] = field(default_factory=lambda: [1])
    sync_bn: bool = False
    amp: AmpMode = "none"
    tensorboard: bool = False
    training_path: TrainingPath = "lean"
    channels_last: bool = False
    plots: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])


# ------------------------------------------------------------------------------------------------------ conversion
def to_dict(cfg: Any) -> Any:
    """A JSON-able dict of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _hints(cls: type) -> dict[str, Any]:
    """The field types of a config class, ``Annotated`` domains included."""
    return typing.get_type_hints(cls, include_extras=True)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a JSON value or an override string to type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except _OutOfDomain:
                raise  # the right type, a wrong value: say so, not "expects float | None"
            except ConfigError:
                continue
        raise ConfigError(f"{key} expects {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return _parse_literal(value) if isinstance(value, str) else value
    if origin is Annotated:
        out = _coerce(value, args[0], key)
        _check_number(out, tp, key)
        return out
    if origin is Literal:
        return _check_choice(value, tp, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, key)
    if origin in (list, tuple):
        if isinstance(value, str):
            s = value.strip()
            value = json.loads(s) if s.startswith("[") else [v for v in s.split(",") if v != ""]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} expects {_type_name(tp)}, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} expects {len(args)} values ({_type_name(tp)}), got {value!r}")
            return tuple(_coerce(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        out = [_coerce(v, elem, f"{key}.{i}") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"{key} expects a JSON object, got {value!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{key} expects bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects int, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects int, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{key} expects int, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects float, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} expects str, got {value!r}")
        return value
    return value


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple) and args:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _parse_literal(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            key = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown key {key!r}{_suggest(k, names, prefix)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: dict, cls: type = RunConfig) -> Any:
    """Build a config dataclass from a dict (e.g. parsed ``config.json``), strictly: unknown keys are errors."""
    return _from_dict(cls, data)


def save_json(cfg: Any, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")


def load_json(path: str | Path, cls: type = RunConfig) -> Any:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    try:
        return from_dict(data, cls)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ------------------------------------------------------------------------------------------------------- overrides
def valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of ``cfg`` (list elements by index)."""
    out = []
    for f in dataclasses.fields(cfg):
        key = f"{prefix}{f.name}"
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += valid_keys(v, key + ".")
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            for i, e in enumerate(v):
                out += valid_keys(e, f"{key}.{i}.")
        else:
            out.append(key)
    return out


def _suggest(name: str, candidates, prefix: str = "") -> str:
    cands = list(candidates)
    close = difflib.get_close_matches(name, cands, n=3, cutoff=0.5)
    if not close:
        return f" (valid keys here: {', '.join(sorted(cands))})"
    full = [f"{prefix}.{c}" if prefix else c for c in close]
    return f"; did you mean {', '.join(map(repr, full))}?"


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` strings in place (and return ``cfg``). Errors name the key and the closest valid keys."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        _set(cfg, key.strip().split("."), value, key.strip(), cfg)
    return cfg


def _set(obj: Any, parts: list[str], value: str, full: str, root: RunConfig) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(obj, list):
        targets = _list_targets(obj, head, full)
        for t in targets:
            if not rest:
                raise ConfigError(f"{full}: cannot replace a whole list element; set one of its fields")
            _set(t, rest, value, full, root)
        return
    names = {f.name: f for f in dataclasses.fields(obj)}
    if head not in names:
        keys = valid_keys(root)
        close = difflib.get_close_matches(full, keys, n=3, cutoff=0.6)
        if not close:  # compare the wrong segment with the fields that exist at this level
            stem = full[: len(full) - len(".".join(parts))]
            close = [stem + c for c in difflib.get_close_matches(head, list(names), n=3, cutoff=0.3)]
        hint = f"; closest valid keys: {', '.join(close)}" if close else f" (fields here: {', '.join(names)})"
        raise ConfigError(f"unknown config key {full!r}{hint}")
    current = getattr(obj, head)
    if rest:
        if dataclasses.is_dataclass(current) or isinstance(current, list):
            _set(current, rest, value, full, root)
            return
        if isinstance(current, dict):  # free-form kwargs: model.kwargs.width=16
            d = current
            for p in rest[:-1]:
                d = d.setdefault(p, {})
            d[rest[-1]] = _parse_literal(value)
            return
        raise ConfigError(f"{full}: {'.'.join(parts[:1])} is a {type(current).__name__}, it has no field {rest[0]!r}")
    setattr(obj, head, _coerce(value, _hints(type(obj))[head], full))


def _list_targets(items: list, head: str, full: str) -> list:
    if head == "*":
        return items
    if head.lstrip("-").isdigit():
        i = int(head)
        if not -len(items) <= i < len(items):
            raise ConfigError(f"{full}: index {i} out of range (there are {len(items)} elements)")
        return [items[i]]
    named = [e for e in items if getattr(e, "name", None) == head]
    if not named:
        names = [getattr(e, "name", str(i)) for i, e in enumerate(items)]
        raise ConfigError(f"{full}: no element named {head!r} (use an index 0..{len(items) - 1} or one of {names})")
    return named
