"""Helpers shared by the tests that drive `onebit train` in a subprocess and interrupt it."""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from onebit.report import read_metrics


def train_cli(*args, env: dict | None = None):
    """`python -m onebit train ARGS` with one thread and unbuffered output, stdout and stderr merged; ``env``: extra
    environment variables (e.g. ``ONEBIT_CRASH_AT``, see onebit.report.crash_point)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "onebit", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_step(run_dir: Path, step: int, proc, timeout: float = 300) -> None:
    """Block until the run's metrics.jsonl holds a step record at or past ``step``."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        recs = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
        if any(r.get("type") == "step" and r["global_step"] >= step for r in recs):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}: {proc.communicate()[0]}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the run")


def identical(a: dict, b: dict) -> bool:
    """Two state dicts with the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


#: metrics/summary fields that differ between two runs of the same config (wall time, the run's own path)
UNSTABLE_KEYS = frozenset({"time_s", "checkpoint", "run_dir", "elapsed"})


def comparable_metrics(run_dir: Path, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The run's metrics records as canonical JSON strings without the fields of UNSTABLE_KEYS and ``ignore``
    (NaN compares equal as text)."""
    import json

    drop = UNSTABLE_KEYS | ignore

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in drop}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return [json.dumps(strip(r), sort_keys=True) for r in read_metrics(run_dir / "metrics.jsonl")]


def hidden_files(run_dir: Path) -> list[str]:
    """Paths under ``run_dir`` whose name starts with a dot (locks, temporaries)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name.startswith("."))
