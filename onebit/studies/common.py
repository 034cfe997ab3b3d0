"""What every study shares: variants, the study record, the registry :data:`STUDIES`, running (with reuse of
finished runs) and the aggregates and plots the reports are built from. ``onebit study NAME``.

Each study is a list of variants (config overrides of one base config) run for several seeds with
:func:`onebit.train.run`; results are aggregated as mean ± std and written as a markdown report with plots
(``docs/studies/<name>.md``). Runs live under ``runs/studies/<name>/<variant>/seed<k>`` and a finished run is reused,
so an interrupted study continues where it stopped. The findings sentences of each report are computed from the
measured numbers; whatever trend appears is reported.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from onebit.checkpoint import RunDir
from onebit.config import DataConfig, ModelConfig, OptimConfig, RunConfig, apply_overrides
from onebit.recipes._strategies import one_step
from onebit.report import atomic_write_text, read_metrics
from onebit.train import TrainingDiverged, run

__all__ = [
    "STUDIES",
    "Study",
    "Variant",
    "base_config",
    "by_variant",
    "diverged_count",
    "epoch_records",
    "first_epoch_dyn",
    "fmt",
    "mean_std",
    "pyplot",
    "register_studies",
    "run_one",
    "run_study",
    "slug",
    "stat",
]


@dataclass
class Variant:
    """One configuration of a study: a label, a config factory and what to plot it against.

    ``make`` is called with the keyword arguments the study's ``prepare`` returned for the seed (none for a study
    without ``prepare``), e.g. the run directories of the teachers trained for that seed.
    """

    label: str
    make: Callable[[], RunConfig]
    x: float | None = None
    group: str = ""


#: every study by name; :func:`register_studies` adds to it (each study module on import)
STUDIES: dict[str, Study] = {}


def register_studies(*studies: Study) -> None:
    """Add studies to :data:`STUDIES` (a name may be registered once)."""
    for s in studies:
        if s.name in STUDIES:
            raise ValueError(f"study {s.name!r} is registered twice")
        STUDIES[s.name] = s


@dataclass
class Study:
    name: str
    title: str
    claim: str
    variants: Callable[[int], list[Variant]]
    report: Callable[[Study, list[dict[str, Any]], Path], list[str]]
    epochs: int = 6
    extra: dict[str, Any] = field(default_factory=dict)
    #: per-seed setup run before the variants, ``prepare(root, seed, epochs, overrides, console) -> kwargs`` for
    #: every variant's ``make`` (the KD study trains its teachers here); its runs live under ``root`` too
    prepare: Callable[[Path, int, int, list[str], Console], dict[str, str]] | None = None


def base_config(epochs: int, width: int = 16, model: str = "reactnet_digits", **model_kw: Any) -> RunConfig:
    """The common base: a narrow model on the digits at 16x16, batch 64, Adam lr 1e-3, one-step, one thread
    (small models run faster single-threaded, and two studies can share a 2-core machine)."""
    kw = {"width": width, **model_kw}
    return RunConfig(
        recipe="study",
        threads=1,
        model=ModelConfig(name=model, num_classes=10, kwargs=kw),
        data=DataConfig(name="digits", image_size=16, batch_size=64),
        stages=one_step(epochs, OptimConfig(name="adam", lr=1e-3)),
        log_every=5,
    )


# --------------------------------------------------------------------------------------------------------- running
def _diverged_summary(cfg: RunConfig, message: str) -> dict[str, Any]:
    nan = float("nan")
    keys = ("val_top1", "ff_ratio", "c2i", "c2i_changed", "c2i_run", "c2i_changed_run", "time_s")
    return {
        "status": "diverged",
        "message": message,
        "stages": [{"name": s.name, **dict.fromkeys(keys, nan)} for s in cfg.stages],
    }


def run_one(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """Run (or reuse) one study run; a diverged run is a result too (NaN metrics, status "diverged")."""
    rd = RunDir(out)
    try:
        status = rd.read_status()
    except ValueError:
        status = {}
    if status.get("status") == "completed":
        return rd.read_summary()  # reuse: studies resume where they stopped
    if status.get("status") == "diverged":
        return _diverged_summary(cfg, status.get("message", ""))
    if out.exists():
        shutil.rmtree(out)  # an unfinished run of a study is redone from scratch (cheap, and simpler to trust)
    quiet = Console(file=io.StringIO(), width=120)
    try:
        return run(cfg, out_dir=out, console=quiet).summary
    except TrainingDiverged as e:
        return _diverged_summary(cfg, str(e))


def epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of a run's ``metrics.jsonl``."""
    return [r for r in read_metrics(RunDir(run_dir).metrics) if r.get("type") == "epoch"]


def run_study(
    name: str,
    seeds: int = 3,
    root: str | Path = "runs/studies",
    docs: str | Path = "docs/studies",
    console: Console | None = None,
    epochs: int | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Run every variant of study ``name`` for ``seeds`` seeds and write ``<docs>/<name>.md``; returns its path.

    ``overrides`` (dotted ``key=value``, see :func:`onebit.config.apply_overrides`) are applied to every run of the
    study, teachers included; the tests use them to shrink the data.
    """
    console = console or Console()
    study = STUDIES[name] if name in STUDIES else _unknown(name)
    ep = epochs or study.epochs
    root, docs = Path(root) / name, Path(docs)
    results = []
    t0 = time.time()
    variants = study.variants(ep)
    overrides = list(overrides or [])
    contexts: dict[int, dict[str, str]] = {}
    if study.prepare is not None:
        for seed in range(seeds):
            contexts[seed] = study.prepare(root, seed, ep, overrides, console)
    total = len(variants) * seeds
    k = 0
    for v in variants:
        for seed in range(seeds):
            k += 1
            cfg = apply_overrides(v.make(**contexts.get(seed, {})), overrides)
            cfg.seed = seed
            cfg.recipe = f"study-{name}"
            out = root / slug(v.label) / f"seed{seed}"
            t = time.time()
            summary = run_one(cfg, out)
            last = summary["stages"][-1]
            result = "diverged" if summary.get("status") == "diverged" else f"val top-1 {100 * last['val_top1']:.2f}%"
            console.print(f"[{k}/{total}] {name} {v.label} seed {seed}: {result} ({time.time() - t:.0f} s)")
            results.append(
                {
                    "variant": v.label,
                    "group": v.group,
                    "x": v.x,
                    "seed": seed,
                    "run_dir": str(out),
                    "summary": summary,
                    "context": contexts.get(seed, {}),
                }
            )
    elapsed = time.time() - t0
    run_minutes = sum(r["summary"].get("time_s", 0.0) or 0.0 for r in results) / 60
    docs.mkdir(parents=True, exist_ok=True)
    fig_dir = docs / name
    fig_dir.mkdir(parents=True, exist_ok=True)
    body = study.report(study, results, fig_dir)
    base = apply_overrides(variants[0].make(**contexts.get(0, {})), overrides)
    flags = ([f"--seeds {seeds}"] if seeds != 3 else []) + ([f"--epochs {ep}"] if ep != study.epochs else [])
    command = " ".join([f"onebit study {name}", *flags, *(f"--override {o}" for o in overrides)])
    data = next((r["summary"]["data"] for r in results if r["summary"].get("data")), "digits")
    header = [
        f"# Study `{name}`: {study.title}",
        "",
        f"**Paper claim.** {study.claim}",
        "",
        f"**Setup.** `{command}` — {len(variants)} variants × {seeds} seeds on the bundled "
        f"{data.replace('16x16', '16×16')}, {ep} epochs per stage, batch {base.data.batch_size}; base model "
        f"`{base.model.name}` {base.model.kwargs}. Mean ± std over seeds. "
        f"Compute: {len(results)} runs, {run_minutes:.1f} min of training in total (the sum of the runs' wall "
        f"times on this 2-core machine, shared with other jobs, so they overstate the compute; this invocation "
        f"took {elapsed / 60:.1f} min, "
        "finished runs being reused).",
        "",
    ]
    path = docs / f"{name}.md"
    atomic_write_text(path, "\n".join(header + body) + "\n")
    atomic_write_text(fig_dir / "results.json", json.dumps(_compact(results), indent=1, default=float) + "\n")
    console.print(f"Report: [bold]{path}[/]")
    return path


def _unknown(name: str):
    close = difflib.get_close_matches(name, STUDIES, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown study {name!r}{hint} (known: {', '.join(sorted(STUDIES))})")


def slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in s)


def _compact(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("name", "val_top1", "ff_ratio", "c2i", "c2i_run", "c2i_changed_run", "time_s")
    return [
        {
            **{k: r[k] for k in ("variant", "x", "seed", "run_dir")},
            **({"context": r["context"]} if r.get("context") else {}),
            "stages": [{k: s.get(k) for k in keep} for s in r["summary"]["stages"]],
        }
        for r in results
    ]


# ------------------------------------------------------------------------------------------------------ aggregates
def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def by_variant(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        out.setdefault(r["variant"], []).append(r)
    return out


def stat(rs: list[dict[str, Any]], key: str, stage: int = -1, scale: float = 1.0) -> tuple[float, float]:
    return mean_std([scale * r["summary"]["stages"][stage][key] for r in rs])


def fmt(ms: tuple[float, float], spec: str = ".2f") -> str:
    return "diverged" if math.isnan(ms[0]) else f"{ms[0]:{spec}} ± {ms[1]:{spec}}"


def diverged_count(rs: list[dict[str, Any]]) -> str:
    n = sum(r["summary"].get("status") == "diverged" for r in rs)
    return f"{n}/{len(rs)}"


def first_epoch_dyn(r: dict[str, Any], key: str) -> float:
    recs = epoch_records(Path(r["run_dir"]))
    return recs[0]["dyn"][key] if recs and "dyn" in recs[0] else float("nan")


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (imported on first use: plots are optional work)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
