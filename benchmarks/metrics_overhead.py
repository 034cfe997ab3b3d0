"""Cost of the streaming metrics in a training step: no trackers vs FlipTracker vs FlipTracker + DynamicsTracker.

Three identical models (same initialisation, same batch) train side by side; each repeat runs one block of steps
per configuration, in a rotating order, so slow drifts of the machine (other jobs, clocks) hit all three alike.
The overhead is the median over repeats of the per-repeat ratio to the no-tracker block, on the process CPU clock
for CPU runs (``--clock auto``: time this process was descheduled by other jobs does not count; with one thread it
is the step's own compute) and on the wall clock, after a device synchronisation, for CUDA. A step is what
``onebit.train.loop.train_one_epoch`` does: forward, loss read on the host, backward, optimizer step, tracker calls.

    python benchmarks/metrics_overhead.py                     # reactnet_digits width 16, batch 64, 16x16, CPU
    python benchmarks/metrics_overhead.py --device cuda --out benchmarks/results/metrics_overhead_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import onebit
from onebit.config import OptimConfig
from onebit.metrics import DynamicsTracker, FlipTracker
from onebit.train.optim import build_optimizer

CONFIGS = ("none", "flips", "flips+dynamics")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One model, its optimizer and the trackers of one configuration."""

    def __init__(self, config: str, args: argparse.Namespace, device: torch.device) -> None:
        torch.manual_seed(0)
        self.model = onebit.create_model("reactnet_digits", width=args.width, num_classes=10).to(device).train()
        self.opt, _ = build_optimizer(self.model, OptimConfig(name="adam", lr=1e-3))
        self.flips = FlipTracker.for_model(self.model) if config != "none" else None
        self.dynamics = DynamicsTracker(self.model) if config == "flips+dynamics" else None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        out = self.model(x)
        loss = F.cross_entropy(out, y)
        float(loss.detach())  # the loop reads the loss every step (NaN check)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.dynamics is not None:
            self.dynamics.after_backward()
            self.dynamics.before_step()
        self.opt.step()
        if self.dynamics is not None:
            self.dynamics.after_step()
        if self.flips is not None:
            float(self.flips.update())  # the loop reads the FF ratio every step
        int((out.argmax(1) == y).sum())

    def block(self, x: torch.Tensor, y: torch.Tensor, steps: int, device: torch.device) -> tuple[float, float]:
        """Wall-clock and process CPU seconds per step over ``steps`` steps."""
        _sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step(x, y)
        _sync(device)
        return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def self_times(runner: Runner, x: torch.Tensor, y: torch.Tensor, steps: int, device: torch.device) -> dict:
    """Seconds per step spent inside each tracker call of ``runner`` (and in the whole step), on the CPU clock.

    A second, direct estimate that does not depend on the difference of two noisy step times: timing hooks are put
    just before (``prepend``) and just after the tracker's forward pre-hooks. On CUDA every interval ends with a
    synchronisation, so the numbers include the kernels but the step then runs slower than in :meth:`Runner.block`.
    """
    dyn, flips = runner.dynamics, runner.flips

    def now() -> float:
        _sync(device)
        return time.process_time()

    acc = dict.fromkeys(
        ("saturation_hooks", "after_backward", "before_step", "after_step", "flips_update", "step"), 0.0
    )
    start: dict[int, float] = {}
    handles = []
    for m in dyn.layers.values():
        handles.append(m.register_forward_pre_hook(lambda mod, a: start.__setitem__(id(mod), now()), prepend=True))
        handles.append(
            m.register_forward_pre_hook(
                lambda mod, a: acc.__setitem__("saturation_hooks", acc["saturation_hooks"] + now() - start[id(mod)])
            )
        )

    def timed(key: str, fn) -> None:
        t0 = now()
        fn()
        acc[key] += now() - t0

    for _ in range(steps):
        t_step = now()
        out = runner.model(x)
        loss = F.cross_entropy(out, y)
        float(loss.detach())
        runner.opt.zero_grad(set_to_none=True)
        loss.backward()
        timed("after_backward", dyn.after_backward)
        timed("before_step", dyn.before_step)
        runner.opt.step()
        timed("after_step", dyn.after_step)
        timed("flips_update", lambda: float(flips.update()))
        int((out.argmax(1) == y).sum())
        acc["step"] += now() - t_step
    for h in handles:
        h.remove()
    return {k: v / steps for k, v in acc.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=16, help="input side (1 channel)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=15, help="timed blocks per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed blocks per configuration first")
    # one thread by default: on a shared machine a multi-threaded step waits on busy cores and its time swings 10x
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto", help="auto: cpu on CPU, wall on CUDA")
    p.add_argument("--out", default="benchmarks/results/metrics_overhead.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    runners = {c: Runner(c, args, device) for c in CONFIGS}
    for _ in range(args.warmup):
        for r in runners.values():
            r.block(x, y, args.steps, device)

    clock = args.clock if args.clock != "auto" else ("wall" if device.type == "cuda" else "cpu")
    wall: dict[str, list[float]] = {c: [] for c in CONFIGS}
    cpu: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for rep in range(args.repeats):
        order = CONFIGS[rep % 3 :] + CONFIGS[: rep % 3]  # rotate so no configuration always runs first
        for c in order:
            w, t = runners[c].block(x, y, args.steps, device)
            wall[c].append(w)
            cpu[c].append(t)
    times = wall if clock == "wall" else cpu

    own = self_times(runners["flips+dynamics"], x, y, args.repeats * args.steps // 3, device)
    dyn_own = own["saturation_hooks"] + own["after_backward"] + own["before_step"] + own["after_step"]

    # what the loop pays once per epoch / stage (host reads), for scale
    dyn = runners["flips+dynamics"].dynamics
    dyn.reset()
    _sync(device)
    t0 = time.perf_counter()
    dyn.epoch_summary()
    epoch_summary_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dyn.stage_summary()
    stage_summary_s = time.perf_counter() - t0

    base = times["none"]
    result = {
        "model": f"reactnet_digits(width={args.width})",
        "batch": args.batch,
        "input": [1, args.size, args.size],
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "steps_per_block": args.steps,
        "repeats": args.repeats,
        "clock": clock,
        "binary_layers": len(dyn.names),
        "step_ms": {c: 1e3 * statistics.median(t) for c, t in times.items()},
        "step_ms_wall": {c: 1e3 * statistics.median(t) for c, t in wall.items()},
        "step_ms_quartiles": {c: [1e3 * q for q in statistics.quantiles(t, n=4)] for c, t in times.items()},
        "overhead_pct": {
            c: 100 * (statistics.median(t / b for t, b in zip(times[c], base)) - 1) for c in CONFIGS if c != "none"
        },
        "dynamics_over_flips_pct": 100
        * (statistics.median(d / f for d, f in zip(times["flips+dynamics"], times["flips"])) - 1),
        "self_time_ms": {k: 1e3 * v for k, v in own.items()},
        "dynamics_self_pct": 100 * dyn_own / (own["step"] - dyn_own - own["flips_update"]),
        "flips_self_pct": 100 * own["flips_update"] / (own["step"] - dyn_own - own["flips_update"]),
        "epoch_summary_ms": 1e3 * epoch_summary_s,
        "stage_summary_ms": 1e3 * stage_summary_s,
    }
    head = f"{result['model']}, batch {args.batch}, {args.size}x{args.size}, {result['device']}"
    print(f"{head}, {result['threads']} threads, {args.repeats} x {args.steps} steps per configuration, {clock} clock")
    print(f"{'configuration':<16} {'step ms (median)':>17} {'wall ms':>9} {'overhead vs none':>17}")
    for c in CONFIGS:
        over = "" if c == "none" else f"{result['overhead_pct'][c]:+.2f} %"
        print(f"{c:<16} {result['step_ms'][c]:>17.3f} {result['step_ms_wall'][c]:>9.3f} {over:>17}")
    print(f"DynamicsTracker on top of FlipTracker: {result['dynamics_over_flips_pct']:+.2f} %")
    parts = ", ".join(f"{k} {v:.3f}" for k, v in result["self_time_ms"].items())
    print(f"time inside the trackers (ms per step): {parts}")
    print(
        f"  DynamicsTracker {result['dynamics_self_pct']:.2f} %, FlipTracker {result['flips_self_pct']:.2f} % "
        "of the step without them"
    )
    print(f"epoch_summary {result['epoch_summary_ms']:.2f} ms, stage_summary {result['stage_summary_ms']:.2f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
