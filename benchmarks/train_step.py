"""Training-step time and peak memory: the official-arithmetic ``reference`` path vs the ``lean`` path.

One training step is what a trainer does: forward, cross-entropy loss, backward, AdamW step. Configurations:
``reference`` (binarizers composed as the official code does, see ``Binarizer.reference``), ``lean`` (the fused
binary-conv Function of ``onebit.layers.fused``, the default), ``lean+cl`` (lean with channels_last model and input),
and ``lean+bf16`` (lean under bf16 autocast; not in the default list: on CPUs without native bf16 it is slower).

**Time.** Every configuration of a model is built once (same initialisation, same batch); each repeat runs one step
per configuration in a rotating order, so slow drifts of a shared machine hit all alike; the table gives the median.
CPU: the process CPU clock (time this process was descheduled by other jobs does not count; with ``--threads 1`` it
is the step's own compute). CUDA: the wall clock after a synchronisation.

**Memory.** ``peak``: CUDA ``max_memory_allocated`` over a step (params, grads, AdamW states and activations).
On CPU torch's allocator has no such counter, so each configuration runs in a fresh subprocess with glibc's mmap
threshold lowered (``MALLOC_MMAP_THRESHOLD_``, large tensors then go back to the OS when freed, so the resident set
follows the live tensors): after a small warm-up step (which allocates the AdamW states) the kernel's high-water mark
is reset (``/proc/self/clear_refs``), one full step runs, and ``peak`` = high-water mark minus the resident set before
the model was built (the same quantity as the CUDA number, plus allocator slack). ``saved`` is allocator-independent:
the bytes autograd keeps for backward after one forward (``saved_tensors_hooks``, each storage counted once,
parameters and buffers excluded).

    python benchmarks/train_step.py                       # bnext_tiny and reactnet_a, batch 32 at 224, CPU
    python benchmarks/train_step.py --quick               # batch 4 at 96, one repeat: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import onebit
from onebit.layers import set_training_path

CONFIGS = ("reference", "lean", "lean+cl", "lean+bf16")
DEFAULT_CONFIGS = ("reference", "lean", "lean+cl")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One model in one configuration, its AdamW and its input batch."""

    def __init__(self, model_name: str, config: str, batch: int, resolution: int, device: torch.device) -> None:
        if config not in CONFIGS:
            raise ValueError(f"unknown configuration {config!r}; choose from {CONFIGS}")
        path, _, variant = config.partition("+")
        torch.manual_seed(0)
        self.model = onebit.create_model(model_name).to(device).train()
        set_training_path(self.model, path)
        self.channels_last = variant == "cl"
        self.autocast = variant == "bf16"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.device = device
        self.x, self.y = self.batch(batch, resolution)

    def batch(self, batch: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, resolution, resolution, generator=g)
        y = torch.randint(0, 1000, (batch,), generator=g)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.device), y.to(self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(x)

    def step(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        x, y = (self.x, self.y) if x is None else (x, y)
        loss = F.cross_entropy(self.forward(x).float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed_step(self) -> tuple[float, float]:
        """(wall, process-CPU) seconds of one step."""
        _sync(self.device)
        w0, c0 = time.perf_counter(), time.process_time()
        self.step()
        _sync(self.device)
        return time.perf_counter() - w0, time.process_time() - c0

    def saved_bytes(self) -> int:
        """Bytes autograd keeps for backward after one forward (each storage once; parameters/buffers excluded)."""
        own = {t.untyped_storage().data_ptr() for t in (*self.model.parameters(), *self.model.buffers())}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            st = t.untyped_storage()
            if st.data_ptr() not in own:
                seen.setdefault(st.data_ptr(), st.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = self.forward(self.x)
        del out
        return sum(seen.values())


# ------------------------------------------------------------------------------------------------ CPU memory probe
def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def memory_probe(model_name: str, config: str, batch: int, resolution: int) -> dict:
    """Run in a fresh process: peak resident memory of one full step beyond the pre-model resident set (MiB)."""
    base = _status_kib("VmRSS")
    runner = Runner(model_name, config, batch, resolution, torch.device("cpu"))
    runner.step(*runner.batch(2, resolution))  # allocates the AdamW states; its grads are freed by zero_grad
    runner.opt.zero_grad(set_to_none=True)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current resident set
    before = _status_kib("VmRSS")
    runner.step()
    hwm = _status_kib("VmHWM")
    mib = 1024.0
    return {"peak_mb": (hwm - base) / mib, "step_growth_mb": (hwm - before) / mib, "resident_before_mb": before / mib}


def cpu_peak(model_name: str, config: str, args: argparse.Namespace) -> dict:
    """:func:`memory_probe` in a subprocess (a fresh allocator and high-water mark per configuration)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(args.threads or os.cpu_count()))
    cmd = [sys.executable, __file__, "--probe", model_name, config, "--batch", str(args.batch)]
    cmd += ["--resolution", str(args.resolution), "--threads", str(args.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {model_name}/{config} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------- main
def bench_model(model_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    runners = {c: Runner(model_name, c, args.batch, args.resolution, device) for c in args.configs}
    res: dict[str, dict] = {c: {"wall_s": [], "cpu_s": []} for c in args.configs}
    for c, r in runners.items():
        res[c]["saved_mb"] = r.saved_bytes() / 2**20
        r.step()  # warm-up: allocator, optimizer states, oneDNN primitives
    order = list(args.configs)
    for rep in range(args.repeats):
        for c in order[rep % len(order) :] + order[: rep % len(order)]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            wall, cpu = runners[c].timed_step()
            res[c]["wall_s"].append(wall)
            res[c]["cpu_s"].append(cpu)
            if device.type == "cuda":
                res[c]["peak_mb"] = max(res[c].get("peak_mb", 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
    del runners
    clock = "wall_s" if device.type == "cuda" else "cpu_s"
    for c in args.configs:
        res[c]["step_s"] = statistics.median(res[c][clock])
        if device.type == "cpu" and not args.no_memory:
            res[c].update(cpu_peak(model_name, c, args))
    ref = res.get("reference")
    ratios = {}
    if ref is not None:
        for c in args.configs:
            if c == "reference":
                continue
            ratios[c] = {
                "speedup": ref["step_s"] / res[c]["step_s"],
                "saved": res[c]["saved_mb"] / ref["saved_mb"],
            }
            if "peak_mb" in res[c]:
                ratios[c]["peak"] = res[c]["peak_mb"] / ref["peak_mb"]
    return {"configs": res, "ratios": ratios, "clock": clock}


def table(results: dict, device: str) -> str:
    lines = [
        f"{'model':<12} {'config':<10} {'step s':>8} {'speedup':>8} {'peak MiB':>9} {'peak x':>7} {'saved MiB':>10} "
        f"{'saved x':>8}   ({device})"
    ]
    for name, r in results.items():
        for c, v in r["configs"].items():
            q = r["ratios"].get(c, {})
            peak = f"{v['peak_mb']:9.0f}" if "peak_mb" in v else f"{'-':>9}"
            lines.append(
                f"{name:<12} {c:<10} {v['step_s']:8.2f} {q.get('speedup', 1.0):8.2f} {peak} "
                f"{q.get('peak', 1.0):7.2f} {v['saved_mb']:10.0f} {q.get('saved', 1.0):8.2f}"
            )
    return "\n".join(lines)


def _reexec_with_mmap_threshold() -> None:
    """Restart this script once with glibc's mmap threshold set (it is read at process start only).

    Without it, glibc keeps freed activation buffers of a few MiB in fragmented heaps: three models at batch 32
    then grew one process past 20 GiB on a 24 GiB machine. With tensors of >= 1 MiB mmapped, freed memory goes back
    to the OS at once, for every configuration alike (their page-fault cost is counted, in proportion to the memory
    each path touches)."""
    if sys.platform == "linux" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="bnext_tiny,reactnet_a", help="comma-separated registered model names")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma-separated, from {CONFIGS}")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    # one thread by default: on a shared machine a multi-threaded step waits on busy cores and its time swings
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="auto", help="auto: CPU, plus a CUDA column when CUDA is present")
    p.add_argument("--quick", action="store_true", help="batch 4 at 96, one repeat (a smoke run)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory subprocesses")
    p.add_argument("--out", default="benchmarks/results/train_step.json")
    p.add_argument("--probe", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.resolution, args.repeats = 4, 96, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(memory_probe(args.probe[0], args.probe[1], args.batch, args.resolution)))
        return {}
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in args.configs:
        if c not in CONFIGS:
            p.error(f"--configs: unknown configuration {c!r}; choose from {CONFIGS}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else [args.device]
    devices = ["cpu" if d == "auto" else d for d in devices]
    report: dict = {
        "benchmark": "train_step",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "resolution": args.resolution,
        "repeats": args.repeats,
        "configs": args.configs,
        "results": {},
    }
    for dev in devices:
        device = torch.device(dev)
        if device.type == "cuda":
            report["cuda_device"] = torch.cuda.get_device_name(device)
        report["results"][dev] = {m: bench_model(m, args, device) for m in models}
        print(table(report["results"][dev], dev), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    _reexec_with_mmap_threshold()
    main()
