"""Run directories and checkpoints: one :class:`RunDir` names every file of a run; weights in safetensors,
optimizer/RNG/progress state alongside, written atomically.

Run directory (every path is a property of :class:`RunDir`, nothing else spells them)::

    config.json       the full RunConfig, written first (an exact re-run is ``onebit train --resume DIR``)
    run.json          status: running | interrupted | diverged | completed
    metrics.jsonl     step / epoch / stage records (loss, accuracy, lr, ff_ratio, c2i, per-layer FF)
    checkpoints/      last/ (rolling resume point), stage<i>_<name>/ (end of each stage),
                      stage<i>_<name>_best/ (the stage's best epoch by validation top-1; ties keep the earlier),
                      best/ (the same for the last stage: the run's best model), stage<i>_<name>_epoch<e>/ (kept)
    summary.json, summary.md, plots/*.png
    tensorboard/      event files mirroring metrics.jsonl (``tensorboard=true``)
    .lock, .lock.json the one-writer lock of a live run (:class:`RunLock`) and who holds it; removed at its end

A run directory becomes a run when ``run.json`` is written (after ``config.json``, both atomically). A directory
without ``run.json`` (or whose run.json still says ``created`` and that holds no checkpoint) is an interrupted start:
``onebit train --out`` reuses it. Stale temporaries of interrupted writes (``.<name>.*.tmp``, ``checkpoints/.<tag>.*``)
are removed by :meth:`RunDir.remove_stale_temporaries` when the next writer holds the lock.

A checkpoint is a directory ``<run>/checkpoints/<tag>/`` with ``model.safetensors``, ``state.pt`` (loaded with
``weights_only=True``: tensors, numbers, strings only) and ``meta.json``. It is first written to a temporary
directory and then renamed into place; the previous version is kept as ``<tag>.old`` until the new one is in
place, so a crash at any moment leaves one complete checkpoint (:func:`find_checkpoint` falls back to ``.old``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from onebit.config import RunConfig, load_json
from onebit.report import atomic_write, atomic_write_text, crash_point, default_mode

__all__ = [
    "RUN_FORMAT",
    "CheckpointError",
    "RunDir",
    "RunDirError",
    "RunLock",
    "check_optimizer_state",
    "find_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "save_weights",
]

RUN_FORMAT = "onebit-run"  # the ``format`` field of run.json


class CheckpointError(RuntimeError):
    """A missing, corrupt or incompatible checkpoint; the message names the file and the problem."""


class RunDirError(ValueError):
    """A run directory that cannot be used (missing, foreign, in use, unwritable, or already holding another run)."""


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line; of torch's weights-only refusal only its reason (its advice to load
    with ``weights_only=False`` does not apply to a damaged file)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: give it independent contiguous copies.
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` to a safetensors file atomically (:func:`onebit.report.atomic_write`)."""
    tensors = _model_tensors(model)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {}))


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, list[str]]:
    """Load a safetensors state dict (or a checkpoint/run directory) into ``model``; errors name file and keys.

    Every tensor the file shares with the model must have the model's shape and dtype (``load_state_dict`` would
    otherwise cast it silently: int32 weights truncated, float16 ones rounded); ``strict``: and the same keys.

    Raises:
        CheckpointError: no such file, not safetensors, or a key/shape/dtype mismatch (the message names the tensor).
    """
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
    for k in own:
        if k in sd and sd[k].dtype != own[k].dtype:
            raise CheckpointError(f"{path}: tensor {k!r} is {_dtype(sd[k])}, expected {_dtype(own[k])}")
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
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0o700 -> what mkdir gives under the umask
        save_file(_model_tensors(model), str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=float) + "\n")
        for f in tmp.iterdir():  # the umask's mode (safetensors writes 0o600), durable before the rename publishes it
            os.chmod(f, default_mode())
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        crash_point("checkpoint-written")
        final, old = ckpt_dir / tag, ckpt_dir / f"{tag}.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        crash_point("checkpoint-swapped")
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


def load_checkpoint(
    path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu", require: Iterable[str] = ()
) -> tuple[dict, dict]:
    """Load weights into ``model``; return ``(state, meta)``. Never unpickles code (``weights_only=True``).

    Args:
        require: entries ``state.pt`` must hold (the reader's own keys, e.g. ``"optimizer"``).

    Raises:
        CheckpointError: a missing, unreadable or mismatching file (weights: see :func:`load_weights`), or a state
            without a required entry; the message names the file and the tensor or entry.
    """
    path = Path(path)
    for f in ("model.safetensors", "state.pt", "meta.json"):
        if not (path / f).is_file():
            raise CheckpointError(f"{path / f}: missing (an incomplete checkpoint; delete {path} to resume without it)")
    load_weights(model, path / "model.safetensors", strict=True)
    where = path / "state.pt"
    try:
        state = torch.load(where, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt pickles
        raise CheckpointError(f"{where}: unreadable training state ({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: not a training state (a {type(state).__name__}, expected a dict)")
    for key in require:
        if key not in state:
            raise CheckpointError(
                f"{where}: no {key!r} entry (written by another program or damaged); delete {path} to resume without it"
            )
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'meta.json'}: unreadable ({e})") from None
    return state, meta


#: Per-parameter optimizer state of torch's optimizers (and AdaBound) shaped and typed like the parameter.
_PARAM_LIKE_STATE = frozenset(
    {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg", "acc_delta", "sum"}
)


def check_optimizer_state(
    optimizer: torch.optim.Optimizer, state: Any, where: str | Path, names: dict[int, str] | None = None
) -> None:
    """Check that ``state`` (an ``optimizer.state_dict()`` read from ``where``) fits ``optimizer``: the same number
    of parameter groups and of parameters in each, and each per-parameter tensor of a known kind (``exp_avg``,
    ``momentum_buffer`` ...) with its parameter's shape and dtype. ``Optimizer.load_state_dict`` checks only the
    group sizes, and casts the rest silently or fails at the first step. ``names``: ``id(parameter) -> name`` for
    the messages (e.g. from ``model.named_parameters()``).

    Raises:
        CheckpointError: naming ``where``, the group or parameter, and the mismatch.
    """
    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list):
        raise CheckpointError(f"{where}: the optimizer entry is not an optimizer state (no param_groups list)")
    groups, saved = optimizer.param_groups, state["param_groups"]
    if len(saved) != len(groups):
        raise CheckpointError(
            f"{where}: the optimizer state has {len(saved)} parameter groups, the optimizer {len(groups)}"
        )
    params: dict[Any, torch.Tensor] = {}
    for i, (g, s) in enumerate(zip(groups, saved)):
        ids = s.get("params") if isinstance(s, dict) else None
        if not isinstance(ids, list) or len(ids) != len(g["params"]):
            n = len(ids) if isinstance(ids, list) else "no"
            raise CheckpointError(
                f"{where}: optimizer group {i} ({g.get('name', '?')}) holds {n} parameters in the state, "
                f"{len(g['params'])} in the optimizer"
            )
        params.update(zip(ids, g["params"]))
    per_param = state.get("state", {})
    if not isinstance(per_param, dict):
        raise CheckpointError(f"{where}: the optimizer state's 'state' entry is not a dict")
    for pid, entries in per_param.items():
        if pid not in params:
            raise CheckpointError(f"{where}: optimizer state for parameter {pid!r}, which no group holds")
        p = params[pid]
        if not isinstance(entries, dict):
            raise CheckpointError(f"{where}: the optimizer state of parameter {pid!r} is not a dict")
        for key, v in entries.items():
            if key not in _PARAM_LIKE_STATE or not isinstance(v, torch.Tensor):
                continue
            if v.shape != p.shape or v.dtype != p.dtype:
                name = (names or {}).get(id(p), f"#{pid}")
                raise CheckpointError(
                    f"{where}: optimizer state {key!r} of parameter {name!r} is {_dtype(v)} {tuple(v.shape)}, "
                    f"expected {_dtype(p)} {tuple(p.shape)}"
                )


class RunLock:
    """The one-writer lock of a run directory: an OS lock (:class:`filelock.FileLock`, ``flock`` on Unix) on
    ``<run>/.lock``, taken without waiting. ``<run>/.lock.json`` names the holder (program, host, PID, start time)
    for the message a second writer gets; it is informational only: the OS drops the lock when its process dies, so
    a crashed holder never blocks the next one. :meth:`release` removes both files (a finished run keeps no
    hidden files); a writer that opened the lock file just as the holder removed it sees that the file it locked is
    no longer the one at the path, and takes the new one.

    Args:
        run: the run directory (it must exist).
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._lock: FileLock | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self, advice: str = "wait for it to end or pick another --out") -> RunLock:
        """Take the lock at once or raise.

        Raises:
            RunDirError: another process holds it (the message names it, then ``advice``), or the directory cannot
                be written.
        """
        path = self.run.lock_file
        for attempt in range(20):
            lock = FileLock(str(path), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                holder = self.run.lock_holder()
                if holder is None and attempt < 19:  # the holder is just taking it or just leaving: ask again
                    time.sleep(0.05)
                    continue
                raise RunDirError(f"{self.run} is in use by {_describe_holder(holder)}; {advice}") from None
            except OSError as e:
                raise RunDirError(f"cannot lock {path}: {e.strerror or e}") from None
            if _locks_the_path(lock, path):
                self._lock = lock
                info = {
                    "program": "onebit train",
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "argv": sys.argv,
                }
                try:
                    atomic_write_text(self.run.lock_info, json.dumps(info) + "\n")
                except OSError as e:
                    self.release()
                    raise RunDirError(f"cannot write in {self.run}: {e.strerror or e}") from None
                return self
            lock.release()  # the previous holder removed the file we opened: lock the one at the path now
        raise RunDirError(f"{self.run} is in use by {_describe_holder(self.run.lock_holder())}; {advice}")

    def release(self) -> None:
        """Remove ``.lock.json`` and ``.lock``, then drop the OS lock (idempotent)."""
        if self._lock is None:
            return
        for f in (self.run.lock_info, self.run.lock_file):
            with contextlib.suppress(OSError):
                f.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _locks_the_path(lock: FileLock, path: Path) -> bool:
    """Whether the file ``lock`` holds is still the one at ``path`` (not one a releasing holder just unlinked)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return True  # no descriptor to compare (a filelock without one): trust it
    try:
        held = os.fstat(fd)
        return held.st_nlink > 0 and os.path.samestat(held, os.stat(path))
    except OSError:
        return False


def _describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not recorded which)"
    where = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    since = f", since {info['since']}" if info.get("since") else ""
    return f"{info.get('program', 'another process')} ({where}{since})"


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

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @property
    def lock_info(self) -> Path:
        return self.path / ".lock.json"

    # ---------------------------------------------------------------------------------------------- questions
    def has_config(self) -> bool:
        """Whether ``config.json`` exists (a run was started here)."""
        return self.config.exists()

    def is_run(self) -> bool:
        """Whether this directory holds a run record (``config.json`` and ``run.json``)."""
        return self.config.exists() and self.status_file.exists()

    def checkpoint(self, tag: str = "last") -> Path | None:
        """The complete checkpoint ``tag`` of this run (see :func:`find_checkpoint`), else ``None``. Tags:
        ``last`` (the resume point), ``best`` (the best epoch of the last stage), :meth:`stage_tag` and
        :meth:`best_tag`."""
        return find_checkpoint(self.checkpoints, tag)

    @staticmethod
    def stage_tag(index: int, name: str) -> str:
        """Tag of the checkpoint written at the end of stage ``index`` (0-based) called ``name``:
        ``stage<index + 1>_<name>``."""
        return f"stage{index + 1}_{name}"

    @staticmethod
    def best_tag(index: int, name: str) -> str:
        """Tag of the best-epoch checkpoint (validation top-1) of stage ``index`` (0-based):
        ``stage<index + 1>_<name>_best``."""
        return f"{RunDir.stage_tag(index, name)}_best"

    def interrupted_start(self) -> str | None:
        """Why this directory holds only an interrupted start of a onebit run (reusable for a new run), else
        ``None`` (nothing of a run here, a run to resume, or foreign files). An interrupted start is ``config.json``
        (a onebit config: ``recipe`` and ``stages``) without ``run.json``, or ``run.json`` still ``created``; either
        with no checkpoint and no metrics (the process died before training began).

        Raises:
            ValueError: ``run.json`` is unreadable or not a onebit run record.
        """
        trained = self.checkpoint("last") is not None or (self.metrics.exists() and self.metrics.stat().st_size > 0)
        if self.status_file.exists():
            info = self.read_status()
            if info.get("status") == "created" and not trained:
                return "run.json says 'created' and nothing was trained"
            return None
        if not self.config.exists() or trained:
            return None
        try:
            cfg = json.loads(self.config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if isinstance(cfg, dict) and "recipe" in cfg and "stages" in cfg:
            return "config.json without run.json"
        return None

    def lock(self, advice: str = "wait for it to end or pick another --out") -> RunLock:
        """Take this run's one-writer lock (:class:`RunLock`); the directory must exist."""
        return RunLock(self).acquire(advice)

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds (or, after a crash, last held) the lock, from ``.lock.json``; ``None`` if unknown."""
        try:
            info = json.loads(self.lock_info.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return info if isinstance(info, dict) else None

    def remove_stale_temporaries(self) -> list[str]:
        """Remove what interrupted writes left (call it holding the lock): ``.<name>.*.tmp`` files of atomic writes
        in the run directory, ``checkpoints/.<tag>.*`` temporary checkpoints, and ``checkpoints/<tag>.old`` beside
        a complete ``<tag>``. Returns the removed paths, relative to the run directory."""
        stale = [p for p in self.path.glob(".*.tmp") if p.is_file()]
        if self.checkpoints.is_dir():
            for p in self.checkpoints.iterdir():
                if p.name.startswith("."):
                    stale.append(p)
                elif p.name.endswith(".old") and p.is_dir():
                    tag = p.name[: -len(".old")]
                    if find_checkpoint(self.checkpoints, tag) == self.checkpoints / tag:
                        stale.append(p)
        for p in stale:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return sorted(str(p.relative_to(self.path)) for p in stale)

    def remove_run_files(self) -> list[str]:
        """Remove every file a run writes here (config, run.json, metrics, checkpoints, summary, plots,
        TensorBoard), leaving anything else; for reusing an interrupted start. Returns the removed names."""
        removed = []
        for p in (self.config, self.status_file, self.metrics, self.summary_json, self.summary_md):
            if p.exists():
                p.unlink()
                removed.append(p.name)
        for d in (self.checkpoints, self.plots, self.tensorboard):
            if d.exists():
                shutil.rmtree(d)
                removed.append(d.name + "/")
        return removed

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
