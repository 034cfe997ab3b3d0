"""Figures of ``onebit analyze`` (matplotlib is imported only when a figure is drawn, with the Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from onebit.analysis.analyze import Peaks, _Stage

#: kernels drawn per panel of the latent-weight figure
MAX_KERNELS = 64


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _activation_figure(path: Path, stage: _Stage, panels: list[dict[str, Any]], bound: float | None, n: int) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.5, 5.5 * len(panels)), 4.2), squeeze=False)
    allx = torch.cat([p["x"] for p in panels])
    reach = float(torch.quantile(allx.abs()[:: max(1, len(allx) // 1_000_000)], 0.999)) if len(allx) else 1.0
    reach = max(reach, 1.5 * (bound or 1.0))
    for ax, p in zip(axes[0], panels):
        x = p["x"].clamp(-reach, reach).numpy()
        label = f"inputs ({p['x'].numel():,})"
        if bound is not None:
            label += f"\noutside ±{bound:g}: {100 * p['outside']:.2f}%"
        # one filled outline instead of 161 bar patches: the same picture, drawn much faster
        ax.hist(x, bins=161, range=(-reach, reach), density=True, histtype="stepfilled", alpha=0.75, label=label)
        if bound is not None:
            for b in (-bound, bound):
                ax.axvline(b, color="k", ls=":", lw=1.2)
        ax.set_title(f"{p['title']}", fontsize=10)
        ax.set_xlabel("input of the activation binarizer")
        ax.set_ylabel("density")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{stage.label}: input of the first binary conv {panels[0]['layer']}\n"
        f"{n} val samples, eval mode (BatchNorm running statistics)",
        fontsize=10,
    )
    return _save(fig, path)


def _kernel_figure(path: Path, stage: _Stage, panels: list[dict[str, Any]], layer: str) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False, sharex=True)
    for ax, p in zip(axes[:, 0], panels):
        cam = p["cam"][:MAX_KERNELS]
        k = len(cam)
        if p.get("w") is not None:
            w = p["w"][:k].flatten(1).numpy()
            xs = np.repeat(np.arange(k), w.shape[1])
            ax.plot(xs, w.ravel(), ".", ms=2, color="tab:blue", alpha=0.35, label="latent weights")
        ax.plot(np.arange(k), cam, "_", ms=12, mew=2, color="red", label="CAM (per kernel)")
        ax.axhline(float(cam.min()), color="grey", ls="--", lw=1, label=f"min CAM {float(cam.min()):.4f}")
        ax.axhline(0, color="k", lw=0.5)
        shown = f"first {k} of {len(p['cam'])} kernels" if len(p["cam"]) > k else f"{k} kernels"
        ax.set_title(f"{p['title']}: SDAM {p['sdam']:.4f}, mean CAM {float(p['cam'].mean()):.4f} ({shown})", fontsize=9)
        ax.set_ylabel("weight value")
        ax.grid(alpha=0.3)
        ax.margins(x=0.04, y=0.15)
        ax.legend(loc="best", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("output kernel")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{stage.label}: latent weights of {layer}", fontsize=10)
    return _save(fig, path)


def _update_cam_figure(path: Path, stage: _Stage, panels: list[tuple[str, np.ndarray]], layer: str) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.0 * len(panels)), squeeze=False, sharex=True)
    first_min = float(panels[0][1].min())
    for j, (ax, (title, cam_all)) in enumerate(zip(axes[:, 0], panels)):
        cam = cam_all[:MAX_KERNELS]
        ax.plot(np.arange(len(cam)), cam, "_", ms=12, mew=2, color="red", label="CAM of update values")
        ax.axhline(float(cam_all.min()), color="grey", ls="--", lw=1, label=f"min {float(cam_all.min()):.3g}")
        note = f"mean {float(cam_all.mean()):.3g}"
        if j > 0:
            note += f"; {100 * float(np.mean(cam_all < first_min)):.1f}% of kernels below the first panel's min"
        ax.set_title(f"{title}: {note}", fontsize=9)
        if (cam_all > 0).all():  # update magnitudes span decades; a zero (lr decayed to 0) needs a linear axis
            ax.set_yscale("log")
        ax.set_ylabel("CAM of update")
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.04, y=0.2)  # room for the legend without hiding an edge kernel's marker
        ax.legend(loc="best", fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("output kernel")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{stage.label}: update values of {layer} (latest step of the epoch)", fontsize=10)
    return _save(fig, path)


def _distribution_figure(path: Path, entries: list[tuple[_Stage, Peaks, str]], log_y: bool) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(entries), figsize=(5.5 * len(entries), 3.8), squeeze=False)
    for ax, (stage, pk, source) in zip(axes[0], entries):
        centres = 0.5 * (pk.edges[:-1] + pk.edges[1:])
        ax.stairs(pk.counts, pk.edges, fill=True, color="tab:blue", alpha=0.6, label=f"latent weights ({source})")
        ax.plot(centres, pk.smoothed, color="tab:orange", lw=1.2, label="smoothed")
        for x in pk.positions:
            y = float(np.interp(x, centres, pk.smoothed))
            ax.plot([x], [y], "v", color="red", ms=7)
            ax.annotate(f"{x:+.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        for b in (-1, 1):
            ax.axvline(b, color="k", ls=":", lw=1)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(f"{stage.label}: {pk.count} peak{'s' if pk.count != 1 else ''}", fontsize=10)
        ax.set_xlabel("latent weight value")
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle("final latent-weight distribution of all binary layers (peaks marked ▼)", fontsize=10)
    return _save(fig, path)


def _stage_starts(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    out, seen, last = [], None, 0
    for r in records:
        if r.get("type") not in ("step", "epoch"):
            continue
        if r.get("stage") != seen:
            out.append((last, r.get("stage", "")))
            seen = r.get("stage")
        last = r.get("global_step", last)
    return out


def _mark_stages(ax: Any, starts: list[tuple[int, str]]) -> None:
    for gs, name in starts:
        ax.axvline(gs, color="grey", ls=":", lw=1)
        ax.text(gs, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")


def _ff_c2i_figure(path: Path, records: list[dict[str, Any]], stages: list[_Stage]) -> Path:
    plt = _pyplot()
    steps = [r for r in records if r.get("type") == "step" and _finite(r.get("ff_ratio")) is not None]
    starts = _stage_starts(records)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    x = np.array([r["global_step"] for r in steps])
    ff = np.array([r["ff_ratio"] for r in steps], dtype=float)
    a1.semilogy(x, np.where(ff > 0, ff, np.nan), ".", ms=2, color="grey", alpha=0.5, label="FF ratio per step")
    for s in stages:
        color = f"C{s.index % 10}"
        ep = [r for r in s.epochs if _finite(r.get("ff_ratio")) is not None]
        if ep:
            gs = [r["global_step"] for r in ep]
            ff_ep = [max(r["ff_ratio"], 1e-12) for r in ep]
            a1.semilogy(gs, ff_ep, "o-", ms=4, color=color, label=f"{s.name}: epoch mean")
        ep = [r for r in s.epochs if _finite(r.get("c2i")) is not None]
        if ep:
            c2i = [r["c2i"] for r in ep]
            a2.plot([r["global_step"] for r in ep], c2i, "o-", ms=4, color=color, label=f"{s.name}: vs stage start")
        run_c2i = _finite((s.record or {}).get("c2i_run"))
        if run_c2i is not None:
            a2.plot([s.record["global_step"]], [run_c2i], "s", color="k", ms=6)
    if len(ff) and (ff == 0).any():  # a log axis cannot show them, so say how many there are
        note = f"{100 * float(np.mean(ff == 0)):.1f}% of steps flip no sign (not shown on the log axis)"
        a1.text(0.01, 0.02, note, transform=a1.transAxes, fontsize=7)
    if any(_finite((s.record or {}).get("c2i_run")) is not None for s in stages):
        a2.plot([], [], "s", color="k", ms=6, label="stage end vs run start")
    for ax in (a1, a2):
        _mark_stages(ax, starts)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize=7)
    a1.set_ylabel("FF ratio (log)")
    a2.set_ylabel("C2I (sign correlation)")
    a2.set_xlabel("step")
    fig.suptitle("flip-flops per step and correlation to initialisation per epoch", fontsize=10)
    return _save(fig, path)


def _saturation_figure(path: Path, records: list[dict[str, Any]], stages: list[_Stage]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    layer_label = "per layer"
    for s in stages:
        ep = [r for r in s.epochs if _finite((r.get("dyn") or {}).get("saturation_mean")) is not None]
        if not ep:
            continue
        gs = [r["global_step"] for r in ep]
        for name in ep[-1]["dyn"].get("saturation") or {}:
            ys = [(r["dyn"].get("saturation") or {}).get(name, np.nan) for r in ep]
            ax.plot(gs, ys, color="grey", lw=0.6, alpha=0.4, label=layer_label)
            layer_label = None
        color = f"C{s.index % 10}"  # one colour per stage: saturation solid, zero-gradient share dashed
        sat = [r["dyn"]["saturation_mean"] for r in ep]
        ax.plot(gs, sat, "o-", ms=4, lw=2, color=color, label=f"{s.name}: mean saturation")
        zg = [_finite(r["dyn"].get("zero_grad_share")) for r in ep]
        if any(v is not None for v in zg):
            zg_y = [np.nan if v is None else v for v in zg]
            ax.plot(gs, zg_y, "x--", ms=5, color=color, label=f"{s.name}: zero-gradient share of latent weights")
    _mark_stages(ax, _stage_starts(records))
    ax.set_xlabel("step")
    ax.set_ylabel("share")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)  # outside: the curves fill the axes
    fig.suptitle(
        "saturation: share of binarizer inputs outside the STE window, per epoch (all binary layers)", fontsize=10
    )
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------- the analysis
