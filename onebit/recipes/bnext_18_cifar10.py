"""BNext-18 on CIFAR-10 (CIFAR variant: 3x3 stride-1 stem, no max-pool), batch 128, 256 epochs (BNext paper §5.1).

Command:   onebit train bnext_18_cifar10 data.root=/data/cifar-10-batches-py
           onebit train bnext_18_cifar10 --smoke   (the same stage settings on the bundled digits: seconds)
Cost:      256 epochs x 391 steps of BNext-18 at 32 px: about a day on one GPU.
Expected:  not reported in the BNext paper; this recipe is the official CIFAR setting, to be measured.

No teachers on CIFAR (plain cross-entropy, as the official code); RandomCrop 32 pad 4 + flip, CIFAR normalisation.
"""

from onebit.config import DataConfig, ModelConfig, RunConfig
from onebit.recipes._bnext import bnext_stage, smoke_of


def config() -> RunConfig:
    return RunConfig(
        recipe="bnext_18_cifar10",
        model=ModelConfig(name="bnext_18", num_classes=10),
        data=DataConfig(name="cifar10", image_size=32, batch_size=128, eval_batch_size=256, train_augment="cifar"),
        stages=[bnext_stage(256)],
    )


def smoke() -> RunConfig:
    return smoke_of(config(), "bnext18_digits")
