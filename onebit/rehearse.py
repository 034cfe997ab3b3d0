"""CPU rehearsal of an ImageNet recipe: the real config, a few steps, then an evaluation.

Before a user spends GPU-weeks on ``onebit train bnext_large data.root=/data/imagenet ...``, ``onebit rehearse
bnext_large`` runs that very config — the real model (1000 classes), optimizer and parameter groups, schedules with
their warm-up, progressive binarization, RandAugment, the KD loss with the paper's teacher group and its assistant
switches, AdamBNN's step 1 -> best checkpoint -> step 2 — for a few steps on an ImageNet-layout folder at a reduced
resolution, then evaluates the result on the folder's ``val`` split with the family's evaluation transform scaled to
that resolution. What it changes (:func:`rehearsal_config`): the data root, the image size (and the evaluation resize
in proportion), the batch sizes, the number of training images (``steps`` batches per epoch), the epochs per stage
(at least one per assistant, so every assistant teaches), and a warm-up of at most one epoch; the teachers are the
paper's (:func:`onebit.recipes.paper_teachers`) built without weights when their library is installed, else onebit's
float ``resnet18`` in every slot (same group structure). Nothing else.

Without ``data_root`` a small folder is generated (:func:`onebit.data.write_imagefolder_fixture`).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from onebit.config import RunConfig, apply_overrides
from onebit.data import write_imagefolder_fixture
from onebit.data.preprocess import model_family, preprocess_for
from onebit.distill.teachers import RandomTeacherWarning, parse_teacher_spec
from onebit.evaluate import EvalResult, check_compatible, evaluate, load_eval_model, open_eval_data
from onebit.recipes import get_recipe, paper_teachers
from onebit.train import run as run_recipe

__all__ = ["RehearsalResult", "TeacherMode", "rehearsal_config", "rehearsal_teachers", "rehearse"]

TeacherMode = Literal["auto", "paper", "standin", "none"]

#: the stand-in teacher when the paper's teacher library is not installed (onebit's float ResNet-18, 1000 classes)
STANDIN = "resnet18"


def _weightless(spec: str) -> str:
    """A paper teacher's architecture without its weights; torchvision's ResNets as onebit's (the same modules and
    keys, no torchvision needed)."""
    base = spec.removesuffix("@pretrained")
    return base.removeprefix("torchvision:") if base in ("torchvision:resnet18", "torchvision:resnet34") else base


def rehearsal_teachers(recipe: str, mode: TeacherMode = "auto") -> tuple[list[str], list[str]]:
    """The teacher specs a rehearsal of ``recipe`` uses: ``(strong, assistants)``.

    ``paper``: the paper's architectures (:func:`onebit.recipes.paper_teachers`) without weights (``@pretrained``
    dropped: a rehearsal exercises the pipeline, it does not distil anything; torchvision's ResNet-18/34 as onebit's
    ``resnet18``/``resnet34``, the same network); ``standin``: onebit's ``resnet18`` in
    every slot; ``auto``: ``paper`` when every library they need is importable, else ``standin``; ``none``: no teachers.
    """
    strong, assistants = paper_teachers(recipe)
    if mode == "none" or not strong:
        return [], []
    bare = [_weightless(s) for s in strong], [_weightless(a) for a in assistants]
    if mode == "paper":
        return bare
    if mode == "standin":
        return [STANDIN] * len(strong), [STANDIN] * len(assistants)
    if mode != "auto":
        raise ValueError(f"teachers must be auto, paper, standin or none, got {mode!r}")
    sources = {parse_teacher_spec(s).source for s in (*bare[0], *bare[1])}
    missing = [s for s in sources if s in ("timm", "torchvision") and importlib.util.find_spec(s) is None]
    return rehearsal_teachers(recipe, "standin") if missing else bare


def rehearsal_config(
    recipe: str,
    data_root: str | Path,
    *,
    image_size: int = 32,
    batch_size: int = 8,
    steps: int = 2,
    epochs: int = 2,
    teachers: TeacherMode = "auto",
) -> RunConfig:
    """``recipe``'s real config, changed only where a CPU rehearsal must (module docstring)."""
    if min(image_size, batch_size, steps, epochs) < 1:
        raise ValueError("image_size, batch_size, steps and epochs must be at least 1")
    cfg = get_recipe(recipe)
    if cfg.data.name != "imagenet":
        raise ValueError(
            f"{recipe}: a rehearsal runs ImageNet recipes (this one trains on {cfg.data.name}; try --smoke instead)"
        )
    d = cfg.data
    d.val_resize = max(image_size, math.floor(d.val_resize * image_size / d.image_size))
    d.root, d.image_size = str(data_root), image_size
    d.batch_size = d.eval_batch_size = batch_size
    d.limit_train, d.num_workers = steps * batch_size, 0
    strong, assistants = rehearsal_teachers(recipe, teachers)
    for s in cfg.stages:
        s.teachers, s.assistants = list(strong), list(assistants)
        s.epochs = max(epochs, len(assistants))
        s.schedule.warmup_epochs = min(s.schedule.warmup_epochs, 1)
    cfg.recipe = f"{recipe}-rehearsal"
    return cfg


@dataclass
class RehearsalResult:
    """What a rehearsal produced: the run directory, its summary, the evaluation of its best checkpoint."""

    run_dir: Path
    config: RunConfig
    summary: dict[str, Any]
    eval: EvalResult
    eval_preprocess: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "recipe": self.config.recipe,
            "final": self.summary.get("final"),
            "eval": self.eval.to_dict(),
            "eval_preprocess": self.eval_preprocess,
        }


def rehearse(
    recipe: str,
    out_dir: str | Path,
    data_root: str | Path | None = None,
    *,
    image_size: int = 32,
    batch_size: int = 8,
    steps: int = 2,
    epochs: int = 2,
    teachers: TeacherMode = "auto",
    overrides: list[str] | None = None,
    console: Console | None = None,
) -> RehearsalResult:
    """Rehearse ``recipe`` into ``out_dir`` (``out_dir/run``; ``out_dir/data`` when a folder is generated), then
    evaluate the run's best checkpoint on ``data_root/val``. ``overrides``: further dotted ``key=value`` settings."""
    out = Path(out_dir)
    if data_root is None:
        data_root = write_imagefolder_fixture(out / "data", size=(max(image_size + 8, 40), max(image_size, 32)))
    cfg = rehearsal_config(
        recipe, data_root, image_size=image_size, batch_size=batch_size, steps=steps, epochs=epochs, teachers=teachers
    )
    cfg = apply_overrides(cfg, list(overrides or []))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)  # a rehearsal's teachers are weightless on purpose
        result = run_recipe(cfg, out_dir=out / "run", console=console or Console(quiet=True))
    loaded = load_eval_model(result.run_dir, "best")
    family = model_family(cfg.model.name)
    pre = preprocess_for(family, resize=cfg.data.val_resize, crop=image_size, interpolation=cfg.data.interpolation)
    data = open_eval_data(Path(data_root) / "val", pre, batch_size=batch_size, num_classes=loaded.num_classes)
    check_compatible(loaded, data)
    res = evaluate(loaded.model, data, len(data.classes))
    return RehearsalResult(result.run_dir, cfg, result.summary, res, pre.describe())
