"""What every study shares: variants, the study record, the registry :data:`STUDIES`, running (with reuse of
finished runs), the claims table and the aggregates and plots the reports are built from. ``onebit study NAME``.

Each study is a list of variants (config overrides of one base config) run for several seeds with
:func:`onebit.train.run`; results are aggregated as mean ± std and written as a markdown report with plots
(``docs/studies/<name>.md``). Runs live under ``runs/studies/<name>/<variant>/seed<k>`` and a finished run is reused,
so an interrupted study continues where it stopped.

Every report opens with a **claims table** (:class:`Claim`): the paper's claim and number, ours as mean ± std over
seeds, and a verdict computed from the seeds by :func:`compare` or :func:`holds` — *reproduced*, *not reproduced*, or
*inconclusive* when the difference is within the seed spread — with one line of why where it is not reproduced. The
table names the commit of the code that trained the runs and wrote the report and the command that produced it; the
claims of all reports are gathered into ``docs/studies/README.md`` by :func:`write_index`.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from onebit.checkpoint import RunDir
from onebit.config import DataConfig, ModelConfig, OptimConfig, RunConfig, apply_overrides
from onebit.recipes._strategies import one_step
from onebit.report import atomic_write_text, read_metrics
from onebit.train import TrainingDiverged, run

__all__ = [
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "SMOKE_OVERRIDES",
    "STUDIES",
    "Claim",
    "Report",
    "Study",
    "Variant",
    "base_config",
    "claims_table",
    "compare",
    "delta_se",
    "holds",
    "run_all",
    "source_commit",
    "write_index",
    "by_variant",
    "diverged_count",
    "epoch_records",
    "first_epoch_dyn",
    "fmt",
    "mean_std",
    "per_seed",
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
    """A study: its variants, its report and its budgets.

    ``report(study, results, fig_dir)`` returns a :class:`Report`: the claims (the table the report opens with) and
    the body (results tables, figures, notes). ``seeds`` is the default number of seeds (3; 5 where the whole study
    costs under 5 minutes). The smoke budget (``onebit study NAME --smoke``, and the test suite) runs
    ``smoke_epochs`` epochs on a sliver of the data (:data:`SMOKE_OVERRIDES` plus ``smoke_overrides``) for one seed:
    it checks that the report is produced by the code, not what it finds.
    """

    name: str
    title: str
    claim: str
    variants: Callable[[int], list[Variant]]
    report: Callable[[Study, list[dict[str, Any]], Path], Report]
    epochs: int = 6
    extra: dict[str, Any] = field(default_factory=dict)
    #: per-seed setup run before the variants, ``prepare(root, seed, epochs, overrides, console) -> kwargs`` for
    #: every variant's ``make`` (the KD study trains its teachers here); its runs live under ``root`` too
    prepare: Callable[[Path, int, int, list[str], Console], dict[str, str]] | None = None
    seeds: int = 3
    smoke_epochs: int = 1
    smoke_overrides: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------------- claims
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


@dataclass
class Claim:
    """One row of a report's claims table.

    Attributes:
        source: where the paper makes the claim ("AdamBNN Table 5", "BNext Fig. 8").
        claim: the claim in words, as a testable statement.
        paper: the paper's number(s) behind it.
        ours: our number(s), mean ± std over the seeds.
        verdict: :data:`REPRODUCED`, :data:`NOT_REPRODUCED` or :data:`INCONCLUSIVE` (from :func:`compare` or
            :func:`holds`).
        why: one line of why, required unless the verdict is *reproduced*.
    """

    source: str
    claim: str
    paper: str
    ours: str
    verdict: str
    why: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")
        if self.verdict != REPRODUCED and not self.why.strip():
            raise ValueError(f"claim {self.claim!r}: a {self.verdict!r} verdict needs a line of why")


@dataclass
class Report:
    """What a study's report function returns: the claims (the table the report opens with) and the body."""

    claims: list[Claim]
    body: list[str]


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def delta_se(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[float, float]:
    """Difference of means ``mean(a) - mean(b)`` and its Welch standard error ``sqrt(s_a²/n_a + s_b²/n_b)``, NaN /
    None (diverged runs) left out. The difference is NaN when a side has no value; the standard error is NaN with
    fewer than two values on a side."""
    xa, xb = _finite(a), _finite(b)
    if not xa or not xb:
        return float("nan"), float("nan")
    (ma, sa), (mb, sb) = mean_std(xa), mean_std(xb)
    if len(xa) < 2 or len(xb) < 2:
        return ma - mb, float("nan")
    return ma - mb, math.sqrt(sa**2 / len(xa) + sb**2 / len(xb))


def compare(a: Sequence[float | None], b: Sequence[float | None], expect: str = ">", k: float = 2.0) -> str:
    """Verdict on the claim "mean(a) ``expect`` mean(b)" from per-seed values (NaN / None = a diverged run, left out).

    The difference of means is judged against its standard error (:func:`delta_se`): beyond ``k`` standard errors in
    the claimed direction it is *reproduced*, beyond ``k`` the other way *not reproduced*, within ``k`` (or with fewer
    than two finite values on a side) *inconclusive*. ``expect`` is ``>`` or ``<``.
    """
    if expect not in (">", "<"):
        raise ValueError(f"expect must be '>' or '<', not {expect!r}")
    d, se = delta_se(a, b)
    if math.isnan(se):
        return INCONCLUSIVE
    diff = d if expect == ">" else -d
    if diff > k * se and diff > 0:
        return REPRODUCED
    if -diff > k * se and diff < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def holds(flags: Sequence[bool]) -> str:
    """Verdict on a claim checked per seed: *reproduced* if it holds in every seed (at least two), *not reproduced*
    if in none, *inconclusive* otherwise (mixed, or a single seed)."""
    flags = list(flags)
    if len(flags) < 2:
        return INCONCLUSIVE
    if all(flags):
        return REPRODUCED
    if not any(flags):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def claims_table(claims: list[Claim]) -> list[str]:
    """The markdown claims table (one row per claim)."""
    rows = ["| # | claim (source) | paper | ours (mean ± std over seeds) | verdict | why |"]
    rows.append("|---|---|---|---|---|---|")
    for i, c in enumerate(claims, 1):
        cells = [str(i), f"{c.claim} ({c.source})", c.paper, c.ours, f"**{c.verdict}**", c.why or "—"]
        rows.append("| " + " | ".join(x.replace("|", "/").replace("\n", " ") for x in cells) + " |")
    return rows


def source_commit() -> str:
    """The git commit of the onebit code that is running (short hash; ``+dirty`` when ``onebit/`` has uncommitted
    changes), or ``onebit <version>`` outside a git checkout."""
    pkg = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(pkg), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(pkg), "status", "--porcelain", "--", str(pkg)],
                capture_output=True,
                text=True,
                timeout=10,
            )
            return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"onebit {metadata.version('onebit')}"
    except metadata.PackageNotFoundError:
        return "unknown"


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
    commit = source_commit()
    try:
        summary = run(cfg, out_dir=out, console=quiet).summary
    except TrainingDiverged as e:
        summary = _diverged_summary(cfg, str(e))
    atomic_write_text(out / COMMIT_FILE, commit + "\n")
    return summary


#: a study run's directory records the commit of the code that trained it (reused runs keep theirs)
COMMIT_FILE = "study_commit.txt"


def run_commit(out: Path) -> str:
    """The commit that trained the study run in ``out`` (``unknown`` for a run from before commits were recorded)."""
    try:
        return (Path(out) / COMMIT_FILE).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of a run's ``metrics.jsonl``."""
    return [r for r in read_metrics(RunDir(run_dir).metrics) if r.get("type") == "epoch"]


#: the data sliver of a smoke run (``--smoke``): one training step per epoch
SMOKE_OVERRIDES = ("data.limit_train=32", "data.limit_val=32", "plots=false")


def run_study(
    name: str,
    seeds: int | None = None,
    root: str | Path = "runs/studies",
    docs: str | Path = "docs/studies",
    console: Console | None = None,
    epochs: int | None = None,
    overrides: list[str] | None = None,
    smoke: bool = False,
) -> Path:
    """Run every variant of study ``name`` for ``seeds`` seeds (default: the study's) and write
    ``<docs>/<name>.md``, ``<docs>/<name>/results.json`` and ``<docs>/<name>/claims.json``; returns the report's path.

    ``overrides`` (dotted ``key=value``, see :func:`onebit.config.apply_overrides`) are applied to every run of the
    study, teachers included. ``smoke`` runs the study's smoke budget (one seed, ``smoke_epochs`` epochs, a sliver of
    the data; explicit ``seeds``/``epochs`` still win): the report is complete but its verdicts are inconclusive.
    """
    console = console or Console()
    study = STUDIES[name] if name in STUDIES else _unknown(name)
    if smoke:
        seeds = seeds or 1
        epochs = epochs or study.smoke_epochs
        overrides = [*SMOKE_OVERRIDES, *study.smoke_overrides, *(overrides or [])]
    seeds = seeds or study.seeds
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
                    "commit": run_commit(out),
                }
            )
    elapsed = time.time() - t0
    run_minutes = sum(r["summary"].get("time_s", 0.0) or 0.0 for r in results) / 60
    docs.mkdir(parents=True, exist_ok=True)
    fig_dir = docs / name
    if fig_dir.is_dir():
        shutil.rmtree(fig_dir)  # the report's own folder: only what this report writes stays (no stale figures)
    fig_dir.mkdir(parents=True)
    report = study.report(study, results, fig_dir)
    if not isinstance(report, Report) or not report.claims:
        raise TypeError(f"study {name!r}: its report function must return a Report with at least one claim")
    base = apply_overrides(variants[0].make(**contexts.get(0, {})), overrides)
    command = _command(name, study, seeds, ep, overrides, smoke)
    data = next((r["summary"]["data"] for r in results if r["summary"].get("data")), "digits")
    commit = source_commit()
    trained = sorted({r["commit"] for r in results})
    budget = f"{len(variants)} variants × {seeds} seed{'s' if seeds > 1 else ''}, {ep} epochs per stage"
    header = [
        f"# Study `{name}`: {study.title}",
        "",
        "## Claims",
        "",
        *claims_table(report.claims),
        "",
        f"Written by `{command}` at commit `{commit}` from runs trained at "
        + ", ".join(f"`{c}`" for c in trained)
        + f" ({budget}). Verdicts: *reproduced* / *not reproduced* when the difference of means exceeds twice its "
        "standard error over seeds in the paper's / the opposite direction (or, for a per-seed property, when it "
        "holds in every / no seed), else *inconclusive*.",
        "",
        f"**Paper claim.** {study.claim}",
        "",
        f"**Setup.** `{command}` — {len(variants)} variants × {seeds} seeds on the bundled "
        f"{data.replace('16x16', '16×16')}, {ep} epochs per stage, batch {base.data.batch_size}; base model "
        f"`{base.model.name}` {base.model.kwargs}. Mean ± std over seeds. "
        f"Compute: {len(results)} runs, {run_minutes:.1f} min of training in total (the sum of the runs' wall "
        f"times on a 2-core machine; this invocation took {elapsed / 60:.1f} min, finished runs being reused).",
        "",
    ]
    path = docs / f"{name}.md"
    atomic_write_text(path, "\n".join(header + report.body) + "\n")
    atomic_write_text(fig_dir / "results.json", json.dumps(_compact(results), indent=1, default=float) + "\n")
    claims = {
        "study": name,
        "title": study.title,
        "command": command,
        "commit": commit,
        "trained_at": trained,
        "budget": budget,
        "smoke": smoke,
        "claims": [asdict(c) for c in report.claims],
    }
    atomic_write_text(fig_dir / "claims.json", json.dumps(claims, indent=1) + "\n")
    console.print(f"Report: [bold]{path}[/]")
    return path


def _command(name: str, study: Study, seeds: int, ep: int, overrides: list[str], smoke: bool) -> str:
    if smoke:
        extra = [o for o in overrides if o not in SMOKE_OVERRIDES and o not in study.smoke_overrides]
        flags = ["--smoke"] + ([f"--seeds {seeds}"] if seeds != 1 else [])
        flags += [f"--epochs {ep}"] if ep != study.smoke_epochs else []
    else:
        extra = overrides
        flags = ([f"--seeds {seeds}"] if seeds != study.seeds else []) + (
            [f"--epochs {ep}"] if ep != study.epochs else []
        )
    return " ".join([f"onebit study {name}", *flags, *(f"--override {o}" for o in extra)])


def run_all(
    root: str | Path = "runs/studies",
    docs: str | Path = "docs/studies",
    console: Console | None = None,
    smoke: bool = False,
    seeds: int | None = None,
    overrides: list[str] | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """Run every registered study (or ``names``) in turn, then write the index ``<docs>/README.md``; returns it."""
    console = console or Console()
    for name in names or list(STUDIES):
        run_study(name, seeds=seeds, root=root, docs=docs, console=console, overrides=overrides, smoke=smoke)
    return write_index(docs)


def write_index(docs: str | Path = "docs/studies") -> Path:
    """``<docs>/README.md``: every claim of every report found under ``docs`` (their ``<name>/claims.json``), in
    registry order, with its verdict and budget, and a count of verdicts."""
    docs = Path(docs)
    found = {p.parent.name: json.loads(p.read_text()) for p in sorted(docs.glob("*/claims.json"))}
    order = [n for n in STUDIES if n in found] + sorted(n for n in found if n not in STUDIES)
    rows = ["| study | claim (source) | paper | ours | verdict | budget |", "|---|---|---|---|---|---|"]
    counts = dict.fromkeys(VERDICTS, 0)
    for n in order:
        rec = found[n]
        for c in rec["claims"]:
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
            cells = [f"[{n}]({n}.md)", f"{c['claim']} ({c['source']})", c["paper"], c["ours"], f"**{c['verdict']}**"]
            cells.append(rec["budget"] + (" (smoke)" if rec.get("smoke") else ""))
            rows.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
    commits = sorted({found[n]["commit"] for n in order})
    lines = [
        "# Studies: which of the papers' claims hold on the digits",
        "",
        "Every claim of every report in this folder, with its verdict (the reports explain each one). Written by "
        "`onebit study all` (or `onebit study index` after single studies) from the reports' `claims.json`; "
        "reports written at " + ", ".join(f"`{c}`" for c in commits) + ".",
        "",
        "Totals: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + f" of {sum(counts.values())} claims.",
        "",
        *rows,
        "",
        "A claim is *reproduced* / *not reproduced* when our difference of means exceeds twice its standard error "
        "over seeds in the paper's / the opposite direction (per-seed properties: when it holds in every / no "
        "seed), else *inconclusive*. The papers measure ImageNet over hundreds of epochs; these studies run on "
        "16×16 digits in minutes, so an effect that needs scale may not appear — each report says what was tried.",
        "",
    ]
    path = docs / "README.md"
    atomic_write_text(path, "\n".join(lines))
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


def per_seed(rs: list[dict[str, Any]], key: str = "val_top1", stage: int = -1, scale: float = 100.0) -> list[float]:
    """A stage metric of every run, times ``scale`` (default: a share in %), ordered by seed (NaN for a diverged
    run): the per-seed values :func:`compare` judges."""
    return [scale * float(r["summary"]["stages"][stage][key]) for r in sorted(rs, key=lambda r: r["seed"])]


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
