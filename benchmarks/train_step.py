"""Training-step time and peak memory: the official-arithmetic ``reference`` path vs the ``lean`` path.

One training step is what a trainer does: forward, cross-entropy loss, backward, optimizer update (Adam by default,
as the ReActNet/AdamBNN scripts; ``--optimizer adamw`` for BNext's). Configurations: ``reference`` (the official
code's arithmetic: binarizers composed as in the released files, every intermediate kept by autograd, see
``Binarizer.reference``; a cost model of the official training step), ``lean`` (the default training path: the
fused binary conv of ``onebit.layers.fused`` and, for BNext, the fused float chain of ``onebit.layers.fused_bnext``),
``lean+cl`` (lean with a channels_last model and input), ``lean+bf16`` (lean under bf16 autocast).

Everything runs in **plain processes**: no allocator settings (no ``MALLOC_MMAP_THRESHOLD_`` or similar, which turn
every large allocation into fresh page faults and slow the step by a different amount per path). Each model's timing
runs in its own fresh subprocess, each (model, configuration) memory probe in another.

**Time.** Every configuration of a model is built in the same subprocess (same initialisation, same batch); after
one warm-up step each, each repeat runs one step per configuration in a rotating order, so the slow drifts of a
shared machine hit all alike; the table gives the median, split into forward (+ loss), backward and update. CPU:
the process CPU clock (time the process was descheduled by other jobs does not count; with ``--threads 1`` it is the
step's own compute). CUDA: the wall clock after a synchronisation.

**Memory.** ``peak``: the kernel's high-water mark of the resident set (``VmHWM`` in ``/proc/self/status``) over two
training steps, minus the resident set just before them (model, optimizer and batch built): activations, gradients,
the optimizer states created by the first step and allocator slack. Caveat: it measures glibc's heap as the kernel
sees it, so freed-but-kept blocks and fragmentation count, and two runs may differ by some tens of MiB; it is the
quantity an outside observer (``/usr/bin/time -v``, a container limit) sees. CUDA: ``max_memory_allocated`` over a
step. ``saved`` is allocator-independent: the bytes autograd keeps for backward after one forward
(``saved_tensors_hooks``, each storage counted once, parameters and buffers excluded).

    python benchmarks/train_step.py                          # bnext_tiny, reactnet_a; batch 16 at 160; 1 thread
    python benchmarks/train_step.py --batch 32 --resolution 224 --repeats 5
    python benchmarks/train_step.py --quick                  # batch 4 at 96, one repeat: a smoke run
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
DEFAULT_CONFIGS = ("reference", "lean")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One model in one configuration, its optimizer and its input batch."""

    def __init__(
        self, model_name: str, config: str, batch: int, resolution: int, device: torch.device, optimizer: str = "adam"
    ) -> None:
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
        self.opt = OPTIMIZERS[optimizer](self.model.parameters(), lr=1e-3)
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

    def step(self) -> None:
        loss = F.cross_entropy(self.forward(self.x).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed_step(self) -> dict[str, float]:
        """Seconds of one step on the benchmark's clock, split into forward (+ loss), backward and update."""
        clock = time.perf_counter if self.device.type == "cuda" else time.process_time
        _sync(self.device)
        t0 = clock()
        loss = F.cross_entropy(self.forward(self.x).float(), self.y)
        _sync(self.device)
        t1 = clock()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        _sync(self.device)
        t2 = clock()
        self.opt.step()
        _sync(self.device)
        t3 = clock()
        return {"fwd_s": t1 - t0, "bwd_s": t2 - t1, "opt_s": t3 - t2, "step_s": t3 - t0}

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


# ------------------------------------------------------------------------------------------------- subprocesses
def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def memory_probe(model_name: str, config: str, args: argparse.Namespace) -> dict:
    """In a fresh process: the resident high-water mark of two steps beyond the resident set before them (MiB)."""
    runner = Runner(model_name, config, args.batch, args.resolution, torch.device("cpu"), args.optimizer)
    before = _status_kib("VmRSS")
    for _ in range(2):  # the first step creates the optimizer states, the second runs with them
        runner.step()
    hwm = _status_kib("VmHWM")
    return {"peak_mb": (hwm - before) / 1024.0, "resident_before_mb": before / 1024.0}


def timing_run(model_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """In a fresh process: every configuration of one model, interleaved (see the module docstring)."""
    runners = {c: Runner(model_name, c, args.batch, args.resolution, device, args.optimizer) for c in args.configs}
    res: dict[str, dict] = {c: {k: [] for k in ("fwd_s", "bwd_s", "opt_s", "step_s")} for c in args.configs}
    for c, r in runners.items():
        res[c]["saved_mb"] = r.saved_bytes() / 2**20
        r.step()  # warm-up: allocator, optimizer states, oneDNN primitives
    order = list(args.configs)
    for rep in range(args.repeats):
        for c in order[rep % len(order) :] + order[: rep % len(order)]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for k, v in runners[c].timed_step().items():
                res[c][k].append(v)
            if device.type == "cuda":
                res[c]["peak_mb"] = max(res[c].get("peak_mb", 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
    for c in args.configs:
        res[c]["samples_s"] = res[c].pop("step_s")
        for k in ("fwd_s", "bwd_s", "opt_s"):
            res[c][k] = statistics.median(res[c][k])
        res[c]["step_s"] = statistics.median(res[c]["samples_s"])
    return res


def _child(args: argparse.Namespace, extra: list[str]) -> dict:
    """Run this script with ``extra`` in a fresh plain process (only the thread count is set) and read its JSON."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads or os.cpu_count()))
    cmd = [sys.executable, os.path.abspath(__file__), *extra, "--batch", str(args.batch)]
    cmd += ["--resolution", str(args.resolution), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    cmd += ["--configs", ",".join(args.configs), "--optimizer", args.optimizer]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------- main
def bench_model(model_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    res = _child(args, ["--run-model", model_name, "--device", device.type])
    if device.type == "cpu" and not args.no_memory:
        for c in args.configs:
            res[c].update(_child(args, ["--probe", model_name, c]))
    ref = res.get("reference")
    ratios = {}
    if ref is not None:
        for c in args.configs:
            if c == "reference":
                continue
            ratios[c] = {
                "speedup": ref["step_s"] / res[c]["step_s"],
                "backward_speedup": ref["bwd_s"] / res[c]["bwd_s"],
                "saved": res[c]["saved_mb"] / ref["saved_mb"],
            }
            if "peak_mb" in res[c]:
                ratios[c]["peak"] = res[c]["peak_mb"] / ref["peak_mb"]
    clock = "wall_s" if device.type == "cuda" else "cpu_s"
    return {"configs": res, "ratios": ratios, "clock": clock}


def table(results: dict, device: str) -> str:
    lines = [
        f"{'model':<12} {'config':<10} {'step s':>7} {'fwd s':>6} {'bwd s':>6} {'opt s':>6} {'speedup':>8} "
        f"{'peak MiB':>9} {'peak x':>7} {'saved MiB':>10} {'saved x':>8}   ({device})"
    ]
    for name, r in results.items():
        for c, v in r["configs"].items():
            q = r["ratios"].get(c, {})
            peak = f"{v['peak_mb']:9.0f}" if "peak_mb" in v else f"{'-':>9}"
            lines.append(
                f"{name:<12} {c:<10} {v['step_s']:7.2f} {v['fwd_s']:6.2f} {v['bwd_s']:6.2f} {v['opt_s']:6.2f} "
                f"{q.get('speedup', 1.0):8.2f} {peak} {q.get('peak', 1.0):7.2f} {v['saved_mb']:10.0f} "
                f"{q.get('saved', 1.0):8.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="bnext_tiny,reactnet_a", help="comma-separated registered model names")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma-separated, from {CONFIGS}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=160)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per configuration (after one warm-up)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    # one thread by default: on a shared machine a multi-threaded step waits on busy cores and its time swings
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="auto", help="auto: CPU, plus a CUDA column when CUDA is present")
    p.add_argument("--quick", action="store_true", help="batch 4 at 96, one repeat (a smoke run)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory subprocesses")
    p.add_argument("--out", default="benchmarks/results/train_step.json")
    p.add_argument("--probe", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    p.add_argument("--run-model", metavar="MODEL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.resolution, args.repeats = 4, 96, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in args.configs:
        if c not in CONFIGS:
            p.error(f"--configs: unknown configuration {c!r}; choose from {CONFIGS}")
    if args.probe:
        print(json.dumps(memory_probe(args.probe[0], args.probe[1], args)))
        return {}
    if args.run_model:
        print(json.dumps(timing_run(args.run_model, args, torch.device(args.device))))
        return {}
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
        "optimizer": args.optimizer,
        "configs": args.configs,
        "memory_method": "VmHWM - VmRSS over two steps, fresh plain process per configuration",
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
    main()
