"""AdaBound and AMSBound (Luo et al., 2019, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate").

Adam whose element-wise step size is clipped into a band [lower(t), upper(t)] that starts wide (Adam) and closes on
``final_lr`` (SGD). AdamBNN (Table 5) compares it with Adam on BNNs: the transition to SGD hurts there.

Per parameter, at step t (1-based), with coupled L2 decay ``g <- g + weight_decay * p``::

    m <- beta1 m + (1 - beta1) g                      v <- beta2 v + (1 - beta2) g^2
    v_hat <- max(v_hat, v)   (AMSBound only; the denominator then uses v_hat)
    eta <- lr * sqrt(1 - beta2^t) / (1 - beta1^t) / (sqrt(v) + eps)
    final <- final_lr * lr / base_lr
    eta <- clamp(eta, final * (1 - 1 / (gamma t + 1)), final * (1 + 1 / (gamma t)))
    p <- p - eta * m

The paper's Algorithm 2 writes the bounded rate divided by sqrt(t) and no bias correction (its convergence
analysis needs them); the authors' released code, which every reported experiment used, replaces both with Adam's
bias correction as above, and so do we. Two further details follow that code: ``eps`` is added to sqrt(v) before the
bias correction is applied (Kingma & Ba's "efficient" form; torch's Adam adds it after), and ``final_lr`` follows
learning-rate schedules through the ratio ``lr / base_lr``, ``base_lr`` being the group's ``lr`` when the group was
added (kept in the group, so it survives ``state_dict`` round trips).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["AdaBound"]


class AdaBound(torch.optim.Optimizer):
    """AdaBound / AMSBound optimizer with coupled L2 weight decay.

    Args:
        params: parameters or parameter-group dicts; a group may set any of the keyword arguments below, including
            its own ``weight_decay`` (negative values are applied as given: AdamBNN explores negative decay).
        lr: Adam learning rate (initial step-size scale), default 1e-3.
        betas: decay rates of the first and second moments.
        final_lr: the SGD learning rate both bounds converge to (scaled by ``lr / base_lr`` as schedules move ``lr``).
        gamma: convergence speed of the bounds; after ~1/gamma steps the band is within a factor 2 of ``final_lr``.
        eps: added to sqrt(v) (before bias correction, as in the reference code).
        weight_decay: coupled L2 decay added to the gradient (any sign).
        amsbound: use the running maximum of v in the denominator (AMSBound).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must lie in [0, 1)")
        if final_lr < 0.0:
            raise ValueError(f"invalid final learning rate {final_lr}")
        if gamma <= 0.0:
            raise ValueError(f"invalid gamma {gamma}: the bounds need gamma > 0")
        if eps < 0.0:
            raise ValueError(f"invalid eps {eps}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "final_lr": final_lr,
            "gamma": gamma,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsbound": amsbound,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        # the reference code keeps the construction-time lr outside the groups and so loses it on reload
        group.setdefault("base_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; ``closure`` re-evaluates the loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            base_lr = group["base_lr"]
            # a group created with lr 0 has no scale to follow; keep final_lr as given then
            final_lr = group["final_lr"] * group["lr"] / base_lr if base_lr > 0 else group["final_lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdaBound does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsbound"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["amsbound"]:
                    torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    denom = state["max_exp_avg_sq"].sqrt().add_(group["eps"])
                else:
                    denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                lower = final_lr * (1 - 1 / (group["gamma"] * t + 1))
                upper = final_lr * (1 + 1 / (group["gamma"] * t))
                # a full tensor divided by denom (not scalar * reciprocal) rounds exactly as the reference code does
                rate = torch.full_like(denom, step_size).div_(denom).clamp_(lower, upper)
                p.addcmul_(rate, exp_avg, value=-1.0)
        return loss
