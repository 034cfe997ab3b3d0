"""Studies: the papers' claims checked on the bundled digits (``onebit study NAME``; ``onebit study all``).

:mod:`onebit.studies.common` holds what every study shares (variants, running, claims and verdicts, aggregates, the
registry :data:`STUDIES`); :mod:`onebit.studies.adambnn` AdamBNN's optimizer studies; :mod:`onebit.studies.dynamics`
its training-dynamics study; :mod:`onebit.studies.architectures` the architecture and loss-landscape studies;
:mod:`onebit.studies.kd_aug` BNext's distillation and augmentation studies; :mod:`onebit.studies.bnext` BNext's
optimisation-scheme, post-training-quantisation and training-curve studies. Each study module registers its studies;
the registry's order is the order of ``onebit study all``.
"""

# the order of registration is the order of `onebit study all` and of the index: AdamBNN's studies, then BNext's
from onebit.studies import adambnn, dynamics, architectures, kd_aug, bnext  # noqa: F401, I001  (registration)
from onebit.studies.common import (
    STUDIES,
    Claim,
    Report,
    Study,
    Variant,
    base_config,
    run_all,
    run_study,
    write_index,
)

__all__ = ["STUDIES", "Claim", "Report", "Study", "Variant", "base_config", "run_all", "run_study", "write_index"]
