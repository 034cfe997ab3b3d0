"""AdamBNN two-step recipe (BABW) on the bundled digits — the default ``onebit train`` job.

Command:   onebit train                      (== onebit train adambnn_digits)
           onebit train --smoke              (tiny variant: a few seconds)
Cost:      about 1-1.5 minutes on 2 CPU cores; no data set on disk (scikit-learn's digits, 16x16 upsampled).
Expected:  stage 1 (binary activations, real weights) val top-1 ~98 %; stage 2 (binary weights and activations)
           val top-1 >= 95 % (97.8 % measured with seed 0, lean path); FF ratio falls through each stage as the lr
           decays.

The AdamBNN recipe (paper §3.3, official ``step1``/``step2`` code) scaled to the digits:
* model: ``reactnet_digits`` (ReActNet-A blocks: ApproxSign activations, alpha*sign(W) weights, RPReLU), width 16;
* stage 1 ``step1``: binary activations, real weights, Adam, weight decay 5e-6 on the binary latent weights;
* stage 2 ``step2``: initialised from stage 1's best epoch by val top-1 (``init_from="best"``, as the official step 2
  loads ``model_best``; every latent weight inherited), binary weights and activations, weight decay 0;
* both: Adam (betas 0.9/0.999) lr 2e-3, batch 64, 12 epochs, linear learning-rate decay to 0 per step,
  cross-entropy (no teacher here).
"""

from onebit.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from onebit.recipes._strategies import two_step


def config() -> RunConfig:
    cfg = RunConfig(
        recipe="adambnn_digits",
        seed=0,
        model=ModelConfig(name="reactnet_digits", num_classes=10, kwargs={"width": 16}),
        data=DataConfig(name="digits", image_size=16, batch_size=64),
        stages=two_step("BABW", (12, 12), OptimConfig(name="adam", lr=2e-3), weight_decay=(5e-6, 0.0)),
    )
    cfg.stages[1].init_from = "best"  # as the official step 2, which loads step 1's model_best
    return cfg


def smoke() -> RunConfig:
    cfg = config()
    cfg.model.kwargs = {"width": 4}
    cfg.data.image_size = 8
    cfg.data.limit_train = 256
    cfg.data.limit_val = 128
    for s in cfg.stages:
        s.epochs = 2
    return cfg
