"""Training-dynamics metrics: streaming, per layer and overall."""

from onebit.metrics.dynamics import (
    DynamicsTracker,
    cam,
    histogram,
    saturation_bound,
    saturation_share,
    sdam,
    zero_grad_share,
)
from onebit.metrics.flips import FlipTracker, binary_latent_weights, c2i_ratio, ff_ratio, flip_count, signs_int8

__all__ = [
    "DynamicsTracker",
    "FlipTracker",
    "binary_latent_weights",
    "c2i_ratio",
    "cam",
    "ff_ratio",
    "flip_count",
    "histogram",
    "saturation_bound",
    "saturation_share",
    "sdam",
    "signs_int8",
    "zero_grad_share",
]
