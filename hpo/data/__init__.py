"""The examples a study trains on: sources (built-in, files, downloads), splits, preprocessing.

``DataSpec`` (``hpo.data.config``) is the study file's ``data:`` section; the names it accepts
are the keys of ``SOURCES`` and ``STEPS``.
"""

from hpo.data.config import DataSpec, data_problems
from hpo.data.dataset import (
    SOURCES,
    STEPS,
    Dataset,
    Preprocessor,
    RawData,
    Step,
    load_dataset,
    load_raw,
    split,
)

__all__ = ["SOURCES", "STEPS", "DataSpec", "Dataset", "Preprocessor", "RawData", "Step",
           "data_problems", "load_dataset", "load_raw", "split"]
