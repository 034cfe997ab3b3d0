"""onebit vs Larq Compute Engine (LCE) on the same network and machine, in one run: Bi-Real Net 18 at 224x224,
batch 1, one thread (configurable).

**Networks.** LCE side: larq-zoo's ``BiRealNet(weights=None, input_shape=(R, R, 3))`` (random weights, nothing is
downloaded), converted with ``lce.convert_keras_model`` and run by LCE's TFLite interpreter
(``lce.testing.Interpreter(flatbuffer, num_threads=T, use_reference_bconv=..., use_indirect_bgemm=...,
use_xnnpack=...)``), plus the Keras float model itself (larq's fake binarization, a ``tf.function``). onebit side:
``birealnet18`` packed (``onebit.pack_``: XOR-popcount kernels, the engine ``onebit bench`` times) and its fastest
fp32 eval (:mod:`onebit.kernels.benchmark`). Both are the Bi-Real Net 18 of the paper (16 binary 3x3 convs with
approx-sign activations and per-channel scaled sign weights, real 7x7 stem, real 1x1 downsample shortcuts after a
2x2 average pool, real fc); the script prints and records both MAC counts (larq ``ModelProfile``: MACs at 1 bit
and at 32 bit; onebit ``onebit.analysis.complexity``: BOPs and FLOPs) so a mismatch shows (at 224: 1.676e9 binary
and 1.378e8 real MACs).

**Timing.** LCE runs in its own virtual environment (TensorFlow pins its own numpy), driven through a small driver
script this file writes to a temporary folder (``--write-driver PATH`` saves it; it also runs on its own:
``.venv-lce/bin/python lce_driver.py --rounds 5``). The driver builds, converts (the flatbuffer is cached in
``.venv-lce/onebit-cache/``), warms every variant up and then waits; onebit's side runs in this process. Each of
``--rounds`` rounds runs the LCE side (``--repeats`` forwards of each LCE variant, rotating order) and the onebit
side (likewise), alternating which side goes first; the table gives the median over all rounds (wall clock), the
fastest forward, and the process CPU time (with one thread: the forward's own compute, whatever else the machine
ran). ``ratio`` = LCE's fastest variant / onebit packed (> 1: onebit faster).

**On x86 LCE is not at its best.** LCE's optimized binary kernels target Arm (aarch64/armv7); its own interpreter
docstring says that on other architectures it falls back to kernels that are "correct, but not optimized for
speed". This script measures what LCE's pip package gives on this CPU; the variants let you see which of its
kernels is fastest here (``use_reference_bconv``, the im2col ``bgemm``, ``indirect_bgemm``, XNNPACK for the float
layers). A fair Arm comparison needs an Arm machine (``lce_benchmark_model`` built with bazel, or this script there).

**Install** (done by the script when ``.venv-lce`` is missing; about 1 minute, ~2 GB; needs Python 3.10-3.12, the
versions LCE 0.16.0 has wheels for)::

    python3.11 -m venv .venv-lce
    .venv-lce/bin/pip install larq-compute-engine==0.16.0 tensorflow==2.16.1 tf-keras==2.16.0 larq==0.14.0 \\
        larq-zoo==2.4.0

(LCE 0.16.0 is built against TensorFlow 2.16; TF 2.16 ships Keras 3, larq needs Keras 2: tf-keras 2.16 with
``TF_USE_LEGACY_KERAS=1``, which the driver sets.) Or pass an existing interpreter: ``--lce-python PATH``.

    python benchmarks/peer_lce.py                                   # writes benchmarks/results/peer_lce.json
    python benchmarks/peer_lce.py --threads 2 --out benchmarks/results/peer_lce_2threads.json
    python benchmarks/peer_lce.py --rounds 1 --repeats 2 --resolution 64 --out /tmp/peer_lce.json   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from onebit.analysis.complexity import complexity
from onebit.kernels import backend_info
from onebit.kernels.benchmark import cpu_info, fastest, float_variants, harden_, packed_copy, time_variants
from onebit.models import create_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".venv-lce"
#: What the LCE virtual environment gets (the versions that resolved from the registry for Python 3.11).
LCE_REQUIREMENTS = (
    "larq-compute-engine==0.16.0",
    "tensorflow==2.16.1",
    "tf-keras==2.16.0",
    "larq==0.14.0",
    "larq-zoo==2.4.0",
)
#: LCE-side variants: interpreter options (``None``: the Keras float model).
LCE_VARIANTS: dict[str, dict | None] = {
    "lce_indirect_bgemm": {"use_indirect_bgemm": True},
    "lce_bgemm": {"use_indirect_bgemm": False},
    "lce_reference": {"use_reference_bconv": True},
    "lce_indirect_bgemm_xnnpack": {"use_indirect_bgemm": True, "use_xnnpack": True},
    "lce_bgemm_xnnpack": {"use_indirect_bgemm": False, "use_xnnpack": True},
    "keras_float": None,
}
DEFAULT_LCE_VARIANTS = ("lce_indirect_bgemm", "lce_bgemm", "lce_reference", "lce_indirect_bgemm_xnnpack", "keras_float")
MARK = "@@onebit-lce "

# The LCE side. Runs in the LCE environment (no torch, no onebit): stdlib, numpy, TensorFlow, larq, LCE.
DRIVER = r'''"""LCE side of onebit's benchmarks/peer_lce.py: larq-zoo BiRealNet converted by LCE, timed in rounds.

    python lce_driver.py --rounds 5 --repeats 5      # standalone: prints one JSON summary (medians per variant)
    python lce_driver.py --serve ...                 # driven: one JSON line when ready, one per "round" on stdin
Every JSON line starts with "@@onebit-lce ".
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # larq needs Keras 2 (tf-keras) under TF >= 2.16
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MARK = "@@onebit-lce "
VARIANTS = json.loads(%(variants)r)


def emit(obj):
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", default=None, help="folder for the converted flatbuffer")
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            sys.exit(f"unknown variant {v!r}; choose from {sorted(VARIANTS)}")

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import importlib.metadata as md

    import larq
    import larq_compute_engine as lce
    import larq_zoo

    versions = {}
    for p in ("larq-compute-engine", "tensorflow", "tf-keras", "larq", "larq-zoo", "numpy"):
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            versions[p] = None
    r = args.resolution
    t0 = time.perf_counter()
    model = larq_zoo.literature.BiRealNet(weights=None, input_shape=(r, r, 3))
    build_s = time.perf_counter() - t0
    prof = larq.models.ModelProfile(model)
    macs = {"binary": int(prof.op_count("mac", 1)), "float32": int(prof.op_count("mac", 32))}
    params = {"binary": int(prof.weight_count(1)), "float32": int(prof.weight_count(32))}
    fb_path = None
    fb = None
    if args.cache:
        tag = "-".join(f"{k}{versions[k]}" for k in ("larq-compute-engine", "tensorflow", "larq-zoo"))
        fb_path = Path(args.cache) / f"birealnet_{r}_{tag}.tflite"
        if fb_path.is_file():
            fb = fb_path.read_bytes()
    t0 = time.perf_counter()
    converted = fb is None
    if fb is None:
        fb = lce.convert_keras_model(model)
        if fb_path is not None:
            fb_path.parent.mkdir(parents=True, exist_ok=True)
            fb_path.write_bytes(fb)
    convert_s = time.perf_counter() - t0

    x = np.random.default_rng(0).standard_normal((1, r, r, 3)).astype(np.float32)
    keras_fn = tf.function(lambda t: model(t, training=False))
    xt = tf.constant(x)
    ref = keras_fn(xt).numpy()
    calls, diffs = {}, {}
    for v in names:
        opts = VARIANTS[v]
        if opts is None:
            calls[v] = lambda: keras_fn(xt).numpy()
            continue
        it = lce.testing.Interpreter(fb, num_threads=args.threads, **opts)
        calls[v] = (lambda it: lambda: it.interpreter.predict([x]))(it)
        diffs[v] = float(np.abs(calls[v]()[0] - ref).max())
    for v in names:
        for _ in range(args.warmup):
            calls[v]()
    info = {
        "event": "ready", "versions": versions, "macs": macs, "params": params, "variants": names,
        "variant_options": {v: VARIANTS[v] for v in names}, "resolution": r, "threads": args.threads,
        "flatbuffer_bytes": len(fb), "converted_now": converted, "build_s": build_s, "convert_s": convert_s,
        "max_abs_output_diff_vs_keras": diffs, "output": "softmax probabilities",
        "lce_interpreter_note": " ".join((lce.testing.Interpreter.__doc__ or "").split())[:400],
    }

    def one_round(index):
        wall = {v: [] for v in names}
        cpu = {v: [] for v in names}
        for rep in range(args.repeats):
            s = (rep + index) %% len(names)
            for v in names[s:] + names[:s]:
                c0, t0 = time.process_time(), time.perf_counter()
                calls[v]()
                wall[v].append((time.perf_counter() - t0) * 1e3)
                cpu[v].append((time.process_time() - c0) * 1e3)
        return {"event": "round", "index": index, "wall_ms": wall, "cpu_ms": cpu}

    if args.serve:
        emit(info)
        index = 0
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "round":
                emit(one_round(index))
                index += 1
            elif cmd == "quit":
                break
        return
    rounds = [one_round(i) for i in range(args.rounds)]
    wall = {v: [s for rd in rounds for s in rd["wall_ms"][v]] for v in names}
    cpu = {v: [s for rd in rounds for s in rd["cpu_ms"][v]] for v in names}
    info.update(
        event="summary", rounds=args.rounds, repeats=args.repeats,
        median_ms={v: statistics.median(s) for v, s in wall.items()},
        min_ms={v: min(s) for v, s in wall.items()},
        cpu_median_ms={v: statistics.median(s) for v, s in cpu.items()},
        samples_ms=wall,
    )
    emit(info)


if __name__ == "__main__":
    main()
'''


def driver_source() -> str:
    """The LCE driver script (standalone Python for the LCE environment)."""
    return DRIVER % {"variants": json.dumps(LCE_VARIANTS)}


# ------------------------------------------------------------------------------------------ the LCE environment
def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _lce_ready(python: Path) -> bool:
    code = "import larq_compute_engine, larq_zoo, larq, tf_keras, tensorflow"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([str(python), "-c", code], env=env, capture_output=True, check=False).returncode == 0


def ensure_lce_python(lce_python: str | None, venv: Path, install: bool) -> Path:
    """The interpreter of the LCE environment: ``lce_python`` as given (checked), else ``venv``'s, created and
    installed (:data:`LCE_REQUIREMENTS`) when missing or incomplete and ``install`` is on."""
    if lce_python:
        python = Path(lce_python)
        if not _lce_ready(python):
            sys.exit(f"--lce-python {python}: cannot import larq_compute_engine, larq_zoo, larq, tf_keras, tensorflow")
        return python
    python = _venv_python(venv)
    if python.exists() and _lce_ready(python):
        return python
    if not install:
        sys.exit(f"{venv}: no working LCE environment; run without --no-install, or see the module docstring")
    if not python.exists():
        if not (3, 10) <= sys.version_info[:2] <= (3, 12):
            sys.exit(
                f"larq-compute-engine 0.16.0 has wheels for Python 3.10-3.12, this is {platform.python_version()}: "
                "create the environment by hand (module docstring) and pass --lce-python"
            )
        print(f"creating {venv} ({platform.python_version()})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"installing into {venv}: {' '.join(LCE_REQUIREMENTS)}", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", *LCE_REQUIREMENTS], check=True)
    if not _lce_ready(python):
        sys.exit(f"{venv}: installed, but the LCE imports still fail; run {python} -c 'import larq_compute_engine'")
    return python


class LceDriver:
    """The driver running in the LCE environment (``--serve``): JSON lines on its stdout, commands on its stdin."""

    def __init__(self, python: Path, script: Path, args: list[str], log: Path, timeout_s: float) -> None:
        self.log_path = log
        self.timeout_s = timeout_s
        self._log = open(log, "w")  # noqa: SIM115 (closed in close())
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [str(python), str(script), "--serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self._lines.put(line[len(MARK) :])
        self._lines.put(None)

    def receive(self) -> dict:
        try:
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self.close()
            raise RuntimeError(f"LCE driver: no answer in {self.timeout_s:.0f} s; its log: {self.log_path}") from None
        if line is None:
            self.proc.wait()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"LCE driver exited ({self.proc.returncode}); end of its log:\n{tail}")
        return json.loads(line)

    def round(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ---------------------------------------------------------------------------------------------------- onebit side
class OnebitSide:
    """birealnet18 packed and its fastest fp32 eval, with ``threads`` torch threads."""

    def __init__(self, resolution: int, threads: int, backend: str | None, warmup: int) -> None:
        self.threads = threads
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = create_model("birealnet18").eval()
        self.hardened = harden_(model)
        rep = complexity(model, (3, resolution, resolution))
        self.macs = {"binary": rep.bops, "float32": rep.flops}
        self.params = {"binary": rep.n_binary, "float32": rep.n_real}
        self.packed, report = packed_copy(model, backend)
        self.pack_report = report.to_dict()
        x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
        floats = float_variants(model, x, bf16=False)
        self.variants: dict[str, Callable[[], Tensor]] = {
            "onebit_packed": lambda: self.packed(x),
            "onebit_fp32": floats["fp32"],
            "onebit_fp32_channels_last": floats["fp32_channels_last"],
        }
        with torch.inference_mode():
            self.max_abs_logit_diff = float((self.packed(x) - floats["fp32"]()).abs().max())
            time_variants(self.variants, warmup=warmup, repeats=0)  # type: ignore[arg-type]

    def round(self, repeats: int) -> dict:
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            wall, cpu = time_variants(self.variants, warmup=0, repeats=repeats)  # type: ignore[arg-type]
        return {
            "wall_ms": {k: [s * 1e3 for s in v] for k, v in wall.items()},
            "cpu_ms": {k: [s * 1e3 for s in v] for k, v in cpu.items()},
        }


# ------------------------------------------------------------------------------------------------------------ main
def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def summarize(rounds: list[dict], names: list[str]) -> dict:
    wall = {v: [s for rd in rounds for s in rd["wall_ms"][v]] for v in names}
    cpu = {v: [s for rd in rounds for s in rd["cpu_ms"][v]] for v in names}
    return {
        "median_ms": {v: statistics.median(s) for v, s in wall.items()},
        "min_ms": {v: min(s) for v, s in wall.items()},
        "cpu_median_ms": {v: statistics.median(s) for v, s in cpu.items()},
        "round_medians_ms": {v: [statistics.median(rd["wall_ms"][v]) for rd in rounds] for v in names},
        "samples_ms": wall,
    }


def table(res: dict, ref: str, lce_best: str) -> str:
    lines = [
        f"{'variant':<28} {'median ms':>10} {'min ms':>8} {'cpu ms':>8} {'vs ' + ref:>22} {'vs ' + lce_best:>28}",
    ]
    lines.append("-" * len(lines[0]))
    med = res["median_ms"]
    for v in med:
        lines.append(
            f"{v:<28} {med[v]:>10.2f} {res['min_ms'][v]:>8.2f} {res['cpu_median_ms'][v]:>8.2f} "
            f"{med[v] / med[ref]:>21.2f}x {med[v] / med[lce_best]:>27.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10, help="alternating LCE / onebit rounds (default 10)")
    ap.add_argument("--repeats", type=int, default=10, help="forwards of each variant per round (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed forwards of each variant before round 1")
    ap.add_argument("--lce-variants", default=",".join(DEFAULT_LCE_VARIANTS), help=f"from {list(LCE_VARIANTS)}")
    ap.add_argument("--lce-python", help="python of an existing LCE environment (default: .venv-lce, created)")
    ap.add_argument("--venv", default=str(DEFAULT_VENV), help="where to create the LCE environment")
    ap.add_argument("--no-install", action="store_true", help="fail instead of creating/installing the environment")
    ap.add_argument("--backend", default=None, help="onebit packed backend (default auto: the native kernel)")
    ap.add_argument("--gap-s", type=float, default=0.2, help="pause between the two sides (spinning threads settle)")
    ap.add_argument("--timeout-s", type=float, default=1800, help="longest wait for one answer of the LCE driver")
    ap.add_argument("--write-driver", help="also save the LCE driver script here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peer_lce.json"))
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1 or args.threads < 1 or args.warmup < 0 or args.resolution < 32:
        ap.error("--rounds, --repeats, --threads must be >= 1, --warmup >= 0, --resolution >= 32")
    lce_names = [v.strip() for v in args.lce_variants.split(",") if v.strip()]
    for v in lce_names:
        if v not in LCE_VARIANTS:
            ap.error(f"--lce-variants: unknown {v!r}; choose from {list(LCE_VARIANTS)}")
    if not any(LCE_VARIANTS[v] is not None for v in lce_names):
        ap.error("--lce-variants: name at least one LCE interpreter variant")

    python = ensure_lce_python(args.lce_python, Path(args.venv), not args.no_install)
    if args.write_driver:
        Path(args.write_driver).write_text(driver_source())
    venv_root = python.parent.parent
    cache = (venv_root / "onebit-cache") if os.access(venv_root, os.W_OK) else Path(tempfile.gettempdir())
    old_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="onebit-lce-") as tmp:
        script = Path(tmp) / "lce_driver.py"
        script.write_text(driver_source())
        dargs = ["--resolution", str(args.resolution), "--threads", str(args.threads), "--warmup", str(args.warmup)]
        dargs += ["--repeats", str(args.repeats), "--variants", ",".join(lce_names), "--cache", str(cache)]
        print(f"starting the LCE driver ({python}); the first run converts the model (~30 s)", flush=True)
        t0 = time.perf_counter()
        driver = LceDriver(python, script, dargs, Path(tmp) / "lce_driver.log", args.timeout_s)
        try:
            info = driver.receive()
            print(f"LCE ready after {time.perf_counter() - t0:.1f} s ({info['versions']})", flush=True)
            ob = OnebitSide(args.resolution, args.threads, args.backend, args.warmup)
            rounds: list[dict] = []
            load_before = _load()
            for r in range(args.rounds):
                sides: dict[str, dict] = {}
                order = ("lce", "onebit") if r % 2 == 0 else ("onebit", "lce")
                for side in order:
                    time.sleep(args.gap_s)
                    sides[side] = driver.round() if side == "lce" else ob.round(args.repeats)
                rounds.append(
                    {
                        "order": list(order),
                        "wall_ms": {**sides["onebit"]["wall_ms"], **sides["lce"]["wall_ms"]},
                        "cpu_ms": {**sides["onebit"]["cpu_ms"], **sides["lce"]["cpu_ms"]},
                    }
                )
                print(f"round {r + 1}/{args.rounds} done", flush=True)
            load_after = _load()
        finally:
            driver.close()
            torch.set_num_threads(old_threads)
        lce_log_tail = driver.log_path.read_text()[-2000:]

    names = list(ob.variants) + lce_names
    res = summarize(rounds, names)
    med = res["median_ms"]
    lce_only = [v for v in lce_names if LCE_VARIANTS[v] is not None]
    lce_best = min(lce_only, key=lambda v: med[v])
    fp32_best = "onebit_" + fastest({k.removeprefix("onebit_"): med[k] for k in ob.variants if "fp32" in k})
    ratio = med[lce_best] / med["onebit_packed"]
    cpu = cpu_info()
    isa = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["isa"].items() if k in _SHOWN_ISA)
    print()
    print(
        f"CPU: {cpu['model']} (family {cpu['family']} model {cpu['model_number']}, {cpu['logical_cpus']} logical "
        f"CPUs; {isa})"
    )
    print(
        f"Bi-Real Net 18 at {args.resolution}, batch 1, {args.threads} thread(s); {args.rounds} rounds x "
        f"{args.repeats} repeats; load {load_before} -> {load_after}"
    )
    print(
        f"MACs: onebit binary {ob.macs['binary']:.4g} / real {ob.macs['float32']:.4g}; larq binary "
        f"{info['macs']['binary']:.4g} / 32-bit {info['macs']['float32']:.4g}"
        + ("" if ob.macs["binary"] == info["macs"]["binary"] else "  ** binary MAC counts differ **")
    )
    print(table(res, "onebit_packed", lce_best))
    verdict = f"onebit {ratio:.2f}x faster" if ratio >= 1 else f"LCE {1 / ratio:.2f}x faster"
    keras = f", Keras float {med['keras_float']:.1f} ms" if "keras_float" in med else ""
    print(
        f"onebit packed {med['onebit_packed']:.2f} ms vs LCE's fastest ({lce_best}) {med[lce_best]:.2f} ms: {verdict}"
        f" | float: onebit {fp32_best.removeprefix('onebit_')} {med[fp32_best]:.1f} ms{keras}"
    )
    out = {
        "benchmark": "peer_lce",
        "network": "Bi-Real Net 18 (onebit birealnet18 / larq_zoo.literature.BiRealNet), random weights",
        "settings": {k: v for k, v in vars(args).items() if k not in ("lce_python",)},
        "machine": {"platform": platform.platform(), "cpu": cpu, "python": platform.python_version()},
        "load_before": load_before,
        "load_after": load_after,
        "onebit": {
            "torch": torch.__version__,
            "backend": backend_info(),
            "macs": ob.macs,
            "params": ob.params,
            "pack_report": ob.pack_report,
            "max_abs_logit_diff_packed_vs_fp32": ob.max_abs_logit_diff,
            "fp32_best": fp32_best,
        },
        "lce": {**info, "python": str(python)},
        "same_binary_macs": ob.macs["binary"] == info["macs"]["binary"],
        "lce_fastest": lce_best,
        "ratio_lce_fastest_over_onebit_packed": ratio,
        "results": res,
        "rounds": rounds,
        "lce_log_tail": lce_log_tail,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return out


_SHOWN_ISA = ("avx2", "avx512f", "avx512_vpopcntdq", "neon", "asimd")

if __name__ == "__main__":
    main()
