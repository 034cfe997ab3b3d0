"""Training strategies as stage lists (AdamBNN §3.3, Table 4): one-step, two-step BABW and BWBA."""

from __future__ import annotations

from onebit.config import OptimConfig, ScheduleConfig, StageConfig

__all__ = ["one_step", "two_step"]


def one_step(epochs: int, optim: OptimConfig, schedule: ScheduleConfig | None = None) -> list[StageConfig]:
    """One stage with binary activations and weights from scratch."""
    return [
        StageConfig(
            name="onestep",
            epochs=epochs,
            binarize_activations=True,
            binarize_weights=True,
            init="scratch",
            optim=optim,
            schedule=schedule or ScheduleConfig(),
        )
    ]


def two_step(
    order: str,
    epochs: tuple[int, int],
    optim: OptimConfig,
    weight_decay: tuple[float, float] = (5e-6, 0.0),
    schedule: ScheduleConfig | None = None,
) -> list[StageConfig]:
    """Two stages; stage 2 is initialised from stage 1 with every latent weight inherited.

    Args:
        order: ``BABW`` (binary activations first, then weights: AdamBNN/ReActNet/Real-to-Binary) or ``BWBA``
            (binary weights first, then activations: Zhuang et al. 2018).
        epochs: epochs of step 1 and step 2.
        optim: optimizer of both steps; its ``weight_decay`` is replaced by ``weight_decay[i]`` in step i.
        weight_decay: per-step decay of the binary latent weights (AdamBNN: 5e-6 then 0).
    """
    order = order.upper()
    if order not in ("BABW", "BWBA"):
        raise ValueError(f"order must be 'BABW' or 'BWBA', got {order!r}")
    first_acts = order == "BABW"
    stages = []
    for i, (name, acts, weights) in enumerate([("step1", first_acts, not first_acts), ("step2", True, True)]):
        o = OptimConfig(**{**optim.__dict__, "weight_decay": weight_decay[i]})
        stages.append(
            StageConfig(
                name=name,
                epochs=epochs[i],
                binarize_activations=acts,
                binarize_weights=weights,
                init="scratch" if i == 0 else "previous",
                optim=o,
                schedule=ScheduleConfig(**(schedule or ScheduleConfig()).__dict__),
            )
        )
    return stages
