"""AdamBNN two-step recipe on the bundled digits (the default ``onebit train`` job).

Command:   onebit train                      (== onebit train adambnn_digits)
           onebit train --smoke              (tiny variant: a few seconds)
Cost:      about 1-2 minutes on 2 CPU cores; no data set on disk (scikit-learn's digits, 16x16 upsampled).
Expected:  stage 1 (binary activations, real weights) val top-1 ~97-98 %; stage 2 (binary weights and activations)
           val top-1 >= 95 % (typically ~97 %); stage-2 FF ratio far below stage 1's early epochs.

The AdamBNN recipe (paper §3.3, official ``step1``/``step2`` code) scaled to the digits:
* model: ``reactnet_digits`` (ReActNet-A blocks: ApproxSign activations, alpha*sign(W) weights, RPReLU);
* stage 1 ``step1``: binary activations, real weights, Adam, weight decay 5e-6 on the binary latent weights;
* stage 2 ``step2``: initialised from stage 1 (every latent weight inherited), binary weights and activations,
  weight decay 0;
* both: Adam (betas 0.9/0.999), linear learning-rate decay to 0 per step, cross-entropy (no teacher here).
"""

from onebit.config import DataConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig, StageConfig


def config() -> RunConfig:
    return RunConfig(
        recipe="adambnn_digits",
        seed=0,
        model=ModelConfig(name="reactnet_digits", num_classes=10, kwargs={"width": 16}),
        data=DataConfig(name="digits", image_size=16, batch_size=64),
        stages=[
            StageConfig(
                name="step1",
                epochs=12,
                binarize_activations=True,
                binarize_weights=False,
                init="scratch",
                optim=OptimConfig(name="adam", lr=2e-3, weight_decay=5e-6),
                schedule=ScheduleConfig(name="linear", per="step"),
            ),
            StageConfig(
                name="step2",
                epochs=12,
                binarize_activations=True,
                binarize_weights=True,
                init="previous",
                optim=OptimConfig(name="adam", lr=2e-3, weight_decay=0.0),
                schedule=ScheduleConfig(name="linear", per="step"),
            ),
        ],
    )


def smoke() -> RunConfig:
    cfg = config()
    cfg.model.kwargs = {"width": 4}
    cfg.data.image_size = 8
    cfg.data.limit_train = 256
    cfg.data.limit_val = 128
    for s in cfg.stages:
        s.epochs = 2
    return cfg
