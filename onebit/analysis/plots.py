"""Plots of a run (the only module that imports matplotlib, and only when called).

Every series is drawn per stage: a line never joins the last point of one stage to the first of the next
(:func:`stage_segments` builds the pieces; the ``figure_*`` functions return the figures :func:`plot_run` saves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Segment",
    "figure_accuracy",
    "figure_ff",
    "figure_kd_weights",
    "figure_loss",
    "figure_temperature",
    "kd_weight_segments",
    "plot_run",
    "stage_segments",
]

Records = list[dict[str, Any]]


@dataclass
class Segment:
    """The points of one series within one stage (``x``: global step, or the run's epoch count for epoch plots)."""

    stage: str
    stage_index: int
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


def _of(records: Records, kind: str) -> Records:
    return [r for r in records if r.get("type") == kind]


def _xs(recs: Records, x: str | None) -> list[float]:
    """``x`` of each record, or (``None``) its 1-based position: the run's epoch count for epoch records."""
    return [float(i + 1) if x is None else float(r[x]) for i, r in enumerate(recs)]


def stage_segments(records: Records, y: str, kind: str = "step", x: str | None = "global_step") -> list[Segment]:
    """The ``y`` values of the records of type ``kind`` cut into one :class:`Segment` per stage (a new segment
    whenever the stage changes; records without ``y`` are left out). ``x``: the field for the x axis, or ``None``
    for the record's 1-based position among the ``kind`` records (the run's epoch count)."""
    recs = _of(records, kind)
    out: list[Segment] = []
    for xv, r in zip(_xs(recs, x), recs):
        key = (r.get("stage_index"), r.get("stage"))
        if not out or (out[-1].stage_index, out[-1].stage) != key:
            out.append(Segment(r.get("stage", ""), r.get("stage_index", -1)))
        if r.get(y) is not None:
            out[-1].x.append(xv)
            out[-1].y.append(float(r[y]))
    return [s for s in out if s.x]


def kd_weight_segments(records: Records) -> dict[str, list[Segment]]:
    """Per teacher (in order of first appearance), the epoch mean KD weight (``kd_weights`` of the epoch records)
    against the run's epoch count, one segment per stretch of consecutive epochs of one stage in which the teacher
    was active (BNext's assistants come and go)."""
    epochs = _of(records, "epoch")
    out: dict[str, list[Segment]] = {}
    last: dict[str, tuple[int, Any]] = {}  # teacher -> (position, stage_index) of its previous point
    for i, r in enumerate(epochs):
        for name, w in (r.get("kd_weights") or {}).items():
            segs = out.setdefault(name, [])
            if last.get(name) != (i - 1, r.get("stage_index")):
                segs.append(Segment(r.get("stage", ""), r.get("stage_index", -1)))
            segs[-1].x.append(float(i + 1))
            segs[-1].y.append(float(w))
            last[name] = (i, r.get("stage_index"))
    return out


def _stage_starts(records: Records, kind: str, x: str | None) -> list[tuple[float, str]]:
    """Where each stage begins on the x axis of ``kind`` records (for the dotted stage markers)."""
    recs = _of(records, kind)
    out, seen = [], object()
    for xv, r in zip(_xs(recs, x), recs):
        key = (r.get("stage_index"), r.get("stage"))
        if key != seen:
            out.append((xv - 0.5 if x is None else xv, r.get("stage", "")))
            seen = key
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mark(ax, starts: list[tuple[float, str]]) -> None:
    for xv, name in starts:
        ax.axvline(xv, color="grey", ls=":", lw=1)
        ax.text(xv, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")


def _lines(ax, segs: list[Segment], fmt: str, label: str, plot=None, **kw) -> None:
    """One line per segment, the label on the first only."""
    for j, s in enumerate(segs):
        (plot or ax.plot)(s.x, s.y, fmt, label=label if j == 0 else None, **kw)


def _pct(v: float) -> float:
    return 100 * v


def _scaled(segs: list[Segment], f) -> list[Segment]:
    return [Segment(s.stage, s.stage_index, s.x, [f(v) for v in s.y]) for s in segs]


def figure_accuracy(records: Records):
    """Train accuracy per step (raw and smoothed within each stage) and val top-1 per epoch, per stage."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    train = stage_segments(records, "acc")
    n = sum(len(s.y) for s in train)
    k = max(1, min(25, n // 20))
    smooth = []
    for s in train:
        if len(s.y) >= k:
            m = np.convolve(np.asarray(s.y), np.ones(k) / k, mode="valid")
            smooth.append(Segment(s.stage, s.stage_index, s.x[k - 1 :], list(m)))
    _lines(ax, _scaled(train, _pct), "-", "train (per step)", color="tab:blue", alpha=0.25, lw=0.8)
    _lines(ax, _scaled(smooth, _pct), "-", f"train ({k}-step mean)", color="tab:blue", lw=1.5)
    val = stage_segments(records, "val_top1", kind="epoch")
    _lines(ax, _scaled(val, _pct), "o-", "val top-1 (per epoch)", color="tab:red", ms=4)
    _mark(ax, _stage_starts(records, "step", "global_step"))
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def figure_ff(records: Records):
    """FF ratio per step (log scale; 0 is not drawn) and its epoch mean, each stage its own line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = stage_segments(records, "ff_ratio")
    pos = [Segment(s.stage, s.stage_index, *_positive(s)) for s in steps]
    pos = [s for s in pos if s.x]
    if pos:
        _lines(ax, pos, ".", "FF ratio per step", plot=ax.semilogy, ms=2, color="tab:green", alpha=0.5)
        epochs = _scaled(stage_segments(records, "ff_ratio", kind="epoch"), lambda v: max(v, 1e-12))
        _lines(ax, epochs, "o-", "epoch mean", plot=ax.semilogy, color="tab:purple", ms=4)
        values = [v for s in steps for v in s.y if v == v]
        zero = sum(v == 0 for v in values) / max(len(values), 1)
        if zero > 0:
            ax.text(
                0.01,
                0.02,
                f"{100 * zero:.1f}% of steps flip no sign (not shown on log scale)",
                transform=ax.transAxes,
                fontsize=8,
            )
        ax.legend(loc="upper right")
    _mark(ax, _stage_starts(records, "step", "global_step"))
    ax.set_xlabel("step")
    ax.set_ylabel("FF ratio (share of latent-weight signs flipped)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def _positive(s: Segment) -> tuple[list[float], list[float]]:
    keep = [(x, y) for x, y in zip(s.x, s.y) if y > 0]
    return [x for x, _ in keep], [y for _, y in keep]


def _epoch_axes(records: Records, ylabel: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    _mark(ax, _stage_starts(records, "epoch", None))
    ax.set_xlabel("epoch (counted over the run)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    return fig, ax


def figure_loss(records: Records):
    """Train loss (mean over the epoch) and val loss (cross-entropy on the val set) per epoch, per stage."""
    fig, ax = _epoch_axes(records, "loss")
    train = stage_segments(records, "train_loss", "epoch", None)
    _lines(ax, train, "o-", "train (the stage's loss, KD when distilling)", color="tab:blue", ms=3)
    _lines(ax, stage_segments(records, "val_loss", "epoch", None), "o-", "val (cross-entropy)", color="tab:red", ms=3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def figure_temperature(records: Records):
    """The progressive-binarization temperature of each epoch (log scale when positive); ``None`` without one."""
    segs = stage_segments(records, "temperature", "epoch", None)
    if not segs:
        return None
    fig, ax = _epoch_axes(records, "temperature T")
    positive = all(v > 0 for s in segs for v in s.y)
    _lines(ax, segs, "o-", "temperature", plot=ax.semilogy if positive else ax.plot, color="tab:orange", ms=3)
    fig.tight_layout()
    return fig


def figure_kd_weights(records: Records):
    """The epoch mean KD weight of each teacher (the gap ensemble's α; 1/n for plain averages); ``None`` without
    distillation."""
    per_teacher = kd_weight_segments(records)
    if not per_teacher:
        return None
    fig, ax = _epoch_axes(records, "KD weight (epoch mean)")
    for j, (name, segs) in enumerate(per_teacher.items()):
        _lines(ax, segs, "o-", name, color=f"C{j % 10}", ms=3)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_run(run_dir: str | Path, records: Records) -> list[Path]:
    """Write the run's plots into ``<run_dir>/plots/`` and return their paths: ``accuracy.png`` (train accuracy per
    step, val top-1 per epoch), ``ff_ratio.png`` (FF ratio per step, log scale), ``loss.png`` (train and val loss
    per epoch), ``temperature.png`` (when a stage set temperatures) and ``kd_weights.png`` (when a stage
    distilled); stage boundaries are marked and no line crosses one."""
    plt = _plt()
    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    figures = [
        ("accuracy", figure_accuracy),
        ("ff_ratio", figure_ff),
        ("loss", figure_loss),
        ("temperature", figure_temperature),
        ("kd_weights", figure_kd_weights),
    ]
    for name, build in figures:
        fig = build(records)
        if fig is None:
            continue
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
