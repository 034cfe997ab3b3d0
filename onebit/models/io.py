"""Save and load models by name, model directory or run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onebit.checkpoint import RunDir, load_weights, save_weights
from onebit.config import RunConfig
from onebit.layers import set_binarization, set_training_path
from onebit.models._registry import MODELS, create_model
from onebit.report import atomic_write_text

__all__ = ["ModelLoadError", "build_model", "input_channels", "load_model", "save_model_dir"]


class ModelLoadError(ValueError):
    """A model reference that is neither a registered name, a model directory nor a run directory."""


def save_model_dir(model: nn.Module, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (how to rebuild it: ``model.onebit_spec``) to ``out_dir``."""
    spec = getattr(model, "onebit_spec", None)
    if spec is None:
        raise ModelLoadError("the model was not built by a registered entrypoint (no onebit_spec); cannot save it")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors")
    atomic_write_text(out / "model.json", json.dumps({**spec, **(extra or {})}, indent=2) + "\n")
    return out


def load_model(ref: str | Path, checkpoint: str = "last") -> tuple[nn.Module, dict[str, Any]]:
    """Build a model from a registered name, a model directory (``model.json`` + ``model.safetensors``) or a run
    directory (``config.json`` + ``checkpoints/``; the weights of its checkpoint ``checkpoint``: ``last``, the
    latest, by default; ``best``, the last stage's best epoch by validation top-1; or any tag such as
    ``stage1_step1_best``, see :class:`onebit.checkpoint.RunDir`). Returns ``(model, info)`` where ``info`` may hold
    ``input_size`` (C, H, W) when the source knows it."""
    path = Path(ref)
    if path.is_dir():
        if (path / "model.json").exists():
            spec = json.loads((path / "model.json").read_text())
            model = MODELS.get(spec["name"])(**spec.get("kwargs", {}))
            load_weights(model, path / "model.safetensors")
            return model, {k: v for k, v in spec.items() if k not in ("name", "kwargs")}
        run = RunDir(path)
        if run.has_config():
            cfg = run.read_config()
            model = create_model(cfg.model.name, num_classes=cfg.model.num_classes, **cfg.model.kwargs)
            ck = run.checkpoint(checkpoint)
            if ck is None:
                what = "a checkpoint yet" if checkpoint == "last" else f"a checkpoint {checkpoint!r}"
                raise ModelLoadError(f"{path}: run directory without {what}")
            load_weights(model, ck / "model.safetensors")
            _apply_stage_binarization(model, cfg, ck)
            size = [input_channels(model), cfg.data.image_size, cfg.data.image_size]
            return model, {"input_size": size, "run_dir": str(path)}
        raise ModelLoadError(f"{path}: neither a model directory (model.json) nor a run directory (config.json)")
    try:
        entry = MODELS.get(str(ref))
    except KeyError as e:
        raise ModelLoadError(f"{ref!r} is not a directory, and {e.args[0]}") from None
    return entry(), {}


def build_model(cfg: RunConfig) -> nn.Module:
    """The model of a run config with its training path and memory format (not yet on the device)."""
    model = create_model(cfg.model.name, num_classes=cfg.model.num_classes, **cfg.model.kwargs)
    set_training_path(model, cfg.training_path)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def input_channels(model: nn.Module) -> int:
    """Input channels of the model's first convolution (3 when it has none)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def _apply_stage_binarization(model: nn.Module, cfg, ckpt: Path) -> None:
    """What the binary layers binarize is a stage setting, not a weight: restore the one of the checkpoint's stage
    (e.g. a float teacher trained with both switches off must not come back binarized)."""
    try:
        index = int(json.loads((ckpt / "meta.json").read_text()).get("stage_index", len(cfg.stages) - 1))
    except (OSError, ValueError):
        index = len(cfg.stages) - 1
    stage = cfg.stages[min(max(index, 0), len(cfg.stages) - 1)]
    set_binarization(model, activations=stage.binarize_activations, weights=stage.binarize_weights)
