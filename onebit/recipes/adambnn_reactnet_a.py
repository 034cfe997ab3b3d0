"""AdamBNN on ReActNet-A, ImageNet (liuzechun/AdamBNN step1 + step2): the 70.5 % recipe.

Command:   onebit train adambnn_reactnet_a data.root=/data/imagenet [data.num_workers=8] \\
               stages.*.teachers=resnet34@/w/resnet34-b627a593.pth
           onebit rehearse adambnn_reactnet_a   (the real config for a few steps on a generated folder at 32 px)
           onebit train adambnn_reactnet_a --smoke   (same recipe on the bundled digits at 16 px: seconds)
Cost:      2 x 256 epochs of ImageNet at batch 256 (twice the ReActNet schedule): days on 8 GPUs.
Expected:  70.5 % top-1 / 89.1 % top-5 (AdamBNN Table 2, with distillation from a ResNet-34); step 1 ~71.4 %
           (AdamBNN issue #2).

As the released code (docs/official-code.md, *Training ReActNet and AdamBNN*): Adam betas (0.9, 0.999), lr 1.25e-3,
batch 256, 256 epochs per step, weight decay 5e-6 in step 1 then 0 in step 2 on every 4-D tensor or "conv" parameter
(``wd_mode=official``), linear decay per epoch stepped before the first epoch, step 2 strictly initialised from step 1's
best checkpoint by val top-1 (``init_from="best"``: the official step 2 loads ``model_best``; every latent weight
inherited).
Distillation as released: pass a ResNet-34 teacher with ``stages.*.teachers=resnet34@FILE`` (onebit's float
ResNet-34 reads torchvision's released weights file) or ``torchvision:resnet34@pretrained``; the default
``kd_loss=soft_ce`` with no label term is the released loss. Without a teacher the stages train with cross-entropy on
the labels.
"""

from onebit.config import RunConfig
from onebit.recipes import reactnet_a

#: the papers' teacher: ResNet-34 with torchvision's ImageNet weights (73.31 %), every stage
PAPER_TEACHERS = (("torchvision:resnet34@pretrained",), ())


def config() -> RunConfig:
    cfg = reactnet_a._imagenet(epochs=(256, 256), wd=(5e-6, 0.0))
    cfg.recipe = "adambnn_reactnet_a"
    cfg.stages[1].init_from = "best"  # the official step 2 loads step 1's model_best.pth.tar
    return cfg


def smoke() -> RunConfig:
    return reactnet_a.smoke_of(config())
