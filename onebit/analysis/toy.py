"""The two-binary-node toy of AdamBNN (Liu et al., 2021, §3.2.3, Fig. 6): why Adam beats SGD on flat STE regions.

The network is the sum of two binary nodes, each the sign of its input, fitted to the target "both nodes fire +1"::

    a_i = x_i * w_i                      (x_i > 0: the magnitude of the node's input, which varies from batch to batch)
    y   = sign(a_1) + sign(a_2)          in {-2, 0, 2}
    L   = (y - 2)^2 / 4                  in {0, 1, 4}

Because every ``x_i > 0``, ``sign(a_i) = sign(w_i)``: the forward loss depends on ``(sign w1, sign w2)`` only and is a
staircase with zero gradient almost everywhere (Fig. 6 a). The STE replaces the derivative of sign by that of
``clip(-1, a, 1)``, so optimization actually descends the surface ``L_c = (clip(a_1) + clip(a_2) - 2)^2 / 4``
(Fig. 6 b), whose gradient in ``w_i`` is ``(y_c - 2) / 2 * x_i * 1[|x_i w_i| <= 1]``: it vanishes whenever the node
saturates (activation saturation, §3.2.1).

Set-up of the experiment (:class:`ToyConfig`): the latent weights start at ``(-0.9, -0.3)`` (both nodes wrong).
Node 1 (``w1``, the *vanishing* direction) sees an input magnitude ``x1 ~ LogNormal(0.25, 0.5)`` per batch, so at the
start it saturates (``|x1 w1| > 1``) in about 60 % of the batches, and when it does not, ``x1`` is small and so is its
gradient; node 2 sees ``x2 ~ U(1.25, 1.75)`` and never saturates near the start. The gradient sequence is computed
once, at the start point, one gradient per batch; SGD with momentum (``v = m v + g``, ``w -= lr v``: PyTorch's SGD,
the paper's formula) and Adam (PyTorch's) then consume exactly that sequence from the same start. What differs is
only how each turns gradients into updates: SGD's update in ``w1`` is proportional to the few small gradients it
gets, Adam divides by the running RMS of each coordinate's own gradient and so amplifies the rare ones. The measure is
the share of the total update in the vanishing direction, ``sum_t |dw1_t| / sum_t (|dw1_t| + |dw2_t|)`` — the paper's
"Adam contains a higher proportion of the update value in the x direction" (Fig. 6 c, d).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from onebit.report import atomic_write_text

__all__ = [
    "ToyConfig",
    "ToyResult",
    "clip_loss",
    "gradient_sequence",
    "plot_toy",
    "run_optimizer",
    "save_toy",
    "sign_loss",
    "toy_experiment",
    "update_share",
]

OPTIMIZERS = ("sgd", "adam")


@dataclass
class ToyConfig:
    """Parameters of the toy experiment (defaults reproduce the paper's effect; see the module docstring).

    Attributes:
        start: the latent weights (w1, w2) both optimizers start from.
        steps: number of batches, i.e. gradients in the shared sequence.
        lr_sgd, momentum: SGD with (heavy-ball) momentum.
        lr_adam, betas, eps: Adam. The two learning rates only set how far each trajectory goes; the shares
            compared are ratios and do not depend on them.
        x1_lognormal: (mu, sigma) of log x1, node 1's per-batch input magnitude (the saturating node).
        x2_uniform: (low, high) of x2, node 2's per-batch input magnitude.
        seed: seed of the input magnitudes.
    """

    start: tuple[float, float] = (-0.9, -0.3)
    steps: int = 100
    lr_sgd: float = 7e-4
    momentum: float = 0.9
    lr_adam: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    x1_lognormal: tuple[float, float] = (0.25, 0.5)
    x2_uniform: tuple[float, float] = (1.25, 1.75)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.lr_sgd <= 0 or self.lr_adam <= 0:
            raise ValueError("learning rates must be positive")
        if self.x2_uniform[0] <= 0 or self.x2_uniform[1] < self.x2_uniform[0]:
            raise ValueError(f"x2_uniform must be 0 < low <= high, got {self.x2_uniform}")


@dataclass
class ToyResult:
    """Everything the toy experiment computed.

    Attributes:
        config: the :class:`ToyConfig` used.
        scales: [steps, 2] input magnitudes (x1, x2) of each batch.
        grads: [steps, 2] gradients of the clip-approximated loss at the start, one per batch (the shared sequence).
        trajectories: optimizer name -> [steps + 1, 2] latent weights, the start first.
        shares: optimizer name -> share of the total update in the vanishing direction w1.
        numbers: the JSON-able summary (also written by :func:`save_toy`).
    """

    config: ToyConfig
    scales: torch.Tensor
    grads: torch.Tensor
    trajectories: dict[str, torch.Tensor]
    shares: dict[str, float]
    numbers: dict[str, Any] = field(default_factory=dict)


def sign_loss(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The forward loss (Fig. 6 a): ``(sign w1 + sign w2 - 2)^2 / 4``, sign(0) = +1 (the papers' convention)."""
    b1 = torch.where(w1 >= 0, 1.0, -1.0)
    b2 = torch.where(w2 >= 0, 1.0, -1.0)
    return (b1 + b2 - 2.0) ** 2 / 4.0


def clip_loss(w1: torch.Tensor, w2: torch.Tensor, x1: float | torch.Tensor = 1.0, x2: float | torch.Tensor = 1.0):
    """The surface the STE descends (Fig. 6 b): ``(clip(x1 w1) + clip(x2 w2) - 2)^2 / 4``, clip to [-1, 1]."""
    y = (x1 * w1).clamp(-1.0, 1.0) + (x2 * w2).clamp(-1.0, 1.0)
    return (y - 2.0) ** 2 / 4.0


def gradient_sequence(cfg: ToyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared gradient sequence: per batch t, ``grad L_c(start; x_t)``. Returns ``(grads, scales)``, [steps, 2].

    Gradients come from autograd through ``clamp``, i.e. ``(y_c - 2)/2 * x_i * 1[|x_i w_i| <= 1]``.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    mu, sigma = cfg.x1_lognormal
    x1 = torch.exp(mu + sigma * torch.randn(cfg.steps, generator=g, dtype=torch.float64))
    lo, hi = cfg.x2_uniform
    x2 = lo + (hi - lo) * torch.rand(cfg.steps, generator=g, dtype=torch.float64)
    w = torch.tensor(cfg.start, dtype=torch.float64).repeat(cfg.steps, 1).requires_grad_(True)
    # one row per batch: the sum's gradient w.r.t. row t is batch t's gradient at the start
    clip_loss(w[:, 0], w[:, 1], x1, x2).sum().backward()
    return w.grad.detach().clone(), torch.stack([x1, x2], dim=1)


def run_optimizer(name: str, cfg: ToyConfig, grads: torch.Tensor) -> torch.Tensor:
    """Replay ``grads`` through PyTorch's ``SGD`` (momentum) or ``Adam`` from ``cfg.start``; [steps + 1, 2] path."""
    w = torch.nn.Parameter(torch.tensor(cfg.start, dtype=torch.float64))
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD([w], lr=cfg.lr_sgd, momentum=cfg.momentum)
    elif name == "adam":
        opt = torch.optim.Adam([w], lr=cfg.lr_adam, betas=cfg.betas, eps=cfg.eps)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    path = [w.detach().clone()]
    for g in grads:
        w.grad = g.clone()  # the precomputed gradient, not one taken at the current point: the same input for both
        opt.step()
        path.append(w.detach().clone())
    return torch.stack(path)


def update_share(path: torch.Tensor, axis: int = 0) -> float:
    """``sum_t |dw_axis| / sum_t (|dw1| + |dw2|)`` over a [steps + 1, 2] path: the share of the total update along
    ``axis``. NaN when the path never moves."""
    d = (path[1:] - path[:-1]).abs()
    total = float(d.sum())
    return float(d[:, axis].sum()) / total if total > 0 else math.nan


def toy_experiment(cfg: ToyConfig | None = None) -> ToyResult:
    """Build the gradient sequence, replay it through SGD and Adam, and summarise (see the module docstring)."""
    cfg = cfg or ToyConfig()
    grads, scales = gradient_sequence(cfg)
    paths = {name: run_optimizer(name, cfg, grads) for name in OPTIMIZERS}
    shares = {name: update_share(p, axis=0) for name, p in paths.items()}
    vanish = grads[:, 0] == 0
    numbers: dict[str, Any] = {
        "config": asdict(cfg),
        "loss": "(sign(x1 w1) + sign(x2 w2) - 2)^2 / 4, x_i > 0 per batch; STE surface with clip(-1, x_i w_i, 1)",
        "vanishing_direction": "w1",
        "w1_zero_gradient_fraction": float(vanish.float().mean()),
        "mean_abs_grad": {"w1": float(grads[:, 0].abs().mean()), "w2": float(grads[:, 1].abs().mean())},
        "mean_abs_grad_when_nonzero": {
            "w1": float(grads[~vanish, 0].abs().mean()) if bool((~vanish).any()) else 0.0,
            "w2": float(grads[:, 1].abs().mean()),
        },
        "optimizers": {},
    }
    for name, p in paths.items():
        d = (p[1:] - p[:-1]).abs()
        end = p[-1]
        numbers["optimizers"][name] = {
            "share_vanishing_direction": shares[name],
            "path_length": {"w1": float(d[:, 0].sum()), "w2": float(d[:, 1].sum())},
            "final": [float(end[0]), float(end[1])],
            "final_sign_loss": float(sign_loss(end[0], end[1])),
            "final_clip_loss_unit_inputs": float(clip_loss(end[0], end[1])),
        }
    numbers["adam_over_sgd_share"] = shares["adam"] / shares["sgd"] if shares["sgd"] > 0 else math.inf
    return ToyResult(cfg, scales, grads, paths, shares, numbers)


def save_toy(result: ToyResult, out_dir: str | Path) -> Path:
    """Write ``toy_landscape.json`` (the numbers plus the gradient sequence and both paths) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        **result.numbers,
        "grads": result.grads.tolist(),
        "scales": result.scales.tolist(),
        "trajectories": {k: v.tolist() for k, v in result.trajectories.items()},
    }
    path = out / "toy_landscape.json"
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------------------------ plots
_COLORS = {"sgd": "tab:red", "adam": "tab:blue"}
_LABELS = {"sgd": "SGD (momentum)", "adam": "Adam"}


def _surfaces(result: ToyResult, lim: float, n: int):
    w = torch.linspace(-lim, lim, n, dtype=torch.float64)
    w1, w2 = torch.meshgrid(w, w, indexing="xy")  # rows follow w2, columns w1: what contour/plot_surface expect
    # the clip surface at the median input magnitudes: the typical batch, so its flat bands are where gradients vanish
    mx1, mx2 = (float(v) for v in result.scales.median(dim=0).values)
    return w1.numpy(), w2.numpy(), sign_loss(w1, w2).numpy(), clip_loss(w1, w2, mx1, mx2).numpy(), (mx1, mx2)


def plot_toy(result: ToyResult, out_dir: str | Path, lim: float = 2.0, n: int = 161) -> list[Path]:
    """Write ``toy_surfaces_3d.png`` (Fig. 6 a-c: both surfaces in 3-D with the two trajectories),
    ``toy_contour.png`` (Fig. 6 d: top views) and ``toy_updates.png`` (per-step update components). Returns paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w1, w2, zs, zc, (mx1, mx2) = _surfaces(result, lim, n)
    paths = {k: v.numpy() for k, v in result.trajectories.items()}
    start = np.asarray(result.config.start)
    titles = ("(a) forward: sign", f"(b) STE surface: clip, median inputs x1={mx1:.2f}, x2={mx2:.2f}")
    files = []

    def path_z(p, which):
        t = torch.from_numpy(p)
        if which == 0:
            return sign_loss(t[:, 0], t[:, 1]).numpy()
        return clip_loss(t[:, 0], t[:, 1], mx1, mx2).numpy()

    fig = plt.figure(figsize=(13, 5.5))
    for k, (z, title) in enumerate(zip((zs, zc), titles)):
        # fixed draw order: mplot3d's depth sort would otherwise hide the paths under the translucent surface
        ax = fig.add_subplot(1, 2, k + 1, projection="3d", computed_zorder=False)
        ax.plot_surface(w1, w2, z, cmap="viridis", alpha=0.6, linewidth=0, antialiased=True, rstride=2, cstride=2)
        for name, p in paths.items():
            zp = path_z(p, k) + 0.05
            ax.plot(p[:, 0], p[:, 1], zp, color=_COLORS[name], lw=2.5, label=_LABELS[name], zorder=5)
            ax.scatter(p[-1:, 0], p[-1:, 1], zp[-1:], color=_COLORS[name], s=30, zorder=6)
        z0 = path_z(start[None], k)[0] + 0.05
        ax.scatter([start[0]], [start[1]], [z0], color="grey", edgecolor="k", s=60, label="start", zorder=6)
        ax.set_xlabel("w1 (vanishing gradient)")
        ax.set_ylabel("w2")
        ax.set_zlabel("loss")
        ax.set_title(title, fontsize=10)
        ax.view_init(elev=35, azim=40)  # seen from the (+, +) corner: the high plateau stays behind
        if k == 0:
            ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("Two binary nodes: SGD vs Adam over the same gradient sequence", fontsize=11)
    fig.tight_layout()
    files.append(out / "toy_surfaces_3d.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for k, (ax, z, title) in enumerate(zip(axes, (zs, zc), titles)):
        cs = ax.contourf(w1, w2, z, levels=20 if k else [-0.5, 0.5, 1.5, 4.5], cmap="viridis", alpha=0.85)
        fig.colorbar(cs, ax=ax, shrink=0.85, label="loss")
        if k == 1:
            # where both nodes pass a gradient (Fig. 6 b's slashed area), at the median inputs
            b1, b2 = 1.0 / mx1, 1.0 / mx2
            ax.add_patch(plt.Rectangle((-b1, -b2), 2 * b1, 2 * b2, fill=False, hatch="//", ec="white", lw=0.8))
        for name, p in paths.items():
            share = result.shares[name]
            ax.plot(p[:, 0], p[:, 1], "-", color=_COLORS[name], lw=2, label=f"{_LABELS[name]}: w1 share {share:.2f}")
            ax.plot(p[-1, 0], p[-1, 1], "o", color=_COLORS[name], ms=5)
        ax.plot(*start, "o", color="grey", ms=8, mec="k", label="start")
        ax.axhline(0, color="k", lw=0.5, ls=":")
        ax.axvline(0, color="k", lw=0.5, ls=":")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("w1 (vanishing gradient)")
        ax.set_ylabel("w2")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    files.append(out / "toy_contour.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharex=True)
    steps = np.arange(1, result.config.steps + 1)
    zero = result.grads[:, 0].numpy() == 0
    for ax, name in zip(axes, paths):
        d = np.abs(np.diff(paths[name], axis=0))
        ax.plot(steps, d[:, 0], color="tab:purple", lw=1.4, label="|dw1| (vanishing)")
        ax.plot(steps, d[:, 1], color="tab:green", lw=1.4, label="|dw2|")
        ymax = ax.get_ylim()[1]
        ax.fill_between(steps, 0, ymax, where=zero, step="mid", color="grey", alpha=0.15, label="dL/dw1 = 0")
        ax.set_ylim(0, ymax)
        ax.set_title(f"{_LABELS[name]}: share of the update in w1 = {result.shares[name]:.3f}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("update magnitude")
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(out / "toy_updates.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files
