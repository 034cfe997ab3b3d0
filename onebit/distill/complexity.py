"""Knowledge complexity (BNext eq. 3) and the teacher-group proposal."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

__all__ = ["count_params", "knowledge_complexity", "rank_teachers"]


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
    which reproduces Table 8 (ResNet-34, 21.80 M, 73.31 % -> 1.4877, printed 1.487, i.e. the table truncates;
    EfficientNet-B0, 5.29 M, 77.53 % -> 0.893). The natural log or the accuracy in percent do not.

    Args:
        params_millions: parameters in millions.
        accuracy: top-1 accuracy as a fraction (0.7331) or in percent (73.31); values above 1 are read as percent.
    """
    if accuracy < 0 or params_millions < 0:
        raise ValueError(f"params and accuracy must be non-negative, got {params_millions}, {accuracy}")
    acc = accuracy / 100.0 if accuracy > 1 else accuracy
    return math.log10(1.0 + params_millions * 1e6 / (acc * 1e6 + 1e-8))


def rank_teachers(entries: Iterable[Mapping[str, Any]], include_strong: bool = False) -> list[dict[str, Any]]:
    """Rank teachers by knowledge complexity and propose BNext's teacher group.

    Reading of Tables 8/9 and §4.2: the strong teacher is the most complex one (highest KC); the assistants are the
    others, activated one by one "in increasing order of accuracy and knowledge complexity", i.e. from least to most
    complex. BNext-L's group (b0, b4, ConvNeXt-T with ConvNeXt-T also strong) repeats the strong teacher as the last
    assistant: pass ``include_strong=True`` for that variant.

    Args:
        entries: mappings with ``name``, ``params_millions`` and ``accuracy`` (fraction or percent).
        include_strong: also use the strong teacher as the last assistant.

    Returns:
        One dict per teacher, least complex first: ``name``, ``params_millions``, ``accuracy`` (fraction), ``kc``,
        ``rank`` (1 = least complex), ``role`` (``"strong"``, ``"assistant k"`` (1-based activation order), or
        ``"strong, assistant k"``).
    """
    rows = []
    for e in entries:
        acc = float(e["accuracy"])
        acc = acc / 100.0 if acc > 1 else acc
        p = float(e["params_millions"])
        rows.append({"name": str(e["name"]), "params_millions": p, "accuracy": acc, "kc": knowledge_complexity(p, acc)})
    rows.sort(key=lambda r: (r["kc"], r["name"]))  # name breaks ties so the order is reproducible
    for i, r in enumerate(rows):
        r["rank"] = i + 1
        r["role"] = f"assistant {i + 1}"
    if rows:
        n = len(rows)
        rows[-1]["role"] = f"strong, assistant {n}" if include_strong and n > 1 else "strong"
    return rows
