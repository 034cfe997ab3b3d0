"""The task of a stage (classification, or distillation from its teachers) and the teachers of a run.

Teachers are named in the config by spec strings (grammar: :mod:`onebit.distill.teachers`): ``timm:NAME``,
``torchvision:NAME``, a onebit model name, a model or run directory, each optionally ``@FILE``, or ``python:KEY``.

Python teachers: ``onebit.train.run`` also accepts ``nn.Module`` teachers held outside the JSON config, either put
directly into ``StageConfig.teachers`` / ``assistants`` or passed as ``run(cfg, teachers={"KEY": module})`` and named
``python:KEY`` in the config. :func:`prepare_teachers` lifts every module out of the config before ``config.json`` is
written, replacing it with ``python:KEY`` (KEY: its key in ``teachers=``, else its class name made unique), so the
written config is JSON and says which teacher was a Python module. A resumed run whose config names ``python:``
teachers needs the same modules passed again (``run(resume=DIR, teachers={...})``): without them it stops with a
one-line error before anything is written.

Every stage's teacher specs are checked when the run starts (names known, files present, ``python:`` keys given),
so a typo in the last stage's teacher does not wait for the first stage to train. The teachers themselves are built
when their stage starts (:func:`build_task`), each with the student's number of classes when built from a name, and
probed with one batch of the student's input shape: a teacher that cannot take it or whose logits are not the
student's classes is a one-line error then, not a shape error deep in the KD loss.

What a run records of its teachers (:func:`teacher_records`, in each stage's summary and ``stage`` record): spec,
architecture, class, weights file, parameters (millions) and accuracy when the source knows it (a run directory's
final val top-1; otherwise ``null``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onebit.config import ConfigError, RunConfig, StageConfig
from onebit.data import DataBundle
from onebit.distill import AssistantSchedule, DistillationTask, Teacher, load_teacher
from onebit.distill.teachers import TeacherSpecError, check_teacher_spec
from onebit.train.tasks import ClassificationTask

__all__ = ["build_task", "check_teachers", "lift_python_teachers", "prepare_teachers", "teacher_records"]

_KEY = re.compile(r"[A-Za-z0-9_][\w.-]*\Z")
_ROLES = ("teachers", "assistants")


def _module_key(module: nn.Module, taken: Mapping[str, Any]) -> str:
    """``<ClassName>`` (a Teacher: its name) made unique among ``taken``: ``ResNet``, ``ResNet_2``, ..."""
    base = module.name if isinstance(module, Teacher) else type(module).__name__
    base = re.sub(r"[^\w.-]", "_", base).lstrip(".-") or "module"
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}_{n}"
    return key


def lift_python_teachers(
    cfg: RunConfig, teachers: Mapping[str, nn.Module] | None = None
) -> tuple[RunConfig, dict[str, nn.Module]]:
    """A copy of ``cfg`` whose teacher lists hold only spec strings, and the modules its ``python:`` specs name.

    Each ``nn.Module`` in a stage's ``teachers``/``assistants`` becomes ``python:KEY``: its key in ``teachers`` when
    the same object is there, else its class name made unique (the same object keeps one key across stages).
    ``cfg`` itself is not changed; without modules anywhere it is returned as is.
    """
    modules: dict[str, nn.Module] = {}
    for key, module in (teachers or {}).items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ConfigError(f"teachers=: key {key!r} must be a name of letters, digits, '_', '.' or '-'")
        if not isinstance(module, nn.Module):
            raise ConfigError(f"teachers=: {key!r} must be an nn.Module, got {type(module).__name__}")
        modules[key] = module
    keys = {id(m): k for k, m in modules.items()}
    stages, lifted = [], False
    for i, stage in enumerate(cfg.stages):
        lists: dict[str, list[str]] = {}
        for role in _ROLES:
            specs = []
            for t in getattr(stage, role):
                if isinstance(t, nn.Module):
                    if id(t) not in keys:
                        keys[id(t)] = _module_key(t, modules)
                        modules[keys[id(t)]] = t
                    specs.append(f"python:{keys[id(t)]}")
                    lifted = True
                elif isinstance(t, str | Path):
                    specs.append(str(t))
                else:
                    raise ConfigError(
                        f"stages.{i}.{role}: a teacher is a spec string or an nn.Module, got {type(t).__name__}"
                    )
            lists[role] = specs
        stages.append(dataclasses.replace(stage, **lists))
    if not lifted:
        return cfg, modules
    return dataclasses.replace(cfg, stages=stages), modules


def check_teachers(cfg: RunConfig, modules: Mapping[str, nn.Module] | None = None) -> None:
    """Check every stage's teacher specs without building a model (see the module docstring), that assistants come
    with exactly one strong teacher, and that every given module is named by some stage."""
    named: set[str] = set()
    for stage in cfg.stages:
        if stage.assistants and len(stage.teachers) != 1:
            raise ConfigError(f"stage {stage.name!r}: assistants need exactly one strong teacher, got {stage.teachers}")
        for spec in [*stage.teachers, *stage.assistants]:
            try:
                p = check_teacher_spec(spec, modules)
            except TeacherSpecError as e:
                raise TeacherSpecError(f"stage {stage.name!r}: {e}") from None
            if p.source == "python":
                named.add(p.name)
    unused = sorted(set(modules or {}) - named)
    if unused:
        raise ConfigError(
            f"teachers=: no stage names {', '.join(unused)}; name each as python:KEY in stages.N.teachers or "
            f"stages.N.assistants"
        )


def prepare_teachers(
    cfg: RunConfig, teachers: Mapping[str, nn.Module] | None = None
) -> tuple[RunConfig, dict[str, nn.Module]]:
    """:func:`lift_python_teachers`, then :func:`check_teachers`: the JSON-able config and its Python teachers."""
    cfg, modules = lift_python_teachers(cfg, teachers)
    check_teachers(cfg, modules)
    return cfg, modules


def _probe(teacher: Teacher, stage: StageConfig, data: DataBundle, classes: int, device: torch.device) -> None:
    """One zero batch of the student's input shape through ``teacher``: it must give ``classes`` logits."""
    shape = (1, data.in_chans, data.image_size, data.image_size)
    try:
        out = teacher(torch.zeros(shape, device=device))
    except (RuntimeError, ValueError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TeacherSpecError(
            f"stage {stage.name!r}: teacher {teacher.name!r} cannot take the student's input "
            f"({data.in_chans}x{data.image_size}x{data.image_size}): {first}"
        ) from None
    if out.ndim != 2 or out.shape[1] != classes:
        raise TeacherSpecError(
            f"stage {stage.name!r}: teacher {teacher.name!r} gives logits of shape {list(out.shape[1:])}, but the "
            f"student has {classes} classes: a teacher must classify the student's classes"
        )


def build_task(
    stage: StageConfig,
    data: DataBundle,
    device: torch.device,
    *,
    num_classes: int | None = None,
    modules: Mapping[str, nn.Module] | None = None,
):
    """Classification, or distillation from the stage's teachers (strong first, then BNext's assistant group).

    Args:
        stage, data, device: the stage, its data and where the teachers run.
        num_classes: the student's classes (the runner gives them): teachers built from a name get this many,
            and every teacher is probed with one zero batch of the student's input shape and must output this
            many (a one-line :class:`TeacherSpecError` otherwise). ``None``: named teachers get their default
            head, and nothing is probed.
        modules: the modules of ``python:KEY`` specs.

    Teachers are built with the global torch RNG forked, so building them (random init included) never changes
    the student's random stream, and a resumed stage builds the same teachers.
    """
    if not stage.teachers:
        return ClassificationTask(stage.label_smoothing)
    renorm = {}
    if stage.teacher_mean or stage.teacher_std:
        if data.mean is None or data.std is None:
            raise ValueError(f"stage {stage.name!r}: teacher_mean/std need a data set with known normalisation")
        renorm = {
            "mean": stage.teacher_mean,
            "std": stage.teacher_std,
            "student_mean": data.mean,
            "student_std": data.std,
        }

    def teacher(spec: str) -> Teacher:
        try:
            t = load_teacher(
                spec, device=device, half=stage.teacher_half, num_classes=num_classes, modules=modules, **renorm
            )
        except TeacherSpecError as e:
            raise TeacherSpecError(f"stage {stage.name!r}: {e}") from None
        if num_classes is not None:
            _probe(t, stage, data, num_classes, device)
        return t

    if stage.assistants and len(stage.teachers) != 1:
        raise ValueError(f"stage {stage.name!r}: assistants need exactly one strong teacher, got {stage.teachers}")
    with torch.random.fork_rng(devices=[]):
        strong = [teacher(t) for t in stage.teachers]
        assistants = [teacher(a) for a in stage.assistants]
    if assistants:
        spec = AssistantSchedule(strong[0], assistants, stage.epochs)
        return DistillationTask(spec, loss=stage.kd_loss, label_weight=stage.label_weight)
    return DistillationTask(strong, loss=stage.kd_loss, label_weight=stage.label_weight)


def teacher_records(task: Any) -> list[dict[str, Any]]:
    """One record per teacher of a stage's task (:meth:`onebit.distill.Teacher.record` plus ``role``: ``teacher``
    or ``assistant``, in the config's order); ``[]`` for a task without teachers."""
    if not isinstance(task, DistillationTask):
        return []
    if task.schedule is not None:
        pairs = [("teacher", task.schedule.strong)] + [("assistant", a) for a in task.schedule.assistants]
    else:
        pairs = [("teacher", t) for t in task.teachers]
    return [{"role": role, **t.record()} for role, t in pairs]
