"""The examples a study trains on: sources (built-in, files, downloads), splits, preprocessing."""

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

__all__ = ["SOURCES", "STEPS", "Dataset", "Preprocessor", "RawData", "Step", "load_dataset",
           "load_raw", "split"]
