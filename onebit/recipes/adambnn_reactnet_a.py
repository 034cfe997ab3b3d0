"""AdamBNN on ReActNet-A, ImageNet (liuzechun/AdamBNN step1 + step2): the 70.5 % recipe.

Command:   onebit train adambnn_reactnet_a data.root=/data/imagenet [data.num_workers=8]
           onebit train adambnn_reactnet_a --smoke   (same recipe on the bundled digits at 16 px: seconds)
Cost:      2 x 256 epochs of ImageNet at batch 256 (twice the ReActNet schedule): days on 8 GPUs.
Expected:  70.5 % top-1 / 89.1 % top-5 (AdamBNN Table 2, with distillation from a ResNet-34); step 1 ~71.4 %
           (AdamBNN issue #2).

As the released code (docs/official-code.md, *Training ReActNet and AdamBNN*): Adam betas (0.9, 0.999), lr 1.25e-3,
batch 256, 256 epochs per step, weight decay 5e-6 in step 1 then 0 in step 2 on every 4-D tensor or "conv" parameter
(``wd_mode=official``), linear decay per epoch stepped before the first epoch, step 2 strictly initialised from step 1
(every latent weight inherited).
Distillation as released: pass a ResNet-34 teacher (a model or run directory, or an ``nn.Module`` through
``onebit.distill.load_teacher``) with ``stages.*.teachers=DIR``; the default ``kd_loss=soft_ce`` with no label term is
the released loss. Without a teacher the stages train with cross-entropy on the labels.
"""

from onebit.config import RunConfig
from onebit.recipes import reactnet_a


def config() -> RunConfig:
    cfg = reactnet_a._imagenet(epochs=(256, 256), wd=(5e-6, 0.0))
    cfg.recipe = "adambnn_reactnet_a"
    return cfg


def smoke() -> RunConfig:
    return reactnet_a.smoke_of(config())
