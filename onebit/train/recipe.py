"""Run a multi-stage recipe: one function, a list of stages, one run directory (its files:
:class:`onebit.checkpoint.RunDir`).

Under ``torchrun`` (see :mod:`onebit.train.distributed`) every process trains the student wrapped in
DistributedDataParallel on its share of each global batch; the metrics are reduced over all ranks and only rank 0
writes anything into the run directory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from onebit.analysis.complexity import complexity
from onebit.analysis.plots import plot_run
from onebit.augment import build_train_augment
from onebit.binarize import set_temperature
from onebit.checkpoint import (
    RunDir,
    RunDirError,
    load_weights,
    save_checkpoint,
)
from onebit.config import ConfigError, RunConfig, StageConfig
from onebit.data import DataBundle, build_data
from onebit.layers import binary_layers, set_binarization
from onebit.metrics import FlipTracker, signs_int8
from onebit.metrics.dynamics import DynamicsTracker
from onebit.models.io import build_model
from onebit.report import MetricsWriter, TensorBoardMirror, read_metrics, write_summary
from onebit.train import distributed as dist_utils
from onebit.train.distributed import World, broadcast_object, convert_sync_batchnorm, init_distributed
from onebit.train.loop import EpochMeter, NonFiniteLossError, StepRecord, evaluate, train_steps
from onebit.train.optim import build_optimizer
from onebit.train.rundir import RunClaim, claim_run_dir, load_best, load_resume_point, read_resume, save_best
from onebit.train.schedules import set_lr
from onebit.train.task import build_task, prepare_teachers, teacher_records

__all__ = ["RunDirError", "RunInterrupted", "RunResult", "TrainingDiverged", "run"]


class RunInterrupted(RuntimeError):
    """Ctrl-C: a resumable checkpoint was written; resume with ``onebit train --resume <run_dir>``."""


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the last good checkpoint was kept."""


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    model: nn.Module


class _InterruptFlag:
    """First Ctrl-C asks the loop to stop after the current step and checkpoint; a second one aborts at once."""

    def __init__(self, console: Console) -> None:
        self._set = False
        self.console = console
        self._old = None

    def is_set(self) -> bool:
        return self._set

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self._set:
            raise KeyboardInterrupt
        self._set = True
        self.console.print("[yellow]Interrupt: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _stage_label(s: StageConfig) -> str:
    parts = [p for p, on in (("activations", s.binarize_activations), ("weights", s.binarize_weights)) if on]
    return " + ".join(parts) if parts else "none (float)"


def _check_config(cfg: RunConfig, world: World) -> None:
    """Settings that must fail before anything is written (all ranks take the same decision). Closed choices
    (``training_path``, ``amp``, ...) need no check here: the config rejects any other value when it is set."""
    if cfg.data.batch_size % world.world_size:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is the global batch and must be divisible by the number of "
            f"processes ({world.world_size})"
        )
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError('tensorboard=true needs the tensorboard package: pip install "onebit[tensorboard]"')


def _status(run_dir: Path, status: str, **extra: Any) -> None:
    RunDir(run_dir).write_status(status, **extra)


def run(
    cfg: RunConfig | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    console: Console | None = None,
    teachers: Mapping[str, nn.Module] | None = None,
) -> RunResult:
    """Train every stage of ``cfg`` into a run directory (or continue the run in ``resume``).

    Launched by ``torchrun`` with more than one process, every rank calls this with the same arguments: the
    student is wrapped in DistributedDataParallel, each rank trains on its share of every global batch
    (``data.batch_size`` is the global batch) and only rank 0 writes the run directory and prints.

    The run directory has one writer at a time (rank 0 holds ``<run_dir>/.lock``; a second writer is refused,
    naming the first). A new run's directory is claimed first, then data and model are built, then ``config.json``
    and ``run.json`` are written: a user mistake found on the way (a missing data set ...) leaves nothing behind.

    Teachers held in Python (:mod:`onebit.train.task`): ``nn.Module`` s put directly into a stage's
    ``teachers``/``assistants``, or given as ``teachers={"KEY": module}`` and named ``python:KEY`` there. They are
    lifted out of the config (``config.json`` records ``python:KEY``); resuming such a run needs the same
    ``teachers=`` again. Every stage's teacher specs are checked before anything is written.

    Raises:
        RunDirError: bad ``out_dir``/``resume`` (missing, foreign, unwritable, holding a run, in use).
        CheckpointError: the resume point is corrupt or does not fit the model/optimizer.
        ConfigError: a setting that cannot work (``amp``, a batch size not divisible by the number of processes,
            ``tensorboard`` without the package).
        RunInterrupted: Ctrl-C; a resumable checkpoint was written first.
        TrainingDiverged: a NaN/inf loss; the last good checkpoint is kept.
    """
    console = console or Console()
    if resume is not None:
        cfg = read_resume(resume)
    elif cfg is None:
        raise ValueError("run() needs a config unless it resumes")
    cfg, modules = prepare_teachers(cfg, teachers)
    world, device = init_distributed(cfg.device)
    try:
        return _run(cfg, out_dir, resume, console, world, device, modules)
    finally:
        dist_utils.teardown()


def _run(
    cfg: RunConfig,
    out_dir,
    resume,
    console: Console,
    world: World,
    device: torch.device,
    modules: Mapping[str, nn.Module] | None = None,
) -> RunResult:
    _check_config(cfg, world)
    if not world.is_main:
        console = Console(quiet=True)  # rank 0 speaks for the run
    claim = claim_run_dir(cfg, out_dir, resume, world, console)
    try:
        return _train(cfg, claim, console, world, device, modules)
    except BaseException as e:
        if world.is_main and claim.new and not isinstance(e, RunInterrupted | TrainingDiverged):
            rd = RunDir(claim.path)
            if rd.checkpoint("last") is None and not (rd.metrics.exists() and rd.metrics.stat().st_size):
                claim.abandon(console)  # nothing was trained: leave nothing behind
        raise
    finally:
        claim.release()


def _train(
    cfg: RunConfig,
    claim: RunClaim,
    console: Console,
    world: World,
    device: torch.device,
    modules: Mapping[str, nn.Module] | None = None,
) -> RunResult:
    run_dir, resuming = claim.path, not claim.new
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    if world.distributed:
        data.train.set_world(world.rank, world.world_size, even=True)
        data.val.set_world(world.rank, world.world_size, even=False)
    model = build_model(cfg).to(device)
    if cfg.sync_bn and world.distributed:
        model = convert_sync_batchnorm(model, device)
    run_ref = {k: signs_int8(m.weight) for k, m in _binary(model)}  # C2I reference of the whole run
    if claim.new and world.is_main:
        claim.record(cfg)  # data and model exist: the directory becomes a run

    state: dict[str, Any] | None = None
    metrics = MetricsWriter(RunDir(run_dir).metrics, enabled=world.is_main)
    purge_step = None
    if resuming:
        state, purge_step = load_resume_point(run_dir, cfg, model, metrics, world, device, console)
        if state is not None:
            run_ref = {k[len("run.") :]: v.to(device) for k, v in state["flips_run"].items()}
    if cfg.tensorboard and world.is_main:
        metrics.mirrors.append(TensorBoardMirror(RunDir(run_dir).tensorboard, purge_step=purge_step))
    if world.is_main:
        _status(run_dir, "running")
    if world.distributed:
        console.print(
            f"Data parallel: {world.world_size} processes ({world.backend}), global batch {cfg.data.batch_size} = "
            f"{world.world_size} x {data.train.local_batch_size}; SyncBN {'on' if cfg.sync_bn else 'off'}"
        )
    elapsed = (state or {}).get("elapsed", 0.0)
    runner = _Runner(
        cfg, run_dir, model, data, device, metrics, console, run_ref, world, elapsed=elapsed, teacher_modules=modules
    )
    try:
        with runner.flag:
            runner.run_stages(state)
    except NonFiniteLossError as e:  # every rank sees the same reduced loss, so all of them land here
        last = RunDir(run_dir).checkpoint("last")
        where = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        if world.is_main:
            _status(run_dir, "diverged", message=str(e))
        metrics.close()
        # torchrun kills the other ranks as soon as one exits non-zero: wait until rank 0's files are written
        dist_utils.barrier()
        raise TrainingDiverged(f"training stopped: {e}; {where}") from None
    except RunInterrupted:
        if world.is_main:
            _status(run_dir, "interrupted")
        metrics.close()
        dist_utils.barrier()  # as above: the checkpoint and run.json are complete before any rank exits
        raise
    metrics.close()
    summary = None
    if world.is_main:
        summary = runner.finish(time.time() - runner.t0)
        _status(run_dir, "completed")
    summary = broadcast_object(summary)  # also keeps the other ranks until the run directory is complete
    return RunResult(run_dir, summary, model)


def _has_unused_parameters(model: nn.Module, cfg: RunConfig, data: DataBundle, device: torch.device) -> bool:
    """Whether a trainable parameter gets no gradient in some stage's setting (BNext, as the official code, holds
    PReLUs that no forward uses). DDP must then search the graph for unused parameters every step; elsewhere that
    search is only overhead. Probed with one forward/backward of a zero batch in eval mode per distinct stage
    setting (eval mode: no BN statistics move, no dynamics are counted; ``autograd.grad`` leaves ``.grad`` alone)."""
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.zeros(2, data.in_chans, data.image_size, data.image_size, device=device)
    was_training = model.training
    model.eval()
    try:
        for acts, weights in {(s.binarize_activations, s.binarize_weights) for s in cfg.stages}:
            set_binarization(model, activations=acts, weights=weights)
            grads = torch.autograd.grad(model(x).float().sum(), params, allow_unused=True)
            if any(g is None for g in grads):
                return True
    finally:
        model.train(was_training)
    return False


def _binary(model: nn.Module):
    return list(binary_layers(model))


@dataclass
class _StageRun:
    """One stage while it trains: what its epochs share and where it stands."""

    index: int
    stage: StageConfig
    opt: torch.optim.Optimizer
    tracker: FlipTracker | None
    steps_per_epoch: int
    lr_for_step: Callable[[int], float]  # sets the optimizer's lr for a stage step
    task: Any = None
    augment: Any = None
    meter: EpochMeter = dataclasses.field(default_factory=EpochMeter)  # sums of the open epoch
    start_epoch: int = 0
    skip: int = 0  # batches of ``start_epoch`` done before a resume
    step: int = 0  # stage step
    batch: int = 0  # batches done in the current epoch
    best: dict[str, Any] | None = None  # the stage's best epoch so far (validation top-1), see _update_best


class _Runner:
    """State of one run while its stages execute (kept out of ``run`` so each piece stays short)."""

    def __init__(
        self,
        cfg,
        run_dir,
        model,
        data: DataBundle,
        device,
        metrics,
        console,
        run_ref,
        world=None,
        elapsed=0.0,
        teacher_modules: Mapping[str, nn.Module] | None = None,
    ) -> None:
        """``elapsed``: seconds the run had trained before this process (resumed runs); ``teacher_modules``: the
        modules of the config's ``python:`` teachers."""
        self.cfg, self.run_dir, self.model, self.data, self.device = cfg, run_dir, model, data, device
        self.teacher_modules: Mapping[str, nn.Module] = teacher_modules or {}
        self.metrics, self.console, self.run_ref = metrics, console, run_ref
        self.world: World = world or World()
        # the student DDP trains; checkpoints, trackers and evaluation use the unwrapped model (keys without
        # "module."), so single-process and multi-process runs resume each other's checkpoints
        self.train_model: nn.Module = model
        if self.world.distributed:
            ids = [device.index] if device.type == "cuda" else None
            unused = _has_unused_parameters(model, cfg, data, device)
            self.train_model = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
        self.ckpt_dir = RunDir(run_dir).checkpoints
        self.results: list[dict[str, Any]] = []
        self.global_step = 0
        self.flag = _InterruptFlag(console)  # installed by ``with runner.flag:`` around the stages
        self.acc: dict[str, Any] = {"ff": 0.0, "steps": 0, "layers": {}}
        self.dyn: DynamicsTracker | None = None
        self.t0 = time.time() - elapsed
        self.t_stage = time.time()

    # ------------------------------------------------------------------------------------------------ checkpoint
    def _state(self, st: _StageRun, epoch: int, batch: int, done: bool = False) -> dict:
        return {
            "stage_index": st.index,
            "stage_done": done,
            "epoch": epoch,
            "batch": batch,
            "stage_step": st.step,
            "global_step": self.global_step,
            "optimizer": st.opt.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "meter": dataclasses.asdict(st.meter),
            "stage_acc": dict(self.acc),
            "dynamics": self._dynamics_state(),
            "flips_stage": st.tracker.state_dict() if st.tracker else {},
            "flips_run": {f"run.{k}": v for k, v in self.run_ref.items()},
            "results": self.results,
            "best": st.best or {},
            "kd_weights": self._kd_weight_state(st),
            "elapsed": time.time() - self.t0,
            "stage_elapsed": time.time() - self.t_stage,
        }

    def _dynamics_state(self) -> dict:
        """The dynamics accumulators summed over ranks (a collective): rank 0 saves them, and on resume rank 0 takes
        them back while the other ranks start from zero, so the epoch summary's all-reduce counts each once."""
        if self.dyn is None:
            return {}
        st = self.dyn.state_dict()
        if self.world.distributed:
            st = {k: dist_utils.all_reduce_sum(v.to(self.device)).cpu() for k, v in st.items()}
        return st

    def _kd_weight_state(self, st: _StageRun) -> list:
        """The open epoch's per-teacher KD weight sums, summed over ranks (a collective, as ``_dynamics_state``)."""
        meter = getattr(st.task, "weight_meter", None)
        return meter.state_dict(dist_utils.all_reduce_sum) if meter is not None else []

    def _load_dynamics(self, st: dict) -> None:
        if self.dyn is None or not st:
            return
        if not self.world.is_main:
            st = {k: torch.zeros_like(v) for k, v in st.items()}
        self.dyn.load_state_dict(st)

    def _save(self, tag: str, state: dict) -> None:
        """Rank 0 writes the checkpoint; every rank calls this (``state`` came from the collective ``_state``)."""
        if not self.world.is_main:
            return
        meta = {
            "stage_index": state["stage_index"],
            "epoch": state["epoch"],
            "batch": state["batch"],
            "global_step": state["global_step"],
            "stage_done": state["stage_done"],
            "recipe": self.cfg.recipe,
        }
        save_checkpoint(self.ckpt_dir, tag, self.model, state, meta)

    # ---------------------------------------------------------------------------------------------------- stages
    def run_stages(self, state: dict | None) -> None:
        start = 0
        if state is not None:
            self.results = list(state["results"])
            self.global_step = state["global_step"]
            start = state["stage_index"] + (1 if state["stage_done"] else 0)
            if state["stage_done"]:
                state = None
        for i in range(start, len(self.cfg.stages)):
            self._run_stage(i, state)
            state = None

    def _init_stage(self, i: int, stage: StageConfig) -> None:
        init = stage.init
        if i == 0 and init in ("previous", "scratch"):
            return  # the model was just built from the run's seed
        if init == "previous":
            if stage.init_from == "best":  # every weight and buffer of the previous stage's best epoch
                dist_utils.barrier()  # rank 0 wrote it
                best = load_best(self.run_dir, self.cfg, i - 1, self.model, self.device)
                self.console.print(
                    f"Stage {i + 1} starts from the best epoch of stage {i} ({best['epoch'] + 1}, val top-1 "
                    f"{100 * best['val_top1']:.2f}%)"
                )
            return  # init_from="last": the model object carries every latent weight of the previous stage
        if init == "scratch":
            torch.manual_seed(self.cfg.seed + i)
            fresh = build_model(self.cfg).to(self.device)
            self.model.load_state_dict(fresh.state_dict())
            return
        load_weights(self.model, init, strict=True)

    def _run_stage(self, i: int, state: dict | None) -> None:
        st = self._start_stage(i, state)
        for epoch in range(st.start_epoch, st.stage.epochs):
            self._run_epoch(st, epoch)
            self._end_epoch(st, epoch)
        self._finish_stage(st, time.time() - self.t_stage)

    def _start_stage(self, i: int, state: dict | None) -> _StageRun:
        """Set the model up for stage ``i`` and build its optimizer, trackers and task (``state``: resume inside it)."""
        stage, model = self.cfg.stages[i], self.model
        if state is None:
            self._init_stage(i, stage)
        set_binarization(model, activations=stage.binarize_activations, weights=stage.binarize_weights)
        opt, groups = build_optimizer(model, stage.optim)
        tracker = FlipTracker.for_model(model) if self.cfg.track_flips and _binary(model) else None
        self.dyn = DynamicsTracker(model) if self.cfg.track_dynamics and _binary(model) else None
        n = len(self.data.train)
        st = _StageRun(
            i, stage, opt, tracker, n, partial(set_lr, opt, stage.schedule, steps_per_epoch=n, epochs=stage.epochs)
        )
        # stage accumulators: sum of per-step FF, steps, step-weighted per-layer FF (for the stage averages)
        self.acc = {"ff": 0.0, "steps": 0, "layers": {}}
        self.t_stage = time.time()
        if state is not None:
            self._resume_stage(st, state)
        else:
            self.console.print(
                f"[bold]Stage {i + 1}/{len(self.cfg.stages)} '{stage.name}'[/]: binarized "
                f"{_stage_label(stage)}; {stage.optim.name} lr {stage.optim.lr:g}; "
                f"{stage.epochs} epochs x {n} steps; groups: " + "; ".join(groups)
            )
        st.task = build_task(
            stage, self.data, self.device, num_classes=self.cfg.model.num_classes, modules=self.teacher_modules
        )
        st.augment = build_augment(self.cfg.data, self.data)
        if state is not None and getattr(st.task, "weight_meter", None) is not None:
            st.task.weight_meter.load_state_dict(state.get("kd_weights"), self.device, zero=not self.world.is_main)
        return st

    def _resume_stage(self, st: _StageRun, state: dict) -> None:
        st.opt.load_state_dict(state["optimizer"])
        st.meter = EpochMeter(**state["meter"])
        self.acc = dict(state["stage_acc"])
        st.start_epoch, st.skip, st.step = state["epoch"], state["batch"], state["stage_step"]
        st.best = state.get("best") or None
        if st.tracker is not None:
            st.tracker.load_state_dict(state["flips_stage"])
        self._load_dynamics(state.get("dynamics") or {})
        self.t_stage -= state.get("stage_elapsed", 0.0)

    def _run_epoch(self, st: _StageRun, epoch: int) -> None:
        """Train one epoch step by step: log each step, checkpoint when due, stop on Ctrl-C (on every rank)."""
        stage = st.stage
        if stage.temperature is not None:
            set_temperature(self.model, _temperature(stage, epoch))
        # a distinct order per (stage, epoch), the same on every rank
        self.data.train.set_epoch(1000 * st.index + epoch)
        if hasattr(st.task, "set_epoch"):
            st.task.set_epoch(epoch)  # BNext's assistant teachers switch by epoch
        st.batch = st.skip
        progress = _progress(self.console, enabled=self.world.is_main)
        nan = float("nan")
        bar = progress.add_task(
            f"{stage.name} {epoch + 1}/{stage.epochs}",
            total=st.steps_per_epoch,
            completed=st.skip,
            loss=nan,
            acc=nan,
            ff=nan,
        )
        interrupted = False
        with progress:
            for rec in self._steps(st, epoch):
                self._record_step(st, epoch, rec)
                progress.update(bar, advance=1, loss=rec.loss, acc=rec.acc, ff=rec.ff_ratio)
                # the stop flag was OR-ed over ranks: every rank stops at this same step
                interrupted = rec.interrupted
                if interrupted or (self.cfg.checkpoint_every and self.global_step % self.cfg.checkpoint_every == 0):
                    self._save("last", self._state(st, epoch, st.batch))
                if interrupted:
                    break
        st.skip = 0
        if interrupted:
            raise RunInterrupted(f"interrupted; resume with: onebit train --resume {self.run_dir}")

    def _steps(self, st: _StageRun, epoch: int):
        """The step records of ``epoch`` (its batches after ``st.skip``, augmented per (seed, stage, epoch, batch))."""
        key = (self.cfg.seed, st.index, epoch)
        batches = _augmented(
            self.data.train.iterate(skip=st.skip), st.augment, self.device, key, st.skip, self.world.rank
        )
        return train_steps(
            self.train_model,
            st.task,
            batches,
            st.opt,
            device=self.device,
            lr_for_step=st.lr_for_step,
            start_step=st.step,
            meter=st.meter,
            flips=st.tracker,
            grad_clip=st.stage.grad_clip,
            dynamics=self.dyn,
            amp=self.cfg.amp,
            stop=self.flag,
        )

    def _record_step(self, st: _StageRun, epoch: int, rec: StepRecord) -> None:
        """Count the step and write its ``step`` record every ``log_every`` global steps."""
        st.batch += 1
        st.step = rec.step
        self.global_step += 1
        if rec.ff_ratio == rec.ff_ratio:
            self.acc["ff"] += rec.ff_ratio
        self.acc["steps"] += 1
        if self.global_step % max(self.cfg.log_every, 1) == 0:
            extra = {"ff_layers": st.tracker.last_layer_ratios()} if self.cfg.layer_ff_per_step and st.tracker else {}
            head = {"type": "step", "stage": st.stage.name, "stage_index": st.index, "epoch": epoch}
            self.metrics.write({**head, "global_step": self.global_step, **rec.values(), **extra})

    def _end_epoch(self, st: _StageRun, epoch: int) -> None:
        """Evaluate, write the ``epoch`` record, print its line and checkpoint the start of the next epoch."""
        if self.world.distributed:  # without SyncBN each rank's BN statistics drifted apart: take rank 0's
            dist_utils.broadcast_buffers(self.model)
        val = evaluate(self.model, self.data.val, self.device)
        rec = self._epoch_record(st, epoch, val)
        self.metrics.write(rec)
        self.console.print(
            f"  {st.stage.name} epoch {epoch + 1}/{st.stage.epochs}: loss {rec['train_loss']:.4f}  "
            f"train {100 * rec['train_acc']:.2f}%  val {100 * val['val_top1']:.2f}%  "
            f"FF {rec['ff_ratio']:.2e}"
        )
        st.meter = EpochMeter()
        self._update_best(st, epoch, val)
        state = self._state(st, epoch + 1, 0)
        if epoch + 1 in self.cfg.keep_epochs and epoch + 1 < st.stage.epochs:
            self._save(f"stage{st.index + 1}_{st.stage.name}_epoch{epoch + 1}", state)
        self._save("last", state)

    def _update_best(self, st: _StageRun, epoch: int, val: dict) -> None:
        """Keep the stage's best epoch by validation top-1 (a tie keeps the earlier) and write its checkpoints
        (``stage<i>_<name>_best``, and ``best`` in the last stage) before the resume point that records it."""
        if st.best and not val["val_top1"] > st.best["val_top1"]:
            return
        st.best = {"epoch": epoch, "global_step": self.global_step, **val}
        if self.world.is_main:
            save_best(self.run_dir, self.cfg, st.index, self.model, st.best)

    def _epoch_record(self, st: _StageRun, epoch: int, val: dict) -> dict[str, Any]:
        task, tracker, meter = st.task, st.tracker, st.meter
        rec = {"type": "epoch", "stage": st.stage.name, "stage_index": st.index, "epoch": epoch}
        rec.update({"global_step": self.global_step, "epoch_steps": meter.steps, **meter.averages(), **val})
        if st.stage.temperature is not None:
            rec["temperature"] = _temperature(st.stage, epoch)  # progressive binarization (BNext Fig. 8)
        weights = getattr(task, "weight_meter", None)
        if weights is not None:  # mean KD weight per teacher over the epoch (the gap ensemble's alpha)
            rec["kd_weights"] = weights.pop(dist_utils.all_reduce_sum)
        if getattr(task, "teachers", None):  # which teachers distilled this epoch (BNext's assistants switch)
            rec["teachers"] = [getattr(t, "name", None) or str(t) for t in task.teachers]
            if getattr(task, "active_assistant", None):
                rec["active_assistant"] = task.active_assistant
        if tracker is not None:
            rec.update(tracker.c2i())
            rec["ff_layers"] = tracker.pop_layer_ratios()
            layers = self.acc["layers"]
            for k, v in rec["ff_layers"].items():  # step-weighted sums for the stage average
                layers[k] = layers.get(k, 0.0) + v * rec["epoch_steps"]
        if self.dyn is not None:
            rec["dyn"] = self.dyn.epoch_summary()
        return rec

    def _finish_stage(self, st: _StageRun, elapsed: float) -> None:
        """Write the stage's result (``stage`` record, results list) and its checkpoint."""
        res = self._stage_result(st, elapsed)
        tag = RunDir.stage_tag(st.index, st.stage.name)
        res["checkpoint"] = str(self.ckpt_dir / tag)
        self.results.append(res)
        st.meter = EpochMeter()  # a finished stage has no open epoch
        state = self._state(st, st.stage.epochs, 0, done=True)
        self._save(tag, state)
        self.metrics.write({"type": "stage", "global_step": self.global_step, **res})
        self._save("last", state)

    def _stage_result(self, st: _StageRun, elapsed: float) -> dict[str, Any]:
        steps, stage = max(self.acc["steps"], 1), st.stage
        val = evaluate(self.model, self.data.val, self.device)
        res = {
            "name": stage.name,
            "index": st.index,
            "binarized": _stage_label(stage),
            "epochs": stage.epochs,
            "val_top1": val["val_top1"],
            "val_top5": val["val_top5"],
            "val_loss": val["val_loss"],
            "best_epoch": (st.best or {}).get("epoch"),  # 0-based, as in metrics.jsonl
            "best_val_top1": (st.best or {}).get("val_top1"),
            "ff_ratio": self.acc["ff"] / steps,
            "steps": self.acc["steps"],
            "time_s": elapsed,
            "ff_layers": {k: v / steps for k, v in self.acc["layers"].items()},
            "c2i": float("nan"),
            "c2i_changed": float("nan"),
            "c2i_run": float("nan"),
            "c2i_changed_run": float("nan"),
        }
        if stage.teachers:  # spec, architecture, parameters, accuracy of each (onebit.train.task)
            res["teachers"] = teacher_records(st.task)
        if self.dyn is not None:
            res["dyn_stage"] = self.dyn.stage_summary()
            self.dyn.close()
        if st.tracker is not None:
            res.update(st.tracker.c2i())
            run_c2i = st.tracker.c2i(self.run_ref)
            res["c2i_run"], res["c2i_changed_run"] = run_c2i["c2i"], run_c2i["c2i_changed"]
        return res

    # ------------------------------------------------------------------------------------------------------- end
    def finish(self, elapsed: float) -> dict[str, Any]:
        summary = {
            "recipe": self.cfg.recipe,
            "run_dir": str(self.run_dir),
            "model": self.cfg.model.name,
            "data": self.data.description,
            "status": "completed",
            "time_s": elapsed,
            "stages": self.results,
            "final": self.results[-1] if self.results else {},
        }
        summary["complexity"] = _complexity(self.model, self.data)
        if self.cfg.plots:
            summary["plots"] = [str(p) for p in plot_run(self.run_dir, read_metrics(RunDir(self.run_dir).metrics))]
        write_summary(self.run_dir, summary)
        self.console.print(stage_table(summary))
        self.console.print(f"Run directory: [bold]{self.run_dir}[/]")
        return summary


def _temperature(stage: StageConfig, epoch: int) -> float:
    """The progressive-binarization temperature of ``epoch``: T = temperature * temperature_decay**epoch."""
    return stage.temperature * stage.temperature_decay**epoch


def build_augment(cfg, data: DataBundle):
    """The batch augmentation of ``cfg`` (``None`` when every option is off)."""
    if cfg.train_augment == "none" and not cfg.randaugment and not cfg.mixup and not cfg.cutmix:
        return None
    return build_train_augment(
        cfg.train_augment,
        cfg.image_size,
        num_classes=data.num_classes,
        randaugment=cfg.randaugment,
        randaugment_m=cfg.randaugment_m,
        randaugment_mstd=cfg.randaugment_mstd,
        randaugment_n=cfg.randaugment_n,
        mixup=cfg.mixup,
        cutmix=cfg.cutmix,
        mean=data.mean,
        std=data.std,
    )


def _augmented(batches, augment, device: torch.device, key: tuple[int, int, int], skip: int, rank: int = 0):
    """Apply ``augment`` on the device with a generator seeded per (seed, stage, epoch, batch, rank), so a resumed
    epoch draws exactly the augmentations the uninterrupted one drew for the same batches. Each rank draws its own
    (rank 0 the single-process draws): the ranks' shares of a batch are augmented independently."""
    if augment is None:
        yield from batches
        return
    seed, stage, epoch = key
    for b, (x, y) in enumerate(batches, start=skip):
        s = ((seed * 1_000_003 + stage) * 100_003 + epoch) * 100_003 + b
        if rank:
            s = (s * 1_000_003 + rank) % (2**63)
        g = torch.Generator().manual_seed(s)
        yield augment(x.to(device), y.to(device), g)


def _complexity(model: nn.Module, data: DataBundle) -> dict[str, Any]:
    size = (data.in_chans, data.image_size, data.image_size)
    rep = complexity(model, size)
    return {
        "input_size": list(size),
        "param_mb": rep.mb,
        "bops": rep.bops,
        "flops": rep.flops,
        "ops": rep.ops,
        "n_binary": rep.n_binary,
        "n_real": rep.n_real,
    }


def stage_table(summary: dict[str, Any]) -> Table:
    """The per-stage result table printed at the end of a run."""
    t = Table(title=f"{summary['recipe']} — {summary['model']} on {summary['data']}")
    cols = ("stage", "binarized", "epochs", "val top-1", "best (epoch)", "FF ratio", "C2I (stage)", "C2I (run)", "time")
    for col in cols:
        t.add_column(col, justify="right" if col not in ("stage", "binarized") else "left")
    for s in summary["stages"]:
        t.add_row(
            s["name"],
            s["binarized"],
            str(s["epochs"]),
            f"{100 * s['val_top1']:.2f}%",
            _best_cell(s),
            f"{s['ff_ratio']:.2e}",
            f"{s['c2i']:.4f}",
            f"{s['c2i_run']:.4f}",
            f"{s['time_s']:.1f}s",
        )
    return t


def _best_cell(s: dict[str, Any]) -> str:
    if s.get("best_val_top1") is None or s.get("best_epoch") is None:
        return "-"
    return f"{100 * s['best_val_top1']:.2f}% ({s['best_epoch'] + 1})"


def _progress(console: Console, enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} FF {task.fields[ff]:.1e}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )
