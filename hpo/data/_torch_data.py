"""Examples as torch map-style Datasets, for data that does not fit in memory.

A ``data.loader`` may return ``{"train": ds, "val": ds, "test": ds}`` (val and test optional)
instead of arrays. Nothing is read into memory here: a missing val or test split is a
``torch.utils.data.Subset`` of ``train`` by seeded random indices (sorted, so a Dataset on disk
is read in its own order), and a trial batches the Datasets through a DataLoader. Preprocessing
is the Dataset's own (its transforms): ``data.preprocess`` applies to arrays only.

torch is imported where it is used: ``hpo.data`` is imported by ``hpo validate``, which stays
torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hpo.data.dataset import _summary
from hpo.errors import DataError

__all__ = ["DATASET_KEYS", "RawDatasets", "TorchData", "split_datasets"]

#: What a loader of Datasets returns: the training split, and the optional val and test splits.
DATASET_KEYS = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class RawDatasets:
    """A loader's Datasets as returned (val, test: None where not given), before splitting."""

    name: str  # the loader, module:function
    where: str  # "data.loader module:function": error messages name it
    train: Any  # torch.utils.data.Dataset; item i is (x, y)
    val: Any | None = None
    test: Any | None = None
    input_shape: tuple[int, ...]  # one example's x, from train[0]
    num_classes: int  # 0: regression targets
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TorchData:
    """Split examples as torch map-style Datasets; item ``i`` of each is ``(x, y)``.

    ``input_shape`` is the shape of ``train[0]``'s x. ``num_classes`` (and ``class_names``)
    come from the train Dataset's ``classes`` attribute where it has one (torchvision's do),
    else from the labels of every given split, read from a ``targets`` attribute or by reading
    every item once: whole numbers >= 0 are class indices (``num_classes`` = largest + 1),
    other floats regression targets (``num_classes`` 0).
    """

    train: Any  # torch.utils.data.Dataset
    val: Any
    test: Any  # empty (a Subset of no index) when there is no test split
    input_shape: tuple[int, ...]
    num_classes: int  # 0: regression targets
    name: str = "data"
    class_names: tuple[str, ...] = ()
    predefined: tuple[str, ...] = ()  # splits the loader gave ("val", "test")

    @property
    def is_classification(self) -> bool:
        """Class labels (what hpo's built-in loop trains on), not regression targets."""
        return self.num_classes > 0

    def summary(self) -> str:
        return _summary(self.name, (len(self.train), len(self.val), len(self.test)),
                        self.predefined, self.input_shape, self.num_classes) + " (torch Datasets)"

    def loader(self, split: str, *, batch_size: int, seed: int | None = None,
               limit: int | None = None, workers: int = 0, pin_memory: bool = False) -> Any:
        """A ``torch.utils.data.DataLoader`` over ``split`` (train, val or test): reshuffled
        each epoch by a generator seeded with ``seed`` when one is given, in order otherwise;
        only its first ``limit`` examples when given. ``workers`` processes read the items (0:
        this one), kept between epochs.

        The order depends on the seed alone, not on ``workers``: the sampler has a generator of
        its own. The loader's generator (the workers' base seed) is seeded too, so that no
        DataLoader draws from torch's global generator, which dropout also draws from.
        """
        import torch
        from torch.utils.data import DataLoader, RandomSampler, Subset

        dataset = getattr(self, split)
        if limit is not None and limit < len(dataset):
            dataset = Subset(dataset, range(limit))
        sampler = (RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
                   if seed is not None else None)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          generator=torch.Generator().manual_seed(seed or 0),
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=pin_memory)


def split_datasets(raw: RawDatasets, *, val_fraction: float, test_fraction: float,
                   seed: int) -> TorchData:
    """The missing val and test splits made from ``raw.train`` by their fractions of it
    (``ceil``, as scikit-learn rounds a split's size), by a permutation drawn from ``seed``:
    the same seed, the same split. Not stratified: that would read every label."""
    import torch
    from torch.utils.data import Subset

    n = len(raw.train)
    n_test = 0 if raw.test is not None else math.ceil(n * test_fraction)
    n_val = 0 if raw.val is not None else math.ceil(n * val_fraction)
    if n - n_test - n_val < 1:
        raise DataError(f"{raw.where}: cannot split {n} examples (val_fraction "
                        f"{val_fraction:g}, test_fraction {test_fraction:g}) and keep any for "
                        f"training. Bring more examples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    test, val, train = (sorted(part) for part in (order[:n_test], order[n_test:n_test + n_val],
                                                   order[n_test + n_val:]))
    return TorchData(
        train=raw.train if len(train) == n else Subset(raw.train, train),
        val=raw.val if raw.val is not None else Subset(raw.train, val),
        test=raw.test if raw.test is not None else Subset(raw.train, test),
        input_shape=raw.input_shape,
        num_classes=raw.num_classes,
        name=raw.name,
        class_names=raw.class_names,
        predefined=tuple(s for s in ("val", "test") if getattr(raw, s) is not None),
    )
