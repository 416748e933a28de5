"""The LCBench trainable and its study files: skipped where the surrogate or onnxruntime is absent
(the surrogate lives in ../shared/data/lcbench beside the repository, not in it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import lcbench  # noqa: E402

pytest.importorskip("onnxruntime")
if not (lcbench.surrogate_dir() / "model.onnx").is_file():
    pytest.skip(f"no LCBench surrogate at {lcbench.surrogate_dir()}", allow_module_level=True)


CONFIG = {"task": 3945, "epochs": 52, "batch_size": 64, "learning_rate": 3e-3, "momentum": 0.9,
          "weight_decay": 1e-4, "num_layers": 2, "max_units": 256, "max_dropout": 0.1}


def test_fit_reports_every_epoch_through_the_public_trial() -> None:
    import hpo

    reports: list[dict] = []
    trial = hpo.Trial(send=reports.append, metric="val_accuracy")
    lcbench.fit(dict(CONFIG), trial)
    assert [r["epoch"] for r in reports] == list(range(1, 53))
    assert all(0 <= r["val_accuracy"] <= 1 for r in reports)
    assert reports[-1]["val_accuracy"] > reports[0]["val_accuracy"]  # it learns
    # the same numbers as the surrogate's batch prediction (percent there)
    batch = lcbench.surrogate().curves(3945, [CONFIG])[0]
    assert reports[-1]["val_accuracy"] == pytest.approx(float(batch[-1]))


def test_an_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="not an LCBench task; known: .*3945"):
        lcbench.fit({**CONFIG, "task": 1}, hpo_trial())


def hpo_trial():
    import hpo

    return hpo.Trial(send=lambda r: None, metric="val_accuracy")


@pytest.mark.parametrize("name", ["lcbench.yaml", "lcbench_wrong_range.yaml"])
def test_study_files_are_valid_and_bounded_by_the_benchmark(name: str) -> None:
    from hpo.config import load_spec

    spec = load_spec(BENCH / name)
    assert spec.trainable == "lcbench:fit"
    for key, form in lcbench.BENCHMARK_RANGES.items():
        assert spec.hard_bounds(key) == tuple(float(x) for x in next(iter(form.values())))
