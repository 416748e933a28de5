"""Optuna's figures drawn aside: the child process draws exactly what the driver would, and a
child that fails or hangs leaves them to the driver, so the study loses none."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from hpo.report import aside
from hpo.report.aside import OptunaFiguresAside
from hpo.space.distributions import Categorical, Float
from hpo.trial.direction import Direction
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

RANGES = [{"lr": Float(1e-4, 1.0, log=True), "activation": Categorical(("relu", "tanh"))},
          {"lr": Float(1e-3, 0.1, log=True), "activation": Categorical(("relu", "tanh"))}]
NAMES = {"parallel_coordinate.png", "param_importances.png"}


def _records() -> list[TrialRecord]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(12):
        lr = float(10 ** rng.uniform(-4, 0))
        activation = ("relu", "tanh")[k % 2]
        out.append(TrialRecord(
            round=1 + k // 6, index=1 + k % 6, trial_id=f"t{k}", params={}, status=TrialStatus.OK,
            sampled={"lr": lr, "activation": activation},
            history=[{"val_accuracy": 0.9 - abs(np.log10(lr) + 1.5) / 5 - 0.05 * (k % 2)}]))
    return out


ARGS = (_records(), RANGES, "val_accuracy", Direction.MAX)


def _bytes(pngs):
    return {name: path.read_bytes() for name, path in pngs.items()}


@pytest.fixture(scope="module")
def by_driver(tmp_path_factory):
    """The figures as the driver itself draws them."""
    return _bytes(aside._draw(tmp_path_factory.mktemp("driver"), ARGS))


def test_the_child_draws_the_figures_the_driver_would(by_driver):
    assert set(by_driver) == NAMES
    with OptunaFiguresAside(*ARGS) as figures:
        pngs = figures.drawn()
        assert figures.by_child  # the child drew them, not the fallback
        assert _bytes(pngs) == by_driver
        folder = figures.folder
    assert not folder.exists()  # the child's files go with it


@pytest.mark.parametrize("child", [
    "exit 3",  # fails
    "echo 'not a png' > \"$3/param_importances.png\"; exit 1",  # fails half-way
    "sleep 30",  # hangs past the timeout
])
def test_a_child_that_fails_or_hangs_leaves_the_figures_to_the_driver(child, by_driver,
                                                                      tmp_path, monkeypatch):
    python = tmp_path / "python"
    python.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        {child}
    """))
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    with OptunaFiguresAside(*ARGS) as figures:
        pngs = figures.drawn(timeout=2.0)
        assert not figures.by_child
        assert _bytes(pngs) == by_driver


def test_records_that_do_not_pickle_leave_the_figures_to_the_driver(by_driver):
    records = [*ARGS[0][:-1], TrialRecord(**{**vars(ARGS[0][-1]), "flags": [lambda: None]})]
    with OptunaFiguresAside(records, *ARGS[1:]) as figures:
        assert _bytes(figures.drawn()) == by_driver
        assert not figures.by_child


def test_too_few_trials_to_plot_start_no_child():
    with OptunaFiguresAside(ARGS[0][:2], *ARGS[1:]) as figures:
        assert figures.drawn() == {}
        assert not figures.by_child  # a child would have drawn them (nothing) itself
