"""Optimizers built on parameter groups decided by role, in one function that says what it did."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from onebit.config import OptimConfig
from onebit.layers import BinaryMixin
from onebit.registry import Registry
from onebit.train.adabound import AdaBound

__all__ = ["ADABOUND_FINAL_LR", "OPTIMIZERS", "PAPER_DEFAULT_LR", "build_optimizer", "default_lr", "param_groups"]

log = logging.getLogger(__name__)

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


def _adam_family(cls, amsgrad: bool = False):
    def make(groups, cfg: OptimConfig):
        kw = {"amsgrad": True} if amsgrad else {}
        return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **kw)

    return make


OPTIMIZERS.register("adam", _adam_family(torch.optim.Adam))
OPTIMIZERS.register("adamw", _adam_family(torch.optim.AdamW))
OPTIMIZERS.register("amsgrad", _adam_family(torch.optim.Adam, amsgrad=True))
OPTIMIZERS.register(
    "sgd", lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
)
OPTIMIZERS.register("rmsprop", lambda groups, cfg: torch.optim.RMSprop(groups, lr=cfg.lr, eps=cfg.eps, momentum=0.0))
OPTIMIZERS.register("adagrad", lambda groups, cfg: torch.optim.Adagrad(groups, lr=cfg.lr, eps=1e-10))
OPTIMIZERS.register("adadelta", lambda groups, cfg: torch.optim.Adadelta(groups, lr=cfg.lr, eps=1e-6))

#: AdaBound's final (SGD) learning rate: the reference default, which AdamBNN Table 5 used (0.001 -> 0.1).
ADABOUND_FINAL_LR = 0.1
OPTIMIZERS.register(
    "adabound",
    lambda groups, cfg: AdaBound(groups, lr=cfg.lr, betas=tuple(cfg.betas), final_lr=ADABOUND_FINAL_LR, eps=cfg.eps),
)

#: Initial learning rates of AdamBNN's optimizer comparison (§4.3.3, Table 5: PyTorch defaults; AdaBound 1e-3
#: transiting to ``ADABOUND_FINAL_LR``) and of its SGD runs (§4.1).
PAPER_DEFAULT_LR: dict[str, float] = {
    "adam": 1e-3,
    "rmsprop": 1e-2,
    "adagrad": 1e-2,
    "adadelta": 1.0,
    "amsgrad": 1e-3,
    "adabound": 1e-3,
    "sgd": 0.1,
}


def default_lr(name: str) -> float:
    """The initial learning rate AdamBNN used for optimizer ``name`` (``PAPER_DEFAULT_LR``)."""
    try:
        return PAPER_DEFAULT_LR[name]
    except KeyError:
        known = ", ".join(sorted(PAPER_DEFAULT_LR))
        raise KeyError(f"AdamBNN gives no default learning rate for {name!r} (known: {known})") from None


def _is_no_decay(name: str, p: nn.Parameter) -> bool:
    # BN affine, PReLU slopes, biases, learnable shifts ([1,C,1,1] "bias") and recoupling scales: not weights.
    return p.ndim <= 1 or name.endswith("bias") or name.endswith(".scale")


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into named groups with their weight decay.

    ``wd_mode="paper"``: ``binary`` = latent weights of binary layers (``cfg.weight_decay``); ``real`` = other
    weights, e.g. stem, classifier, SE convs (``cfg.other_weight_decay``); ``no_decay`` = norm/PReLU/bias/shift/scale
    parameters (0; set ``no_decay_norm_bias=False`` to give them ``other_weight_decay``).
    ``wd_mode="official"``: the released AdamBNN/ReActNet (and BNext) rule: ``conv_or_4d`` = every 4-D tensor or
    name containing "conv" (``cfg.weight_decay``), ``rest`` = the others (``cfg.other_weight_decay``).
    Empty groups are dropped. Each group carries ``name`` for logs.
    """
    binary_ids = {id(m.weight) for m in model.modules() if isinstance(m, BinaryMixin)}
    buckets: dict[str, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if cfg.wd_mode == "official":  # wd_mode is "paper" or "official" (WdMode, checked by OptimConfig)
            g = "conv_or_4d" if (p.ndim == 4 or "conv" in name) else "rest"
        elif id(p) in binary_ids:
            g = "binary"
        elif cfg.no_decay_norm_bias and _is_no_decay(name, p):
            g = "no_decay"
        else:
            g = "real"
        buckets.setdefault(g, []).append(p)
    decay = {
        "binary": cfg.weight_decay,
        "real": cfg.other_weight_decay,
        "no_decay": 0.0,
        "conv_or_4d": cfg.weight_decay,
        "rest": cfg.other_weight_decay,
    }
    return [{"name": g, "params": ps, "weight_decay": decay[g]} for g, ps in buckets.items() if ps]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> tuple[torch.optim.Optimizer, list[str]]:
    """The optimizer of ``cfg.name`` over :func:`param_groups`; also returns one log line per group."""
    groups = param_groups(model, cfg)
    opt = OPTIMIZERS.get(cfg.name)(groups, cfg)
    for g in opt.param_groups:
        g["initial_lr"] = cfg.lr
    lines = [
        f"{g['name']}: {len(g['params'])} tensors, {sum(p.numel() for p in g['params']):,} params, "
        f"weight_decay {g['weight_decay']:g}"
        for g in groups
    ]
    for line in lines:
        log.info("optimizer %s group %s", cfg.name, line)
    return opt, lines
