"""BNext's teacher-selection data as Python tables: Table 8's ten ImageNet teachers and the BNext students.

* :data:`BNEXT_TABLE8`: one mapping per teacher of BNext Table 8, in the table's order: ``name`` (as printed),
  ``spec`` (a teacher spec for :func:`onebit.distill.load_teacher`; append ``@FILE`` with the pretrained weights),
  ``family``, ``params_millions`` (the parameter count of the torchvision/timm model, which the paper does not print),
  ``accuracy`` (the table's teacher top-1, %), ``kc_printed`` (the table's KC column) and the BNext-T student's
  ``student_train`` / ``student_test`` top-1 (%) after 128 epochs of standard KD with that teacher.
* :data:`BNEXT_STUDENTS`: the five BNext sizes keyed by their onebit model names: ``label``, ``accuracy`` (top-1 %,
  Table 7's 32/32 column = Table 2 without post-training quantisation), ``size_mb`` (Table 2's #Param, MB),
  ``kd`` (``"standard"``: one teacher; ``"ensemble"``: BNext's gap-sensitive ensemble, a strong teacher plus an
  assistant; paper §7.3) and ``family`` (the teacher family the student is restricted to, or ``None``: BNext-18 is
  distilled from a ResNet "for a fair comparison" with the ResNet-18 BNNs, §5.2 and §7.3).

What the teacher-selection rule does with them: :func:`onebit.distill.rank_teachers` and ``docs/teachers.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BNEXT_STUDENTS", "BNEXT_TABLE8"]


def _t8(name, spec, family, params, acc, kc, train, test) -> dict[str, Any]:
    return {
        "name": name,
        "spec": spec,
        "family": family,
        "params_millions": params,
        "accuracy": acc,
        "kc_printed": kc,
        "student_train": train,
        "student_test": test,
    }


#: BNext Table 8 (teachers of BNext-T, 128 epochs, standard KD). The "None" row (no teacher) is left out.
BNEXT_TABLE8: tuple[dict[str, Any], ...] = (
    _t8("ResNet-34", "torchvision:resnet34", "resnet", 21.797672, 73.31, 1.487, 72.82, 71.12),
    _t8("ResNet-50", "torchvision:resnet50", "resnet", 25.557032, 76.13, 1.539, 71.59, 70.90),
    _t8("ResNet-101", "torchvision:resnet101", "resnet", 44.549160, 77.37, 1.768, 72.38, 70.76),
    _t8("EfficientNet-B0", "timm:efficientnet_b0", "efficientnet", 5.288548, 77.53, 0.893, 72.16, 71.32),
    _t8("EfficientNet-B2", "timm:efficientnet_b2", "efficientnet", 9.109994, 78.06, 1.103, 71.91, 71.25),
    _t8("EfficientNet-B4", "timm:efficientnet_b4", "efficientnet", 19.341616, 79.26, 1.405, 73.88, 70.63),
    _t8("ConvNext-T", "timm:convnext_tiny", "convnext", 28.589128, 82.52, 1.552, 73.63, 70.63),
    _t8("ConvNext-S", "timm:convnext_small", "convnext", 50.223688, 83.66, 1.786, 74.29, 70.43),
    _t8("ConvNext-B", "timm:convnext_base", "convnext", 88.591464, 84.06, 2.027, 75.22, 69.74),
    _t8("ResNext101-32x8D", "torchvision:resnext101_32x8d", "resnext", 88.791336, 79.32, 2.053, 75.42, 69.67),
)


#: The BNext students (paper Tables 2 and 7, §5.2 and §7.3), keyed by onebit model name.
BNEXT_STUDENTS: dict[str, dict[str, Any]] = {
    "bnext_18": {"label": "BNext-18", "accuracy": 68.37, "size_mb": 5.4, "kd": "standard", "family": "resnet"},
    "bnext_tiny": {"label": "BNext-T", "accuracy": 72.36, "size_mb": 13.3, "kd": "ensemble", "family": None},
    "bnext_small": {"label": "BNext-S", "accuracy": 76.06, "size_mb": 26.7, "kd": "ensemble", "family": None},
    "bnext_middle": {"label": "BNext-M", "accuracy": 78.27, "size_mb": 46.5, "kd": "ensemble", "family": None},
    "bnext_large": {"label": "BNext-L", "accuracy": 80.57, "size_mb": 106.1, "kd": "ensemble", "family": None},
}
