"""Several runs of one recipe (seeds): find their run directories, read their results, aggregate them.

The aggregate is the one of BNext Table 10 (five runs of BNext-18 on CIFAR): per stage, and for the final model,
the validation top-1 / top-5 over the runs as mean ± sample standard deviation (n − 1 in the denominator, the
statistic Table 10 prints), with n, minimum and maximum. Only complete runs count: a run directory without
``summary.json``, or whose ``run.json`` does not say ``completed``, is listed with the reason and left out. Runs
whose configs differ in anything but the seed are not replicates; :func:`summarize_runs` names the differing keys
(or refuses, ``strict=True``).

Also here: what ``onebit train --seeds N`` does with ``OUT/seed<k>/`` (:func:`plan_seed_runs`), and the input size
a model or run directory was trained at (:func:`recorded_input_size`), both read from the directories alone.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from onebit.checkpoint import RunDir, RunDirError
from onebit.config import RunConfig, to_dict
from onebit.models.io import input_channels

__all__ = [
    "METRICS",
    "RunRecord",
    "RunsReport",
    "SeedPlan",
    "aggregate_rows",
    "config_differences",
    "find_run_dirs",
    "format_markdown",
    "mean_std_text",
    "plan_seed_runs",
    "read_run",
    "recorded_input_size",
    "seed_configs",
    "stats",
    "summarize_runs",
]

#: The per-stage results aggregated over runs (fractions in ``summary.json``).
METRICS = ("val_top1", "val_top5")
#: Subdirectories of a run directory that never hold another run.
_RUN_PARTS = {"checkpoints", "plots", "tensorboard"}


# ---------------------------------------------------------------------------------------------------- statistics
def stats(values: Iterable[float]) -> dict[str, Any]:
    """``{"n", "mean", "std", "min", "max"}`` of the finite ``values``; ``std`` is the sample standard deviation
    (denominator n − 1, as BNext Table 10), ``None`` for fewer than two values; everything but ``n`` is ``None`` for
    none."""
    vals = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    n = len(vals)
    if not n:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "std": std, "min": min(vals), "max": max(vals)}


# --------------------------------------------------------------------------------------------------- run records
@dataclass
class RunRecord:
    """What one run directory holds.

    Attributes:
        path: the run directory.
        status: ``run.json``'s status (``completed``, ``running``, ``interrupted``, ``diverged``, ``created``), or
            what stands in for it (``no run.json``, ``unreadable run.json``).
        config: ``config.json`` as a dict (``None``: missing or unreadable).
        summary: ``summary.json`` as a dict (``None``: missing or unreadable).
        problem: why the run is left out of an aggregate; ``None`` for a complete run.
    """

    path: Path
    status: str
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None

    @property
    def seed(self) -> int | None:
        return (self.config or {}).get("seed")

    def stage_results(self) -> list[dict[str, Any]]:
        return list((self.summary or {}).get("stages") or [])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "seed": self.seed, "status": self.status}
        if self.problem is not None:
            out["problem"] = self.problem
        else:
            out["stages"] = [{"name": s.get("name"), **{m: s.get(m) for m in METRICS}} for s in self.stage_results()]
        return out


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable ({e})"


def read_run(path: str | Path) -> RunRecord:
    """The :class:`RunRecord` of the run directory ``path``: complete when ``summary.json`` holds stage results with
    status ``completed`` and ``run.json`` (when there is one) says ``completed`` too."""
    rd = RunDir(path)
    try:
        info = rd.read_status()
        status = str(info.get("status", "no status")) if info else "no run.json"
    except ValueError:
        status = "unreadable run.json"
    config, _ = _read_json(rd.config)
    summary, why = _read_json(rd.summary_json)
    if not isinstance(config, dict):
        config = None
    problem = None
    if summary is None or not isinstance(summary, dict):
        summary = None
        problem = f"no summary.json (status: {status})" if why == "missing" else f"summary.json {why or 'malformed'}"
    elif status not in ("completed", "no run.json"):
        problem = f"status {status} (run.json)"
    elif summary.get("status") != "completed":
        problem = f"summary.json status {summary.get('status')!r}"
    elif not summary.get("stages"):
        problem = "summary.json holds no stage results"
    if problem is None and status == "no run.json":
        status = "completed"
    return RunRecord(Path(path), status, config, summary, problem)


def _is_run_dir(path: Path) -> bool:
    rd = RunDir(path)
    return rd.config.is_file() or rd.status_file.is_file() or rd.summary_json.is_file()


def _natural_key(path: Path) -> list[Any]:
    """``seed2`` before ``seed10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """The run directories named by ``paths``: each one itself if it is a run directory (``config.json``,
    ``run.json`` or ``summary.json``), else every run directory below it (not looking inside runs), in natural
    order. Duplicates are dropped.

    Raises:
        RunDirError: a path is not a directory, or holds no run directory.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise RunDirError(f"{p}: no such directory")
        found = [p] if _is_run_dir(p) else _runs_below(p)
        if not found:
            raise RunDirError(f"{p}: neither a run directory (config.json, run.json, summary.json) nor holds one")
        out += found
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _runs_below(folder: Path) -> list[Path]:
    found = []
    for d in sorted((c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")), key=_natural_key):
        if _is_run_dir(d):
            found.append(d)
        elif d.name not in _RUN_PARTS:
            found += _runs_below(d)
    return found


# ------------------------------------------------------------------------------------------------------ configs
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    if isinstance(d, list) and d and all(isinstance(e, dict) for e in d):
        out = {}
        for i, e in enumerate(d):
            out.update(_flatten(e, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: d}


_MISSING = "<missing>"
_NO_CONFIG = "<no config.json>"


def config_differences(configs: Sequence[dict[str, Any] | None], ignore: Iterable[str] = ("seed",)) -> dict[str, list]:
    """The dotted config keys whose values differ between ``configs``, each with its value per config
    (``"<missing>"`` where a config lacks the key); keys in ``ignore`` (the seed) are not compared. A ``None`` in
    ``configs`` (no readable config.json) is listed under the key ``config.json`` and compared with nothing."""
    flat = [_flatten(c) if isinstance(c, dict) else None for c in configs]
    present = [f for f in flat if f is not None]
    skip = set(ignore)
    keys = sorted({k for f in present for k in f} - skip, key=_natural_key)
    out = {}
    for k in keys:
        values = [f.get(k, _MISSING) for f in present]
        if any(v != values[0] for v in values[1:]):
            out[k] = [_NO_CONFIG if f is None else f.get(k, _MISSING) for f in flat]
    if len(present) < len(flat):
        out["config.json"] = [_NO_CONFIG if f is None else "present" for f in flat]
    return out


# ---------------------------------------------------------------------------------------------------- aggregate
def aggregate_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per stage (matched by position and name, in the order of the first run that has it) and a last row
    ``final`` (each run's last stage, the model the run ends with): ``{"stage", "index", "n", "val_top1": stats,
    "val_top5": stats}`` over the complete runs in ``records`` (fractions, as ``summary.json``)."""
    runs = [r for r in records if r.complete]
    keys: list[tuple[int, str]] = []
    for r in runs:
        for i, s in enumerate(r.stage_results()):
            if (i, s.get("name")) not in keys:
                keys.append((i, s.get("name")))
    rows = []
    for i, name in keys:
        results = [s for r in runs for j, s in enumerate(r.stage_results()) if (j, s.get("name")) == (i, name)]
        rows.append(_row(name, i, results))
    finals = [r.stage_results()[-1] for r in runs if r.stage_results()]
    if finals:
        rows.append(_row("final", None, finals))
    return rows


def _row(name: str | None, index: int | None, results: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"stage": name, "index": index, "n": len(results)}
    for m in METRICS:
        row[m] = stats(s.get(m) for s in results)
    return row


@dataclass
class RunsReport:
    """The aggregate of several runs: the complete ones (``runs``), those left out (``excluded``), the config keys
    the complete runs differ in besides the seed (``differences``) and the rows of :func:`aggregate_rows`."""

    runs: list[RunRecord]
    excluded: list[RunRecord]
    differences: dict[str, list]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_runs": len(self.runs),
            "runs": [r.to_dict() for r in self.runs],
            "excluded": [r.to_dict() for r in self.excluded],
            "config_differences": self.differences,
            "rows": self.rows,
            "units": "fractions of the validation set; std: sample standard deviation (n - 1)",
        }


def summarize_runs(paths: Iterable[str | Path], strict: bool = False) -> RunsReport:
    """Aggregate the runs named by ``paths`` (run directories or folders holding them, see :func:`find_run_dirs`).

    Args:
        strict: raise instead of reporting when the complete runs' configs differ in anything but the seed.

    Raises:
        RunDirError: a path holds no run; ``strict`` and the configs differ (the message names the keys).
    """
    records = [read_run(p) for p in find_run_dirs(paths)]
    runs = [r for r in records if r.complete]
    excluded = [r for r in records if not r.complete]
    differences = config_differences([r.config for r in runs]) if len(runs) > 1 else {}
    if strict and differences:
        raise RunDirError(f"the runs' configs differ in more than the seed: {', '.join(differences)}")
    return RunsReport(runs, excluded, differences, aggregate_rows(runs))


def _pct(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(100 * v, spec)


def mean_std_text(s: dict[str, Any]) -> str:
    """``mean ± std`` in percent (``—`` for a missing value)."""
    if s["mean"] is None:
        return "—"
    return _pct(s["mean"]) if s["std"] is None else f"{_pct(s['mean'])} ± {_pct(s['std'])}"


def format_markdown(report: RunsReport, title: str = "Runs") -> str:
    """The report as markdown: the per-run table, the aggregate table, the runs left out and the config keys that
    differ."""
    lines = [f"# {title}", ""]
    names = [row["stage"] for row in report.rows if row["index"] is not None]
    lines += [
        "| run | seed | " + " | ".join(f"{n} top-1 (%) | {n} top-5 (%)" for n in names) + " |",
        "|---|---|" + "---|---|" * len(names),
    ]
    for r in report.runs:
        cells = []
        for i, n in enumerate(names):
            s = next((s for j, s in enumerate(r.stage_results()) if (j, s.get("name")) == (i, n)), {})
            cells += [_pct(s.get("val_top1")), _pct(s.get("val_top5"))]
        lines.append(f"| {r.path} | {r.seed} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| stage | n | val top-1 (%) mean ± std | min | max | val top-5 (%) mean ± std | min | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        t1, t5 = row["val_top1"], row["val_top5"]
        lines.append(
            f"| {row['stage']} | {row['n']} | {mean_std_text(t1)} | {_pct(t1['min'])} | {_pct(t1['max'])} | "
            f"{mean_std_text(t5)} | {_pct(t5['min'])} | {_pct(t5['max'])} |"
        )
    lines += ["", "std: sample standard deviation (n − 1), as BNext Table 10."]
    if report.excluded:
        lines += ["", "Left out (incomplete):", ""] + [f"- {r.path}: {r.problem}" for r in report.excluded]
    if report.differences:
        lines += ["", "The configs differ in more than the seed:", ""]
        lines += [f"- `{k}`: {', '.join(map(str, v))}" for k, v in report.differences.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- seed runs
def seed_configs(cfg: RunConfig, n: int) -> list[RunConfig]:
    """``n`` copies of ``cfg`` with seeds ``cfg.seed``, ``cfg.seed + 1``, ..., ``cfg.seed + n - 1``."""
    if n < 1:
        raise ValueError(f"the number of seeds must be >= 1, got {n}")
    out = []
    for k in range(n):
        c = copy.deepcopy(cfg)
        c.seed = cfg.seed + k
        out.append(c)
    return out


@dataclass
class SeedPlan:
    """What ``onebit train --seeds`` does for one seed: ``action`` is ``new`` (start a run in ``path``), ``resume``
    (continue the unfinished run there) or ``skip`` (the run there is complete or diverged: reuse its result)."""

    seed: int
    path: Path
    config: RunConfig
    action: str
    why: str = ""


def plan_seed_runs(configs: Sequence[RunConfig], out: str | Path) -> list[SeedPlan]:
    """The run of each config (one per seed) in ``out/seed<k>``, given what those directories already hold, so that
    the same ``--seeds`` command run again continues where it stopped.

    Raises:
        RunDirError: a directory holds a run of another config (naming the differing keys), or something that is
            not a onebit run.
    """
    plans = []
    for cfg in configs:
        path = Path(out) / f"seed{cfg.seed}"
        rd = RunDir(path)
        if not rd.status_file.exists() and not rd.config.exists():
            plans.append(SeedPlan(cfg.seed, path, cfg, "new"))
            continue
        try:
            why = rd.interrupted_start()
        except ValueError as e:
            raise RunDirError(f"{path}: {e}; pick another --out") from None
        if why is not None:
            plans.append(SeedPlan(cfg.seed, path, cfg, "new", why))
            continue
        stored, err = _read_json(rd.config)
        if not isinstance(stored, dict):
            raise RunDirError(f"{path}: config.json {err or 'malformed'}; pick another --out")
        diff = config_differences([to_dict(cfg), stored], ignore=())
        if diff:
            keys = ", ".join(diff)
            raise RunDirError(f"{path} holds a run of another config (differs in {keys}); pick another --out")
        status = read_run(path).status
        if status in ("completed", "diverged"):
            plans.append(SeedPlan(cfg.seed, path, cfg, "skip", f"already {status}"))
        else:
            plans.append(SeedPlan(cfg.seed, path, cfg, "resume", f"status {status}"))
    return plans


# --------------------------------------------------------------------------------------------------- input size
#: The side length of the bundled digits a ``*_digits`` model is trained at by default (``DataConfig.image_size``).
_DIGITS_SIZE = 16
_IMAGENET_SIZE = 224


def _spec_name(spec: dict[str, Any] | None) -> str | None:
    """The registered name of the model a spec builds; a quantised wrapper's is its base model's."""
    while isinstance(spec, dict):
        base = (spec.get("kwargs") or {}).get("base")
        if not isinstance(base, dict):
            return spec.get("name")
        spec = base
    return None


def _source_dirs(ref: Path, source: str) -> list[Path]:
    """Where the ``source`` recorded in a model directory ``ref`` may be: as written (relative to the working
    directory of the command that wrote it), or an ancestor of ``ref`` of that name (``quantize``'s default output
    ``<MODEL>/quantized/<bits>`` lies inside its source)."""
    src = Path(source)
    out = [src] if src.is_dir() else []
    out += [a for a in ref.resolve().parents if a.name == src.name and a.is_dir()]
    return out


def _size_from_dir(path: Path, depth: int = 0) -> int | None:
    """The image side a model or run directory was trained or quantised at, from its files alone."""
    rd = RunDir(path)
    if rd.config.is_file():
        cfg, _ = _read_json(rd.config)
        size = ((cfg or {}).get("data") or {}).get("image_size") if isinstance(cfg, dict) else None
        return int(size) if isinstance(size, int) else None
    spec, _ = _read_json(path / "model.json")
    if not isinstance(spec, dict) or depth > 8:
        return None
    if spec.get("input_size"):
        return int(spec["input_size"][-1])
    source = spec.get("source") or (spec.get("quantize") or {}).get("source")
    if isinstance(source, str):
        for d in _source_dirs(path, source):
            size = _size_from_dir(d, depth + 1)
            if size is not None:
                return size
    return None


def recorded_input_size(ref: str | Path, model: nn.Module, info: dict[str, Any]) -> tuple[int, int, int]:
    """The (C, H, W) input a model loaded by :func:`onebit.models.io.load_model` from ``ref`` is meant for.

    In order: the ``input_size`` the source recorded (a run directory's); a model directory's recorded size or
    that of the run or model directory it was made from (``quantize`` records its source); else the model's default:
    16x16 for the ``*_digits`` models of the bundled digits, 224x224 for the rest. C is the input channels of the
    model's first convolution.
    """
    chans = input_channels(model)
    if info.get("input_size"):
        c, h, w = (int(v) for v in info["input_size"])
        return c, h, w
    path = Path(ref)
    size = _size_from_dir(path) if path.is_dir() else None
    if size is None:
        name = _spec_name(getattr(model, "onebit_spec", None)) or str(ref)
        size = _DIGITS_SIZE if name.endswith("_digits") else _IMAGENET_SIZE
    return chans, size, size
