"""Shared fixtures for the model factory's tests: one thread, a fixed seed, a hook recorder."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

Recorder = Callable[[nn.Module, Tensor], tuple[list[Tensor], list[Tensor]]]


@pytest.fixture(autouse=True)
def _seeded() -> Iterator[None]:
    # One thread: the CI box has two cores and other suites run beside this one; small
    # networks gain nothing from more. Every test starts from the same seed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _record(model: nn.Module, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Run ``model(x)`` and return each hidden block's pre-activations and activations.

    Hooks sit where the diagnostics put them: on ``.norm`` output (the pre-activation, after
    batchnorm when there is one; ``.linear`` output otherwise, norm being Identity) and on
    ``.act`` output.
    """
    pre: list[Tensor] = []
    act: list[Tensor] = []
    handles = []
    for block in model.features:  # type: ignore[attr-defined]
        handles.append(block.norm.register_forward_hook(lambda m, i, o: pre.append(o.detach())))
        handles.append(block.act.register_forward_hook(lambda m, i, o: act.append(o.detach())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return pre, act


@pytest.fixture
def record() -> Recorder:
    return _record
