"""KD losses by name (:data:`KD_LOSSES`): each is ``fn(student_logits, [teacher_logits, ...], **kw) -> scalar``.

The built-in losses also take ``stats=`` (a dict, default ``None``): when given, they put ``stats["weights"]``, the
batch-mean weight of each teacher in the loss (shape ``[n_teachers]``, detached, on the logits' device), without
changing the value or the gradient: the gap-sensitive ensembles' α (softmax over teachers of the per-sample CE),
``1/n`` for the plain averages (``soft_ce``, ``kl``). :class:`onebit.distill.DistillationTask` logs them per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from onebit.registry import Registry

__all__ = ["KD_LOSSES", "gap_ensemble_official", "gap_ensemble_paper", "kl_loss", "soft_ce"]

KDLoss = Callable[..., Tensor]
KD_LOSSES: Registry[KDLoss] = Registry("KD loss")


def _soft_ce_per_sample(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """−Σ_c softmax(t)_c · log softmax(s)_c per sample (temperature 1)."""
    return -(F.softmax(teacher_logits.float(), dim=1) * F.log_softmax(student_logits.float(), dim=1)).sum(dim=1)


def _check(student_logits: Tensor, teacher_logits: Sequence[Tensor]) -> None:
    if len(teacher_logits) == 0:
        raise ValueError("a KD loss needs at least one teacher's logits")
    for t in teacher_logits:
        if t.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(t.shape)} vs student logits {tuple(student_logits.shape)}")


@KD_LOSSES.register("soft_ce")
def soft_ce(student_logits: Tensor, teacher_logits: Sequence[Tensor], stats: dict | None = None) -> Tensor:
    """Soft cross-entropy of the BNext code: batch mean of −Σ softmax(t) log softmax(s), T = 1.

    With several teachers the per-teacher losses are averaged (the official code uses this loss inside the gap
    ensemble; on its own it has one teacher).
    """
    _check(student_logits, teacher_logits)
    _uniform_weights(stats, len(teacher_logits), student_logits.device)
    return torch.stack([_soft_ce_per_sample(student_logits, t).mean() for t in teacher_logits]).mean()


def _uniform_weights(stats: dict | None, n: int, device: torch.device) -> None:
    if stats is not None:
        stats["weights"] = torch.full((n,), 1.0 / n, device=device)


@KD_LOSSES.register("kl")
def kl_loss(
    student_logits: Tensor, teacher_logits: Sequence[Tensor], temperature: float = 1.0, stats: dict | None = None
) -> Tensor:
    """Hinton KD: τ² · batch mean of KL(softmax(t/τ) ‖ softmax(s/τ)); averaged over teachers.

    The τ² keeps the gradient scale independent of τ.
    """
    _check(student_logits, teacher_logits)
    _uniform_weights(stats, len(teacher_logits), student_logits.device)
    tau = float(temperature)
    log_s = F.log_softmax(student_logits.float() / tau, dim=1)
    losses = []
    for t in teacher_logits:
        log_t = F.log_softmax(t.float() / tau, dim=1)
        losses.append((log_t.exp() * (log_t - log_s)).sum(dim=1).mean())
    return torch.stack(losses).mean() * tau * tau


@KD_LOSSES.register("gap_ensemble_official")
def gap_ensemble_official(
    student_logits: Tensor, teacher_logits: Sequence[Tensor], stats: dict | None = None
) -> Tensor:
    """The BNext code's gap-sensitive ensemble (``docs/official-code.md``, *Training BNext*), teachers ordered
    ``[assistant, strong]``.

    ``L_i`` = batch-mean soft CE to teacher i (a scalar); ``CE_{b,i}`` the same per sample; the weights
    ``α_{b,·} = softmax_i(CE_{b,i})`` are detached; loss = mean_b[Σ_i α_{b,i} · L_i] / 2. The ½ is the code's fixed
    factor (kept for any number of teachers), so one teacher gives ½·L. Because α sums to one per sample and the
    L_i are batch scalars, the value only depends on the batch-mean weights; the order of teachers does not matter.
    """
    _check(student_logits, teacher_logits)
    per_sample = torch.stack([_soft_ce_per_sample(student_logits, t) for t in teacher_logits], dim=1)  # [B, n]
    batch = per_sample.mean(dim=0)  # L_i, [n]
    alpha = F.softmax(per_sample.detach(), dim=1)  # gap-sensitive weights, no gradient through them
    if stats is not None:
        stats["weights"] = alpha.mean(dim=0)  # batch-mean α per teacher (the ½ is not part of α)
    return (alpha * batch.unsqueeze(0)).sum(dim=1).mean() / 2


@KD_LOSSES.register("gap_ensemble_paper")
def gap_ensemble_paper(student_logits: Tensor, teacher_logits: Sequence[Tensor], stats: dict | None = None) -> Tensor:
    """BNext eq. 4 as printed, for any number of teachers.

    Reading: per sample, ``CE_i = −Σ_c p_S,c log p_{T_i},c`` (student probabilities times log teacher probabilities,
    as the equation writes it), ``σ_i = e^{CE_i} / Σ_j e^{CE_j}`` (= softmax over teachers; for two teachers the
    strong one gets σ and the assistant 1−σ, as in the paper), detached like the official weights since the paper
    treats σ as a weight; loss = batch mean of ``Σ_i σ_i · KL(p_{T_i} ‖ p_S)`` (the usual KD direction; "KL_{S,T}"
    does not fix it). There is no ½ factor here.
    """
    _check(student_logits, teacher_logits)
    log_s = F.log_softmax(student_logits.float(), dim=1)
    log_ts = [F.log_softmax(t.float(), dim=1) for t in teacher_logits]
    ce = torch.stack([-(log_s.exp() * lt).sum(dim=1) for lt in log_ts], dim=1)  # [B, n]
    sigma = F.softmax(ce.detach(), dim=1)
    if stats is not None:
        stats["weights"] = sigma.mean(dim=0)  # batch-mean σ per teacher
    kl = torch.stack([(lt.exp() * (lt - log_s)).sum(dim=1) for lt in log_ts], dim=1)  # [B, n]
    return (sigma * kl).sum(dim=1).mean()
