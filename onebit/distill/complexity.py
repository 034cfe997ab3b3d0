"""Knowledge complexity (BNext eq. 3) and the teacher-group proposal (strong teacher + assistants).

The rule (:func:`rank_teachers`, derived table per BNext size in ``docs/teachers.md``):

1. **Eligible**: every teacher, or only those of the student's family when it has one (BNext-18 is distilled from
   a ResNet "for a fair comparison" with the ResNet-18 BNNs, BNext §5.2/§7.3).
2. **Pareto front**: an eligible teacher is dropped when another has a KC no higher and a top-1 no lower (one of
   them strictly): nothing is gained by its extra complexity ("prioritise teachers with lower KC", §4.1).
3. **Budget** (grows with the student's capacity, which §7.3 measures by the student's accuracy): a teacher is
   within budget when its top-1 exceeds the student's by at most ``headroom`` points (default 2.5), and, if given,
   its KC is at most ``kc_budget``. Along the front top-1 rises with KC, so this is a KC budget: the KC of the last
   front teacher under the ceiling.
4. **Group**: the front teachers within budget; when there are fewer than the KD mode needs (standard KD: 1, the
   gap-sensitive ensemble: 2), the next least complex front teachers are added. The **strong** teacher is the most
   accurate of the group, the others are the **assistants** in increasing KC (= increasing accuracy on the front, the
   activation order of §4.2); ``include_strong`` appends the strong teacher as the last assistant (BNext-L).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from onebit.distill.bnext_tables import BNEXT_STUDENTS

__all__ = [
    "DEFAULT_HEADROOM",
    "KD_MODES",
    "StudentProfile",
    "count_params",
    "knowledge_complexity",
    "rank_teachers",
    "resolve_student",
    "teacher_family",
    "teacher_group",
]

#: Top-1 points by which a teacher may exceed the student (the budget of :func:`rank_teachers`). Table 9 is
#: reproduced for any value in [1.95, 3.09) (BNext-L's ConvNext-T in, ConvNext-S out); 2.5 is the middle.
DEFAULT_HEADROOM = 2.5

#: Teachers the KD mode needs at least: one for standard KD, a strong teacher and an assistant for the ensemble.
KD_MODES: dict[str, int] = {"standard": 1, "ensemble": 2}

_EPS = 1e-9  # comparisons of accuracies given with two decimals


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, frozen or not; shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def knowledge_complexity(params_millions: float, accuracy: float) -> float:
    """BNext eq. 3, ``KC = log10(1 + Params / (Accuracy · 10⁶ + 10⁻⁸))`` with Params a raw count.

    Reading (``docs/official-code.md``, *Paper formulas*): the paper's "log" is base 10 and Accuracy is a fraction,
    which reproduces Table 8 with the torchvision/timm parameter counts (EfficientNet-B0, 5.29 M, 77.53 % -> 0.8933,
    printed 0.893): nine of the ten KC values round to the printed three decimals; ResNet-34 (21.80 M, 73.31 %)
    gives 1.4876 where the table prints 1.487 (truncated, or a count below 21.792 M). The natural log or the
    accuracy in percent do not come close.

    Args:
        params_millions: parameters in millions.
        accuracy: top-1 accuracy as a fraction (0.7331) or in percent (73.31); values above 1 are read as percent.
    """
    if accuracy < 0 or params_millions < 0:
        raise ValueError(f"params and accuracy must be non-negative, got {params_millions}, {accuracy}")
    acc = accuracy / 100.0 if accuracy > 1 else accuracy
    return math.log10(1.0 + params_millions * 1e6 / (acc * 1e6 + 1e-8))


def _fraction(accuracy: float, what: str) -> float:
    acc = float(accuracy)
    if not math.isfinite(acc) or not 0 <= acc <= 100:
        raise ValueError(f"{what}: top-1 must be a fraction or a percentage in [0, 100], got {accuracy!r}")
    return acc / 100.0 if acc > 1 else acc


@dataclass(frozen=True)
class StudentProfile:
    """What the teacher rule needs of a student.

    Attributes:
        name: label for tables.
        accuracy: the student's (expected) top-1 as a fraction: its capacity, which sets the budget.
        kd: ``"standard"`` (one teacher) or ``"ensemble"`` (BNext's gap-sensitive ensemble: a strong teacher and at
            least one assistant).
        family: teachers are restricted to this family (:func:`teacher_family`), or ``None``.
        size_mb: the student's size (#Param, MB), for display only.
    """

    name: str
    accuracy: float
    kd: str = "ensemble"
    family: str | None = None
    size_mb: float | None = None

    def __post_init__(self) -> None:
        if self.kd not in KD_MODES:
            raise ValueError(f"kd must be one of {sorted(KD_MODES)}, got {self.kd!r}")
        object.__setattr__(self, "accuracy", _fraction(self.accuracy, f"student {self.name}"))

    @property
    def min_teachers(self) -> int:
        """Teachers the KD mode needs at least."""
        return KD_MODES[self.kd]


def _student_key(name: str) -> str | None:
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    for k, s in BNEXT_STUDENTS.items():
        label = s["label"].lower().replace("-", "_")
        if key in (k, label, label.replace("_", "")):
            return k
    return None


def resolve_student(student: StudentProfile | Mapping[str, Any] | str | float | None) -> StudentProfile | None:
    """A :class:`StudentProfile` from a profile, a BNext size name, a top-1, or a mapping.

    Args:
        student: ``None`` (no student: no budget); a :class:`StudentProfile`; a BNext size (``bnext_18``,
            ``bnext_tiny`` … ``bnext_large``, or the paper's ``BNext-T`` …; data in
            :data:`onebit.distill.bnext_tables.BNEXT_STUDENTS`); a number or numeric string: the student's top-1
            (fraction or percent, ensemble KD, any family); a mapping with ``accuracy`` and optionally ``name``,
            ``kd``, ``family``, ``size_mb``.

    Raises:
        ValueError: an unknown name or an accuracy outside [0, 100].
    """
    if student is None or isinstance(student, StudentProfile):
        return student
    if isinstance(student, bool):
        raise TypeError("student must be a profile, a BNext size name, a top-1 or a mapping, not a bool")
    if isinstance(student, int | float):
        return StudentProfile(name=f"top-1 {student:g}", accuracy=float(student))
    if isinstance(student, str):
        key = _student_key(student)
        if key is not None:
            s = BNEXT_STUDENTS[key]
            return StudentProfile(
                name=key, accuracy=s["accuracy"], kd=s["kd"], family=s["family"], size_mb=s["size_mb"]
            )
        try:
            value = float(student)
        except ValueError:
            raise ValueError(
                f"unknown student {student!r}: give a BNext size ({', '.join(BNEXT_STUDENTS)}) or the student's top-1"
            ) from None
        return StudentProfile(name=f"top-1 {student.strip()}", accuracy=value)
    if isinstance(student, Mapping):
        if "accuracy" not in student:
            raise ValueError("a student mapping needs 'accuracy' (its top-1)")
        return StudentProfile(
            name=str(student.get("name", "student")),
            accuracy=student["accuracy"],
            kd=student.get("kd", "ensemble"),
            family=student.get("family"),
            size_mb=student.get("size_mb"),
        )
    raise TypeError(f"student must be a profile, a BNext size name, a top-1 or a mapping, got {type(student)}")


def teacher_family(name: str) -> str:
    """A teacher's family from its name or spec: the leading letters of the model name, lower-cased.

    ``ResNet-34`` and ``torchvision:resnet34`` -> ``resnet``; ``ResNext101-32x8D`` -> ``resnext``;
    ``timm:efficientnet_b0@/w/b0.safetensors`` -> ``efficientnet``; ``runs/r34`` -> ``r`` (give ``family`` in the
    entry when the name does not say it).
    """
    text = str(name).strip().split("@", 1)[0]
    prefix = re.match(r"[A-Za-z][\w-]+:(?![\\/])", text)  # timm:, torchvision:, python: (not C:\ or C:/)
    if prefix:
        text = text[prefix.end() :]
    text = re.split(r"[\\/]", text.rstrip("\\/"))[-1]
    m = re.match(r"[a-z]+", text.lower())
    return m.group(0) if m else ""


def _dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``a`` has a KC no higher and a top-1 no lower than ``b``, one of them strictly."""
    no_worse = a["kc"] <= b["kc"] + _EPS and a["accuracy"] >= b["accuracy"] - _EPS
    better = a["kc"] < b["kc"] - _EPS or a["accuracy"] > b["accuracy"] + _EPS
    return no_worse and better


def rank_teachers(
    entries: Iterable[Mapping[str, Any]],
    student: StudentProfile | Mapping[str, Any] | str | float | None = None,
    *,
    headroom: float = DEFAULT_HEADROOM,
    kc_budget: float | None = None,
    family: str | None = None,
    min_teachers: int | None = None,
    include_strong: bool = False,
) -> list[dict[str, Any]]:
    """Rank teachers by knowledge complexity and propose BNext's teacher group for ``student``.

    The rule (BNext §4.1, §4.2, §7.3; derived table for every BNext size vs Table 9 in ``docs/teachers.md``):

    1. Eligible: all teachers, or only those of ``family`` (default: the student's; ``"any"`` lifts it).
    2. Pareto front: an eligible teacher is excluded when another one has a KC no higher and a top-1 no lower, one
       of them strictly ("prioritise teachers with lower KC" without giving up accuracy).
    3. Budget: within budget when the teacher's top-1 is at most the student's plus ``headroom`` points (the
       student's accuracy is its capacity, §7.3; no student: no ceiling) and its KC at most ``kc_budget`` if given.
    4. Group: the front teachers within budget, topped up with the next least complex front teachers when fewer
       than ``min_teachers`` (default: the student's KD mode, 1 for standard KD and 2 for the ensemble; 1 without
       a student). Strong = the most accurate of the group; assistants = the others in increasing KC, i.e. the
       activation order of the knowledge-boosting schedule. ``include_strong``: the strong teacher is also the last
       assistant (BNext-L's group), when the group has another assistant.

    With Table 8's teachers this gives Table 9's strong teacher for all five BNext sizes and its assistant groups for
    BNext-18/T/S/M; for BNext-L it gives §5.1's candidate group (B0, B2, B4 [, ConvNext-T]) of which Table 9 keeps
    B0, B4 and ConvNext-T: dropping B2 (on the front, within budget) is not determined by KC and accuracy.

    Args:
        entries: mappings with ``name``, ``params_millions`` and ``accuracy`` (fraction or percent), optionally
            ``family`` (default :func:`teacher_family` of the name); other keys (e.g. ``spec``) are copied to the
            row. Names must be unique.
        student: see :func:`resolve_student`; ``None``: no budget.
        headroom: top-1 points a teacher may exceed the student by (default :data:`DEFAULT_HEADROOM`).
        kc_budget: an upper bound on the KC of the group (``None``: none).
        family: restrict the teachers to this family (overrides the student's; ``"any"``: no restriction).
        min_teachers: the group's minimum size (overrides the student's KD mode).
        include_strong: also use the strong teacher as the last assistant.

    Returns:
        One dict per teacher, least complex first (name breaks ties): ``name``, ``params_millions``, ``accuracy``
        (fraction), ``kc``, ``rank`` (1 = least complex), ``family``, ``pareto`` (on the front of the eligible
        teachers), ``within_budget``, ``role`` (``"strong"``, ``"assistant k"`` with k the 1-based activation order,
        ``"strong, assistant k"`` or ``"excluded"``), ``assistant`` (k or ``None``) and ``reason`` (why excluded, or
        why a teacher over budget was taken; ``""`` otherwise).
    """
    prof = resolve_student(student)
    if not math.isfinite(headroom) or headroom < 0:
        raise ValueError(f"headroom must be a non-negative number of top-1 points, got {headroom}")
    if kc_budget is not None and not (math.isfinite(kc_budget) and kc_budget >= 0):
        raise ValueError(f"kc_budget must be a non-negative number, got {kc_budget}")
    need = min_teachers if min_teachers is not None else (prof.min_teachers if prof else 1)
    if need < 1:
        raise ValueError(f"min_teachers must be at least 1, got {need}")
    fam = family if family is not None else (prof.family if prof else None)
    fam = None if fam in (None, "", "any") else fam.lower()
    ceiling = prof.accuracy + headroom / 100.0 if prof else None

    rows: list[dict[str, Any]] = []
    for e in entries:
        name = str(e["name"])
        acc = _fraction(e["accuracy"], name)
        p = float(e["params_millions"])
        extra = {k: v for k, v in e.items() if k not in ("name", "accuracy", "params_millions", "family")}
        rows.append(
            {
                **extra,
                "name": name,
                "params_millions": p,
                "accuracy": acc,
                "kc": knowledge_complexity(p, acc),
                "family": str(e.get("family") or teacher_family(name)).lower(),
            }
        )
    names = [r["name"] for r in rows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"teacher names must be unique, repeated: {', '.join(dupes)}")
    rows.sort(key=lambda r: (r["kc"], r["name"]))  # name breaks ties so the order is reproducible

    eligible = [r for r in rows if fam is None or r["family"] == fam]
    for i, r in enumerate(rows):
        r["rank"] = i + 1
        over_acc = ceiling is not None and r["accuracy"] > ceiling + _EPS
        over_kc = kc_budget is not None and r["kc"] > kc_budget + _EPS
        r["within_budget"] = not (over_acc or over_kc)
        r["pareto"] = False
        r["role"], r["assistant"], r["reason"] = "excluded", None, ""
        if r not in eligible:
            r["reason"] = f"family {r['family'] or '?'}, not {fam}"
            continue
        dominators = [d for d in eligible if _dominates(d, r)]
        if dominators:
            r["reason"] = f"dominated by {dominators[0]['name']}"  # the least complex (eligible is in KC order)
            continue
        r["pareto"] = True
        if over_acc:
            r["reason"] = f"over budget: top-1 > {100 * ceiling:.2f}"
        elif over_kc:
            r["reason"] = f"over budget: KC > {kc_budget:g}"

    front = [r for r in eligible if r["pareto"]]
    group = [r for r in front if r["within_budget"]]
    for r in front:
        if len(group) >= need:
            break
        if r not in group:
            group.append(r)
            r["reason"] = f"{r['reason']}; taken: {need} needed"
    group.sort(key=lambda r: (r["kc"], r["name"]))
    if not group:
        return rows
    strong = max(group, key=lambda r: (r["accuracy"], -r["kc"], r["name"]))
    assistants = [r for r in group if r is not strong]
    for k, r in enumerate(assistants, 1):
        r["role"], r["assistant"] = f"assistant {k}", k
        if r["within_budget"]:
            r["reason"] = ""
    strong["role"] = "strong"
    if strong["within_budget"]:
        strong["reason"] = ""
    if include_strong and assistants:
        k = len(assistants) + 1
        strong["role"], strong["assistant"] = f"strong, assistant {k}", k
    return rows


def teacher_group(rows: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    """The strong teacher (``None`` when no teacher was proposed) and the assistants in activation order, from the
    rows of :func:`rank_teachers`."""
    rows = list(rows)
    strong = next((r for r in rows if r["role"].startswith("strong")), None)
    assistants = sorted((r for r in rows if r.get("assistant")), key=lambda r: r["assistant"])
    return strong, assistants
