"""Knowledge distillation as in BNext: frozen teachers, KD losses, the assistant schedule and knowledge complexity.

* :class:`Teacher` wraps any classifier so that it is always in eval mode, frozen and run without gradients, with
  optional half-precision autocast and input re-normalisation; logits come back as float32.
* :data:`KD_LOSSES` holds the KD losses by name (``soft_ce``, ``kl``, ``gap_ensemble_official``,
  ``gap_ensemble_paper``); each is ``fn(student_logits, [teacher_logits, ...], **kw) -> scalar``.
* :class:`DistillationTask` is the Task (``{"loss", "output", "kd", "ce"}``) and :class:`AssistantSchedule` the
  "knowledge boosting" assistant switch of BNext Alg. 1.
* :func:`knowledge_complexity` / :func:`rank_teachers` implement BNext eq. 3 and the teacher-group proposal.

Teachers live outside the student on purpose: the task keeps them in a plain Python list (never an ``nn.ModuleList``
or an attribute of the student), so their parameters never reach the student's optimizer, its ``state_dict``, its
checkpoints or DDP's gradient buckets. Move them to the device yourself (``load_teacher(..., device=...)``).
"""

from onebit.distill.complexity import (
    DEFAULT_HEADROOM,
    StudentProfile,
    count_params,
    knowledge_complexity,
    rank_teachers,
    resolve_student,
    teacher_family,
    teacher_group,
)
from onebit.distill.losses import KD_LOSSES, gap_ensemble_official, gap_ensemble_paper, kl_loss, soft_ce
from onebit.distill.task import AssistantSchedule, DistillationTask
from onebit.distill.teachers import Teacher, load_teacher

__all__ = [
    "DEFAULT_HEADROOM",
    "StudentProfile",
    "resolve_student",
    "teacher_family",
    "teacher_group",
    "KD_LOSSES",
    "AssistantSchedule",
    "DistillationTask",
    "Teacher",
    "count_params",
    "gap_ensemble_official",
    "gap_ensemble_paper",
    "kl_loss",
    "knowledge_complexity",
    "load_teacher",
    "rank_teachers",
    "soft_ce",
]
