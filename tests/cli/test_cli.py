"""``hpo.cli.main`` in-process: exit codes, what it prints, and that bad input runs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpo.cli import main

STUDY = {
    "name": "cli-study",
    "seed": 3,
    "data": {"source": "digits"},
    "model": {"hidden": [16], "activation": {"choice": ["relu", "tanh"]}},
    "train": {"epochs": 1, "lr": {"loguniform": [0.001, 0.1]}},
    "search": {"rounds": 1, "trials_per_round": 2},
}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Each test in its own folder, with no tracking store from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def write(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study))
    return path


def test_validate_prints_the_resolved_study_and_exits_0(tmp_path, capsys):
    space = write(tmp_path / "space.yaml", STUDY)
    assert main(["validate", str(space)]) == 0
    out, err = capsys.readouterr()
    resolved = yaml.safe_load(out)
    assert resolved["name"] == "cli-study" and resolved["seed"] == 3
    assert resolved["train"]["lr"] == {"loguniform": [0.001, 0.1]}
    assert resolved["model"]["activation"] == {"choice": ["relu", "tanh"]}
    assert resolved["train"]["batch_size"] == 64  # defaults filled in
    assert err.splitlines()[0] == "# valid: 2 searched parameter(s): activation, lr"
    assert err.splitlines()[1].startswith("# strategy: 1 round(s) x 2 trials, ")
    assert list(tmp_path.iterdir()) == [space]  # validate runs and writes nothing


@pytest.mark.parametrize("sampler, says", [
    ("random", "random sampling (the notes' method)"),
    ("tpe", "TPE sampling within each round"),
])
def test_validate_says_which_search_the_study_resolves_to(tmp_path, capsys, sampler, says):
    study = {**STUDY, "search": {"rounds": 3, "trials_per_round": 16, "sampler": sampler}}
    assert main(["validate", str(write(tmp_path / "space.yaml", study))]) == 0
    assert capsys.readouterr().err.splitlines()[1] == (
        f"# strategy: 3 round(s) x 16 trials, {says}; between rounds each range narrows to the "
        f"best 25% of trials, or widens x10 when the best sits at its edge")


def test_the_seed_option_reaches_the_study(tmp_path, capsys):
    space = write(tmp_path / "space.yaml", STUDY)
    assert main(["validate", str(space), "--seed", "11"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 11


def test_a_bad_study_file_exits_2_naming_every_field(tmp_path, capsys):
    bad = {**STUDY, "model": {"hidden": [16], "activaton": "relu"},
           "train": {"epochs": 1, "lr": {"loguniform": [0, 0.1]}}}
    space = write(tmp_path / "space.yaml", bad)
    assert main(["validate", str(space)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "2 problems" in err
    assert "model.activaton" in err and "unknown key" in err
    assert "train.lr" in err
    assert str(space) in err  # which file
    assert "Traceback" not in err


def test_a_missing_study_file_exits_2_naming_it(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nowhere.yaml")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.yaml" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, says", [
    (["validate", "space.yaml", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["no-such-command", "space.yaml"], "invalid choice: 'no-such-command'"),
    (["validate"], "the following arguments are required: SPACE.yaml"),
    (["validate", "space.yaml", "--seed", "three"], "--seed: invalid int value: 'three'"),
])
def test_a_wrong_command_line_exits_2_with_usage(tmp_path, capsys, argv, says):
    write(tmp_path / "space.yaml", STUDY)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "usage: hpo" in err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "validate" in capsys.readouterr().out


def test_a_negative_seed_exits_2_naming_the_option(tmp_path, capsys):
    space = write(tmp_path / "space.yaml", STUDY)
    assert main(["validate", str(space), "--seed", "-1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--seed: must be >= 0 (given -1; allowed: a whole number >= 0)" in err


def search_leaves_nothing(tmp_path: Path, study: dict, capsys) -> str:
    """``hpo search`` on ``study``: exit 2, and no study folder, store or run anywhere."""
    space = write(tmp_path / "space.yaml", study)
    before = sorted(p.name for p in tmp_path.iterdir())
    store, root = tmp_path / "store" / "mlflow.db", tmp_path / "root"
    code = main(["search", str(space), "--tracking-uri", f"sqlite:///{store}",
                 "--study-root", str(root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not root.exists() and not store.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even mlflow.db or mlruns
    assert "Traceback" not in err
    return err


def test_search_on_a_missing_data_file_exits_2_and_writes_nothing(tmp_path, capsys):
    study = {**STUDY, "data": {"source": "csv", "path": "features.csv", "target": "label"}}
    err = search_leaves_nothing(tmp_path, study, capsys)
    assert "data.path" in err and "features.csv" in err and "no such file" in err


def test_search_on_a_malformed_data_file_exits_2_and_writes_nothing(tmp_path, capsys):
    """The file is there (the study file validates) but its contents are wrong: found when the
    data is loaded, still before anything is tracked."""
    (tmp_path / "features.csv").write_text("a,b,label\n1,2,0\n3,oops,1\n")
    study = {**STUDY, "data": {"source": "csv", "path": "features.csv", "target": "label"}}
    err = search_leaves_nothing(tmp_path, study, capsys)
    assert "features.csv" in err and "line 3" in err and "'oops' is not a number" in err
