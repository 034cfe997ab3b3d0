"""``onebit landscape``: 1-D / 2-D loss landscapes of a run's stage checkpoint or a model directory (Li et al.)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console

from onebit.analysis.landscape import (
    LandscapeError,
    default_loss,
    landscape_1d,
    landscape_2d,
    load_run_stage,
    plot_landscape,
    sample_batches,
    save_landscape,
)
from onebit.config import DataConfig
from onebit.data import build_data
from onebit.models.io import input_channels, load_model

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "landscape"
USER_ERRORS = (KeyError, OSError)  # an unknown model or data set name, an unreadable file


def _load(args: argparse.Namespace):
    """(model, batches, info, default out dir) for a run directory or a model directory."""
    ref = Path(args.ref)
    if (ref / "config.json").exists():
        model, cfg, info = load_run_stage(ref, args.stage)
        data_cfg, seed = cfg.data, cfg.seed
        out = ref / "landscape" / info["stage"]
        if args.threads is None:
            args.threads = cfg.threads  # the run's own setting, as training used it
    else:
        if args.stage is not None:
            raise LandscapeError("--stage applies to run directories only")
        model, extra = load_model(ref)
        size = extra.get("input_size")
        image_size = args.image_size or (size[-1] if size else DataConfig().image_size)
        data_cfg, seed = DataConfig(name=args.data, root=args.data_root, image_size=image_size), 0
        info = {"model_ref": str(ref), **{k: v for k, v in extra.items() if isinstance(v, str | int | float)}}
        out = (ref if ref.is_dir() else Path(f"landscape-{ref.name}")) / "landscape"
    data = build_data(data_cfg, seed)
    if data.in_chans != input_channels(model):
        raise LandscapeError(f"the data has {data.in_chans} channels but the model expects {input_channels(model)}")
    loader = data.val if args.split == "val" else data.train
    batches = sample_batches(loader, args.samples, args.batch)
    n = sum(len(y) for _, y in batches)
    info["data"] = {"set": data.description, "split": args.split, "samples": n, "batch": args.batch}
    return model, batches, info, out


def run(args: argparse.Namespace, console: Console) -> int:
    model, batches, info, out = _load(args)
    out = Path(args.out) if args.out else out
    if args.threads:
        # small models on few shared cores run many times faster single-threaded than oversubscribed
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model.to(device)
    where = f"stage {info['stage']!r} ({info['checkpoint']})" if "stage" in info else info["model_ref"]
    d = info["data"]
    console.print(
        f"Landscape of {where}: {d['samples']} {d['split']} samples of {d['set']}, eval mode, cross-entropy; "
        f"{args.points} points per axis over [-{args.span:g}, {args.span:g}], directions from seed {args.seed}"
    )
    title = f"{info.get('model', info.get('model_ref', ''))} {info.get('stage', '')} — {d['samples']} {d['split']}"
    files, summary = [], {}
    for mode in ("1d", "2d") if args.mode == "both" else (args.mode,):
        fn = landscape_1d if mode == "1d" else landscape_2d
        res = fn(model, default_loss, batches, points=args.points, span=args.span, seed=args.seed, console=console)
        res.info.update(info)
        files += save_landscape(res, out) + plot_landscape(res, out, title=f"{title} ({mode.upper()})")
        c_loss, c_acc = res.center
        summary[mode] = {
            "center_loss": c_loss,
            "center_acc": c_acc,
            "min_loss": float(res.loss[res.loss == res.loss].min()),
            "max_loss": float(res.loss[res.loss == res.loss].max()),
        }
        console.print(
            f"{mode.upper()}: loss at the trained weights {c_loss:.4f} (acc {100 * c_acc:.2f}%), "
            f"grid min {summary[mode]['min_loss']:.4f}, max {summary[mode]['max_loss']:.4f}"
        )
    if args.json:
        print(json.dumps({"out": str(out), "files": [str(f) for f in files], **summary}))
    for f in files:
        console.print(f"wrote {f}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``landscape`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME,
        help="loss landscape (Li et al. 2018) of a run's stage checkpoint or a model directory: 1-D, 2-D, 3-D plots",
        description="Evaluates the loss (and accuracy) at theta + a*delta (+ b*eta) for random Gaussian directions "
        "with filter-wise normalisation (biases and BN parameters not perturbed; BN in eval mode with its running "
        "statistics; binary layers perturbed in their latent weights). Writes PNGs plus JSON/NPZ of the grid.",
    )
    p.add_argument("ref", help="run directory (onebit train) or model directory (model.json + model.safetensors)")
    p.add_argument("--stage", help="run stage: name, checkpoint tag or 1-based index (default the last finished)")
    p.add_argument("--mode", choices=("1d", "2d", "both"), default="both", help="which landscapes (default both)")
    p.add_argument("--points", type=int, default=21, help="grid points per axis (default 21)")
    p.add_argument("--span", type=float, default=1.0, help="half-width of the grid in direction units (default 1)")
    p.add_argument("--samples", type=int, default=512, help="first K samples of the split, 0 = all (default 512)")
    p.add_argument("--split", choices=("val", "train"), default="val", help="data split (default val)")
    p.add_argument("--batch", type=int, default=256, help="evaluation batch size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the directions (2-D uses seed and seed+1)")
    p.add_argument("--out", help="output directory (default RUN_DIR/landscape/<stage> or MODEL_DIR/landscape)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default the run's `threads`, else torch's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--data", default="digits", help="model directories only: data set name (default digits)")
    p.add_argument("--data-root", help="model directories only: data set root")
    p.add_argument("--image-size", type=int, help="model directories only: image size (default the model's)")
    p.add_argument("--json", action="store_true", help="also print a JSON line with the output paths and numbers")
    return p
