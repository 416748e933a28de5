"""The examples a study trains on: sources (built-in, files, downloads, the user's loader),
splits, preprocessing.

``DataSpec`` (``hpo.data.config``) is the study file's ``data:`` section; the names it accepts
are the keys of ``SOURCES`` and ``STEPS``. ``load_dataset`` gives a ``Dataset`` (arrays), or a
``TorchData`` (torch Datasets) where a ``data.loader`` returned those.
"""

from hpo.data._torch_data import TorchData
from hpo.data.config import DataSpec, data_problems
from hpo.data.dataset import (
    SOURCES,
    STEPS,
    Dataset,
    Preprocessor,
    RawData,
    Source,
    Step,
    load_dataset,
    load_raw,
    require_classification,
    split,
)

__all__ = ["SOURCES", "STEPS", "DataSpec", "Dataset", "Preprocessor", "RawData", "Source", "Step",
           "TorchData", "data_problems", "load_dataset", "load_raw", "require_classification",
           "split"]
