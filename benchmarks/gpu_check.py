"""The CUDA checks of ``benchmarks/gpu_check.sh``: packed int8 inference vs cuDNN, training steps with bf16 autocast.

``infer``: the packed engine on CUDA (``pack_`` on a CUDA model: binary convs as exact int8 GEMMs,
``torch._int_mm`` on the int8 tensor cores, ``onebit.kernels.int8``) against cuDNN running the same eval model in
fp16, bf16 and fp32 (TF32 convolutions, torch's default), all channels_last with ``cudnn.benchmark`` on, binary
weights binarized once up front (:func:`onebit.kernels.benchmark.fast_float_model`). ``reactnet_a`` and
``bnext_tiny`` at 224, batch 1 and 256. Warm-up, then repeats that run every variant once in a rotating order,
each between two ``cuda.synchronize``; medians, images/s, and the largest logit difference to fp32 with TF32 off.

``train``: one training step (forward under ``torch.autocast(bfloat16)`` as ``RunConfig.amp = "bf16"``,
cross-entropy in float32, backward, AdamW) of ``bnext_tiny`` and ``reactnet_a`` on the ``reference`` and ``lean``
training paths (``RunConfig.training_path``), also without autocast for comparison; median step time, images/s
and peak CUDA memory per configuration, lean / reference ratios.

``pytest``: ``pytest -m gpu`` over ``tests/``, its outcome as JSON.

``smoke``: ``infer`` and ``train`` at a tiny size on the CPU (the int8 backend and autocast run there too): checks
the code paths on a machine without CUDA (the float variants are then named ``cpu_*``). ``infer`` and ``train``
refuse to run without CUDA (exit code 2) unless ``--device cpu`` is given.

    python benchmarks/gpu_check.py pytest           # writes benchmarks/results/gpu_pytest.json
    python benchmarks/gpu_check.py infer            # writes benchmarks/results/gpu_infer.json
    python benchmarks/gpu_check.py train            # writes benchmarks/results/gpu_train.json
    python benchmarks/gpu_check.py smoke            # CPU, seconds; JSON only with --out
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import onebit
from onebit.kernels.benchmark import cpu_info, fast_float_model, harden_, packed_copy, time_variants
from onebit.layers import set_training_path
from onebit.models.io import input_channels

RESULTS = Path(__file__).resolve().parent / "results"


def _device_info(device: torch.device) -> dict:
    info: dict = {"device": str(device), "torch": torch.__version__, "cpu": cpu_info(), "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            capability=f"{p.major}.{p.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def _sync(device: torch.device) -> Callable[[], None] | None:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _num_classes(model: torch.nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1].out_features if linears else 1000


# ---------------------------------------------------------------------------------------------------------- infer
def infer_model(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Rows (one per batch size) of packed int8 vs cuDNN fp16/bf16/fp32 for one model."""
    torch.manual_seed(0)
    model = onebit.create_model(name).eval()
    hardened = harden_(model)
    fp32 = fast_float_model(model).to(device).to(memory_format=torch.channels_last)
    floats = {"fp32": fp32, "fp16": copy.deepcopy(fp32).half(), "bf16": copy.deepcopy(fp32).to(torch.bfloat16)}
    packed, report = packed_copy(model.to(device), args.backend)
    pk = f"packed_{report.backend.get('backend', 'auto')}"  # packed_int8 on CUDA
    rows = []
    for batch in args.batches:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, input_channels(model), args.resolution, args.resolution, generator=g).to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        inputs = {"fp32": x, "fp16": x.half(), "bf16": x.to(torch.bfloat16)}
        variants: dict[str, Callable[[], Tensor]] = {pk: lambda x=x: packed(x)}
        prefix = "cudnn" if device.type == "cuda" else "cpu"
        for k, m in floats.items():
            variants[f"{prefix}_{k}"] = lambda m=m, xi=inputs[k]: m(xi)
        row: dict = {"model": name, "batch": batch, "resolution": args.resolution, "errors": {}}
        ok = {}
        with torch.inference_mode():
            for k, f in variants.items():  # a variant that fails (e.g. out of memory) is recorded, not fatal
                try:
                    f()
                    ok[k] = f
                except (RuntimeError, NotImplementedError) as e:
                    row["errors"][k] = f"{type(e).__name__}: {str(e)[:300]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            wall, _ = time_variants(ok, warmup=args.warmup, repeats=args.repeats, sync=_sync(device))  # type: ignore[arg-type]
            tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            try:
                ref = fp32(x).float()
                row["max_abs_logit_diff_vs_fp32"] = {
                    k: float((ok[k]().float() - ref).abs().max()) for k in ok if not k.endswith("_fp32")
                }
                row["top1_agreement_vs_fp32"] = {
                    k: float((ok[k]().float().argmax(1) == ref.argmax(1)).float().mean())
                    for k in ok
                    if not k.endswith("_fp32")
                }
            finally:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        lat = {k: _ms(v) for k, v in wall.items()}
        row.update(
            latency_ms=lat,
            latency_min_ms={k: min(v) * 1e3 for k, v in wall.items()},
            images_per_s={k: batch * 1e3 / v for k, v in lat.items()},
            samples_ms={k: [s * 1e3 for s in v] for k, v in wall.items()},
            hard_sign_applied=hardened,
        )
        if pk in lat:
            row["speedup_packed_vs"] = {k: lat[k] / lat[pk] for k in lat if k != pk}
        rows.append(row)
        print(_infer_line(row), flush=True)
    rows[0]["pack_report"] = report.to_dict()
    return rows


def _infer_line(r: dict) -> str:
    lat = r["latency_ms"]
    parts = [f"{k} {v:8.2f} ms ({r['images_per_s'][k]:9.0f}/s)" for k, v in lat.items()]
    err = f"  errors: {list(r['errors'])}" if r["errors"] else ""
    return f"{r['model']:<11} batch {r['batch']:>4} | " + " | ".join(parts) + err


# ---------------------------------------------------------------------------------------------------------- train
class Step:
    """One model on one training path, with or without bf16 autocast: its AdamW and input batch."""

    def __init__(self, name: str, path: str, amp: str, args: argparse.Namespace, device: torch.device) -> None:
        torch.manual_seed(0)
        self.model = onebit.create_model(name).to(device).train()
        set_training_path(self.model, path)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch, input_channels(self.model), args.resolution, args.resolution, generator=g)
        self.x = x.contiguous(memory_format=torch.channels_last) if args.channels_last else x
        y = torch.randint(0, _num_classes(self.model), (args.batch,), generator=g)
        self.x, self.y = self.x.to(device), y.to(device)
        self.amp, self.device = amp, device

    def __call__(self) -> None:
        # as onebit.train's bf16 student: autocast around the forward, the loss in float32
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16"):
            out = self.model(self.x)
        loss = F.cross_entropy(out.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def train_model(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    configs = [(p, a) for a in args.amp for p in args.paths]
    res: dict[str, dict] = {}
    steps: dict[str, Callable[[], None]] = {}
    for path, amp in configs:
        key = f"{path}+{amp}"
        try:
            steps[key] = Step(name, path, amp, args, device)
        except RuntimeError as e:
            res[key] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    wall: dict[str, list[float]] = {k: [] for k in steps}
    peak: dict[str, float] = {}
    order = list(steps)
    for k in order:  # warm-up: allocator, optimizer states, cuDNN/oneDNN plans
        for _ in range(args.warmup):
            steps[k]()
    for rep in range(args.repeats):
        for k in order[rep % len(order) :] + order[: rep % len(order)]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            w, _ = time_variants({k: steps[k]}, warmup=0, repeats=1, sync=_sync(device))
            wall[k] += w[k]
            if device.type == "cuda":
                peak[k] = max(peak.get(k, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
    for k in steps:
        res[k] = {
            "step_ms": _ms(wall[k]),
            "step_min_ms": min(wall[k]) * 1e3,
            "images_per_s": args.batch * 1e3 / _ms(wall[k]),
            "samples_ms": [s * 1e3 for s in wall[k]],
        }
        if k in peak:
            res[k]["peak_mib"] = peak[k]
    ratios = {}
    for a in args.amp:
        ref, lean = res.get(f"reference+{a}", {}), res.get(f"lean+{a}", {})
        if "step_ms" in ref and "step_ms" in lean:
            ratios[f"lean_vs_reference+{a}"] = {"speedup": ref["step_ms"] / lean["step_ms"]}
            if "peak_mib" in ref and "peak_mib" in lean:
                ratios[f"lean_vs_reference+{a}"]["peak"] = lean["peak_mib"] / ref["peak_mib"]
    for k, v in res.items():
        if "error" in v:
            print(f"{name:<11} {k:<16} ERROR {v['error']}", flush=True)
        else:
            mem = f" peak {v['peak_mib']:8.0f} MiB" if "peak_mib" in v else ""
            print(f"{name:<11} {k:<16} {v['step_ms']:9.1f} ms {v['images_per_s']:8.1f} img/s{mem}", flush=True)
    for k, v in ratios.items():
        print(f"{name:<11} {k}: " + ", ".join(f"{a} {b:.2f}x" for a, b in v.items()), flush=True)
    return {"configs": res, "ratios": ratios}


# --------------------------------------------------------------------------------------------------------- pytest
def run_pytest(args: argparse.Namespace) -> int:
    """``pytest -m gpu`` on the test suite; its exit code, summary line and duration go to ``args.out``."""
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", str(root / "tests")]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    print(done.stdout[-6000:], done.stderr[-2000:], sep="", flush=True)
    lines = [ln for ln in done.stdout.strip().splitlines() if ln.strip()]
    _write(
        {
            "benchmark": "gpu_pytest",
            "machine": _device_info(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
            "command": " ".join(cmd),
            "returncode": done.returncode,
            "summary": lines[-1] if lines else "",
            "duration_s": time.perf_counter() - t0,
            "output_tail": done.stdout[-4000:],
        },
        args.out,
    )
    # 5: no test selected (none marked gpu) is a failure of this check too
    return done.returncode


# ----------------------------------------------------------------------------------------------------------- main
def _write(report: dict, out: str | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}", flush=True)


def run_infer(args: argparse.Namespace, device: torch.device) -> dict:
    torch.backends.cudnn.benchmark = True
    report = {"benchmark": "gpu_infer", "machine": _device_info(device), "settings": _settings(args), "results": []}
    for name in args.models:
        report["results"] += infer_model(name, args, device)
    _write(report, args.out)
    return report


def run_train(args: argparse.Namespace, device: torch.device) -> dict:
    torch.backends.cudnn.benchmark = True
    report = {"benchmark": "gpu_train", "machine": _device_info(device), "settings": _settings(args), "results": {}}
    for name in args.models:
        report["results"][name] = train_model(name, args, device)
    _write(report, args.out)
    return report


def _settings(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    pi = sub.add_parser("infer", help="packed int8 vs cuDNN fp16/bf16/fp32 inference")
    pi.add_argument("--models", nargs="+", default=["reactnet_a", "bnext_tiny"])
    pi.add_argument("--batches", nargs="+", type=int, default=[1, 256])
    pi.add_argument("--resolution", type=int, default=224)
    pi.add_argument("--warmup", type=int, default=5)
    pi.add_argument("--repeats", type=int, default=20)
    pi.add_argument("--backend", default=None, help="packed backend (default auto: int8 on CUDA)")
    pi.add_argument("--device", default="cuda")
    pi.add_argument("--out", default=str(RESULTS / "gpu_infer.json"))
    pt = sub.add_parser("train", help="training step, reference vs lean path, with and without bf16 autocast")
    pt.add_argument("--models", nargs="+", default=["bnext_tiny", "reactnet_a"])
    pt.add_argument("--paths", nargs="+", default=["reference", "lean"], choices=["reference", "lean", "module"])
    pt.add_argument("--amp", nargs="+", default=["bf16", "none"], choices=["bf16", "none"])
    pt.add_argument("--batch", type=int, default=64)
    pt.add_argument("--resolution", type=int, default=224)
    pt.add_argument("--channels-last", action="store_true")
    pt.add_argument("--warmup", type=int, default=2)
    pt.add_argument("--repeats", type=int, default=5)
    pt.add_argument("--device", default="cuda")
    pt.add_argument("--out", default=str(RESULTS / "gpu_train.json"))
    pp = sub.add_parser("pytest", help="pytest -m gpu, its result as JSON")
    pp.add_argument("--out", default=str(RESULTS / "gpu_pytest.json"))
    ps = sub.add_parser("smoke", help="both parts at a tiny size on the CPU (no CUDA needed)")
    ps.add_argument("--models", nargs="+", default=["reactnet_a", "bnext_tiny"])
    ps.add_argument("--resolution", type=int, default=32)
    ps.add_argument("--out", default=None, help="JSON of the smoke run (default: none)")
    args = ap.parse_args(argv)

    if args.part == "smoke":
        device = torch.device("cpu")
        torch.set_num_threads(1)
        common = {"models": args.models, "resolution": args.resolution, "warmup": 0, "repeats": 1, "device": "cpu"}
        ia = argparse.Namespace(**common, batches=[1, 2], backend="int8", out=None)
        ta = argparse.Namespace(
            **common, paths=["reference", "lean"], amp=["bf16"], batch=2, channels_last=False, out=None
        )
        print("CPU smoke of the inference part (int8 backend, float variants) ...", flush=True)
        infer = run_infer(ia, device)
        errors = {f"{r['model']}@{r['batch']}": r["errors"] for r in infer["results"] if r["errors"]}
        # fp16 convolutions may not exist on a CPU build; anything else failing is a real error
        fatal = {k: v for k, v in errors.items() if set(v) - {"cpu_fp16"}}
        print("CPU smoke of the training part (reference and lean paths, bf16 autocast) ...", flush=True)
        train = run_train(ta, device)
        bad = {m: k for m, r in train["results"].items() for k, v in r["configs"].items() if "error" in v}
        _write({"benchmark": "gpu_check_smoke", "infer": infer, "train": train}, args.out)
        if fatal or bad:
            print(f"smoke FAILED: inference errors {fatal}, training errors {bad}", file=sys.stderr)
            return 1
        print("smoke ok", flush=True)
        return 0

    if args.part == "pytest":
        return run_pytest(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{args.part}: no CUDA device here (run `smoke` for the CPU check)", file=sys.stderr)
        return 2
    (run_infer if args.part == "infer" else run_train)(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
