"""The reversed two-step order (BWBA: binary weights first, then activations) on the digits (AdamBNN Table 4).

Command:   onebit train adambnn_digits_bwba
Cost:      about 1-1.5 minutes on 2 CPU cores (same budget as adambnn_digits).
Expected:  stage 2 val top-1 below the BABW recipe (AdamBNN Table 4: BABW +2.93 % on ImageNet); see
           docs/studies/order.md for the measured gap on the digits.
"""

from onebit.config import RunConfig
from onebit.recipes import adambnn_digits
from onebit.recipes._strategies import two_step


def config() -> RunConfig:
    cfg = adambnn_digits.config()
    cfg.stages = two_step("BWBA", (12, 12), cfg.stages[0].optim, weight_decay=(5e-6, 0.0))
    cfg.stages[1].init_from = "best"  # as adambnn_digits
    return cfg


def smoke() -> RunConfig:
    cfg = adambnn_digits.smoke()
    cfg.stages = two_step("BWBA", (2, 2), cfg.stages[0].optim, weight_decay=(5e-6, 0.0))
    cfg.stages[1].init_from = "best"  # as adambnn_digits
    return cfg
