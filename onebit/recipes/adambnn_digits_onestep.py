"""One-step training (binary weights and activations from scratch) on the digits, with the budget of both steps.

Command:   onebit train adambnn_digits_onestep
Cost:      about 1-1.5 minutes on 2 CPU cores.
Expected:  val top-1 around or below the two-step recipe; see docs/studies/weight-decay.md and order.md.
"""

from onebit.config import RunConfig
from onebit.recipes import adambnn_digits
from onebit.recipes._strategies import one_step


def config() -> RunConfig:
    cfg = adambnn_digits.config()
    optim = cfg.stages[0].optim
    optim.weight_decay = 5e-6
    cfg.stages = one_step(24, optim)
    return cfg


def smoke() -> RunConfig:
    cfg = adambnn_digits.smoke()
    cfg.stages = one_step(2, cfg.stages[0].optim)
    return cfg
