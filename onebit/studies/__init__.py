"""Studies: small-scale reproductions of the papers' findings on the bundled digits (``onebit study NAME``).

:mod:`onebit.studies.common` holds what every study shares (variants, running, aggregates, the registry
:data:`STUDIES`); :mod:`onebit.studies.adambnn` the AdamBNN studies and BNext's architecture study;
:mod:`onebit.studies.kd_aug` BNext's distillation and augmentation studies. Each study module registers its studies.
"""

from onebit.studies import adambnn, kd_aug  # noqa: F401  (registration side effects)
from onebit.studies.common import STUDIES, Study, Variant, base_config, run_study

__all__ = ["STUDIES", "Study", "Variant", "base_config", "run_study"]
