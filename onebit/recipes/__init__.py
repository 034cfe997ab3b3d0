"""Published and bundled recipes. Each recipe module defines ``config() -> RunConfig`` and ``smoke() -> RunConfig``
and starts with a header giving the command, the cost and the expected result."""

from __future__ import annotations

import importlib
import pkgutil

from onebit.config import RunConfig

__all__ = ["DEFAULT_RECIPE", "get_recipe", "list_recipes", "paper_teachers", "recipe_header"]

DEFAULT_RECIPE = "adambnn_digits"


def list_recipes() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _module(name: str):
    names = list_recipes()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown recipe {name!r}{hint} (known: {', '.join(names)})")
    return importlib.import_module(f"{__name__}.{name}")


def get_recipe(name: str = DEFAULT_RECIPE, smoke: bool = False) -> RunConfig:
    """The recipe's RunConfig (``smoke=True``: its tiny variant, seconds on a CPU, no data set on disk)."""
    mod = _module(name)
    cfg = mod.smoke() if smoke else mod.config()
    cfg.recipe = name + ("-smoke" if smoke else "")
    return cfg


def recipe_header(name: str) -> str:
    return (_module(name).__doc__ or "").strip()


def paper_teachers(name: str) -> tuple[list[str], list[str]]:
    """The teachers the paper distils this recipe from, as teacher specs: ``(strong teachers, assistant group)``
    (BNext Table 9; ResNet-34 for ReActNet/AdamBNN and BNext-18), with ``@pretrained`` weights; empty lists for a
    recipe trained without a teacher. The recipes themselves leave teachers to the command line."""
    strong, assistants = getattr(_module(name), "PAPER_TEACHERS", ((), ()))
    return list(strong), list(assistants)
