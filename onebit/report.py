"""Everything a run writes goes into one run directory; writes are atomic (temp file, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "atomic_write_text", "read_metrics", "write_summary"]


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
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed per record, so a killed run keeps them)."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._f = open(self.path, "a") if enabled else None  # noqa: SIM115 (kept open for the run)

    def write(self, record: dict[str, Any]) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record, default=float) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def truncate_after(self, global_step: int, keep_stage_records: bool) -> None:
        """Drop records newer than a resume point: those past ``global_step``, and a ``stage`` record at it
        unless that stage was complete in the checkpoint (it will be written again)."""
        self.close()
        kept = []
        for rec in read_metrics(self.path):
            gs = rec.get("global_step", 0)
            if gs > global_step or (gs == global_step and rec.get("type") == "stage" and not keep_stage_records):
                continue
            kept.append(json.dumps(rec, default=float))
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._f = open(self.path, "a")  # noqa: SIM115


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
