"""Training: plain loop functions, tasks, optimizers by role, schedules, checkpoints, the stage runner."""

from onebit.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights
from onebit.train.distributed import (
    CpuSyncBatchNorm,
    World,
    convert_sync_batchnorm,
    init_distributed,
    is_main,
)
from onebit.train.loop import EpochMeter, NonFiniteLossError, StepRecord, evaluate, train_one_epoch, train_steps
from onebit.train.optim import OPTIMIZERS, build_optimizer, param_groups
from onebit.train.recipe import RunDirError, RunInterrupted, RunResult, TrainingDiverged, run
from onebit.train.schedules import lr_at, set_lr
from onebit.train.tasks import ClassificationTask

__all__ = [
    "OPTIMIZERS",
    "CheckpointError",
    "ClassificationTask",
    "CpuSyncBatchNorm",
    "EpochMeter",
    "NonFiniteLossError",
    "RunDirError",
    "RunInterrupted",
    "RunResult",
    "StepRecord",
    "TrainingDiverged",
    "World",
    "build_optimizer",
    "convert_sync_batchnorm",
    "evaluate",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "load_weights",
    "lr_at",
    "param_groups",
    "run",
    "save_checkpoint",
    "save_weights",
    "set_lr",
    "train_one_epoch",
    "train_steps",
]
