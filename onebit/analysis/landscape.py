"""Loss landscapes along random filter-normalised directions (Li et al., 2018, "Visualizing the loss landscape of
neural nets"), as BNext (Fig. 2) uses them to compare binary architectures.

Around the trained parameters ``theta`` the loss is evaluated at ``theta + a * delta`` (1-D) or
``theta + a * delta + b * eta`` (2-D) for ``a, b`` on a symmetric grid, where ``delta`` and ``eta`` are Gaussian
directions with *filter-wise normalisation*: every filter of the direction (one slice along dim 0 of a conv or linear
weight: an output channel / neuron) is rescaled to the norm of the corresponding filter of the weights, so that the
plot does not depend on the scale invariance that BN gives each filter.

Batch norm and biases are handled as in Li et al.'s ``ignore='biasbn'`` setting: every parameter that is not a filter
bank (1-D or per-channel tensors: biases, BN affine weights and biases, ReActNet's learnable shifts, PReLU slopes,
channel scales) is zero in the direction, so it stays at its trained value; BN's running statistics are buffers and
are never perturbed, and the model is evaluated in eval mode, so BN normalises with those statistics.

Binary layers: the direction perturbs the *latent* weight (what the optimizer sees and the checkpoint stores); the
binarizers stay in place, so the forward at each grid point uses ``sign`` of the perturbed latent weight (and its
new channel scale). The original parameters and buffers are restored bit-exactly afterwards, even if an evaluation
raises, and the model's train/eval mode with them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from onebit.checkpoint import RunDir, load_weights
from onebit.layers import set_binarization
from onebit.models import create_model
from onebit.report import atomic_write_text

__all__ = [
    "Landscape",
    "default_loss",
    "LandscapeError",
    "evaluate_loss",
    "filter_normalize_",
    "grid_coords",
    "landscape_1d",
    "landscape_2d",
    "load_run_stage",
    "plot_landscape",
    "random_direction",
    "sample_batches",
    "save_landscape",
]

Direction = dict[str, Tensor]
Batches = Sequence[tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


class LandscapeError(ValueError):
    """A run, stage or data subset that a landscape cannot be computed on; the message says which and why."""


@dataclass
class Landscape:
    """A 1-D curve or a 2-D grid of loss and accuracy around a model's parameters.

    Attributes:
        alphas: [N] coefficients along the first direction.
        loss: [N] (1-D) or [N, M] (2-D, ``loss[i, j]`` at ``(alphas[i], betas[j])``) mean loss.
        acc: top-1 accuracy (fraction) in the same shape; NaN when outputs are not class scores.
        betas: [M] coefficients along the second direction (2-D only).
        info: what was evaluated (model, stage, data, seeds, direction norms); written with the grid.
    """

    alphas: np.ndarray
    loss: np.ndarray
    acc: np.ndarray
    betas: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return 1 if self.betas is None else 2

    @property
    def center(self) -> tuple[float, float]:
        """(loss, accuracy) at the origin: the unperturbed model."""
        i = int(np.argmin(np.abs(self.alphas)))
        if self.betas is None:
            return float(self.loss[i]), float(self.acc[i])
        j = int(np.argmin(np.abs(self.betas)))
        return float(self.loss[i, j]), float(self.acc[i, j])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: arrays as nested lists, non-finite values as ``None`` (strict JSON has no NaN)."""

        def clean(a: np.ndarray | None) -> Any:
            if a is None:
                return None
            return np.where(np.isfinite(a), a, None).tolist()

        return {
            "ndim": self.ndim,
            "alphas": clean(self.alphas),
            "betas": clean(self.betas),
            "loss": clean(self.loss),
            "acc": clean(self.acc),
            "info": self.info,
        }


# ------------------------------------------------------------------------------------------------------- directions
def _is_filter_bank(p: Tensor) -> bool:
    # at least two non-trivial dims: conv [out, in, k, k] (also depthwise [C, 1, k, k]) and linear [out, in]; a
    # per-channel tensor shaped [1, C, 1, 1] (learnable shifts, channel scales) is a bias in disguise
    return sum(s > 1 for s in p.shape) >= 2


def random_direction(model: nn.Module, seed: int = 0) -> Direction:
    """A Gaussian direction with one tensor per parameter of ``model`` (name -> tensor on the parameter's device).

    Drawn in float32 on the CPU from ``torch.Generator().manual_seed(seed)``, in parameter order, so the same seed
    gives the same direction on every device. Not yet normalised: see :func:`filter_normalize_`.
    """
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(p.shape, generator=g, dtype=torch.float32).to(device=p.device, dtype=p.dtype)
        for name, p in model.named_parameters()
    }


@torch.no_grad()
def filter_normalize_(direction: Direction, model: nn.Module, eps: float = 1e-10) -> Direction:
    """Li et al.'s filter-wise normalisation, in place; returns ``direction``.

    For a filter bank (conv / linear weight), each filter ``d[i]`` (slice along dim 0) becomes
    ``d[i] * ||w[i]|| / (||d[i]|| + eps)``; a zero filter of the weights gets a zero direction. Every other
    parameter (biases, BN affine parameters, per-channel shifts and slopes) is set to zero: it is not perturbed.
    """
    params = dict(model.named_parameters())
    for name, d in direction.items():
        if name not in params:
            raise KeyError(f"direction entry {name!r} is not a parameter of the model")
        p = params[name]
        if p.shape != d.shape:
            raise ValueError(f"direction {name}: shape {tuple(d.shape)} vs parameter {tuple(p.shape)}")
        if not _is_filter_bank(p):
            d.zero_()
            continue
        w = p.detach().reshape(p.shape[0], -1).to(d.dtype)
        dv = d.view(d.shape[0], -1)
        dv.mul_(w.norm(dim=1, keepdim=True) / (dv.norm(dim=1, keepdim=True) + eps))
    return direction


def _flat_stats(a: Direction, b: Direction | None = None) -> dict[str, float]:
    va = torch.cat([t.detach().reshape(-1).double().cpu() for t in a.values()])
    out = {"norm": float(va.norm())}
    if b is not None:
        vb = torch.cat([t.detach().reshape(-1).double().cpu() for t in b.values()])
        out["cosine"] = float(va @ vb / (va.norm() * vb.norm()).clamp_min(1e-30))
    return out


# ------------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_loss(model: nn.Module, loss_fn: LossFn, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """Sample-weighted mean of ``loss_fn(model(x), y)`` and top-1 accuracy over ``batches``, as the model is now.

    ``loss_fn`` returns the batch mean. Accuracy is NaN unless outputs are [B, classes] and targets integer labels.
    The caller chooses the mode (landscapes use eval mode) and puts the batches on the model's device.
    """
    total, correct, n, classify = 0.0, 0, 0, True
    for x, y in batches:
        out = model(x)
        total += float(loss_fn(out, y)) * len(y)
        if out.ndim == 2 and not y.is_floating_point() and y.ndim == 1:
            correct += int((out.argmax(dim=1) == y).sum())
        else:
            classify = False
        n += len(y)
    if n == 0:
        raise LandscapeError("no samples to evaluate")
    return total / n, (correct / n if classify else math.nan)


def grid_coords(points: int, span: float) -> np.ndarray:
    """``points`` coefficients from ``-span`` to ``span``, exactly antisymmetric, with an exact 0 when odd."""
    if points < 2:
        raise LandscapeError(f"a landscape needs at least 2 points per axis, got {points}")
    if not span > 0:
        raise LandscapeError(f"span must be positive, got {span}")
    t = np.linspace(-1.0, 1.0, points)
    t = (t - t[::-1]) / 2  # linspace's rounding can leave the middle at 1e-17: the centre must be the model itself
    return span * t


class _Perturbation:
    """Sets the model's parameters to ``theta + sum_k c_k d_k`` from a saved ``theta``; restores everything."""

    def __init__(self, model: nn.Module, directions: Sequence[Direction]) -> None:
        self.model = model
        self.was_training = model.training
        # every tensor of the state (parameters and buffers), so a layer that writes in place during a forward
        # (a latent clamp, a running statistic) is also undone
        self.saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
        params = dict(model.named_parameters())
        self.moving = [(params[n], self.saved[n], [d[n] for d in directions]) for n in directions[0]]

    @torch.no_grad()
    def set(self, coefs: Sequence[float]) -> None:
        for p, theta, ds in self.moving:
            p.copy_(theta)
            for c, d in zip(coefs, ds):
                if c != 0.0:  # the centre is theta itself, not theta + 0 * d
                    p.add_(d, alpha=float(c))

    @torch.no_grad()
    def restore(self) -> None:
        for k, v in self.model.state_dict(keep_vars=True).items():
            v.data.copy_(self.saved[k])
        self.model.train(self.was_training)


def _progress(console: Console | None, description: str, total: int):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=console is None or not console.is_terminal,
    )


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _grid(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    directions: Sequence[Direction],
    axes: Sequence[np.ndarray],
    console: Console | None,
    label: str,
) -> tuple[np.ndarray, np.ndarray]:
    device = _device_of(model)
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    shape = tuple(len(a) for a in axes)
    loss, acc = np.full(shape, np.nan), np.full(shape, np.nan)
    pert = _Perturbation(model, directions)
    model.eval()
    try:
        with _progress(console, label, int(np.prod(shape))) as bar:
            task = bar.add_task(label, total=int(np.prod(shape)), loss=float("nan"))
            for idx in np.ndindex(*shape):
                pert.set([a[i] for a, i in zip(axes, idx)])
                loss[idx], acc[idx] = evaluate_loss(model, loss_fn, batches)
                bar.update(task, advance=1, loss=loss[idx])
    finally:
        pert.restore()
    return loss, acc


def _directions(model: nn.Module, directions: Sequence[Direction] | None, count: int, seed: int) -> list[Direction]:
    if directions is None:
        return [filter_normalize_(random_direction(model, seed + k), model) for k in range(count)]
    if len(directions) != count:
        raise LandscapeError(f"expected {count} direction(s), got {len(directions)}")
    # a caller's direction may leave parameters out (they are not perturbed) but may not name foreign ones
    names = {n for n, _ in model.named_parameters()}
    for d in directions:
        if set(d) - names:
            raise LandscapeError(f"direction has entries that are not parameters: {sorted(set(d) - names)[:3]}")
        if set(d) != set(directions[0]):
            raise LandscapeError("the two directions must name the same parameters")
    return list(directions)


def landscape_1d(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    direction: Direction | None = None,
    *,
    points: int = 21,
    span: float = 1.0,
    seed: int = 0,
    console: Console | None = None,
) -> Landscape:
    """Loss and accuracy of ``theta + a * delta`` for ``a`` in ``grid_coords(points, span)``, in eval mode.

    Args:
        model: evaluated in place and restored exactly afterwards.
        loss_fn: ``loss_fn(output, target)`` -> batch-mean loss (e.g. ``F.cross_entropy``).
        batches: the fixed data subset, reused at every point (moved to the model's device once).
        direction: a direction (name -> tensor); default a filter-normalised Gaussian one from ``seed``.
        points, span: grid size and half-width.
        seed: seed of the default direction.
        console: shows a progress bar when it is a terminal.
    """
    (d,) = _directions(model, None if direction is None else [direction], 1, seed)
    alphas = grid_coords(points, span)
    loss, acc = _grid(model, loss_fn, batches, [d], [alphas], console, "landscape 1-D")
    info = {"points": points, "span": span, "seed": seed, "direction": _flat_stats(d)}
    return Landscape(alphas, loss, acc, None, info)


def landscape_2d(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    directions: tuple[Direction, Direction] | None = None,
    *,
    points: int = 21,
    span: float = 1.0,
    seed: int = 0,
    console: Console | None = None,
) -> Landscape:
    """Loss and accuracy of ``theta + a * delta + b * eta`` on a ``points x points`` grid over ``[-span, span]^2``.

    The default directions are filter-normalised Gaussian ones from ``seed`` and ``seed + 1`` (not orthogonalised,
    as in Li et al.: in high dimension they are nearly orthogonal; ``info["directions"]["cosine"]`` reports it).
    Other arguments as :func:`landscape_1d`.
    """
    ds = _directions(model, None if directions is None else list(directions), 2, seed)
    coords = grid_coords(points, span)
    loss, acc = _grid(model, loss_fn, batches, ds, [coords, coords], console, "landscape 2-D")
    info = {"points": points, "span": span, "seed": seed, "directions": _flat_stats(ds[0], ds[1])}
    return Landscape(coords, loss, acc, coords.copy(), info)


# ------------------------------------------------------------------------------------------------------ run loading
def sample_batches(
    loader: Iterable[tuple[Tensor, Tensor]], samples: int, batch_size: int
) -> list[tuple[Tensor, Tensor]]:
    """The first ``samples`` (0: all) of a loader as a fixed list of batches of ``batch_size``.

    A loader holding its tensors (``.images`` / ``.labels``, the in-memory loaders) is sliced directly: stored order,
    no augmentation, even for a training loader. Any other loader is iterated (for a training loader that means
    its epoch-0 order and augmentation, still deterministic).
    """
    if batch_size < 1:
        raise LandscapeError(f"batch size must be >= 1, got {batch_size}")
    images, labels = getattr(loader, "images", None), getattr(loader, "labels", None)
    if isinstance(images, Tensor) and isinstance(labels, Tensor):
        x, y = (images, labels) if samples <= 0 else (images[:samples], labels[:samples])
    else:
        xs, ys, n = [], [], 0
        for bx, by in loader:
            xs.append(bx)
            ys.append(by)
            n += len(by)
            if 0 < samples <= n:
                break
        if not xs:
            raise LandscapeError("the data loader yielded no batches")
        x, y = torch.cat(xs), torch.cat(ys)
        if samples > 0:
            x, y = x[:samples], y[:samples]
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


def load_run_stage(run_dir: str | Path, stage: str | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The model of a run directory at the end of one stage, binarized as that stage trained it.

    Args:
        run_dir: a ``onebit train`` run directory (``config.json`` + ``checkpoints/``).
        stage: a stage name (``step2``), checkpoint tag (``stage2_step2``) or 1-based index; default the last stage
            that has a checkpoint.

    Returns:
        ``(model, cfg, info)``: the model with that checkpoint's weights and the stage's ``binarize_activations`` /
        ``binarize_weights`` switches, the run's ``RunConfig``, and ``info`` (stage name, index, checkpoint path).
    """
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    if not rd.has_config():
        raise LandscapeError(f"{run_dir}: not a run directory (no config.json)")
    cfg = rd.read_config()
    tags = [f"stage{i + 1}_{s.name}" for i, s in enumerate(cfg.stages)]
    if stage is None:
        done = [i for i, t in enumerate(tags) if rd.checkpoint(t) is not None]
        if not done:
            raise LandscapeError(f"{run_dir}: no stage has finished yet (no checkpoints/stage<i>_<name>)")
        index = done[-1]
    else:
        matches = [i for i, (t, s) in enumerate(zip(tags, cfg.stages)) if stage in (t, s.name, str(i + 1))]
        if not matches:
            names = ", ".join(f"{s.name} ({t})" for t, s in zip(tags, cfg.stages))
            raise LandscapeError(f"{run_dir}: no stage {stage!r}; stages: {names}")
        index = matches[-1]
    ck = rd.checkpoint(tags[index])
    if ck is None:
        raise LandscapeError(f"{run_dir}: stage {cfg.stages[index].name!r} has no checkpoint ({tags[index]})")
    model = create_model(cfg.model.name, num_classes=cfg.model.num_classes, **cfg.model.kwargs)
    load_weights(model, ck / "model.safetensors")
    st = cfg.stages[index]
    set_binarization(model, activations=st.binarize_activations, weights=st.binarize_weights)
    info = {
        "run_dir": str(run_dir),
        "stage": st.name,
        "stage_index": index + 1,
        "checkpoint": str(ck),
        "binarize_activations": st.binarize_activations,
        "binarize_weights": st.binarize_weights,
        "model": cfg.model.name,
    }
    return model, cfg, info


# -------------------------------------------------------------------------------------------------------- output
def save_landscape(result: Landscape, out_dir: str | Path, stem: str | None = None) -> list[Path]:
    """Write ``<stem>.json`` (grid + info) and ``<stem>.npz`` (alphas, betas, loss, acc); stem default
    ``landscape_1d`` / ``landscape_2d``. Returns the two paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"landscape_{result.ndim}d"
    js = out / f"{stem}.json"
    atomic_write_text(js, json.dumps(result.to_dict(), indent=1) + "\n")
    arrays = {"alphas": result.alphas, "loss": result.loss, "acc": result.acc}
    if result.betas is not None:
        arrays["betas"] = result.betas
    npz = out / f"{stem}.npz"
    np.savez(npz, **arrays)
    return [js, npz]


def plot_landscape(result: Landscape, out_dir: str | Path, title: str = "") -> list[Path]:
    """1-D: ``landscape_1d.png`` (loss and accuracy against ``a``). 2-D: ``landscape_2d_contour.png`` (contour
    lines over filled contours, Li et al.'s and BNext Fig. 2's view) and ``landscape_3d.png`` (surface). The
    unperturbed model is marked at the origin. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c_loss, c_acc = result.center
    files = []
    if result.ndim == 1:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        ax.plot(result.alphas, result.loss, "o-", color="tab:blue", ms=3, lw=1.5, label="loss")
        ax.plot([0.0], [c_loss], "*", color="k", ms=11, label=f"trained (loss {c_loss:.3f})")
        ax.set_xlabel("α (filter-normalised direction δ)")
        ax.set_ylabel("loss", color="tab:blue")
        ax.grid(alpha=0.3)
        if np.isfinite(result.acc).any():
            ax2 = ax.twinx()
            ax2.plot(result.alphas, 100 * result.acc, "s--", color="tab:red", ms=3, lw=1.2, label="accuracy")
            ax2.set_ylabel("accuracy (%)", color="tab:red")
            ax2.set_ylim(0, 101)
            handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
            ax.legend(handles=handles, loc="upper center", fontsize=8)  # one legend for both axes
        else:
            ax.legend(loc="upper center", fontsize=8)
        ax.set_title(title or "1-D loss landscape", fontsize=10)
        fig.tight_layout()
        files.append(out / "landscape_1d.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
        return files

    a, b = np.meshgrid(result.alphas, result.betas, indexing="ij")  # loss[i, j] is at (alphas[i], betas[j])
    z = np.ma.masked_invalid(result.loss)
    finite = result.loss[np.isfinite(result.loss)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    levels = np.linspace(lo, hi if hi > lo else lo + 1e-6, 25)
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    cf = ax.contourf(a, b, z, levels=levels, cmap="viridis", alpha=0.85)
    cs = ax.contour(a, b, z, levels=levels[::2], colors="k", linewidths=0.6)
    ax.clabel(cs, fmt="%.2f", fontsize=6)
    fig.colorbar(cf, ax=ax, label="loss")
    ax.plot(0.0, 0.0, "*", color="white", mec="k", ms=13, label=f"trained (loss {c_loss:.3f})")
    ax.set_xlabel("α (direction δ)")
    ax.set_ylabel("β (direction η)")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "2-D loss landscape", fontsize=10)
    fig.tight_layout()
    files.append(out / "landscape_2d_contour.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig = plt.figure(figsize=(7, 5.5))
    ax3 = fig.add_subplot(projection="3d")
    ax3.plot_surface(a, b, z, cmap="viridis", linewidth=0.2, edgecolor="k", alpha=0.9, antialiased=True)
    ax3.scatter([0.0], [0.0], [c_loss], color="red", s=40, label="trained")
    ax3.set_xlabel("α")
    ax3.set_ylabel("β")
    ax3.set_zlabel("loss")
    ax3.set_title(title or "3-D loss landscape", fontsize=10)
    ax3.view_init(elev=35, azim=-60)
    fig.tight_layout()
    files.append(out / "landscape_3d.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def default_loss(output: Tensor, target: Tensor) -> Tensor:
    """The plain training criterion of a classifier: mean cross-entropy (no label smoothing)."""
    return F.cross_entropy(output, target)
