"""Everything a run writes goes into one run directory; writes are atomic (temp file, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "MetricsWriter",
    "TensorBoardMirror",
    "atomic_write_text",
    "numeric_scalars",
    "read_metrics",
    "write_summary",
]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
