"""A whole study: the round loop, resume, the sanity gate, the final evaluation; ``hpo train``
and ``hpo check``. The only package that wires the others together."""

from hpo._lazy import lazy_exports

__all__ = ["Study", "StudyResult", "check_only", "run_study", "sanity_gate", "study_dir_for",
           "train_fixed"]

__getattr__ = lazy_exports(__name__, {
    "Study": "hpo.study.context",
    "study_dir_for": "hpo.study.context",
    "StudyResult": "hpo.study.run",
    "run_study": "hpo.study.run",
    "sanity_gate": "hpo.study.babysit",
    "check_only": "hpo.study.single",
    "train_fixed": "hpo.study.single",
})
