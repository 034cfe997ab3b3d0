"""ReActNet-A with the ReActNet schedule on ImageNet (liuzechun/ReActNet mobilenet/1_step1 + 2_step2).

Command:   onebit train reactnet_a data.root=/data/imagenet [data.num_workers=8] \\
               stages.*.teachers=resnet34@/w/resnet34-b627a593.pth
           onebit rehearse reactnet_a   (the real config for a few steps on a generated folder at 32 px)
           onebit train reactnet_a --smoke   (the same recipe on the bundled digits at 16 px: seconds, no data)
Cost:      2 x 128 epochs of ImageNet at batch 256: on the order of days on 8 GPUs (the paper's setting).
Expected:  69.4 % top-1 (ReActNet paper, with distillation from a ResNet-34); step 1 ~70.1 % (ReActNet issue #21).

As the released code (docs/official-code.md, *Training ReActNet and AdamBNN*): Adam betas (0.9, 0.999), lr 1.25e-3,
batch 256, coupled weight decay 1e-5 in step 1 and 0 in step 2 on every 4-D tensor or "conv" parameter
(``wd_mode=official``), LambdaLR linear decay stepped per epoch before the first epoch (``official_offset``),
RandomResizedCrop 224 bilinear + flip, eval resize 256 + centre crop 224. Differences: step 2 inherits every step-1
latent weight here (the released ReActNet step 2 silently drops them through a key mismatch; AdamBNN fixed that).
Distillation as released: pass a ResNet-34 teacher with ``stages.*.teachers=resnet34@FILE`` (``kd_loss=soft_ce``,
no label term); without one the stages use label cross-entropy.
"""

from onebit.config import DataConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig
from onebit.recipes._strategies import two_step

LR, BATCH, EPOCHS, WD = 1.25e-3, 256, (128, 128), (1e-5, 0.0)


def _imagenet(epochs=EPOCHS, wd=WD) -> RunConfig:
    return RunConfig(
        recipe="reactnet_a",
        seed=0,
        model=ModelConfig(name="reactnet_a", num_classes=1000),
        data=DataConfig(
            name="imagenet",
            image_size=224,
            val_resize=256,
            interpolation="bilinear",
            batch_size=BATCH,
            eval_batch_size=256,
            num_workers=8,
            augment=True,
        ),
        stages=two_step(
            "BABW",
            epochs,
            OptimConfig(name="adam", lr=LR, wd_mode="official"),
            weight_decay=wd,
            schedule=ScheduleConfig(name="linear", per="epoch", official_offset=True),
        ),
    )


#: the papers' teacher: ResNet-34 with torchvision's ImageNet weights (73.31 %), every stage
PAPER_TEACHERS = (("torchvision:resnet34@pretrained",), ())


def config() -> RunConfig:
    return _imagenet()


def smoke_of(cfg: RunConfig) -> RunConfig:
    """The smoke variant of an ImageNet ReActNet-A recipe: same model, stages and optimizer on the bundled digits
    (replicated to 3 channels, 16 px, 16 images, batch 8, two epochs per stage: with the official per-epoch offset
    the last epoch of a stage trains at lr 0)."""
    cfg.model.num_classes = 10
    cfg.data = DataConfig(
        name="digits", image_size=16, channels=3, batch_size=8, eval_batch_size=16, limit_train=16, limit_val=16
    )
    for s in cfg.stages:
        s.epochs = 2
    return cfg


def smoke() -> RunConfig:
    return smoke_of(config())
