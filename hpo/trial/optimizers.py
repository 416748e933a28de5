"""torch's SGD and Adam, stepped eagerly: the same update, without importing ``torch._dynamo``.

torch.optim's ``step``, ``zero_grad`` and ``add_param_group`` are wrapped for ``torch.compile``,
and the wrappers import ``torch._dynamo`` at their first call: 1.4 s of CPU here, paid by every
trial worker Ray starts and by the driver's sanity checks, while trials never compile. These
classes call the same methods unwrapped, under ``torch.no_grad()`` as torch's wrapper sets it for
a non-differentiable optimizer, so a step is torch's own, bit for bit
(``tests/trial/test_optimizers.py``). They are ``torch.optim`` optimizers: schedulers and hooks
work with them. Under ``torch.compile`` use torch's own classes.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

__all__ = ["SGD", "Adam"]


class _Eager:
    """The unwrapped methods; ``_step`` is the subclass's own ``step`` as torch wrote it."""

    add_param_group = inspect.unwrap(torch.optim.Optimizer.add_param_group)
    zero_grad = inspect.unwrap(torch.optim.Optimizer.zero_grad)
    _step: Any

    def step(self, closure: Any = None) -> Any:
        with torch.no_grad():  # what torch's wrapper sets when defaults["differentiable"] is False
            return self._step(closure)


class SGD(_Eager, torch.optim.SGD):
    _step = inspect.unwrap(torch.optim.SGD.step)


class Adam(_Eager, torch.optim.Adam):
    _step = inspect.unwrap(torch.optim.Adam.step)
