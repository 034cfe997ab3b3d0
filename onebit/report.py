"""Everything a run writes goes into one run directory; writes are atomic (temp file, then rename).

:func:`atomic_write` is the one way the package replaces a file: a temporary file beside the target, given the
mode every other file gets (``0o666 & ~umask``, not mkstemp's ``0o600``), flushed to disk, then renamed over the
target. :func:`crash_point` is a documented test hook: ``ONEBIT_CRASH_AT=<point>[@<n>]`` in the environment makes
the process SIGKILL itself the ``n``-th time (default the first) it reaches the named point; the points are listed
in :data:`CRASH_POINTS`. The kill tests (``tests/test_rundir.py``) use it to stop a run at exact places (between
two files of a run directory's creation, inside a checkpoint write) and check that it resumes.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "CRASH_POINTS",
    "MetricsWriter",
    "TensorBoardMirror",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "crash_point",
    "default_mode",
    "numeric_scalars",
    "read_metrics",
    "umask",
    "write_summary",
]

#: The named places where :func:`crash_point` can stop the process (``ONEBIT_CRASH_AT``).
CRASH_POINTS = {
    "run-dir-locked": "the run directory is locked (and cleaned), nothing of the run written yet",
    "run-dir-config": "config.json is written, run.json not yet",
    "run-dir-created": "run.json says 'created', training not started",
    "checkpoint-written": "a checkpoint's temporary directory is complete, not renamed yet",
    "checkpoint-swapped": "the previous checkpoint was renamed to <tag>.old, the new one not yet into place",
    "atomic-write": "an atomic write's temporary file is complete, not renamed yet",
}
_crash_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process here when ``ONEBIT_CRASH_AT`` names ``name`` (see the module docstring).

    ``ONEBIT_CRASH_AT=checkpoint-written@3`` kills the process the third time a checkpoint write reaches that point.
    Unset (always, outside tests) it costs one environment lookup.
    """
    spec = os.environ.get("ONEBIT_CRASH_AT")
    if not spec:
        return
    want, _, nth = spec.partition("@")
    if want != name:
        return
    _crash_hits[name] = _crash_hits.get(name, 0) + 1
    if _crash_hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: ``/proc/self/status``); elsewhere
    by setting and restoring it (not atomic against another thread creating a file at that instant)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def default_mode(directory: bool = False) -> int:
    """The mode ``open``/``mkdir`` would give a new file (``0o666``) or directory (``0o777``) under the umask."""
    return (0o777 if directory else 0o666) & ~umask()


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Replace ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which gets the umask's mode
    (:func:`default_mode`), is flushed to disk and renamed over ``path``. A crash leaves the old file or the new one,
    never a torn one (at worst a stale ``.<name>.*.tmp`` beside it, which the run directory removes on its next
    start). ``write`` may write the file in place or replace it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        crash_point("atomic-write")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of ``text``: a crash leaves either the old or the new file, never a torn one."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed per record, so a killed run keeps them).

    Args:
        path: the ``metrics.jsonl`` file.
        enabled: ``False`` writes nothing (the ranks other than 0 of a multi-process run).
        mirrors: objects with ``write(record)`` and ``close()`` that receive every record too (e.g.
            :class:`TensorBoardMirror`); attach more later with ``writer.mirrors.append(...)``.
    """

    def __init__(self, path: str | Path, enabled: bool = True, mirrors: list[Any] | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.mirrors = list(mirrors or [])
        self._f = open(self.path, "a") if enabled else None  # noqa: SIM115 (kept open for the run)

    def write(self, record: dict[str, Any]) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record, default=float) + "\n")
            self._f.flush()
        if self.enabled:
            for m in self.mirrors:
                m.write(record)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        for m in self.mirrors:
            m.close()
        self.mirrors = []

    def truncate_after(self, global_step: int, keep_stage_records: bool) -> None:
        """Drop records newer than a resume point: those past ``global_step``, and a ``stage`` record at it
        unless that stage was complete in the checkpoint (it will be written again). Mirrors stay attached."""
        if self._f is not None:
            self._f.close()
        kept = []
        for rec in read_metrics(self.path):
            gs = rec.get("global_step", 0)
            if gs > global_step or (gs == global_step and rec.get("type") == "stage" and not keep_stage_records):
                continue
            kept.append(json.dumps(rec, default=float))
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._f = open(self.path, "a")  # noqa: SIM115


def numeric_scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a metrics record, nested dicts flattened with ``/`` (``ff_layers/conv1``); strings, lists,
    ``None`` and booleans are left out."""
    out: dict[str, float] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(numeric_scalars(v, key + "/"))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = float(v)
    return out


class TensorBoardMirror:
    """Mirrors the numeric scalars of each metrics record into a TensorBoard ``SummaryWriter``.

    Tags are ``<record type>/<key>`` (``step/loss``, ``epoch/val_top1``, ``stage/ff_layers/conv1`` ...) at the
    record's ``global_step`` (the x axis, so not mirrored itself).

    Args:
        log_dir: where the event files go (``<run_dir>/tensorboard``).
        purge_step: on resume, the first global step that will be written again: TensorBoard hides the events at or
            after it left by the interrupted run.

    Raises:
        ImportError: the ``tensorboard`` package is missing (install ``onebit[tensorboard]``).
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch.utils.tensorboard imports the tensorboard package
            raise ImportError(
                f"tensorboard=true needs the tensorboard package ({e}); "
                'install it with: pip install "onebit[tensorboard]"'
            ) from None
        self.log_dir = Path(log_dir)
        self._w = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        kind = str(record.get("type", "record"))
        step = int(record.get("global_step", 0))
        for key, value in numeric_scalars({k: v for k, v in record.items() if k != "global_step"}).items():
            self._w.add_scalar(f"{kind}/{key}", value, global_step=step)

    def close(self) -> None:
        self._w.flush()
        self._w.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a torn last line (killed writer) is ignored."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and a human-readable ``summary.md`` with one row per stage."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    lines = [
        f"# Run summary: {summary.get('recipe', '')}",
        "",
        f"- run directory: `{run_dir}`",
        f"- model: `{summary.get('model', '')}`; data: {summary.get('data', '')}",
        f"- status: {summary.get('status', '')}; wall time {summary.get('time_s', 0):.1f} s",
        "",
        "| stage | binarized | epochs | val top-1 (%) | FF ratio (mean/step) | C2I (stage) | C2I (run) | "
        "changed vs init (run) | time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary.get("stages", []):
        lines.append(
            f"| {s['name']} | {s['binarized']} | {s['epochs']} | {100 * s['val_top1']:.2f} | {s['ff_ratio']:.3e} | "
            f"{s['c2i']:.4f} | {s['c2i_run']:.4f} | {s['c2i_changed_run']:.4f} | {s['time_s']:.1f} |"
        )
    cx = summary.get("complexity")
    if cx:
        lines += [
            "",
            "## Complexity (final model)",
            "",
            f"#Param {cx['param_mb']:.3f} MB (1-bit binary + fp32 rest); {cx['bops']:.4g} BOPs; "
            f"{cx['flops']:.4g} FLOPs; {cx['ops']:.4g} OPs at input {cx['input_size']}",
        ]
    lines += ["", "C2I = mean sign(w_final)·sign(w_ref) (see `onebit.metrics.flips`); FF averaged over every step."]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines) + "\n")
