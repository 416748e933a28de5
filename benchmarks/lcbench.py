"""LCBench as a trainable: YAHPO Gym's surrogate of 2,000 real MLP training runs, read with
onnxruntime, behind hpo's user-facing ``trainable:`` contract.

``fit(config, trial)`` reports the surrogate's metrics for epochs 1..``config["epochs"]`` (at most
52) of one configuration on one OpenML task (``config["task"]``), ``val_accuracy`` as a fraction.
Nothing trains: a trial costs one ONNX call, so search strategies can be compared on a landscape
no one here made. Study files: ``lcbench.yaml`` (the benchmark's ranges) and
``lcbench_wrong_range.yaml`` (a wrong first range, the benchmark's ranges as hard bounds).

The surrogate lives outside the repository, in ``../shared/data/lcbench/`` beside the clone
(``model.onnx``, ``encoding.json``, ``config_space.json``); ``HPO_LCBENCH_DIR`` points elsewhere
(a Ray cluster whose workers see it at another path). Needs ``onnxruntime`` (the ``bench``
extra: ``pip install -e '.[bench]'``).

    python benchmarks/lcbench.py     # one configuration's 52 epochs, without hpo's search
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BENCHMARK_RANGES", "EPOCHS", "OUTPUTS", "PARAMS", "TASKS", "WRONG_RANGES",
           "Surrogate", "fit", "require_surrogate", "surrogate", "surrogate_dir"]

#: The configuration inputs of ``x_cont`` after the epoch, in the model's order.
PARAMS = ("batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units",
          "max_dropout")
#: The model's output columns, in order (val_accuracy in percent; the rest as LCBench logs them).
OUTPUTS = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy",
           "test_cross_entropy", "test_balanced_accuracy")
#: LCBench's epochs: 1..52.
EPOCHS = 52
#: The issue's three OpenML tasks.
TASKS = (3945, 167168, 189873)

#: The benchmark's ranges (config_space.json), as study-file distributions. The surrogate means
#: nothing outside them (it extrapolates), so they are also every study's hard bounds.
BENCHMARK_RANGES: dict[str, dict[str, list[float]]] = {
    "batch_size": {"logint": [16, 512]},
    "learning_rate": {"loguniform": [1.0e-4, 1.0e-1]},
    "momentum": {"uniform": [0.1, 0.99]},
    "weight_decay": {"uniform": [1.0e-5, 1.0e-1]},
    "num_layers": {"int": [1, 5]},
    "max_units": {"logint": [64, 1024]},
    "max_dropout": {"uniform": [0.0, 1.0]},
}
#: A wrong first range: the optimum of the issue's tasks lies outside it for most parameters.
WRONG_RANGES: dict[str, dict[str, list[float]]] = {
    **BENCHMARK_RANGES,
    "learning_rate": {"loguniform": [1.0e-4, 1.0e-3]},
    "max_units": {"logint": [64, 128]},
    "weight_decay": {"uniform": [1.0e-5, 1.0e-3]},
    "batch_size": {"logint": [256, 512]},
}


def surrogate_dir() -> Path:
    """``HPO_LCBENCH_DIR``, else ``../shared/data/lcbench`` beside the repository."""
    env = os.environ.get("HPO_LCBENCH_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "lcbench"


def require_surrogate() -> Path:
    """The surrogate's folder, or ``SystemExit`` saying what is missing and how to fix it."""
    folder = surrogate_dir()
    missing = [n for n in ("model.onnx", "encoding.json", "config_space.json")
               if not (folder / n).is_file()]
    if missing:
        raise SystemExit(
            f"LCBench surrogate not found: {folder} lacks {', '.join(missing)}. Put YAHPO Gym's "
            f"lcbench folder (model.onnx, encoding.json, config_space.json) at "
            f"../shared/data/lcbench beside the repository, or set HPO_LCBENCH_DIR to it.")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SystemExit("the LCBench benchmarks need onnxruntime: pip install -e '.[bench]'"
                         ) from None
    return folder


class Surrogate:
    """The ONNX model and the task codes; ``predict`` evaluates many configurations at once."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # one thread: trials run side by side (Ray), and the benchmark shares the machine
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        codes = json.loads((folder / "encoding.json").read_text())["OpenML_task_id"]
        self.task_codes = {int(k): int(v) for k, v in codes.items() if k.isdigit()}
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"x_cat", "x_cont"} or inputs["x_cont"][1] != 1 + len(PARAMS):
            raise ValueError(f"{folder / 'model.onnx'}: expected inputs x_cat (N, 1) and x_cont "
                             f"(N, {1 + len(PARAMS)}), got {inputs}")

    def code(self, task: int) -> int:
        try:
            return self.task_codes[int(task)]
        except KeyError:
            raise ValueError(f"task {task!r} is not an LCBench task; known: "
                             f"{sorted(self.task_codes)}") from None

    def predict(self, task: int, configs: np.ndarray, epochs: Sequence[int]) -> np.ndarray:
        """(N, len(PARAMS)) configurations -> (N, E, len(OUTPUTS)) outputs at ``epochs``."""
        configs = np.asarray(configs, dtype=np.float32).reshape(-1, len(PARAMS))
        ep = np.asarray(epochs, dtype=np.float32)
        n, e = len(configs), len(ep)
        x_cont = np.empty((n, e, 1 + len(PARAMS)), dtype=np.float32)  # (N, E, 8)
        x_cont[:, :, 0] = ep[None, :]
        x_cont[:, :, 1:] = configs[:, None, :]
        x_cat = np.full((n * e, 1), self.code(task), dtype=np.int32)
        (out,) = self.session.run(None, {"x_cat": x_cat, "x_cont": x_cont.reshape(n * e, -1)})
        return out.reshape(n, e, len(OUTPUTS))

    def curves(self, task: int, configs: Sequence[Mapping[str, Any]] | np.ndarray,
               epochs: int = EPOCHS) -> np.ndarray:
        """Validation accuracy (a fraction) for epochs 1..``epochs``: (N, epochs)."""
        x = configs if isinstance(configs, np.ndarray) else as_matrix(configs)
        return self.predict(task, x, range(1, epochs + 1))[:, :, 1] / 100.0


def as_matrix(configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Configurations (dicts holding PARAMS) as the model's (N, 7) float32 inputs."""
    return np.array([[float(c[p]) for p in PARAMS] for c in configs], dtype=np.float32)


@functools.lru_cache(maxsize=1)
def surrogate() -> Surrogate:
    """The surrogate, loaded once per process."""
    return Surrogate(require_surrogate())


def fit(config: dict[str, Any], trial: Any) -> None:
    """hpo's trainable contract: ``config`` holds PARAMS, ``task`` and ``epochs`` (<= 52); one
    report per epoch. ``val_loss`` is the validation cross-entropy (hpo ends a trial whose loss
    is not finite), ``time`` the seconds LCBench's run had taken by that epoch."""
    epochs = int(config.get("epochs", EPOCHS))
    if not 1 <= epochs <= EPOCHS:
        raise ValueError(f"epochs must lie in 1..{EPOCHS} (LCBench's), but got {epochs}")
    out = surrogate().predict(int(config["task"]), as_matrix([config]), range(1, epochs + 1))[0]
    for k, row in enumerate(out, start=1):  # row: (6,) = OUTPUTS
        m = dict(zip(OUTPUTS, (float(v) for v in row)))
        trial.report(epoch=k, val_accuracy=m["val_accuracy"] / 100.0,
                     val_loss=m["val_cross_entropy"], val_cross_entropy=m["val_cross_entropy"],
                     val_balanced_accuracy=m["val_balanced_accuracy"],
                     test_cross_entropy=m["test_cross_entropy"],
                     test_balanced_accuracy=m["test_balanced_accuracy"], time=m["time"])


def study_dict(ranges: Mapping[str, Any], *, task: int, seed: int, rounds: int,
               trials_per_round: int, name: str = "lcbench", **search: Any) -> dict[str, Any]:
    """A study of this trainable as a dict (what the study files hold), for ``hpo.search``."""
    return {
        "name": name, "seed": seed, "trainable": "lcbench:fit", "code": ["lcbench.py"],
        "train": {"task": task, "epochs": EPOCHS, **{k: dict(v) for k, v in ranges.items()}},
        "search": {"metric": "val_accuracy", "mode": "max", "rounds": rounds,
                   "trials_per_round": trials_per_round,
                   "bounds": {k: list(next(iter(v.values())))
                              for k, v in BENCHMARK_RANGES.items()}, **search},
        "sanity": {"enabled": False},
    }


if __name__ == "__main__":  # one configuration's curve, outside hpo
    import hpo

    fit({"task": 3945, "epochs": EPOCHS, "batch_size": 64, "learning_rate": 3e-3,
         "momentum": 0.9, "weight_decay": 1e-4, "num_layers": 2, "max_units": 256,
         "max_dropout": 0.1}, hpo.Trial.local())
