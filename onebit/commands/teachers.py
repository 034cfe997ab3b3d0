"""``onebit teachers rank T1 T2 ...``: parameters, accuracy, knowledge complexity (BNext eq. 3) and the proposed
teacher group (strong teacher + assistants in activation order)."""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from onebit.commands.common import UsageError
from onebit.config import DataConfig
from onebit.data import build_data
from onebit.distill import count_params, rank_teachers
from onebit.models.io import input_channels, load_model

__all__ = ["NAME", "add_parser", "run"]

NAME = "teachers"


def _parse_acc(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise UsageError(f"--acc expects NAME=ACCURACY, got {item!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"--acc expects NAME=ACCURACY, got {item!r}") from None
    return out


def _measure_accuracy(model, info: dict, data: str, samples: int) -> float:
    """Top-1 accuracy (fraction) of ``model`` on the first ``samples`` validation images of ``data``."""
    if data == "digits":
        size = info.get("input_size")
        chans = input_channels(model)
        # the digits are single-channel: replicate them when the model wants more (e.g. an ImageNet stem)
        cfg = DataConfig(
            name="digits",
            image_size=int(size[-1]) if size else DataConfig.image_size,
            channels=chans if chans != 1 else 0,
            augment=False,
            limit_val=samples,
        )
    else:
        cfg = DataConfig(name="imagenet", root=data, image_size=224, augment=False, limit_val=samples)
    bundle = build_data(cfg)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in bundle.val:
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    return correct / max(total, 1)


def _rank(args: argparse.Namespace, console: Console) -> int:
    acc = _parse_acc(args.acc or [])
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    unknown = sorted(set(acc) - set(args.teachers))
    if unknown:
        raise UsageError(f"--acc names teachers not listed: {', '.join(unknown)}")
    entries = []
    for ref in args.teachers:
        model, info = load_model(ref)
        if ref in acc:
            accuracy = acc[ref]
        elif args.data:
            accuracy = _measure_accuracy(model, info, args.data, args.samples)
        else:
            raise UsageError(f"no accuracy for {ref}: give --acc {ref}=ACC or --data")
        entries.append({"name": ref, "params_millions": count_params(model) / 1e6, "accuracy": accuracy})
    rows = rank_teachers(entries, include_strong=args.include_strong)

    table = Table(title="Teachers by knowledge complexity (BNext eq. 3)")
    for col in ("rank", "teacher", "params (M)", "top-1 (%)", "KC", "role"):
        table.add_column(col, justify="left" if col in ("teacher", "role") else "right")
    for r in rows:
        table.add_row(
            str(r["rank"]),
            r["name"],
            f"{r['params_millions']:.3f}",
            f"{100 * r['accuracy']:.2f}",
            f"{r['kc']:.3f}",
            r["role"],
        )
    console.print(table)
    strong = rows[-1]["name"]
    assistants = [r["name"] for r in rows if r["role"].startswith("assistant") or ", assistant" in r["role"]]
    console.print(f"strong teacher: {strong}")
    console.print(f"assistant group (in order): {', '.join(assistants) if assistants else 'none'}")
    return 0


def run(args: argparse.Namespace, console: Console) -> int:
    return {"rank": _rank}[args.teachers_command](args, console)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``teachers`` (with ``rank``) to the ``onebit`` command line."""
    p = subparsers.add_parser(NAME, help="teacher selection for distillation (knowledge complexity)")
    sub = p.add_subparsers(dest="teachers_command", required=True)
    r = sub.add_parser(
        "rank", help="rank teachers by knowledge complexity and propose the strong teacher + assistant group"
    )
    r.add_argument("teachers", nargs="+", help="registered model names or model/run directories")
    r.add_argument(
        "--acc", action="append", metavar="NAME=ACC", help="a teacher's top-1 accuracy (percent or fraction)"
    )
    r.add_argument("--data", help="measure missing accuracies: an ImageNet-layout folder, or 'digits'")
    r.add_argument("--samples", type=int, default=1000, help="validation samples used to measure accuracy")
    r.add_argument(
        "--include-strong",
        action="store_true",
        help="also use the strong teacher as the last assistant (BNext-L's group)",
    )
    return p
