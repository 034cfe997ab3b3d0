"""``onebit rehearse RECIPE [--data DIR] [key=value ...]``: an ImageNet recipe's real config for a few steps on the
CPU, then an evaluation of its best checkpoint (see :mod:`onebit.rehearse`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from onebit.commands.common import UsageError
from onebit.rehearse import rehearse

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "rehearse"
USER_ERRORS = (KeyError,)  # an unknown recipe name


def run(args: argparse.Namespace, console: Console) -> int:
    for what in ("image_size", "batch_size", "steps", "epochs"):
        if getattr(args, what) < 1:
            raise UsageError(f"--{what.replace('_', '-')} must be at least 1")
    if args.data is not None and not Path(args.data).is_dir():
        raise UsageError(f"--data {args.data}: no such folder (an ImageNet layout: train/<class>/, val/<class>/)")
    out = Path(args.out) if args.out else Path("runs") / f"{args.recipe}-rehearsal-{time.strftime('%Y%m%d-%H%M%S')}"
    res = rehearse(
        args.recipe,
        out,
        args.data,
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps=args.steps,
        epochs=args.epochs,
        teachers=args.teachers,
        overrides=args.overrides,
        console=Console(quiet=True) if args.json else console,
    )
    if args.json:
        print(json.dumps(res.to_dict()))
        return 0
    stages = res.config.stages
    teachers = stages[0].teachers + stages[0].assistants
    console.print(
        f"[bold]{args.recipe}[/] rehearsed: {len(stages)} stage(s) x {stages[0].epochs} epoch(s) x {args.steps} "
        f"step(s) at {args.image_size}px, teachers: {', '.join(teachers) if teachers else 'none'}"
    )
    top5 = res.eval.top5
    console.print(
        f"eval of {res.run_dir} (best checkpoint) on {res.eval.images} val images ({res.eval_preprocess}): "
        f"top-1 {100 * res.eval.top1:.1f} %" + (f", top-5 {100 * top5:.1f} %" if top5 is not None else "")
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``rehearse`` to the ``onebit`` command line."""
    r = subparsers.add_parser(
        NAME,
        help="run an ImageNet recipe's real config for a few CPU steps on a (generated) folder, then evaluate it",
        description="The recipe's real model, optimizer, schedules, augmentation, teachers and stage hand-offs, at a "
        "reduced resolution, batch and length; then the best checkpoint is evaluated on the folder's val split with "
        "the family's evaluation transform scaled to that resolution.",
    )
    r.add_argument("recipe", help="an ImageNet recipe (see `onebit recipes`), e.g. bnext_tiny, adambnn_reactnet_a")
    r.add_argument("overrides", nargs="*", help="further dotted key=value overrides")
    r.add_argument("--data", help="ImageNet-layout folder (train/<class>/, val/<class>/); default: a generated one")
    r.add_argument("--out", help="output folder (run/ and the generated data/; default runs/<recipe>-rehearsal-<time>)")
    r.add_argument("--image-size", type=int, default=32, help="training crop (default 32; eval resize scaled)")
    r.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    r.add_argument("--steps", type=int, default=2, help="training steps per epoch (default 2)")
    r.add_argument("--epochs", type=int, default=2, help="epochs per stage (default 2; at least one per assistant)")
    r.add_argument(
        "--teachers",
        choices=["auto", "paper", "standin", "none"],
        default="auto",
        help="the paper's teacher architectures without weights (paper), onebit's resnet18 in each slot (standin), "
        "paper when timm/torchvision are installed else standin (auto, default), or none",
    )
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    return r
