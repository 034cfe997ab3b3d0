"""``onebit teachers rank SPEC ... [--student S]``: knowledge complexity (BNext eq. 3) of each teacher and the
proposed teacher group (strong teacher + assistants in activation order) for a student.

The rule is :func:`onebit.distill.rank_teachers` (``docs/teachers.md``): the teachers on the Pareto front (no other
teacher has a lower KC and a higher top-1), within a budget that grows with the student (top-1 at most the
student's plus ``--headroom`` points), topped up to the KD mode's minimum (standard KD 1, BNext's ensemble 2) with
the least complex front teachers; strong = the most accurate of them, assistants = the others in increasing KC.

Teachers are specs (anything :func:`onebit.distill.load_teacher` accepts) with ``--acc`` / ``--params`` for what is
known; a teacher given both is never built, so a published table ranks without weights. ``--bnext-table8`` adds
BNext Table 8's ten ImageNet teachers (:data:`onebit.distill.bnext_tables.BNEXT_TABLE8`).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from onebit.commands.common import UsageError
from onebit.config import DataConfig
from onebit.data import build_data
from onebit.distill import count_params, load_teacher, rank_teachers
from onebit.distill.bnext_tables import BNEXT_STUDENTS, BNEXT_TABLE8
from onebit.distill.complexity import DEFAULT_HEADROOM, KD_MODES, StudentProfile, resolve_student, teacher_group
from onebit.models.io import input_channels, load_model

__all__ = ["NAME", "add_parser", "run"]

NAME = "teachers"


def _parse_pairs(items: list[str], option: str, what: str) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number) or number < 0:
            raise UsageError(f"{option} expects NAME={what} (a non-negative number), got {item!r}")
        out[name] = number
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


def _entry(spec: str, acc: dict[str, float], params: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """``name``/``spec``/``params_millions``/``accuracy`` of one teacher spec; the model is built only when a number
    is missing."""
    if spec in acc and spec in params:
        return {"name": spec, "spec": spec, "params_millions": params[spec], "accuracy": acc[spec]}
    teacher = load_teacher(spec)  # a bad spec is a one-line TeacherSpecError (exit 2)
    model = teacher.model
    accuracy = acc.get(spec)
    if accuracy is None:
        accuracy = getattr(teacher, "accuracy", None)  # a run directory's recorded val top-1
    if accuracy is None:
        if not args.data:
            raise UsageError(f"no accuracy for {spec}: give --acc {spec}=ACC or --data")
        info = load_model(spec)[1] if Path(spec).is_dir() else {}  # the run's image size for the digits
        accuracy = _measure_accuracy(model, info, args.data, args.samples)
    p = params[spec] if spec in params else count_params(model) / 1e6
    return {"name": spec, "spec": spec, "params_millions": p, "accuracy": accuracy}


def _overrides(strong: dict[str, Any] | None, assistants: list[dict[str, Any]]) -> list[str]:
    """``stages.0.teachers=STRONG [stages.0.assistants=A1,A2]`` (the config's list syntax), shell-quoted."""

    def value(rows: list[dict[str, Any]]) -> str:
        specs = [str(r.get("spec") or r["name"]) for r in rows]
        return json.dumps(specs) if any("," in s for s in specs) else ",".join(specs)

    if strong is None:
        return []
    out = [f"stages.0.teachers={value([strong])}"]
    if assistants:
        out.append(f"stages.0.assistants={value(assistants)}")
    return [shlex.quote(o) for o in out]


def _student(args: argparse.Namespace) -> StudentProfile | None:
    if args.student is None:
        if args.kd is not None:
            raise UsageError("--kd needs --student")
        return None
    try:
        prof = resolve_student(args.student)
    except ValueError as e:
        raise UsageError(f"--student: {e}") from None
    if args.kd is not None:
        prof = StudentProfile(prof.name, prof.accuracy, kd=args.kd, family=prof.family, size_mb=prof.size_mb)
    return prof


def _rank(args: argparse.Namespace, console: Console) -> int:
    acc = _parse_pairs(args.acc or [], "--acc", "ACC")
    params = _parse_pairs(args.params or [], "--params", "MILLIONS")
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    if not args.teachers and not args.bnext_table8:
        raise UsageError("give teacher specs, or --bnext-table8 for BNext Table 8's teachers")
    repeated = sorted({t for t in args.teachers if args.teachers.count(t) > 1})
    if repeated:
        raise UsageError(f"teachers listed twice: {', '.join(repeated)}")
    unknown = sorted((set(acc) | set(params)) - set(args.teachers))
    if unknown:
        raise UsageError(f"--acc/--params name teachers not listed: {', '.join(unknown)}")
    if args.headroom < 0 or not math.isfinite(args.headroom):
        raise UsageError(f"--headroom must be a non-negative number of top-1 points, got {args.headroom}")
    if args.kc_budget is not None and (args.kc_budget < 0 or not math.isfinite(args.kc_budget)):
        raise UsageError(f"--kc-budget must be a non-negative number, got {args.kc_budget}")
    for name, value in acc.items():
        if value > 100:
            raise UsageError(f"--acc {name}: top-1 must be a fraction or a percentage, got {value}")
    student = _student(args)

    entries: list[dict[str, Any]] = [dict(e) for e in BNEXT_TABLE8] if args.bnext_table8 else []
    clash = sorted({e["name"] for e in entries} & set(args.teachers))
    if clash:
        raise UsageError(f"already in --bnext-table8: {', '.join(clash)}")
    entries += [_entry(spec, acc, params, args) for spec in args.teachers]
    rows = rank_teachers(
        entries,
        student,
        headroom=args.headroom,
        kc_budget=args.kc_budget,
        family=args.family,
        include_strong=args.include_strong,
    )
    strong, assistants = teacher_group(rows)
    family = args.family if args.family is not None else (student.family if student else None)
    family = None if family in (None, "", "any") else family.lower()
    if strong is None:
        raise UsageError(
            f"no teacher proposed: none of the {len(rows)} teachers is of family {family} (--family any lifts it)"
        )
    overrides = _overrides(strong, assistants)
    ceiling = 100 * student.accuracy + args.headroom if student else None
    need = student.min_teachers if student else 1

    if args.json:
        out = {
            "student": None
            if student is None
            else {
                "name": student.name,
                "accuracy": student.accuracy,
                "kd": student.kd,
                "family": student.family,
                "size_mb": student.size_mb,
            },
            "headroom": args.headroom,
            "accuracy_ceiling": None if ceiling is None else ceiling / 100,
            "kc_budget": args.kc_budget,
            "family": family,
            "min_teachers": need,
            "teachers": rows,
            "strong": strong["name"],
            "assistants": [r["name"] for r in assistants],
            "overrides": overrides,
        }
        print(json.dumps(out))
        return 0

    budget = []
    if student is not None:
        budget.append(
            f"student {student.name} ({100 * student.accuracy:.2f} %, {student.kd} KD: {need}+ teachers); "
            f"budget top-1 <= {ceiling:.2f} % (+{args.headroom:g} points)"
        )
    if args.kc_budget is not None:
        budget.append(f"KC <= {args.kc_budget:g}")
    if family:
        budget.append(f"{family} teachers only")
    table = Table(title="Teachers by knowledge complexity (BNext eq. 3)", caption="; ".join(budget) or None)
    for col in ("rank", "teacher", "params (M)", "top-1 (%)", "KC", "Pareto", "budget", "role", "why"):
        table.add_column(col, justify="right" if col in ("rank", "params (M)", "top-1 (%)", "KC") else "left")
    for r in rows:
        table.add_row(
            str(r["rank"]),
            r["name"],
            f"{r['params_millions']:.2f}",
            f"{100 * r['accuracy']:.2f}",
            f"{r['kc']:.3f}",
            "yes" if r["pareto"] else "no",
            "in" if r["within_budget"] else "over",
            r["role"],
            r["reason"],
        )
    console.print(table)
    console.print(f"strong teacher: {strong['name']}")
    names = ", ".join(r["name"] for r in assistants)
    console.print(f"assistant group (in order): {names or 'none'}")
    console.print(f"overrides: {' '.join(overrides)}", soft_wrap=True, markup=False, highlight=False)
    if any(str(r.get("spec", "")).startswith(("timm:", "torchvision:")) and "@" not in r["spec"] for r in rows):
        console.print(
            "(append @pretrained (the library's weights, fetched by timm/torchvision) or @FILE (local weights) to "
            "timm:/torchvision: specs; without either a teacher is random)"
        )
    return 0


def run(args: argparse.Namespace, console: Console) -> int:
    return {"rank": _rank}[args.teachers_command](args, console)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``teachers`` (with ``rank``) to the ``onebit`` command line."""
    p = subparsers.add_parser(NAME, help="teacher selection for distillation (knowledge complexity)")
    sub = p.add_subparsers(dest="teachers_command", required=True)
    r = sub.add_parser(
        "rank",
        help="knowledge complexity of teachers and the proposed strong teacher + assistants for a student",
        description=(
            "Rank teachers by knowledge complexity (BNext eq. 3) and propose the teacher group: the Pareto front "
            "(lower KC, higher top-1) within the student's budget (top-1 at most the student's + --headroom), topped "
            "up to the KD mode's minimum; strong = the most accurate, assistants in increasing KC (docs/teachers.md)."
        ),
    )
    r.add_argument(
        "teachers",
        nargs="*",
        metavar="SPEC",
        help="teacher specs: registered names, model/run directories, timm:NAME, torchvision:NAME, ...@FILE",
    )
    r.add_argument("--bnext-table8", action="store_true", help="also rank BNext Table 8's ten ImageNet teachers")
    r.add_argument(
        "--acc", action="append", metavar="NAME=ACC", help="a teacher's top-1 accuracy (percent or fraction)"
    )
    r.add_argument(
        "--params",
        action="append",
        metavar="NAME=MILLIONS",
        help="a teacher's parameter count in millions (with --acc: the teacher is not built)",
    )
    r.add_argument(
        "--student",
        metavar="NAME|TOP1",
        help=f"the student: a BNext size ({', '.join(BNEXT_STUDENTS)}) or its expected top-1 (ensemble KD)",
    )
    r.add_argument("--kd", choices=sorted(KD_MODES), help="the student's KD mode (standard: 1 teacher, ensemble: 2+)")
    r.add_argument("--family", help="only teachers of this family (default: the student's; 'any': no restriction)")
    r.add_argument(
        "--headroom",
        type=float,
        default=DEFAULT_HEADROOM,
        metavar="POINTS",
        help=f"top-1 points a teacher may exceed the student by (default {DEFAULT_HEADROOM:g})",
    )
    r.add_argument("--kc-budget", type=float, metavar="KC", help="also an upper bound on the teachers' KC")
    r.add_argument(
        "--include-strong",
        action="store_true",
        help="also use the strong teacher as the last assistant (BNext-L's group)",
    )
    r.add_argument("--data", help="measure missing accuracies: an ImageNet-layout folder, or 'digits'")
    r.add_argument("--samples", type=int, default=1000, help="validation samples used to measure accuracy")
    r.add_argument("--json", action="store_true", help="print JSON (rows, group, overrides) instead of a table")
    return p
