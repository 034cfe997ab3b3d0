"""The run directory's life cycle: claiming it for a new run or a resume (one writer at a time, under
:class:`onebit.checkpoint.RunLock`), recording the run once data and model exist, abandoning a start that failed
before training, loading and checking the resume point, and the stages' best-epoch checkpoints
(:func:`save_best`, :func:`load_best`).

Every crash point leaves either nothing of a run (a directory ``--out`` reuses) or a resumable run: see
:meth:`RunClaim.record`. Only rank 0 of a torchrun job claims and writes; the other ranks get its decision.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from onebit.checkpoint import (
    CheckpointError,
    RunDir,
    RunDirError,
    RunLock,
    check_optimizer_state,
    load_checkpoint,
    save_checkpoint,
)
from onebit.config import RunConfig, save_json
from onebit.report import MetricsWriter, crash_point
from onebit.train.distributed import World, broadcast_object
from onebit.train.optim import build_optimizer

__all__ = ["RunClaim", "claim_run_dir", "load_best", "load_resume_point", "read_resume", "save_best"]


def read_resume(resume: str | Path) -> RunConfig:
    """The config of the run directory ``resume`` (read-only, so every rank may call it)."""
    rd = RunDir(resume)
    if not rd.path.is_dir():
        raise RunDirError(f"cannot resume {rd}: no such directory")
    if not rd.status_file.exists():
        raise RunDirError(
            f"cannot resume {rd}: not a onebit run directory (no run.json: no run was recorded here, or its start "
            f"was interrupted before it was; start a new run with --out {rd})"
        )
    try:
        rd.read_status()
    except ValueError as e:
        raise RunDirError(f"cannot resume {rd}: {e}") from None
    if not rd.config.exists():
        raise RunDirError(f"cannot resume {rd}: not a onebit run directory (config.json is missing)")
    return rd.read_config()


@dataclass
class RunClaim:
    """The run directory this process writes: its path and, on rank 0, the one-writer lock held for the whole run.

    ``new``: this invocation starts the run (``--out``); ``created``: the directories it created for it (deepest
    first), removed again if the run is abandoned before it trained.
    """

    path: Path
    new: bool
    created: list[Path] = dataclasses.field(default_factory=list)
    lock: RunLock | None = None

    def record(self, cfg: RunConfig) -> None:
        """Make the directory a run: ``config.json``, then ``run.json`` (status ``created``); both atomic. A crash
        between them leaves an interrupted start that ``--out`` reuses."""
        rd = RunDir(self.path)
        save_json(cfg, rd.config)
        crash_point("run-dir-config")
        rd.write_status("created")
        crash_point("run-dir-created")

    def abandon(self, console: Console) -> None:
        """Undo a new run that stopped before training (a user mistake found while building data or model): remove
        the directory if this invocation created it, else the run's files (a directory that was there stays)."""
        rd = RunDir(self.path)
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            rd.remove_run_files()
            rd.remove_stale_temporaries()
        self.release()
        for d in self.created[1:]:  # parents made for it, if nothing else was put there meanwhile
            try:
                d.rmdir()
            except OSError:
                break
        what = "removed" if self.created else "its run files were removed"
        console.print(f"[dim]{self.path}: the run stopped before training began; {what}[/]")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _lock_and_clean(rd: RunDir, advice: str, console: Console) -> RunLock:
    """Take the run's lock, then remove what interrupted writes left (only the lock holder may)."""
    lock = rd.lock(advice)
    try:
        stale = rd.remove_stale_temporaries()
    except BaseException:
        lock.release()
        raise
    if stale:
        console.print(f"{rd}: removed {len(stale)} stale temporary file(s) of an interrupted write: {', '.join(stale)}")
    return lock


def _refuse_a_run(rd: RunDir) -> str | None:
    """Raise if ``rd`` holds a run (or foreign files a run would overwrite); return why it is an interrupted start
    that may be reused, or ``None`` when there is nothing of a run."""
    if not rd.status_file.exists() and not rd.config.exists():
        return None
    try:
        why = rd.interrupted_start()
    except ValueError as e:
        raise RunDirError(f"{rd}: {e}; pick another --out") from None
    if why is not None:
        return why
    if rd.status_file.exists():
        raise RunDirError(f"{rd} already holds a run; resume it with --resume {rd} or pick another --out")
    raise RunDirError(f"{rd} holds a config.json that is not an interrupted onebit start; pick another --out")


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; return the directories it created (deepest first). Raises RunDirError if it cannot."""
    missing, p = [], path
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise RunDirError(f"cannot create run directory {path}: {p} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create run directory {path}: {e.strerror or e}") from None
    return missing


def _new_run_dir(cfg: RunConfig, out_dir: str | Path | None, console: Console) -> RunClaim:
    """Claim a directory for a new run (rank 0): create it, lock it, clean it; reuse an interrupted start. Nothing
    of the run is written yet (:meth:`RunClaim.record` does, once data and model are built)."""
    run_dir = Path(out_dir) if out_dir else Path("runs") / f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    rd = RunDir(run_dir)
    _refuse_a_run(rd)  # fail fast, before anything is created; checked again under the lock
    claim = RunClaim(run_dir, new=True, created=_make_dirs(run_dir))
    try:
        claim.lock = _lock_and_clean(rd, "wait for it or pick another --out", console)
        why = _refuse_a_run(rd)
        if why is not None:
            rd.remove_run_files()
            console.print(f"{rd}: reusing the directory of an interrupted start ({why})")
    except BaseException:
        if claim.created:
            claim.abandon(Console(quiet=True))
        else:
            claim.release()
        raise
    crash_point("run-dir-locked")
    return claim


def _resume_run_dir(resume: str | Path, console: Console) -> RunClaim:
    """Claim the run directory ``resume`` (rank 0): lock it, check it still holds a run, clean it."""
    rd = RunDir(resume)
    lock = _lock_and_clean(rd, "wait for it to end; only one process may write a run", console)
    try:
        read_resume(resume)  # the run may have been abandoned while this process waited for the lock
    except BaseException:
        lock.release()
        raise
    return RunClaim(rd.path, new=False, lock=lock)


def claim_run_dir(cfg: RunConfig, out_dir, resume, world: World, console: Console) -> RunClaim:
    """Rank 0 claims the run directory (creates and locks it, or locks the run it resumes); every rank gets its
    path, or rank 0's error. Only rank 0 holds the lock: the other ranks never write."""
    result: tuple[str, str] = ("", "")
    claim = None
    if world.is_main:
        try:
            claim = _resume_run_dir(resume, console) if resume is not None else _new_run_dir(cfg, out_dir, console)
            result = ("ok", str(claim.path))
        except RunDirError as e:
            result = ("error", str(e))
    status, value = broadcast_object(result)
    if status == "error":
        raise RunDirError(value)
    return claim or RunClaim(Path(value), new=resume is None)


#: What ``state.pt`` of a resume point must hold (see ``_Runner._state``).
_STATE_KEYS = (
    "stage_index",
    "stage_done",
    "epoch",
    "batch",
    "stage_step",
    "global_step",
    "optimizer",
    "rng_torch",
    "meter",
    "stage_acc",
    "flips_stage",
    "flips_run",
    "results",
)


# ------------------------------------------------------------------------------------------------ best checkpoints
def _starts_from_best(cfg: RunConfig, index: int) -> bool:
    """Whether stage ``index`` starts from the best checkpoint of the stage before it."""
    stage = cfg.stages[index]
    return index > 0 and stage.init == "previous" and stage.init_from == "best"


def save_best(run_dir: Path, cfg: RunConfig, index: int, model: nn.Module, best: dict) -> list[Path]:
    """Write ``model`` as the best epoch of stage ``index``: ``checkpoints/stage<i>_<name>_best/`` and, for the last
    stage, ``checkpoints/best/`` (the run's best model), atomically as every checkpoint. ``best``: the epoch's record
    (``epoch`` 0-based as in metrics.jsonl, ``val_top1``, ``global_step`` ...). Its ``state.pt`` holds
    ``{"stage_index", "best"}`` and no optimizer: it is a model to evaluate or to start a stage from, not a resume
    point (the resume point ``last`` records the best so far)."""
    stage = cfg.stages[index]
    state = {"stage_index": index, "best": dict(best)}
    meta = {
        "stage_index": index,
        "stage": stage.name,
        "epoch": best["epoch"] + 1,  # epochs trained, as in the other checkpoints
        "batch": 0,
        "global_step": best["global_step"],
        "stage_done": False,
        "recipe": cfg.recipe,
        "best_epoch": best["epoch"],
        "val_top1": best["val_top1"],
    }
    tags = [RunDir.best_tag(index, stage.name)] + (["best"] if index == len(cfg.stages) - 1 else [])
    return [save_checkpoint(RunDir(run_dir).checkpoints, tag, model, state, meta) for tag in tags]


def _best_path(rd: RunDir, cfg: RunConfig, index: int, why: str) -> Path:
    tag = RunDir.best_tag(index, cfg.stages[index].name)
    path = rd.checkpoint(tag)
    if path is None:
        raise CheckpointError(f"{rd.checkpoints / tag}: missing or incomplete, but {why}")
    return path


def load_best(run_dir: Path, cfg: RunConfig, index: int, model: nn.Module, device) -> dict:
    """Load the best checkpoint of stage ``index`` into ``model`` (every weight and buffer, checked as any
    checkpoint) and return its record (``epoch``, ``val_top1`` ...).

    Raises:
        CheckpointError: the checkpoint is missing, damaged, of another stage or does not fit the model.
    """
    nxt = f"stage {index + 2} '{cfg.stages[index + 1].name}'" if index + 1 < len(cfg.stages) else "the next stage"
    path = _best_path(RunDir(run_dir), cfg, index, f"{nxt} starts from it (init_from='best')")
    state, _ = load_checkpoint(path, model, map_location=device, require=("stage_index", "best"))
    if state["stage_index"] != index or not isinstance(state["best"], dict):
        raise CheckpointError(f"{path / 'state.pt'}: not the best checkpoint of stage {index + 1}")
    return state["best"]


def _check_resume_best(rd: RunDir, last: Path, state: dict, cfg: RunConfig) -> None:
    """The best checkpoint of the resume point's stage exists when the resume point records a best epoch, or when
    the next stage starts from it."""
    i = state["stage_index"]
    best = state.get("best")
    if best:
        where = f"{last / 'state.pt'} records stage {i + 1}'s best epoch {best.get('epoch', 0) + 1} there"
        _best_path(rd, cfg, i, where)
    elif state["stage_done"] and i + 1 < len(cfg.stages) and _starts_from_best(cfg, i + 1):
        _best_path(rd, cfg, i, f"stage {i + 2} '{cfg.stages[i + 1].name}' starts from it (init_from='best')")


def _check_resume_state(last: Path, state: dict, cfg: RunConfig, model: nn.Module) -> None:
    """The training state of checkpoint ``last`` fits this run: its stage exists, its RNG state is one, and its
    optimizer state fits the optimizer the stage builds (groups, parameters, each state tensor's shape and dtype)."""
    where = last / "state.pt"
    i = state["stage_index"]
    if not isinstance(i, int) or not 0 <= i < len(cfg.stages):
        raise CheckpointError(f"{where}: stage_index {i!r}, but the run has {len(cfg.stages)} stages")
    rng = state["rng_torch"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        raise CheckpointError(f"{where}: rng_torch is not a torch RNG state (a uint8 tensor)")
    if not state["stage_done"]:  # a finished stage's optimizer is not used again
        opt, _ = build_optimizer(model, cfg.stages[i].optim)
        names = {id(p): n for n, p in model.named_parameters()}
        check_optimizer_state(opt, state["optimizer"], where, names)


def load_resume_point(
    run_dir: Path, cfg: RunConfig, model: nn.Module, metrics: MetricsWriter, world: World, device, console
):
    """Load ``checkpoints/last`` into ``model`` (every rank), check it fits the run, and cut ``metrics.jsonl`` back
    to it (rank 0). A checkpoint that does not fit raises :class:`CheckpointError` before anything is changed.

    Returns:
        ``(state or None, purge_step)``: the training state (``None``: no checkpoint yet, start over) and the first
        global step TensorBoard must forget.
    """
    rd = RunDir(run_dir)
    last = rd.checkpoint("last")
    if last is None:
        for damaged in (rd.checkpoints / "last", rd.checkpoints / "last.old"):
            if damaged.is_dir():  # checkpoints are renamed into place complete: this one lost files since
                load_checkpoint(damaged, model, map_location=device)  # raises CheckpointError naming the file
        if world.is_main:
            metrics.truncate_after(-1, keep_stage_records=False)
        console.print(f"Resuming {run_dir}: no checkpoint yet, starting from the beginning")
        return None, 0
    state, _ = load_checkpoint(last, model, map_location=device, require=_STATE_KEYS)
    _check_resume_state(last, state, cfg, model)
    _check_resume_best(rd, last, state, cfg)
    if world.is_main:
        metrics.truncate_after(state["global_step"], keep_stage_records=state["stage_done"])
    torch.set_rng_state(state["rng_torch"])
    console.print(
        f"Resuming {run_dir} at stage {state['stage_index'] + 1}, epoch {state['epoch'] + 1}, "
        f"batch {state['batch']} (global step {state['global_step']})"
    )
    return state, state["global_step"] + 1
