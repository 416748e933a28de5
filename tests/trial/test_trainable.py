"""Where a trial trains: the device rule, the CPU default, and (with CUDA) a trial on the GPU."""

from __future__ import annotations

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from hpo.data.dataset import load_dataset
from hpo.config.spec import parse_spec
from hpo.trial.status import TrialStatus
from hpo.trial.train import train_trial, trial_device
from tests.fixtures.trials import assert_same_trial

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def data():
    spec = parse_spec({"data": {"source": "digits", "preprocess": ["zero_center", "normalize"]}})
    return load_dataset(spec.data, seed=0)


def config(dropout=0.1, **train):
    spec = parse_spec({"model": {"hidden": [32, 16], "activation": "relu", "batchnorm": True,
                                 "dropout": dropout},
                       "train": {"epochs": 2, "batch_size": 64, "lr": 0.05,
                                 "weight_decay": 1e-3, **train}})
    return spec.resolve({})


def test_a_trial_given_a_gpu_trains_on_cuda_only_where_cuda_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trial_device(True) == torch.device("cuda")
    assert trial_device(False) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trial_device(True) == torch.device("cpu")


def test_cpu_named_explicitly_is_the_default_bit_for_bit(data):
    torch.set_num_threads(1)
    default = train_trial(config(), data, seed=3)
    for device in ("cpu", torch.device("cpu")):
        named = train_trial(config(), data, seed=3, device=device)
        assert named.history == default.history and named.initial_loss == default.initial_loss


class _HostOps(TorchDispatchMode):
    """Counts the operations that touch a CPU tensor with at least one dimension (0-dim CPU
    tensors are Python scalars passed along)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = pytree.tree_leaves((args, kwargs, out))
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0
               for t in leaves):
            self.count += 1
        return out


@cuda
def test_on_cuda_the_training_steps_touch_no_host_tensor(data):
    """One more epoch adds the permutation's few host operations, not one per batch."""
    counts = {}
    for epochs in (1, 3):
        with _HostOps() as ops:
            train_trial(config(epochs=epochs), data, seed=0, device="cuda")
        counts[epochs] = ops.count
    batches = -(-len(data.y_train) // 64)
    per_epoch = (counts[3] - counts[1]) / 2
    # data left on the host would cost a few operations per batch
    assert per_epoch < batches / 2, (counts, batches)


@cuda
def test_a_cuda_trial_matches_the_cpu_trial_and_keeps_its_model_on_the_gpu(data):
    params = config(dropout=0.0, epochs=3, optimizer="adam", lr=0.005)  # CUDA draws other masks
    gpu = train_trial(params, data, seed=0, device="cuda", keep_model=True)
    cpu = train_trial(params, data, seed=0)
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    assert gpu.status is cpu.status is TrialStatus.OK
    assert_same_trial(gpu, cpu)
