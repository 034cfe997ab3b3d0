"""BNext-T on ImageNet with BNext's training recipe (docs/official-code.md, *Training BNext*; paper Tables 2 and 9).

Command:   onebit train bnext_tiny data.root=/data/imagenet \\
               stages.0.teachers=timm:efficientnet_b2@pretrained \\
               stages.0.assistants=timm:efficientnet_b0@pretrained
           onebit rehearse bnext_tiny   (the real config for a few steps on a generated folder at 32 px)
           onebit train bnext_tiny --smoke   (the same stage settings on the bundled digits: seconds, no data)
Cost:      512 epochs of ImageNet at global batch 512 (the shipped script): weeks on 8 GPUs.
Expected:  72.4 % top-1 (paper Table 2; 13.3 MB, 0.88e8 OPs), with the teachers of Table 9.

Teachers (Table 9 / the official script): strong efficientnet_b2;
assistant group [efficientnet_b0], switched every 512/n epochs.
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
PAPER_TEACHERS = (("timm:efficientnet_b2@pretrained",), ("timm:efficientnet_b0@pretrained",))


def config() -> RunConfig:
    return bnext_imagenet("bnext_tiny", batch=512)


def smoke() -> RunConfig:
    return smoke_of(config(), "bnext_digits")
