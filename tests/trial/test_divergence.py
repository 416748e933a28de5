"""One divergence rule for one trial (Python floats) and a pack (one loss per member, on the
device): the two forms agree, and both training loops stop on it."""

from __future__ import annotations

import math

import pytest
import torch

from hpo.trial.divergence import DIVERGENCE_FACTOR, LOSS_FLOOR, loss_diverged

# (loss, first step's loss): exactly representable in float32, so both forms see the same numbers
CASES = [
    (2.0, 2.0), (19.5, 2.0), (20.0, 2.0), (20.5, 2.0),  # the factor's edge: above it, not at it
    (0.5, 1e-5), (0.01, 1e-5), (0.0, 0.0),  # a near-zero start is floored
    (math.nan, 2.0), (math.inf, 2.0), (-math.inf, 2.0), (math.nan, math.nan),
    (1.0, math.inf),
]


@pytest.mark.parametrize(("loss", "initial"), CASES)
def test_the_float_and_the_tensor_form_agree(loss, initial):
    alone = loss_diverged(loss, initial)
    packed = loss_diverged(torch.tensor([loss]), torch.tensor([initial]))
    assert isinstance(alone, bool)
    assert packed.dtype == torch.bool and packed.shape == (1,)
    assert bool(packed[0]) is alone


def test_the_rule_is_the_factor_over_the_floored_first_loss():
    assert not loss_diverged(DIVERGENCE_FACTOR * 2.0, 2.0)
    assert loss_diverged(math.nextafter(DIVERGENCE_FACTOR * 2.0, math.inf), 2.0)
    assert not loss_diverged(DIVERGENCE_FACTOR * LOSS_FLOOR, 0.0)
    assert loss_diverged(math.nan, 2.0) and loss_diverged(math.inf, 2.0)


def test_a_pack_flags_each_member_on_its_own_first_loss():
    loss = torch.tensor([1.0, 30.0, math.nan, 0.02])
    initial = torch.tensor([2.0, 2.0, 2.0, 0.0])
    assert loss_diverged(loss, initial).tolist() == [False, True, True, True]
