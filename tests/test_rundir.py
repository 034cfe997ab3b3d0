"""Run-directory robustness: creation that never leaves a stuck directory, one writer at a time (OS lock), stale
temporaries removed, files created under the user's umask, resume checks of dtypes/shapes/optimizer state, clear
errors for unwritable or mistaken starts, and kill tests (SIGKILL at named points and at random moments) whose
finished runs are bit-identical to an uninterrupted one."""

import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_helpers import comparable_metrics, hidden_files, identical, train_cli, wait_for_step
from safetensors.torch import load_file, save_file

from onebit.checkpoint import (
    CheckpointError,
    RunDir,
    RunDirError,
    check_optimizer_state,
    load_weights,
    save_checkpoint,
    save_weights,
)
from onebit.cli import main as cli_main
from onebit.config import apply_overrides
from onebit.recipes import get_recipe
from onebit.report import atomic_write_text, default_mode, read_metrics, umask
from onebit.train import run

# 4 steps per epoch, 2 epochs per stage, 16 steps in all; a checkpoint every 3 steps and at each epoch's end.
KILL_ARGS = [
    "data.limit_train=128",
    "data.limit_val=64",
    "data.batch_size=32",
    "stages.*.epochs=2",
    "checkpoint_every=3",
    "threads=1",
]
# the smallest run for in-process tests: 1 step per epoch
SMALL = ["data.limit_train=32", "data.limit_val=32", "data.batch_size=32", "stages.*.epochs=1", "threads=1"]


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _cfg(args=SMALL, *extra):
    return apply_overrides(get_recipe("adambnn_digits", smoke=True), list(args) + list(extra))


def _final(run_dir: Path) -> dict:
    return load_file(str(run_dir / "checkpoints/stage2_step2/model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of KILL_ARGS."""
    out = tmp_path_factory.mktemp("ref") / "run"
    p = train_cli("--smoke", *KILL_ARGS, "--out", str(out))
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A completed SMALL run (in process); tests work on copies."""
    out = tmp_path_factory.mktemp("small") / "run"
    run(_cfg(), out_dir=out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _assert_same_as(ref: Path, out: Path) -> None:
    """Bit-identical weights and metrics (every field but times and paths, per-layer FF ratios included)."""
    assert identical(_final(out), _final(ref))
    assert comparable_metrics(out) == comparable_metrics(ref)
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert hidden_files(out) == []  # no lock, no temporary left


# ------------------------------------------------------------------------------------------------------ kill tests
def _crash(out: Path, spec: str | None, log: list[str], delay: float | None = None, at_step: int | None = None):
    """Start (``--out``, when ``out`` holds no run.json) or resume the run in ``out``, and get it killed: by
    ``ONEBIT_CRASH_AT=spec``, or by a SIGKILL ``delay`` seconds after start / after step ``at_step``. Returns the
    exit code (-9 when killed; 0 when the run finished first)."""
    args = ["--resume", str(out)] if (out / "run.json").exists() else ["--smoke", *KILL_ARGS, "--out", str(out)]
    p = train_cli(*args, env={"ONEBIT_CRASH_AT": spec} if spec else None)
    if at_step is not None:  # wait for the step (or the end of the process, which is then not killed)
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 300:
            recs = read_metrics(out / "metrics.jsonl")
            if any(r.get("type") == "step" and r["global_step"] >= at_step for r in recs):
                break
            time.sleep(0.02)
    if delay is not None:
        time.sleep(delay)
    if spec is None and p.poll() is None:
        p.send_signal(signal.SIGKILL)
    text, _ = p.communicate(timeout=600)
    log.append(f"--- {args[0]} crash={spec} delay={delay} step={at_step} -> {p.returncode}\n{text}")
    assert p.returncode in (-signal.SIGKILL, 0), log[-1]
    return p.returncode


def _finish(out: Path, log: list[str]) -> str:
    """Resume (or, for an interrupted start, start again) until the run completes; returns the last log."""
    args = ["--resume", str(out)] if (out / "run.json").exists() else ["--smoke", *KILL_ARGS, "--out", str(out)]
    p = train_cli(*args)
    text, _ = p.communicate(timeout=600)
    log.append(text)
    assert p.returncode == 0, "\n".join(log)
    return text


def test_kills_at_named_points_then_resume_is_bitidentical(reference, tmp_path):
    """Killed between config.json and run.json, before training, inside two checkpoint writes (temporary directory
    complete; previous version moved aside): each time --out or --resume carries on, and the run equals the
    uninterrupted one."""
    out, log = tmp_path / "run", []
    assert _crash(out, "run-dir-config", log) == -signal.SIGKILL
    assert (out / "config.json").exists() and not (out / "run.json").exists()
    p = train_cli("--resume", str(out))  # clear message, nothing touched
    text, _ = p.communicate(timeout=300)
    assert p.returncode == 2 and "start a new run with --out" in text, text
    assert _crash(out, "run-dir-created", log) == -signal.SIGKILL  # --out reuses the interrupted start
    assert "reusing the directory of an interrupted start" in _flat(log[-1])
    assert json.loads((out / "run.json").read_text())["status"] == "created"
    assert _crash(out, "checkpoint-written@2", log) == -signal.SIGKILL  # --resume restarts the created run
    assert "no checkpoint yet, starting from the beginning" in _flat(log[-1])
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert _crash(out, "checkpoint-swapped@3", log) == -signal.SIGKILL
    assert "removed 1 stale temporary" in _flat(log[-1]) and "checkpoints/." in log[-1]
    assert (out / "checkpoints/last.old").is_dir() and not (out / "checkpoints/last").exists()
    text = _finish(out, log)
    assert "stale temporary" in _flat(text) and "Resuming" in text
    _assert_same_as(reference, out)


@pytest.mark.slow
def test_kills_at_many_points_then_resume_is_bitidentical(reference, tmp_path):
    """At least ten kills in one run: every named crash point, atomic writes, and SIGKILLs at random moments (after
    random delays from the start, and at random steps), each followed by --resume or a fresh --out."""
    out, log = tmp_path / "run", []
    rng = random.Random(13)
    plan = [
        ("run-dir-locked", None, None),
        ("atomic-write@1", None, None),  # the lock's .lock.json: a stale .tmp beside it
        ("run-dir-config", None, None),
        (None, rng.uniform(0.2, 4.0), None),  # somewhere in the start: imports, data, claim
        ("run-dir-created", None, None),
        ("checkpoint-written@1", None, None),
        ("atomic-write@2", None, None),  # a resume's metrics.jsonl truncation
        (None, rng.uniform(0.0, 0.3), rng.randint(2, 6)),
        ("checkpoint-swapped@2", None, None),
        (None, rng.uniform(0.0, 0.3), rng.randint(7, 11)),
        ("checkpoint-written@4", None, None),
        (None, rng.uniform(0.0, 0.3), rng.randint(11, 15)),
        ("atomic-write@4", None, None),  # near the end: summary.json
    ]
    kills = 0
    for spec, delay, step in plan:
        kills += _crash(out, spec, log, delay=delay, at_step=step) == -signal.SIGKILL
    assert kills >= 10, "\n".join(log)
    _finish(out, log)
    _assert_same_as(reference, out)


# ---------------------------------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_and_the_first_finishes_untouched(reference, tmp_path):
    out = tmp_path / "run"
    first = train_cli("--smoke", *KILL_ARGS, "--out", str(out))
    wait_for_step(out, 2, first)
    first.send_signal(signal.SIGSTOP)  # keep it holding the lock, mid-run, while the others try
    holder = RunDir(out).lock_holder()
    assert holder and holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    for args in (["--resume", str(out)], ["--smoke", *KILL_ARGS, "--out", str(out)]):
        second = train_cli(*args)
        text, _ = second.communicate(timeout=300)
        assert second.returncode == 2, text
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in text, text
        if args[0] == "--resume":
            assert f"is in use by onebit train (pid {first.pid} on host {socket.gethostname()}, since" in errors[0]
        else:
            assert "already holds a run" in errors[0]
    first.send_signal(signal.SIGCONT)
    log, _ = first.communicate(timeout=600)
    assert first.returncode == 0, log
    _assert_same_as(reference, out)


def test_new_run_refused_while_the_directory_is_locked(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunDir(out).lock():
        code = cli_main(["train", "--smoke", *SMALL, "--out", str(out)])
        assert code == 2
        assert sorted(p.name for p in out.iterdir()) == [".lock", ".lock.json"]  # nothing written by the refused run
    assert list(out.iterdir()) == []


def test_run_lock_names_its_holder_and_a_dead_holder_does_not_block(tmp_path):
    rd = RunDir(tmp_path)
    lock = rd.lock()
    with pytest.raises(RunDirError, match=rf"in use by onebit train \(pid {os.getpid()} on host .*, since .*\); wait"):
        rd.lock()
    lock.release()
    assert list(tmp_path.iterdir()) == []
    # a crashed holder leaves its files behind; the OS released its lock, so the next writer takes it
    rd.lock_file.touch()
    atomic_write_text(rd.lock_info, json.dumps({"program": "onebit train", "pid": 999999, "host": "gone"}))
    lock = rd.lock()
    assert rd.lock_holder()["pid"] == os.getpid()
    lock.release()


def test_lock_is_held_by_a_run_in_process_and_released_after(tmp_path, monkeypatch):
    import onebit.train.recipe as recipe

    out, seen, real = tmp_path / "run", {}, recipe.build_data

    def spy(*args, **kw):
        seen["holder"] = RunDir(out).lock_holder()
        return real(*args, **kw)

    monkeypatch.setattr(recipe, "build_data", spy)
    run(_cfg(), out_dir=out)
    assert seen["holder"]["pid"] == os.getpid()
    assert hidden_files(out) == []


# ----------------------------------------------------------------------------------------------- stale temporaries
def test_stale_temporaries_are_removed_on_resume(small_run, tmp_path, capsys):
    out = _copy(small_run, tmp_path / "run")
    ck = out / "checkpoints"
    (ck / ".last.abcd1234").mkdir()
    (ck / ".last.abcd1234/model.safetensors").write_bytes(b"partial")
    shutil.copytree(ck / "last", ck / "last.old")  # a complete last beside it: the .old is stale too
    (out / ".run.json.x1y2.tmp").write_text("{")
    (out / ".lock").touch()  # a crashed holder's lock file
    run(resume=out)
    assert "removed 3 stale temporary file(s)" in _flat(capsys.readouterr().out)
    assert hidden_files(out) == [] and not (ck / "last.old").exists()


# --------------------------------------------------------------------------------------------------------- modes
@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert umask() == mask and default_mode() == 0o666 & ~mask
        res = run(_cfg(), out_dir=tmp_path / "run")
        w = save_weights(res.model, tmp_path / "w/model.safetensors")
    finally:
        os.umask(old)
    out = tmp_path / "run"
    files = [out / f for f in ("config.json", "run.json", "metrics.jsonl", "summary.json", "summary.md")]
    files += list(out.glob("checkpoints/*/*")) + [w]
    assert len(files) > 8
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    for d in out.glob("checkpoints/*"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~mask, d


def test_umask_is_read_in_a_fresh_process():
    code = "import os; os.umask(0o027); from onebit.report import umask; print(oct(umask()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0o27"


# ------------------------------------------------------------------------------------------------- resume checks
def _rewrite_tensor(path: Path, key: str, fn) -> None:
    sd = load_file(str(path))
    sd[key] = fn(sd[key])
    save_file(sd, str(path))


def _first_float_key(path: Path) -> str:
    return next(k for k, v in load_file(str(path)).items() if v.is_floating_point() and v.ndim == 4)


@pytest.mark.parametrize("dtype", [torch.int32, torch.float16])
def test_resume_refuses_weights_of_another_dtype(small_run, tmp_path, capsys, dtype):
    out = _copy(small_run, tmp_path / "run")
    weights = out / "checkpoints/last/model.safetensors"
    key = _first_float_key(weights)
    _rewrite_tensor(weights, key, lambda t: t.to(dtype))
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=rf"model.safetensors: tensor '{key}' is {name}, expected float32"):
        run(resume=out)
    assert cli_main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"'{key}' is {name}" in err[0]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"  # nothing was changed
    assert hidden_files(out) == []


def test_load_weights_checks_dtype_and_shape(small_run, tmp_path):
    from onebit.models.io import build_model

    model = build_model(_cfg())
    path = small_run / "checkpoints/last/model.safetensors"
    load_weights(model, path)  # the run's own weights fit
    sd, key = load_file(str(path)), _first_float_key(path)
    save_file(dict(sd, **{key: sd[key][:1]}), str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError, match=f"shape mismatch for 1 tensors, first: {key}"):
        load_weights(model, tmp_path / "shape.safetensors")
    save_file(dict(sd, **{key: sd[key].bfloat16()}), str(tmp_path / "dtype.safetensors"))
    with pytest.raises(CheckpointError, match=f"tensor '{key}' is bfloat16, expected float32"):
        load_weights(model, tmp_path / "dtype.safetensors")


def _edit_state(ckpt: Path, fn) -> None:
    state = torch.load(ckpt / "state.pt", weights_only=True)
    fn(state)
    torch.save(state, ckpt / "state.pt")


def _mid_stage_copy(small_run: Path, dst: Path) -> Path:
    """A copy of the SMALL run whose last checkpoint is inside stage 2 (its optimizer state is used on resume)."""
    out = _copy(small_run, dst)
    shutil.rmtree(out / "checkpoints/last")
    shutil.copytree(out / "checkpoints/stage1_step1", out / "checkpoints/last")

    def reopen(s):
        s["stage_index"], s["stage_done"], s["epoch"], s["batch"] = 0, False, 0, 0

    _edit_state(out / "checkpoints/last", reopen)
    return out


def test_resume_refuses_a_state_without_its_optimizer(small_run, tmp_path, capsys):
    out = _copy(small_run, tmp_path / "run")
    _edit_state(out / "checkpoints/last", lambda s: s.pop("optimizer"))
    with pytest.raises(CheckpointError, match=r"state.pt: no 'optimizer' entry \(written by another program or dam"):
        run(resume=out)
    assert cli_main(["train", "--resume", str(out)]) == 2
    assert "no 'optimizer' entry" in capsys.readouterr().err


def test_resume_refuses_optimizer_state_that_does_not_fit(small_run, tmp_path):
    out = _mid_stage_copy(small_run, tmp_path / "run")

    def widen(s):
        st = s["optimizer"]["state"]
        pid = next(i for i, v in st.items() if v["exp_avg"].ndim == 4)
        st[pid]["exp_avg"] = st[pid]["exp_avg"].double()

    _edit_state(out / "checkpoints/last", widen)
    with pytest.raises(CheckpointError, match=r"state.pt: optimizer state 'exp_avg' of parameter '.*' is float64"):
        run(resume=out)
    _edit_state(out / "checkpoints/last", lambda s: s["optimizer"]["param_groups"].pop())
    with pytest.raises(CheckpointError, match="parameter groups"):
        run(resume=out)


def test_check_optimizer_state_on_standard_optimizers():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    for make in (lambda: torch.optim.Adam([p]), lambda: torch.optim.SGD([p], lr=0.1, momentum=0.9)):
        opt = make()
        p.grad = torch.ones_like(p)
        opt.step()
        sd = opt.state_dict()
        check_optimizer_state(make(), sd, "x")
        key = next(k for k in sd["state"][0] if k != "step")
        sd["state"][0][key] = sd["state"][0][key][:1]
        with pytest.raises(CheckpointError, match=rf"x: optimizer state '{key}' of parameter '#0' is float32 \(1, 2\)"):
            check_optimizer_state(make(), sd, "x")
    with pytest.raises(CheckpointError, match="not an optimizer state"):
        check_optimizer_state(torch.optim.SGD([p], lr=0.1), {"state": {}}, "x")


@pytest.mark.parametrize("damage", ["truncated_weights", "garbage_state", "meta", "missing_file"])
def test_resume_with_a_corrupt_checkpoint_is_a_checkpoint_error(small_run, tmp_path, capsys, damage):
    out = _copy(small_run, tmp_path / "run")
    ck = out / "checkpoints/last"
    metrics_before = (out / "metrics.jsonl").read_bytes()
    if damage == "truncated_weights":
        data = (ck / "model.safetensors").read_bytes()
        (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_state":
        (ck / "state.pt").write_bytes(b"not a pickle")
    elif damage == "meta":
        (ck / "meta.json").write_text("{")
    else:
        (ck / "state.pt").unlink()  # checkpoints are renamed into place complete: this one was damaged since
    with pytest.raises(CheckpointError):
        run(resume=out)
    assert cli_main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert (out / "metrics.jsonl").read_bytes() == metrics_before  # nothing changed before the check


# --------------------------------------------------------------------------------------- unwritable and mistakes
def test_out_under_a_regular_file_is_one_error_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file/run", Path("/etc/passwd/run")):
        assert cli_main(["train", "--smoke", *SMALL, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot create run directory" in err and "not a directory" in err


def test_out_in_a_directory_that_refuses_writes_is_one_error_line(tmp_path, capsys):
    # root ignores directory modes, so as root take a directory the kernel refuses to everyone (sysfs)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    parent = Path("/sys") if as_root else tmp_path / "ro"
    if not as_root:
        parent.mkdir()
        parent.chmod(0o500)
    try:
        assert cli_main(["train", "--smoke", *SMALL, "--out", str(parent / "onebit-run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot create run directory" in err
        assert "ermission denied" in err or "not permitted" in err
    finally:
        if not as_root:
            parent.chmod(0o700)


def test_a_mistake_before_training_leaves_nothing_behind(tmp_path, capsys):
    bad = ["data.name=cifar10", "data.root=/nonexistent"]
    out = tmp_path / "a/b/run"
    assert cli_main(["train", "--smoke", *SMALL, *bad, "--out", str(out)]) == 2
    assert not (tmp_path / "a").exists()  # the directories this invocation created are gone
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["train", "--smoke", *SMALL, *bad, "--out", str(empty)]) == 2
    assert list(empty.iterdir()) == []  # a directory that was there is left as it was
    capsys.readouterr()
    assert cli_main(["train", "--smoke", *SMALL, "--out", str(out)]) == 0
    assert cli_main(["train", "--smoke", *SMALL, "--out", str(empty)]) == 0
    assert RunDir(out).read_status()["status"] == RunDir(empty).read_status()["status"] == "completed"


def test_out_reuses_an_interrupted_start_only(small_run, tmp_path, capsys):
    # config.json without run.json (killed between the two), and run.json still 'created': reused
    for name, keep in (("cfg_only", ["config.json"]), ("created", ["config.json", "run.json"])):
        d = tmp_path / name
        d.mkdir()
        for f in keep:
            shutil.copy(small_run / f, d / f)
        if name == "created":
            RunDir(d).write_status("created")
        run(_cfg(), out_dir=d)
        assert "reusing the directory of an interrupted start" in _flat(capsys.readouterr().out)
        assert RunDir(d).read_status()["status"] == "completed"
    # a config.json that is not onebit's is left alone
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"lr": 1}')
    with pytest.raises(RunDirError, match="not an interrupted onebit start"):
        run(_cfg(), out_dir=foreign)
    assert [p.name for p in foreign.iterdir()] == ["config.json"]


def test_checkpoint_temp_dir_removed_when_a_write_fails(tmp_path):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(tmp_path, "last", model, {"x": lambda: 0}, {})
    assert list(tmp_path.iterdir()) == []
