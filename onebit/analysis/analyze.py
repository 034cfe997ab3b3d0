"""``onebit analyze``: the AdamBNN §3 figures and a per-stage table, from a finished (or partial) run directory.

Figures (written to ``<run>/analysis/`` unless told otherwise), one set per stage where it applies:

* ``activations_<stage>.png`` (paper Fig. 3): histogram of the input of the first binary conv's activation
  binarizer on ``samples`` validation images, after the stage's first epoch and at its end, with the STE window
  ±bound marked and the share of inputs outside it (zero gradient: saturation) in the legend. The model runs in
  **eval mode** (BatchNorm with running statistics), as a checkpoint is evaluated, not as it was trained.
* ``latent_kernels_<stage>.png`` (Fig. 4): latent weights of the first binary conv, one column of dots per output
  kernel, a red hyphen at each kernel's channel-wise absolute mean (CAM, eq. 3) and a dashed line at the minimum
  CAM; SDAM (the standard deviation of the CAMs) in the titles.
* ``update_cam_<stage>.png`` (Fig. 5): CAM of the latest update values of the first binary conv, per kernel, at the
  stage's first and last epoch (from ``dyn.update_cam_first`` of the epoch records).
* ``latent_distribution.png`` (Fig. 7): the final latent-weight distribution of all binary layers per stage, with
  its peaks counted (one peak at 0 = unconfident weights; three peaks at 0 and beyond ±1 = confident ones).
* ``ff_c2i.png`` (Table 1 over time): FF ratio per step (log) and C2I per epoch, stage boundaries marked;
  ``saturation.png``: mean saturation (and zero-gradient share) per epoch, when the run recorded it.

Plus ``summary.md`` and ``analysis.json``: per stage val top-1, FF mean, C2I, saturation after the first epoch and
at the end, zero-gradient share, SDAM of the first binary conv, number of latent-weight peaks.

Runs written before the dynamics metrics (``dyn`` in epoch records, ``dyn_stage`` in stage records, the
``stage<i>_<name>_epoch<k>`` checkpoints) still analyse: what needs a missing piece is skipped with a note saying
which piece, or falls back to what is there.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from onebit.analysis.analyze_figures import (
    _activation_figure,
    _distribution_figure,
    _ff_c2i_figure,
    _finite,
    _kernel_figure,
    _saturation_figure,
    _update_cam_figure,
)
from onebit.checkpoint import RunDir, find_checkpoint, load_weights
from onebit.data import build_data
from onebit.layers import BinaryConv2d, binary_layers, set_binarization
from onebit.metrics.dynamics import cam, saturation_bound, saturation_share, sdam
from onebit.models.io import build_model
from onebit.report import atomic_write_text, read_metrics

__all__ = [
    "analyze_run",
    "capture_binarizer_inputs",
    "channel_cam",
    "count_peaks",
    "find_peaks",
    "first_binary_conv",
    "sdam",
    "share_outside",
    "ste_bound",
]

#: kernels shown per panel in the per-kernel figures (the paper shows one layer's kernels; wide layers get crowded)


# ------------------------------------------------------------------------------------------------ numeric helpers
# CAM, SDAM and the STE window are the streaming metrics' own functions, so the figures and metrics.jsonl agree
channel_cam = cam
ste_bound = saturation_bound


def share_outside(x: Tensor, bound: float | None) -> float:
    """Share of the entries of ``x`` with ``|x| > bound`` (0 when there is no window)."""
    return 0.0 if bound is None or x.numel() == 0 else saturation_share(x, bound)


def find_peaks(y: np.ndarray, min_prominence: float = 0.02) -> np.ndarray:
    """Indices of the local maxima of ``y`` whose prominence is at least ``min_prominence * max(y)``.

    Prominence as in topography: the height of a peak above the higher of the lowest points on its two sides, each
    side running until a higher point or the end of the array. A flat top counts once, at its middle; a maximum at
    an end of the array counts (a mode piled up at a clamp value is a mode) and is measured by its inner side only.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 2 or not np.isfinite(y).all() or y.max() <= 0:
        return np.zeros(0, dtype=int)
    candidates = []
    i = 0
    while i < n:
        j = i
        while j + 1 < n and y[j + 1] == y[i]:  # walk over a plateau
            j += 1
        if (i == 0 or y[i - 1] < y[i]) and (j == n - 1 or y[j + 1] < y[i]) and not (i == 0 and j == n - 1):
            candidates.append((i + j) // 2)
        i = j + 1
    thresh = min_prominence * y.max()
    out = []
    for p in candidates:
        h = y[p]
        lo = p
        while lo > 0 and y[lo - 1] <= h:
            lo -= 1
        hi = p
        while hi < n - 1 and y[hi + 1] <= h:
            hi += 1
        sides = [y[lo:p].min()] if lo < p else []
        sides += [y[p + 1 : hi + 1].min()] if hi > p else []
        if sides and h - max(sides) >= thresh:
            out.append(p)
    return np.array(out, dtype=int)


def _smooth(y: np.ndarray, sigma_bins: float) -> np.ndarray:
    if sigma_bins <= 0:
        return np.asarray(y, dtype=float)
    half = max(1, int(math.ceil(3 * sigma_bins)))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_bins) ** 2)
    # pad with zeros: outside the histogram range there is no mass, so the edges must not grow fake plateaus
    return np.convolve(np.asarray(y, dtype=float), k / k.sum(), mode="same")


@dataclass
class Peaks:
    """Result of :func:`count_peaks`: the histogram, its smoothed version and the peaks found on it."""

    count: int
    positions: list[float]
    edges: np.ndarray
    counts: np.ndarray
    smoothed: np.ndarray


def count_peaks(
    values: Tensor | np.ndarray | None = None,
    *,
    edges: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    bins: int = 121,
    sigma_bins: float = 2.0,
    min_prominence: float = 0.03,
) -> Peaks:
    """Count the modes of a distribution (AdamBNN Fig. 7: one peak at 0, or three at 0 and beyond ±1).

    Either ``values`` (histogrammed over their 0.05 %-99.95 % range, so a few outliers do not flatten the bins) or
    a ready histogram ``edges``/``counts``. The histogram is smoothed with a Gaussian of ``sigma_bins`` bins and
    peaks are local maxima with a prominence of at least ``min_prominence`` of the highest bin.
    """
    if values is not None:
        v = values.detach().float().flatten().cpu().numpy() if isinstance(values, Tensor) else np.ravel(values)
        lo, hi = np.quantile(v, [0.0005, 0.9995]) if len(v) else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(v, bins=bins, range=(float(lo), float(hi)))
    elif edges is None or counts is None:
        raise ValueError("count_peaks needs values or a histogram (edges and counts)")
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    smoothed = _smooth(counts, sigma_bins)
    idx = find_peaks(smoothed, min_prominence)
    centres = 0.5 * (edges[:-1] + edges[1:])
    return Peaks(len(idx), [float(centres[i]) for i in idx], edges, counts, smoothed)


# ---------------------------------------------------------------------------------------------------- model side
def first_binary_conv(model: nn.Module, prefer: str | None = None) -> tuple[str, nn.Module] | None:
    """(name, layer) of the first binary convolution (``prefer``: a layer name recorded by the run, if present).

    Falls back to the first binary layer of any kind; ``None`` when the model has none.
    """
    layers = list(binary_layers(model))
    if prefer:
        for name, m in layers:
            if name == prefer:
                return name, m
    for name, m in layers:
        if isinstance(m, BinaryConv2d):
            return name, m
    return layers[0] if layers else None


class _Captured(Exception):
    """Raised by the capture hook to stop the forward once the layer's input is in hand."""


@torch.no_grad()
def capture_binarizer_inputs(model: nn.Module, layer: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """The inputs of ``layer.input_binarizer`` for ``images``, flattened, with ``model`` in eval mode.

    A forward pre-hook on the binarizer records its input and then stops the forward, so only the layers in front
    of ``layer`` run. The layer's ``binarize_input`` is switched on for the capture (a stage with real activations
    does not call its binarizer) and restored afterwards; it does not change what reaches the binarizer.
    """
    was_training = model.training
    model.eval()
    got: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple) -> None:
        got.append(args[0].detach().float().flatten().cpu())
        raise _Captured

    old = layer.binarize_input
    layer.binarize_input = True
    handle = layer.input_binarizer.register_forward_pre_hook(hook)
    device = next(model.parameters()).device
    try:
        for b in range(0, len(images), batch_size):
            try:
                model(images[b : b + batch_size].to(device))
            except _Captured:
                continue
            raise RuntimeError("the forward never reached the first binary layer's binarizer")
    finally:
        handle.remove()
        layer.binarize_input = old
        model.train(was_training)
    return torch.cat(got) if got else torch.zeros(0)


def _val_images(data: Any, n: int) -> Tensor:
    """The first ``n`` validation images (the val loader does not shuffle, so every checkpoint sees the same ones)."""
    out, have = [], 0
    for x, _ in data.val:
        out.append(x)
        have += len(x)
        if have >= n:
            break
    return torch.cat(out)[:n]


# ---------------------------------------------------------------------------------------------------- run layout
@dataclass
class _Stage:
    index: int
    name: str
    cfg: Any
    epochs: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] | None = None
    final_ckpt: Path | None = None
    early_ckpt: Path | None = None
    early_epoch: int | None = None

    @property
    def label(self) -> str:
        return f"stage {self.index + 1} '{self.name}'"

    def dyn(self, which: str) -> dict[str, Any]:
        """The ``dyn`` block of the first (``which="first"``) or last epoch record, or ``{}``."""
        if not self.epochs:
            return {}
        rec = self.epochs[0] if which == "first" else self.epochs[-1]
        return rec.get("dyn") or {}


def _epoch_checkpoint(ckpt_dir: Path, tag: str) -> tuple[Path, int] | None:
    """The earliest ``<tag>_epoch<k>`` checkpoint of a stage (k = 1 by default in the runner)."""
    found = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = re.fullmatch(re.escape(tag) + r"_epoch(\d+)(\.old)?", p.name)
            if m:
                found.append(int(m.group(1)))
    for k in sorted(set(found)):
        ck = find_checkpoint(ckpt_dir, f"{tag}_epoch{k}")
        if ck is not None:
            return ck, k
    return None


def _load_stages(run_dir: Path, cfg: Any, records: list[dict[str, Any]]) -> list[_Stage]:
    stages = [_Stage(i, s.name, s) for i, s in enumerate(cfg.stages)]
    for r in records:
        i = r.get("stage_index", r.get("index"))
        if i is None or not 0 <= i < len(stages):
            continue
        if r.get("type") == "epoch":
            stages[i].epochs.append(r)
        elif r.get("type") == "stage":
            stages[i].record = r
    ckpt_dir = RunDir(run_dir).checkpoints
    for s in stages:
        tag = f"stage{s.index + 1}_{s.name}"
        s.final_ckpt = find_checkpoint(ckpt_dir, tag)
        early = _epoch_checkpoint(ckpt_dir, tag)
        if early is not None:
            s.early_ckpt, s.early_epoch = early
        s.epochs.sort(key=lambda r: r.get("epoch", 0))
    return [s for s in stages if s.epochs or s.record or s.final_ckpt]


def _load_into(model: nn.Module, stage: _Stage, ckpt: Path) -> nn.Module:
    load_weights(model, ckpt / "model.safetensors", strict=True)
    # binarization switches are attributes, not tensors: a checkpoint does not carry them, the stage config does
    set_binarization(model, activations=stage.cfg.binarize_activations, weights=stage.cfg.binarize_weights)
    return model.eval()


# ------------------------------------------------------------------------------------------------------- figures
class _Analysis:
    """State of one ``analyze_run`` call, kept out of the function so each figure stays a short method."""

    def __init__(self, run_dir: Path, out_dir: Path, samples: int, console: Console, log_y: bool) -> None:
        self.run_dir, self.out_dir, self.samples, self.console, self.log_y = run_dir, out_dir, samples, console, log_y
        self.cfg = RunDir(run_dir).read_config()
        self.records = read_metrics(RunDir(run_dir).metrics)
        self.stages = _load_stages(run_dir, self.cfg, self.records)
        self.figures: dict[str, str] = {}
        self.skipped: list[str] = []
        self.rows: dict[int, dict[str, Any]] = {s.index: self._base_row(s) for s in self.stages}
        self._model: nn.Module | None = None
        self._images: Tensor | None = None
        self._data_error: str | None = None

    # helpers ---------------------------------------------------------------------------------------------------
    def skip(self, figure: str, why: str) -> None:
        self.skipped.append(f"{figure}: {why}")
        self.console.print(f"[yellow]skipped[/] {figure}: {why}")

    def wrote(self, key: str, path: Path) -> None:
        self.figures[key] = str(path)

    def model(self) -> nn.Module:
        if self._model is None:
            self._model = build_model(self.cfg)
        return self._model

    def images(self) -> Tensor | None:
        """The validation samples, or ``None`` when the data set cannot be built here (a copied run directory)."""
        if self._images is None and self._data_error is None:
            try:
                self._images = _val_images(build_data(self.cfg.data, self.cfg.seed), self.samples)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                self._data_error = f"{type(e).__name__}: {e}"
        return self._images

    def first_layer_name(self, stage: _Stage) -> str | None:
        for which in ("first", "last"):
            name = stage.dyn(which).get("first_layer")
            if name:
                return name
        return None

    def _base_row(self, s: _Stage) -> dict[str, Any]:
        rec = s.record or {}
        last = s.epochs[-1] if s.epochs else {}
        return {
            "stage": s.name,
            "index": s.index,
            "binarized": rec.get("binarized"),
            "val_top1": _finite(rec.get("val_top1", last.get("val_top1"))),
            "ff_mean": _finite(rec.get("ff_ratio")),
            "c2i": _finite(rec.get("c2i", last.get("c2i"))),
            "c2i_run": _finite(rec.get("c2i_run")),
            "saturation_epoch1": _finite(s.dyn("first").get("saturation_mean")),
            "saturation_end": _finite(s.dyn("last").get("saturation_mean")),
            "zero_grad_share": _finite(s.dyn("last").get("zero_grad_share")),
            "first_layer": None,
            "ste_bound": None,
            "first_outside_epoch1": None,
            "first_outside_end": None,
            "sdam_first_epoch1": None,
            # the training metrics' value stands in until (unless) the final checkpoint gives the exact one
            "sdam_first": _finite((s.dyn("last").get("sdam") or {}).get(s.dyn("last").get("first_layer"))),
            "latent_peaks": None,
            "peak_positions": None,
            "early_epoch": s.early_epoch,
        }

    def checkpoints(self, s: _Stage) -> list[tuple[str, str, Path]]:
        """(key, title, path) of the stage's early and final checkpoints that exist."""
        out = []
        if s.early_ckpt is not None:
            out.append(("epoch1", f"after epoch {s.early_epoch}", s.early_ckpt))
        if s.final_ckpt is not None:
            out.append(("end", f"end of stage ({s.cfg.epochs} epochs)", s.final_ckpt))
        return out

    # figures 3 and 4 -------------------------------------------------------------------------------------------
    def first_layer_figures(self, s: _Stage) -> None:
        act, ker = f"activations_{s.name}.png", f"latent_kernels_{s.name}.png"
        cks = self.checkpoints(s)
        if not cks:
            for f in (act, ker):
                self.skip(f, f"no checkpoint of {s.label} (checkpoints/stage{s.index + 1}_{s.name}[_epoch<k>]/)")
            return
        if s.early_ckpt is None:
            self.console.print(
                f"[yellow]note[/] {s.label}: no checkpoints/stage{s.index + 1}_{s.name}_epoch<k>/ — the activation "
                "and kernel figures show the end of the stage only"
            )
        model, images, row = self.model(), self.images(), self.rows[s.index]
        act_panels, ker_panels = [], []
        for key, title, ck in cks:
            _load_into(model, s, ck)
            found = first_binary_conv(model, self.first_layer_name(s))
            if found is None:
                for f in (act, ker):
                    self.skip(f, "the model has no binary layer")
                return
            name, layer = found
            bound = ste_bound(layer.input_binarizer)
            w = layer.weight.detach().float().cpu().clone()
            ker_panels.append({"title": title, "w": w, "cam": channel_cam(w).numpy(), "sdam": sdam(w)})
            row.update(first_layer=name, ste_bound=bound)
            row["sdam_first" if key == "end" else "sdam_first_epoch1"] = sdam(w)
            if images is not None:
                x = capture_binarizer_inputs(model, layer, images)
                row[f"first_outside_{key}"] = share_outside(x, bound)
                act_panels.append({"title": title, "x": x, "outside": row[f"first_outside_{key}"], "layer": name})
        cam = s.dyn("first").get("first_cam")
        if s.early_ckpt is None and cam:  # the epoch records may still hold the CAMs after the first epoch
            c = np.asarray(cam, dtype=float)
            title = "after epoch 1 (CAM from metrics; weights not saved)"
            ker_panels.insert(0, {"title": title, "cam": c, "sdam": float(c.std())})
        if images is None:
            self.skip(act, f"validation data unavailable ({self._data_error})")
        else:
            path = _activation_figure(self.out_dir / act, s, act_panels, bound, len(images))
            self.wrote(f"activations_{s.name}", path)
        self.wrote(f"latent_kernels_{s.name}", _kernel_figure(self.out_dir / ker, s, ker_panels, name))

    # figure 5 ------------------------------------------------------------------------------------------------------
    def update_cam_figure(self, s: _Stage) -> None:
        fname = f"update_cam_{s.name}.png"
        eps = [r for r in s.epochs if (r.get("dyn") or {}).get("update_cam_first")]
        if not eps:
            self.skip(fname, f"no dyn.update_cam_first in the epoch records of {s.label}")
            return
        chosen = [eps[0]] if len(eps) == 1 else [eps[0], eps[-1]]
        panels = [(f"epoch {r.get('epoch', 0) + 1}", np.asarray(r["dyn"]["update_cam_first"], float)) for r in chosen]
        layer = eps[0]["dyn"].get("first_layer") or "the first binary layer"
        self.wrote(f"update_cam_{s.name}", _update_cam_figure(self.out_dir / fname, s, panels, layer))

    # figure 7 ------------------------------------------------------------------------------------------------------
    def latent_distribution(self) -> None:
        entries = []
        for s in self.stages:
            pk, source = None, ""
            if s.final_ckpt is not None:
                model = _load_into(self.model(), s, s.final_ckpt)
                ws = [m.weight.detach().float().flatten().cpu() for _, m in binary_layers(model)]
                if ws:
                    pk, source = count_peaks(torch.cat(ws)), "checkpoint"
            if pk is None:
                hist = ((s.record or {}).get("dyn_stage") or {}).get("latent_hist")
                if hist and hist.get("edges") and hist.get("counts"):
                    pk, source = count_peaks(edges=np.array(hist["edges"]), counts=np.array(hist["counts"])), "metrics"
            if pk is None:
                self.console.print(f"[yellow]note[/] {s.label}: no final checkpoint or dyn_stage.latent_hist")
                continue
            self.rows[s.index].update(latent_peaks=pk.count, peak_positions=pk.positions)
            entries.append((s, pk, source))
        if not entries:
            self.skip("latent_distribution.png", "no stage checkpoint and no dyn_stage.latent_hist in stage records")
            return
        path = _distribution_figure(self.out_dir / "latent_distribution.png", entries, self.log_y)
        self.wrote("latent_distribution", path)

    # figures over time -----------------------------------------------------------------------------------------
    def curves(self) -> None:
        if any(r.get("type") == "step" and _finite(r.get("ff_ratio")) is not None for r in self.records):
            self.wrote("ff_c2i", _ff_c2i_figure(self.out_dir / "ff_c2i.png", self.records, self.stages))
        else:
            self.skip("ff_c2i.png", "no step records with ff_ratio in metrics.jsonl (flip tracking off?)")
        if any(_finite((r.get("dyn") or {}).get("saturation_mean")) is not None for s in self.stages for r in s.epochs):
            self.wrote("saturation", _saturation_figure(self.out_dir / "saturation.png", self.records, self.stages))
        else:
            self.skip("saturation.png", "no dyn.saturation_mean in the epoch records")

    def run(self) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.stages:
            self.console.print(f"[yellow]{self.run_dir}: no epoch/stage records or stage checkpoints yet[/]")
        for s in self.stages:
            self.first_layer_figures(s)
            self.update_cam_figure(s)
        self.latent_distribution()
        self.curves()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        rows = [self.rows[s.index] for s in self.stages]
        result = {
            "run_dir": str(self.run_dir),
            "out_dir": str(self.out_dir),
            "samples": len(self._images) if self._images is not None else 0,
            "figures": self.figures,
            "skipped": self.skipped,
            "stages": rows,
        }
        atomic_write_text(self.out_dir / "analysis.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(self.out_dir / "summary.md", _markdown(result, self.cfg.recipe))
        result["analysis_json"] = str(self.out_dir / "analysis.json")
        result["summary_md"] = str(self.out_dir / "summary.md")
        self.console.print(_rich_table(rows, self.cfg.recipe))
        self.console.print(f"Analysis written to [bold]{self.out_dir}[/]")
        return result


# ------------------------------------------------------------------------------------------------------- tables
def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


_COLUMNS = (
    ("stage", lambda r: r["stage"]),
    ("val top-1", lambda r: _pct(r["val_top1"])),
    ("FF mean", lambda r: _num(r["ff_mean"], ".2e")),
    ("C2I", lambda r: _num(r["c2i"], ".4f")),
    ("sat. ep1", lambda r: _pct(r["saturation_epoch1"])),
    ("sat. end", lambda r: _pct(r["saturation_end"])),
    ("1st conv out ep1", lambda r: _pct(r["first_outside_epoch1"])),
    ("1st conv out end", lambda r: _pct(r["first_outside_end"])),
    ("zero-grad", lambda r: _pct(r["zero_grad_share"])),
    ("SDAM 1st", lambda r: _num(r["sdam_first"], ".4f")),
    ("peaks", lambda r: "—" if r["latent_peaks"] is None else str(r["latent_peaks"])),
)


def _rich_table(rows: list[dict[str, Any]], recipe: str) -> Table:
    t = Table(title=f"{recipe}: optimisation dynamics per stage")
    for name, _ in _COLUMNS:
        t.add_column(name, justify="left" if name == "stage" else "right")
    for r in rows:
        t.add_row(*(fn(r) for _, fn in _COLUMNS))
    return t


def _markdown(result: dict[str, Any], recipe: str) -> str:
    lines = [
        f"# Optimisation analysis: {recipe}",
        "",
        f"- run directory: `{result['run_dir']}`",
        f"- activations captured on the first {result['samples']} validation samples, model in eval mode",
        "",
        "| " + " | ".join(name for name, _ in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(fn(r) for _, fn in _COLUMNS) + " |" for r in result["stages"]]
    lines += [
        "",
        "sat. = mean share of binarizer inputs outside the STE window over all binary layers (training metrics, "
        "`dyn.saturation_mean`); 1st conv out = the same share at the first binary conv on the validation samples "
        "above; zero-grad = share of latent weights with zero gradient (last epoch); SDAM = std of the per-kernel "
        "CAMs of the first binary conv at the end of the stage; peaks = modes of the final latent-weight histogram.",
        "",
        "## Figures",
        "",
    ]
    lines += [f"- `{Path(p).name}`" for p in result["figures"].values()]
    if result["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def analyze_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    samples: int = 256,
    console: Console | None = None,
    *,
    log_y: bool = False,
) -> dict[str, Any]:
    """Write the AdamBNN §3 figures and the per-stage dynamics table of a run directory.

    Args:
        run_dir: a ``onebit train`` run directory (``config.json``, ``metrics.jsonl``, ``checkpoints/``).
        out_dir: where figures and tables go; default ``<run_dir>/analysis``.
        samples: validation samples for the activation histograms.
        console: rich console for the table and notes (default: a new one).
        log_y: log count axis for the latent-weight distribution.

    Returns:
        ``{"run_dir", "out_dir", "samples", "figures": {key: path}, "skipped": [notes], "stages": [row per stage],
        "analysis_json", "summary_md"}``; a stage row holds val_top1, ff_mean, c2i, c2i_run, saturation_epoch1,
        saturation_end, zero_grad_share, first_layer, ste_bound, first_outside_epoch1, first_outside_end,
        sdam_first_epoch1, sdam_first, latent_peaks, peak_positions (``None`` where the run lacks the data).

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.json``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    out = Path(out_dir) if out_dir is not None else run_dir / "analysis"
    return _Analysis(run_dir, out, samples, console or Console(), log_y).run()
