"""Optuna's study figures, drawn in a process of their own while the driver logs the best model.

After the last round the driver has one core's work left and the machine's other cores idle (Ray
is shutting down): logging the best model imports ``torch.export`` (about 2 s of CPU), and
Optuna's parameter-importance plot imports ``optuna.importance``, which brings scikit-learn
(about 2 s more). ``OptunaFiguresAside`` starts a child Python that draws
``plots.optuna_figures`` into PNG files while the driver logs the model; the driver logs those
files as it logs every other figure. A child that fails, or has not finished within
``TIMEOUT_S``, leaves the figures to the driver, which draws the same ones itself: the study
loses nothing but the time.

The child reads its input from a pickle in its folder, imports no torch, Ray or MLflow, and writes
nothing else; the driver removes the folder.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpo.report.plots import close, optuna_figures, optuna_trials

__all__ = ["TIMEOUT_S", "OptunaFiguresAside"]

#: How long the driver waits for the child's figures, once its own work is done, before it
#: draws them itself.
TIMEOUT_S = 120.0
_INPUT = "input.pickle"


class OptunaFiguresAside:
    """``plots.optuna_figures(*args)`` in a child process, started now; ``drawn()`` waits for
    its PNG files (by figure name). Use as a context manager: it ends the child and removes its
    folder."""

    def __init__(self, records: Sequence[Any], ranges_by_round: Sequence[Mapping[str, Any]],
                 metric: str, mode: Any) -> None:
        self._args = (list(records), [dict(r) for r in ranges_by_round], metric, mode)
        self.folder = Path(tempfile.mkdtemp(prefix="hpo-figures-"))
        self.by_child = False  # whether drawn() gave the child's figures
        self._child: subprocess.Popen[bytes] | None = None
        if not optuna_trials(records, metric):  # nothing to draw: no child either
            return
        path = os.pathsep.join(p for p in sys.path if p)  # the driver's hpo, not another
        try:
            (self.folder / _INPUT).write_bytes(pickle.dumps(self._args))
            self._child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self.folder)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path})
        except Exception:  # noqa: BLE001 - no child to be had (a value that does not pickle,
            pass  # no process left): the driver draws them, as before

    def __enter__(self) -> OptunaFiguresAside:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drawn(self, timeout: float = TIMEOUT_S) -> dict[str, Path]:
        """The figures' PNG files, by name (``parallel_coordinate.png``, ...): the child's, or,
        where it failed, the driver's own."""
        if self._child is not None:
            try:
                self._child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            else:
                if self._child.returncode == 0:
                    self.by_child = True
                    return _pngs(self.folder)
        for png in _pngs(self.folder).values():  # a failed child's, perhaps half-written
            png.unlink()
        return _draw(self.folder, self._args)

    def close(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _pngs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.glob("*.png"))}


def _draw(folder: Path, args: tuple[Any, ...]) -> dict[str, Path]:
    import matplotlib

    # Optuna's importance plot sets the ggplot style for the whole process: a driver that
    # draws them itself keeps its own style for what it draws next.
    with matplotlib.rc_context():
        for name, fig in optuna_figures(*args).items():
            fig.savefig(folder / name)
            close(fig)
    return _pngs(folder)


if __name__ == "__main__":  # the child: python -m hpo.report.aside FOLDER
    _folder = Path(sys.argv[1])
    _draw(_folder, pickle.loads((_folder / _INPUT).read_bytes()))
