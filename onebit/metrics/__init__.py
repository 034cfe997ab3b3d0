"""Training-dynamics metrics: streaming, per layer and overall."""

from onebit.metrics.flips import FlipTracker, binary_latent_weights, c2i_ratio, ff_ratio, flip_count, signs_int8

__all__ = ["FlipTracker", "binary_latent_weights", "c2i_ratio", "ff_ratio", "flip_count", "signs_int8"]
