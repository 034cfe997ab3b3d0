"""BNext-L on ImageNet with BNext's training recipe (docs/official-code.md, *Training BNext*; paper Tables 2 and 9).

Command:   onebit train bnext_large data.root=/data/imagenet \\
               stages.0.teachers=timm:convnext_tiny@pretrained \\
               stages.0.assistants=timm:efficientnet_b0@pretrained,timm:efficientnet_b4@pretrained,timm:convnext_tiny@pretrained
           onebit rehearse bnext_large   (the real config for a few steps on a generated folder at 32 px)
           onebit train bnext_large --smoke   (the same stage settings on the bundled digits: seconds, no data)
Cost:      512 epochs of ImageNet at global batch 128 (the shipped script): weeks on 8 GPUs.
Expected:  80.57 % top-1 (paper Table 2; 106.1 MB, 8.54e8 OPs), with the teachers of Table 9.

Teachers (Table 9 / the official script): strong convnext_tiny;
assistant group [efficientnet_b0, efficientnet_b4, convnext_tiny], switched every 512/n epochs.
Teachers are specs (``onebit.distill.load_teacher``): ``timm:NAME@pretrained`` takes timm's weights as the
official script does (``pretrained=True``), ``timm:NAME@FILE`` a local file; without teachers the stage trains with
plain cross-entropy. ``PAPER_TEACHERS`` holds Table 9's group.
Settings as the released code: AdamW lr 1e-3 betas (0.9, 0.999), decay 1e-8 (4-D) / 1e-3 (rest), grad-norm clip 5,
cosine with a 5-epoch warm-up prefix, T = 0.9^epoch, RandAugment m7 mstd0.5, eval resize 235 bicubic,
teachers under fp16.
"""

from onebit.config import RunConfig
from onebit.recipes._bnext import bnext_imagenet, smoke_of

#: Table 9's teachers for this size: (strong teachers, assistant group in activation order)
PAPER_TEACHERS = (
    ("timm:convnext_tiny@pretrained",),
    ("timm:efficientnet_b0@pretrained", "timm:efficientnet_b4@pretrained", "timm:convnext_tiny@pretrained"),
)


def config() -> RunConfig:
    return bnext_imagenet("bnext_large", batch=128)


def smoke() -> RunConfig:
    return smoke_of(config(), "bnext_digits")
