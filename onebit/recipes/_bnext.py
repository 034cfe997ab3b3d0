"""Shared pieces of the BNext recipes (hpi-xnor/BNext training script; docs/official-code.md)."""

from __future__ import annotations

from onebit.config import DataConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig, StageConfig

__all__ = ["bnext18_cifar", "bnext_imagenet", "bnext_stage", "smoke_of"]


def bnext_stage(epochs: int, teachers: list[str] | None = None, assistants: list[str] | None = None) -> StageConfig:
    """One stage as the BNext code trains: AdamW lr 1e-3, betas (0.9, 0.999) (paper: beta1 0.99), decoupled decay
    1e-8 on every 4-D / "conv" tensor and 1e-3 on the rest (the code's split by rank), global grad-norm clip 5,
    cosine per epoch after a 5-epoch warm-up prefix from 1e-5 to lr_min 1e-7, progressive weight binarization
    T = 0.9^epoch, binary activations and weights from the start, KD with the gap-sensitive ensemble (official), the
    teachers in half precision (the script runs them under fp16 autocast; the student stays in float32)."""
    return StageConfig(
        name="bnext",
        epochs=epochs,
        binarize_activations=True,
        binarize_weights=True,
        init="scratch",
        optim=OptimConfig(
            name="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-8, other_weight_decay=1e-3, wd_mode="official"
        ),
        schedule=ScheduleConfig(name="cosine", per="epoch", warmup_epochs=5, warmup_lr_init=1e-5, lr_min=1e-7),
        grad_clip=5.0,
        temperature=1.0,
        temperature_decay=0.9,
        teachers=list(teachers or []),
        assistants=list(assistants or []),
        kd_loss="gap_ensemble_official",
        teacher_half=True,
    )


def bnext_imagenet(model: str, batch: int, epochs: int = 512) -> RunConfig:
    """An ImageNet BNext run: RandomResizedCrop 224 bicubic + flip (folder loader), RandAugment m7 mstd0.5,
    eval resize 235 bicubic + centre crop 224. Teachers are given on the command line (see the recipe headers)."""
    return RunConfig(
        recipe=model,
        model=ModelConfig(name=model, num_classes=1000),
        data=DataConfig(
            name="imagenet",
            image_size=224,
            val_resize=235,
            interpolation="bicubic",
            batch_size=batch,
            eval_batch_size=256,
            num_workers=8,
            randaugment=True,
            randaugment_m=7.0,
            randaugment_mstd=0.5,
        ),
        stages=[bnext_stage(epochs)],
    )


def bnext18_cifar(recipe: str, data: str, num_classes: int) -> RunConfig:
    """A CIFAR BNext-18 run (BNext paper §5.1, *CIFAR*): the CIFAR variant of BNext-18 (3x3 stride-1 stem, no
    max-pool), batch 128, 256 epochs, RandomCrop 32 pad 4 + flip and CIFAR normalisation, cross-entropy (no
    teachers); optimizer, schedule and progressive binarization as every BNext stage."""
    return RunConfig(
        recipe=recipe,
        model=ModelConfig(name="bnext_18", num_classes=num_classes),
        data=DataConfig(name=data, image_size=32, batch_size=128, eval_batch_size=256, train_augment="cifar"),
        stages=[bnext_stage(256)],
    )


def smoke_of(cfg: RunConfig, small_model: str) -> RunConfig:
    """The smoke variant: the same stage settings with the family's narrow digits member (same blocks and
    binarizers, ``onebit.models.small``) on the bundled digits (as RGB) at 16 px, 2 epochs, 32 images, no teachers."""
    # width 8: the SE branch is C -> C/8 -> C; 3 channels: RandAugment's colour operations need RGB
    cfg.model = ModelConfig(name=small_model, num_classes=10, kwargs={"width": 8, "in_chans": 3})
    cfg.data = DataConfig(
        name="digits",
        image_size=16,
        batch_size=16,
        eval_batch_size=32,
        limit_train=32,
        limit_val=32,
        randaugment=cfg.data.randaugment,
        channels=3,
    )
    for s in cfg.stages:
        s.epochs, s.teachers, s.assistants = 2, [], []
        s.schedule.warmup_epochs = 1
    return cfg
