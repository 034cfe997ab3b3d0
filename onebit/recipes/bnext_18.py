"""BNext-18 on ImageNet (paper: ResNet-34 teacher, standard augmentation; no script was shipped).

Command:   onebit train bnext_18 data.root=/data/imagenet stages.0.teachers=resnet34@/w/resnet34-b627a593.pth
           onebit rehearse bnext_18   (the real config for a few steps on a generated folder at 32 px)
           onebit train bnext_18 --smoke   (the same stage settings on the bundled digits: seconds, no data)
Cost:      512 epochs of ImageNet at batch 512: weeks on 8 GPUs.
Expected:  68.4 % top-1 (paper Table 2; 5.4 MB, 1.64e8 OPs), with a ResNet-34 teacher.

Teachers (Table 9): strong ResNet-34 (torchvision ``resnet34``); no assistant group ("standard KD for a fair
comparison", paper §7.3). Pass it as ``resnet34@FILE`` (onebit's float ResNet-34
reads torchvision's released file) or ``torchvision:resnet34@pretrained``.
Settings: BNext's optimizer, schedule and progressive binarization (see ``onebit.recipes._bnext``) with standard
augmentation (random resized crop + flip, no RandAugment), single-teacher soft cross-entropy, batch 512 (§5.1).
"""

from onebit.config import RunConfig
from onebit.recipes._bnext import bnext_imagenet, smoke_of

#: Table 9: ResNet-34 (torchvision's ImageNet weights, 73.31 %), no assistants
PAPER_TEACHERS = (("torchvision:resnet34@pretrained",), ())


def config() -> RunConfig:
    cfg = bnext_imagenet("bnext_18", batch=512)
    cfg.data.randaugment = False
    cfg.stages[0].kd_loss = "soft_ce"
    return cfg


def smoke() -> RunConfig:
    return smoke_of(config(), "bnext18_digits")
