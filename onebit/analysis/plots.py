"""Plots of a run (the only module that imports matplotlib, and only when called)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_run"]


def _stage_bounds(steps: list[dict[str, Any]]) -> list[tuple[int, str]]:
    out, seen = [], None
    for r in steps:
        if r["stage"] != seen:
            out.append((r["global_step"], r["stage"]))
            seen = r["stage"]
    return out


def plot_run(run_dir: str | Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write ``plots/accuracy.png`` (train accuracy per step, smoothed, and val top-1 per epoch) and
    ``plots/ff_ratio.png`` (FF ratio per step, log scale) with stage boundaries marked. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    bounds = _stage_bounds(steps)
    paths = []

    def mark(ax):
        for gs, name in bounds:
            ax.axvline(gs, color="grey", ls=":", lw=1)
            ax.text(gs, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")

    x = np.array([r["global_step"] for r in steps])
    acc = np.array([r["acc"] for r in steps], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(acc):
        k = max(1, min(25, len(acc) // 20))
        smooth = np.convolve(acc, np.ones(k) / k, mode="valid")
        ax.plot(x, 100 * acc, color="tab:blue", alpha=0.25, lw=0.8, label="train (per step)")
        ax.plot(x[k - 1 :], 100 * smooth, color="tab:blue", lw=1.5, label=f"train ({k}-step mean)")
    if epochs:
        ax.plot(
            [r["global_step"] for r in epochs],
            [100 * r["val_top1"] for r in epochs],
            "o-",
            color="tab:red",
            ms=4,
            label="val top-1 (per epoch)",
        )
    mark(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(out_dir / "accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    ff = np.array([r["ff_ratio"] for r in steps], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(ff) and np.isfinite(ff).any():
        pos = np.where(ff > 0, ff, np.nan)
        ax.semilogy(x, pos, ".", ms=2, color="tab:green", alpha=0.5, label="FF ratio per step")
        if epochs:
            ax.semilogy(
                [r["global_step"] for r in epochs],
                [max(r["ff_ratio"], 1e-12) for r in epochs],
                "o-",
                color="tab:purple",
                ms=4,
                label="epoch mean",
            )
        zero = np.mean(ff == 0)
        if zero > 0:
            ax.text(
                0.01,
                0.02,
                f"{100 * zero:.1f}% of steps flip no sign (not shown on log scale)",
                transform=ax.transAxes,
                fontsize=8,
            )
    mark(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("FF ratio (share of latent-weight signs flipped)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right")
    fig.tight_layout()
    paths.append(out_dir / "ff_ratio.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
