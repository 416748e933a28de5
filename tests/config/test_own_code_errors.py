"""The user's own code, wrong: each mistake is an input error (exit 2) at `hpo validate` and
`hpo search`, naming the field, the module and the problem, before anything runs or is logged."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from hpo.cli import main as hpo_main

LOOP = {"name": "own-errors", "trainable": "myloop:fit",
        "train": {"lr": {"loguniform": [1e-3, 1e-1]}},
        "search": {"metric": "val_rmse", "mode": "min"}}


def _study(folder: Path, study: dict, **modules: str) -> Path:
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _run(capsys, *args: str) -> tuple[int, str]:
    code = hpo_main(list(args))
    captured = capsys.readouterr()
    _run.out = captured.out
    return code, captured.err


@pytest.fixture
def folder(tmp_path, monkeypatch):
    # the modules of each test are new: a module name must not be cached from another test
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    for name in ("myloop", "mynets", "mydata"):
        __import__("sys").modules.pop(name, None)
    return tmp_path


@pytest.mark.parametrize("command", ["validate", "search"])
def test_a_module_that_does_not_import(folder, capsys, command):
    path = _study(folder, LOOP, myloop="import no_such_package\n\ndef fit(config, trial): pass\n")
    code, err = _run(capsys, command, str(path), "--tracking-uri",
                     f"sqlite:///{folder / 'mlflow.db'}", *(
                         ["--study-root", str(folder / "runs")] if command == "search" else []))
    assert code == 2
    assert "trainable: cannot import module 'myloop'" in err
    assert "No module named 'no_such_package'" in err
    assert not (folder / "runs").exists() and not (folder / "mlflow.db").exists()


def test_a_module_that_is_not_there_says_where_it_looked(folder, capsys):
    path = _study(folder, LOOP)
    code, err = _run(capsys, "validate", str(path))
    assert code == 2
    assert "cannot import module 'myloop'" in err and str(folder) in err


def test_a_function_with_the_wrong_parameters_names_the_signature_expected(folder, capsys):
    path = _study(folder, LOOP, myloop="def fit(config): pass\n")
    code, err = _run(capsys, "validate", str(path))
    assert code == 2
    assert "myloop:fit has the signature (config), but hpo calls it with (config, trial)" in err
    assert "fit(config, trial)" in err


def test_a_missing_function_names_the_module(folder, capsys):
    path = _study(folder, LOOP, myloop="def train(config, trial): pass\n")
    code, err = _run(capsys, "validate", str(path))
    assert code == 2 and "has no function 'fit'" in err and "myloop.py" in err


def test_a_malformed_reference(folder, capsys):
    path = _study(folder, {**LOOP, "trainable": "myloop.fit"})
    code, err = _run(capsys, "validate", str(path))
    assert code == 2 and 'trainable: must be "module:function"' in err


def test_a_builder_with_the_wrong_parameters(folder, capsys):
    study = {"name": "own-builder", "model": {"builder": "mynets:build", "depth": 2}}
    path = _study(folder, study, mynets="def build(config, input_shape): pass\n")
    code, err = _run(capsys, "validate", str(path))
    assert code == 2
    assert "model.builder: mynets:build has the signature (config, input_shape)" in err
    assert "(config, input_shape, num_classes)" in err


def test_a_builder_that_returns_no_module_fails_before_any_trial(folder, capsys):
    study = {"name": "own-builder", "model": {"builder": "mynets:build", "depth": 2},
             "train": {"epochs": 1}, "search": {"rounds": 1, "trials_per_round": 1}}
    path = _study(folder, study,
                  mynets="def build(config, input_shape, num_classes):\n    return 'a string'\n")
    code, err = _run(capsys, "search", str(path), "--tracking-uri",
                     f"sqlite:///{folder / 'mlflow.db'}", "--study-root", str(folder / "runs"))
    assert code == 2
    assert "model.builder: mynets:build returned str, not a torch.nn.Module" in err
    assert not (folder / "runs").exists() and not (folder / "mlflow.db").exists()


def test_extra_model_keys_need_a_builder(folder, capsys):
    path = _study(folder, {"name": "x", "model": {"depth": 2}})
    code, err = _run(capsys, "validate", str(path))
    assert code == 2 and "model.depth: unknown key" in err


def test_a_metric_of_the_users_needs_a_trainable_and_a_mode(folder, capsys):
    path = _study(folder, {"name": "x", "search": {"metric": "val_rmse"}})
    code, err = _run(capsys, "validate", str(path))
    assert code == 2 and "search.metric: unknown value" in err
    path = _study(folder, {**LOOP, "search": {"metric": "val_rmse"}},
                  myloop="def fit(config, trial): pass\n")
    code, err = _run(capsys, "validate", str(path))
    assert code == 2 and "search.mode: hpo does not know which way 'val_rmse' improves" in err


def test_a_trainable_study_validates_with_keys_of_its_own(folder, capsys):
    study = {**LOOP, "model": {"width": {"logint": [8, 64]}, "kind": "wide"},
             "search": {**LOOP["search"], "bounds": {"width": [4, 256]}}}
    path = _study(folder, study, myloop="def fit(config, trial): pass\n")
    code, err = _run(capsys, "validate", str(path))
    assert code == 0, err
    printed = yaml.safe_load(_run.out)
    assert printed["trainable"] == "myloop:fit" and "data" not in printed
    assert printed["model"] == {"width": {"logint": [8, 64]}, "kind": "wide"}
    assert "4 searched" not in err and "width, lr" in err


def test_a_loader_with_mismatched_lengths_fails_before_anything_is_logged(folder, capsys):
    study = {"name": "own-loader", "data": {"source": "python", "loader": "mydata:load"},
             "train": {"epochs": 1}, "search": {"rounds": 1, "trials_per_round": 1}}
    path = _study(folder, study, mydata="""
        import numpy as np

        def load(config):
            return {"x_train": np.zeros((600, 2)), "y_train": np.zeros(599, dtype=int)}
    """)
    code, err = _run(capsys, "search", str(path), "--tracking-uri",
                     f"sqlite:///{folder / 'mlflow.db'}", "--study-root", str(folder / "runs"))
    assert code == 2
    assert "data.loader mydata:load: x_train has 600 rows but y_train 599" in err
    assert not (folder / "runs").exists() and not (folder / "mlflow.db").exists()


def test_a_loader_that_does_not_import_is_named_at_validate(folder, capsys):
    study = {"name": "own-loader", "data": {"source": "python", "loader": "mydata:load"}}
    path = _study(folder, study, mydata="raise RuntimeError('no data today')\n")
    code, err = _run(capsys, "validate", str(path))
    assert code == 2
    assert "data.loader: cannot import module 'mydata': RuntimeError: no data today" in err
