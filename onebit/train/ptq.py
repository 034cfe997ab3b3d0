"""Post-training quantisation of a trained model, with accuracy before and after (what ``onebit quantize`` runs).

:func:`quantize_model` loads a model (:func:`onebit.models.io.load_model`: run directory, model directory or
registered name), evaluates top-1/top-5 on the validation data (the run's data for a run directory, else ``data``,
default the bundled digits), quantises stem, SE branch and classifier (:func:`onebit.quantize.quantize_`, BNext
Table 7), optionally calibrates static activation ranges and fine-tunes the quantised layers, evaluates again and
writes the quantised model directory (``model.json`` + ``model.safetensors``, loadable by ``load_model``) and
``quantize.json`` (:meth:`QuantizeResult.to_dict`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onebit.analysis.complexity import quantized_size_mib
from onebit.config import ConfigError, DataConfig, load_json
from onebit.data import build_data
from onebit.models.io import input_channels, load_model, save_model_dir
from onebit.quantize import DEFAULT_BITS, QuantConfig, calibrate, finetune, quantize_
from onebit.report import atomic_write_text
from onebit.train.loop import evaluate

__all__ = ["QuantizeResult", "quantize_model"]


@dataclass
class QuantizeResult:
    """What :func:`quantize_model` measured and wrote.

    Attributes:
        source: the model reference it was given.
        bits: the I-S-E-O string, normalised (e.g. ``"8/8-4/8-4/8-8/8"``).
        config: :meth:`onebit.quantize.QuantConfig.to_dict` of the configuration applied.
        layers: ``quantize_``'s per-layer report ``{layer name: {"role", "input_quantized", ...}}``.
        data: description of the data set evaluated on (``"... N train / M val"``).
        before, after: ``evaluate`` metrics (``val_loss``, ``val_top1``, ``val_top5``; fractions) of the source
            model and of the quantised model before fine-tuning.
        after_finetune: the same after fine-tuning, ``None`` without fine-tuning.
        calibration: ``{layer name: [min, max]}`` static input ranges; empty with dynamic activations.
        finetune: :func:`onebit.quantize.finetune`'s report (``epochs``, ``steps``, ``trained_params``, ``loss``),
            ``None`` without fine-tuning.
        size_mib: ``{"float": #Param (MiB) of the source, "quantized": of the quantised model}``.
        seconds: wall time of quantisation, calibration, evaluation and fine-tuning.
        out: the model directory written (it holds ``quantize.json``).
        notes: remarks for the user (e.g. the model has no SE branch, so the S and E widths are unused).
        model: the quantised model (on the CPU, eval mode).
    """

    source: str
    bits: str
    config: dict[str, Any]
    layers: dict[str, dict[str, Any]]
    data: str
    before: dict[str, float]
    after: dict[str, float]
    after_finetune: dict[str, float] | None
    calibration: dict[str, list[float]]
    finetune: dict[str, Any] | None
    size_mib: dict[str, float]
    seconds: float
    out: Path
    notes: list[str] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The report written to ``quantize.json`` (every field but ``out``, ``notes`` and ``model``)."""
        return {
            "source": self.source,
            "bits": self.bits,
            "config": self.config,
            "layers": self.layers,
            "data": self.data,
            "before": self.before,
            "after": self.after,
            "after_finetune": self.after_finetune,
            "calibration": self.calibration,
            "finetune": self.finetune,
            "size_mib": self.size_mib,
            "seconds": self.seconds,
        }


def _data_config(
    model: nn.Module,
    info: dict[str, Any],
    *,
    data: str | None,
    data_root: str | None,
    image_size: int | None,
    limit_train: int,
    limit_val: int,
) -> tuple[DataConfig, int]:
    """The data to evaluate on: a run directory's own (unless ``data`` names another set), else ``data`` (default
    the digits at the model's input size, replicated to its channels), with the overrides applied."""
    run_dir = info.get("run_dir")
    if run_dir is not None and data is None:
        run_cfg = load_json(Path(run_dir) / "config.json")
        cfg, seed = run_cfg.data, run_cfg.seed
    else:
        size = (info.get("input_size") or [None, None, None])[1]
        name = data or "digits"
        chans = input_channels(model)
        cfg = DataConfig(
            name=name,
            root=data_root,
            image_size=size or (16 if name == "digits" else 224),
            channels=chans if name == "digits" and chans != 1 else 0,
        )
        seed = 0
    if image_size:
        cfg.image_size = image_size
    if limit_train:
        cfg.limit_train = limit_train
    if limit_val:
        cfg.limit_val = limit_val
    if data_root:
        cfg.root = data_root
    return cfg, seed


def quantize_model(
    source: str | Path,
    *,
    bits: str = DEFAULT_BITS,
    out_dir: str | Path | None = None,
    calibrate_batches: int = 0,
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-7,
    finetune_batches: int | None = None,
    weight_scale: float = 2.0,
    data: str | None = None,
    data_root: str | None = None,
    image_size: int | None = None,
    limit_train: int = 0,
    limit_val: int = 0,
    device: str = "cpu",
) -> QuantizeResult:
    """Quantise a trained model after training, measure it before and after, and write it.

    Args:
        source: run directory, model directory or registered model name.
        bits: I-S-E-O weight/activation bits (input conv, SE squeeze, SE expand, classifier; 32 = float).
        out_dir: output model directory (default ``<source>/quantized/<bits with _ for />`` for a directory;
            required for a model name).
        calibrate_batches: > 0: static activation ranges calibrated on this many training batches (else dynamic
            per-sample ranges).
        finetune_epochs: epochs of :func:`onebit.quantize.finetune` on the training data (0: none).
        finetune_lr: its learning rate (BNext: 1e-7).
        finetune_batches: at most this many batches per fine-tuning epoch (``None``: all).
        weight_scale: weight scale = this x channel abs-mean (2.0 official code, 1.0 paper eq. 6).
        data: data set name (default: a run directory's own data, else ``"digits"``).
        data_root: folder of an on-disk data set.
        image_size: image side length (default: the run's, else the model's input size, else 16 for digits).
        limit_train, limit_val: > 0: use only the first N training / validation samples.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).

    Returns:
        A :class:`QuantizeResult`; ``quantize.json`` in ``result.out`` holds :meth:`QuantizeResult.to_dict`.

    Raises:
        ConfigError: a malformed ``bits`` string or negative counts, or no ``out_dir`` for a model name.
        ModelLoadError, CheckpointError, KeyError (unknown model or data set name), DataSetError: from loading.
    """
    if calibrate_batches < 0 or finetune_epochs < 0:
        raise ConfigError(
            f"calibrate_batches and finetune_epochs must be >= 0, got {calibrate_batches}, {finetune_epochs}"
        )
    try:
        cfg = QuantConfig.from_bits(
            bits, weight_scale=weight_scale, activations="calibrated" if calibrate_batches > 0 else "dynamic"
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    path = Path(source)
    if out_dir is None:
        if not path.is_dir():
            raise ConfigError(f"{str(source)!r} is a model name, not a directory: give out_dir")
        out_dir = path / "quantized" / cfg.bits.replace("/", "_")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    model, info = load_model(source)
    model.to(dev)
    data_cfg, seed = _data_config(
        model,
        info,
        data=data,
        data_root=data_root,
        image_size=image_size,
        limit_train=limit_train,
        limit_val=limit_val,
    )
    bundle = build_data(data_cfg, seed)
    before = evaluate(model, bundle.val, dev)
    float_mib = quantized_size_mib(model)
    t0 = time.time()
    report = quantize_(model, cfg)
    notes = []
    if not any(v["role"] in ("squeeze", "expand") for v in report["layers"].values()):
        notes.append("the model has no SE branch; the S and E bit widths are unused")
    ranges = calibrate(model, bundle.train, calibrate_batches, device=dev) if calibrate_batches > 0 else {}
    after = evaluate(model, bundle.val, dev)
    tuned = ft = None
    if finetune_epochs > 0:
        ft = finetune(model, bundle.train, finetune_epochs, lr=finetune_lr, max_batches=finetune_batches, device=dev)
        tuned = evaluate(model, bundle.val, dev)
    result = QuantizeResult(
        source=str(source),
        bits=cfg.bits,
        config=cfg.to_dict(),
        layers=report["layers"],
        data=bundle.description,
        before=before,
        after=after,
        after_finetune=tuned,
        calibration={k: list(v) for k, v in ranges.items()},
        finetune=ft,
        size_mib={"float": float_mib, "quantized": quantized_size_mib(model)},
        seconds=time.time() - t0,
        out=Path(out_dir),
        notes=notes,
        model=model.cpu().eval(),
    )
    result.out = save_model_dir(model, out_dir, extra={"quantize": {"bits": cfg.bits, "source": str(source)}})
    atomic_write_text(result.out / "quantize.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result
