"""``onebit toy-landscape``: AdamBNN's two-binary-node example (Fig. 6), SGD vs Adam over one gradient sequence."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from onebit.analysis.toy import ToyConfig, plot_toy, save_toy, toy_experiment

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "toy-landscape"
USER_ERRORS = (ValueError,)  # ToyConfig's validation of the options


def run(args: argparse.Namespace, console: Console) -> int:
    cfg = ToyConfig(steps=args.steps, lr_sgd=args.lr_sgd, lr_adam=args.lr_adam, momentum=args.momentum, seed=args.seed)
    result = toy_experiment(cfg)
    files = [save_toy(result, args.out), *plot_toy(result, args.out)]
    n = result.numbers
    console.print(
        f"start {cfg.start}; {cfg.steps} gradients of the clip surface at the start; "
        f"dL/dw1 = 0 in {100 * n['w1_zero_gradient_fraction']:.0f}% of them (node 1 saturated)"
    )
    t = Table(title="Share of the total update in the vanishing direction w1")
    for col in ("optimizer", "lr", "share w1", "path w1", "path w2", "final (w1, w2)", "sign loss"):
        t.add_column(col, justify="left" if col == "optimizer" else "right")
    for name, lr in (("sgd", cfg.lr_sgd), ("adam", cfg.lr_adam)):
        o = n["optimizers"][name]
        t.add_row(
            f"SGD (momentum {cfg.momentum:g})" if name == "sgd" else "Adam",
            f"{lr:g}",
            f"{o['share_vanishing_direction']:.3f}",
            f"{o['path_length']['w1']:.3f}",
            f"{o['path_length']['w2']:.3f}",
            f"({o['final'][0]:+.2f}, {o['final'][1]:+.2f})",
            f"{o['final_sign_loss']:g}",
        )
    console.print(t)
    console.print(f"Adam / SGD share: {n['adam_over_sgd_share']:.2f}x")
    for f in files:
        console.print(f"wrote {f}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``toy-landscape`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME,
        help="AdamBNN Fig. 6: two sign nodes, sign vs clip surfaces, SGD vs Adam over the same gradients",
        description="Two latent weights binarized by sign, loss (sign w1 + sign w2 - 2)^2/4; gradients of the clip "
        "(STE) surface with a saturating node 1; SGD (momentum) and Adam replay the same gradient sequence. Prints "
        "each optimizer's share of the update in the vanishing direction; writes PNGs and toy_landscape.json.",
    )
    p.add_argument("--out", default="toy_landscape", help="output directory (default ./toy_landscape)")
    p.add_argument("--steps", type=int, default=100, help="gradients in the shared sequence (default 100)")
    p.add_argument("--lr-sgd", type=float, default=7e-4, help="SGD learning rate (default 7e-4)")
    p.add_argument("--lr-adam", type=float, default=0.02, help="Adam learning rate (default 0.02)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-batch input magnitudes (default 0)")
    return p
