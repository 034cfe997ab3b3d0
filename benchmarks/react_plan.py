"""Packed ReActNet-A with and without the per-shape plan path of its fused blocks (:mod:`onebit.kernels.chain`:
one native call per block) in one process, interleaved, against the fastest fp32 eval of the same model.

The same packed model runs both ways: ``onebit.kernels.chain.enabled`` is switched for each call of the "generic"
variant. Median wall and process-CPU time of ``--repeats`` interleaved rounds after warm-up, on each thread count;
a table is printed and the rows (with the machine's CPU/ISA and the load average around each row) are written as JSON.

    python benchmarks/react_plan.py --threads 1 2 --repeats 21
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from onebit.kernels import backend_info, chain
from onebit.kernels.benchmark import cpu_info, fastest, float_variants, packed_copy, time_variants
from onebit.models import create_model


def _generic(packed: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    chain.enabled = False
    try:
        return packed(x)
    finally:
        chain.enabled = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="reactnet_a")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--no-fp32", action="store_true", help="time the two packed paths only")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "react_plan.json"))
    args = ap.parse_args()
    rows = []

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    packed, _ = packed_copy(model)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
    old = torch.get_num_threads()
    for threads in args.threads:
        torch.set_num_threads(threads)
        variants = {} if args.no_fp32 else float_variants(model, x, bf16=False)
        variants.update(plan=lambda: packed(x), generic=lambda: _generic(packed, x))
        with torch.inference_mode():
            assert torch.equal(packed(x), _generic(packed, x)), "plan and generic paths differ"
            load = os.getloadavg()
            wall, cpu = time_variants(variants, warmup=args.warmup, repeats=args.repeats)  # type: ignore[arg-type]
        med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in wall.items()}
        cmed = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in cpu.items()}
        line = f"{threads} thr | generic {med['generic']:6.2f} ms (cpu {cmed['generic']:6.2f})"
        line += f" | plan {med['plan']:6.2f} ms (cpu {cmed['plan']:6.2f}) | {med['generic'] / med['plan']:.3f}x"
        if not args.no_fp32:
            best = fastest(med)
            line += f" | fp32 {med[best]:6.1f} ms ({best}): generic {med[best] / med['generic']:.2f}x, plan "
            line += f"{med[best] / med['plan']:.2f}x"
        after = os.getloadavg()
        print(f"{line} | load before {[round(v, 2) for v in load]} after {[round(v, 2) for v in after]}")
        row = {"threads": threads, "median_ms": med, "median_cpu_ms": cmed}
        row["plan_speedup"] = med["generic"] / med["plan"]
        if not args.no_fp32:
            row.update(fastest_fp32=best, plan_vs_fp32=med[best] / med["plan"])
            row["generic_vs_fp32"] = med[best] / med["generic"]
        rows.append({**row, "load_before": list(load), "load_after": list(after)})
    torch.set_num_threads(old)
    out = {
        "benchmark": "react_plan",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"platform": platform.platform(), "cpu": cpu_info()},
        "onebit": {"torch": torch.__version__, "backend": backend_info()},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
