"""The trial contract: a trial gets a configuration and the data, trains, and reports epochs.

The torch-free parts load at once: the epoch-metric schema and which way each metric improves
(``metrics``, ``direction``), when a loss counts as diverged (``divergence``), a trial's status
(``status``) and the driver's record of it (``record``). The training itself (``train``: one
trial; ``pack``: many as one vectorized model; ``instruments``: update/weight ratios and
activation statistics) imports torch, on first use of its names.
"""

from hpo._lazy import lazy_exports
from hpo.trial.config import OPTIMIZERS, TrainConfig
from hpo.trial.direction import Direction
from hpo.trial.divergence import DIVERGENCE_FACTOR, loss_diverged
from hpo.trial.metrics import (
    METRICS,
    activation_metrics,
    diverged_metrics,
    epoch_metrics,
    is_trial_metric,
)
from hpo.trial.record import TrialRecord, ranked
from hpo.trial.status import TrialStatus, classify, trial_flags

__all__ = ["DIVERGENCE_FACTOR", "METRICS", "OPTIMIZERS", "Direction", "TrainConfig", "TrialOutcome",
           "TrialRecord", "TrialStatus", "activation_metrics", "classify", "diverged_metrics",
           "epoch_metrics", "is_trial_metric", "loss_diverged", "packable", "ranked",
           "train_pack", "train_trial", "trial_device", "trial_flags", "trial_threads"]

__getattr__ = lazy_exports(__name__, {
    "TrialOutcome": "hpo.trial.train",
    "train_trial": "hpo.trial.train",
    "trial_device": "hpo.trial.train",
    "trial_threads": "hpo.trial.train",
    "packable": "hpo.trial.pack",
    "train_pack": "hpo.trial.pack",
})
