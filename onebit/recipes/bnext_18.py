"""BNext-18 on ImageNet (paper: ResNet-34 teacher, standard augmentation; no script was shipped).

Command:   onebit train bnext_18 data.root=/data/imagenet stages.0.teachers=RESNET34_DIR
           onebit train bnext_18 --smoke   (the same stage settings on the bundled digits: seconds, no data)
Cost:      512 epochs of ImageNet at batch 512: weeks on 8 GPUs.
Expected:  68.4 % top-1 (paper Table 2; 5.4 MB, 1.64e8 OPs), with a ResNet-34 teacher.

Settings: BNext's optimizer, schedule and progressive binarization (see ``onebit.recipes._bnext``) with standard
augmentation (random resized crop + flip, no RandAugment), single-teacher soft cross-entropy.
"""

from onebit.config import RunConfig
from onebit.recipes._bnext import bnext_imagenet, smoke_of


def config() -> RunConfig:
    cfg = bnext_imagenet("bnext_18", batch=512)
    cfg.data.randaugment = False
    cfg.stages[0].kd_loss = "soft_ce"
    return cfg


def smoke() -> RunConfig:
    return smoke_of(config(), "bnext18_digits")
