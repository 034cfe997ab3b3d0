"""Run directories and checkpoints: one :class:`RunDir` names every file of a run; weights in safetensors,
optimizer/RNG/progress state alongside, written atomically.

Run directory (every path is a property of :class:`RunDir`, nothing else spells them)::

    config.json       the full RunConfig, written first (an exact re-run is ``onebit train --resume DIR``)
    run.json          status: running | interrupted | diverged | completed
    metrics.jsonl     step / epoch / stage records (loss, accuracy, lr, ff_ratio, c2i, per-layer FF)
    checkpoints/      last/ (rolling resume point), stage<i>_<name>/ (end of each stage)
    summary.json, summary.md, plots/*.png
    tensorboard/      event files mirroring metrics.jsonl (``tensorboard=true``)

A checkpoint is a directory ``<run>/checkpoints/<tag>/`` with ``model.safetensors``, ``state.pt`` (loaded with
``weights_only=True``: tensors, numbers, strings only) and ``meta.json``. It is first written to a temporary
directory and then renamed into place; the previous version is kept as ``<tag>.old`` until the new one is in
place, so a crash at any moment leaves one complete checkpoint (:func:`find_checkpoint` falls back to ``.old``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from onebit.config import RunConfig, load_json
from onebit.report import atomic_write_text

__all__ = [
    "RUN_FORMAT",
    "CheckpointError",
    "RunDir",
    "find_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "save_weights",
]

RUN_FORMAT = "onebit-run"  # the ``format`` field of run.json


class CheckpointError(RuntimeError):
    """A missing, corrupt or incompatible checkpoint; the message names the file and the problem."""


def _model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: give it independent contiguous copies.
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` to a safetensors file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_model_tensors(model), tmp, metadata=metadata or {})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, list[str]]:
    """Load a safetensors state dict (or a checkpoint/run directory) into ``model``; errors name file and keys."""
    path = Path(path)
    if path.is_dir():
        found = path / "model.safetensors" if (path / "model.safetensors").exists() else None
        run = RunDir(path)
        if found is None:
            ck = run.checkpoint("last") if run.checkpoints.is_dir() else None
            found = ck / "model.safetensors" if ck else None
        if found is None:
            raise CheckpointError(f"{path}: no model.safetensors here or in {run.checkpoints / 'last'}")
        path = found
    if not path.exists():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {len(bad)} tensors, first: {bad[0]}")
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path}: does not match the model ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def save_checkpoint(
    ckpt_dir: str | Path, tag: str, model: nn.Module, state: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write ``<ckpt_dir>/<tag>/`` = model.safetensors + state.pt + meta.json, atomically (see module doc)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=f".{tag}."))
    try:
        save_file(_model_tensors(model), str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=float) + "\n")
        for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final, old = ckpt_dir / tag, ckpt_dir / f"{tag}.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def find_checkpoint(ckpt_dir: str | Path, tag: str) -> Path | None:
    """The complete checkpoint ``tag`` (or its ``.old`` twin left by a crash mid-rename), else ``None``."""
    ckpt_dir = Path(ckpt_dir)
    for cand in (ckpt_dir / tag, ckpt_dir / f"{tag}.old"):
        if all((cand / f).exists() for f in ("model.safetensors", "state.pt", "meta.json")):
            return cand
    return None


def load_checkpoint(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Load weights into ``model``; return ``(state, meta)``. Never unpickles code (``weights_only=True``)."""
    path = Path(path)
    load_weights(model, path / "model.safetensors", strict=True)
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt pickles
        raise CheckpointError(f"{path / 'state.pt'}: unreadable training state ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'meta.json'}: unreadable ({e})") from None
    return state, meta


class RunDir:
    """The files of one run directory (see the module docstring); the only place their names are spelled.

    Args:
        path: the run directory (it need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # --------------------------------------------------------------------------------------------------- paths
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def status_file(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    # ---------------------------------------------------------------------------------------------- questions
    def has_config(self) -> bool:
        """Whether ``config.json`` exists (a run was started here)."""
        return self.config.exists()

    def is_run(self) -> bool:
        """Whether this directory holds a run record (``config.json`` and ``run.json``)."""
        return self.config.exists() and self.status_file.exists()

    def checkpoint(self, tag: str = "last") -> Path | None:
        """The complete checkpoint ``tag`` of this run (see :func:`find_checkpoint`), else ``None``."""
        return find_checkpoint(self.checkpoints, tag)

    # ------------------------------------------------------------------------------------------ read / write
    def read_config(self, cls: type = RunConfig) -> RunConfig:
        """The run's ``config.json`` as a config dataclass."""
        return load_json(self.config, cls)

    def read_status(self) -> dict[str, Any]:
        """The ``run.json`` record (``{}`` when there is none).

        Raises:
            ValueError: ``run.json`` is unreadable or not a onebit run record.
        """
        if not self.status_file.exists():
            return {}
        try:
            info = json.loads(self.status_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.status_file}: corrupt ({e})") from None
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise ValueError(f"{self.status_file}: not a onebit run record")
        return info

    def write_status(self, status: str, **extra: Any) -> None:
        """Write ``run.json`` atomically: ``{"format": "onebit-run", "status": status, **extra}``."""
        atomic_write_text(self.status_file, json.dumps({"format": RUN_FORMAT, "status": status, **extra}) + "\n")

    def read_summary(self) -> dict[str, Any]:
        """The run's ``summary.json`` (written when the run completed)."""
        return json.loads(self.summary_json.read_text())
