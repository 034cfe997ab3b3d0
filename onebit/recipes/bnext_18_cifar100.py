"""BNext-18 on CIFAR-100 (CIFAR variant: 3x3 stride-1 stem, no max-pool), batch 128, 256 epochs (BNext paper §5.1).

Command:   onebit train bnext_18_cifar100 data.root=/data/cifar-100-python --seeds 5
           onebit train bnext_18_cifar100 --smoke   (the same stage settings on the bundled digits: seconds)
Cost:      256 epochs x 391 steps of BNext-18 at 32 px: about a day on one GPU per seed (five in the paper).
Expected:  72.18 ± 0.18 % top-1 / 91.55 ± 0.19 % top-5 (BNext Table 10: mean and sample standard deviation of five
           runs, top-1 72.22, 72.02, 72.35, 71.97, 72.37, whose mean is 72.19; the paper prints 72.18).

The paper gives one CIFAR setting for both data sets (§5.1: batch 128, 256 epochs, random crop + flip +
normalisation, cross-entropy) and no CIFAR-100-specific change, so this is the CIFAR-10 recipe with 100 classes.
No teachers (plain cross-entropy); RandomCrop 32 pad 4 + flip, CIFAR normalisation. ``--seeds 5`` trains seeds 0-4
into ``OUT/seed<k>/`` and prints their mean ± std, as Table 10.
"""

from onebit.config import RunConfig
from onebit.recipes._bnext import bnext18_cifar, smoke_of


def config() -> RunConfig:
    return bnext18_cifar("bnext_18_cifar100", "cifar100", 100)


def smoke() -> RunConfig:
    return smoke_of(config(), "bnext18_digits")
