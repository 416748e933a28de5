"""A study's name is a name, not a path: it names the study folder under ``--study-root`` and
the MLflow experiment, so nothing it says can reach outside the study root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from hpo.cli import main
from hpo.config.spec import parse_spec
from hpo.errors import SpecError

STUDY = {
    "seed": 3,
    "data": {"source": "digits"},
    "model": {"hidden": [16], "activation": {"choice": ["relu", "tanh"]}},
    "train": {"epochs": 1, "lr": {"loguniform": [0.001, 0.1]}},
    "search": {"rounds": 1, "trials_per_round": 2},
    "sanity": {"enabled": False},
}
ALLOWED = "letters, digits and - _ ."


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def write(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("name", ["../x", "/abs/dir", "a/b", "n" * 101, ".hidden", "..",
                                  "a..b", "with space", "tab\tname", "back\\slash", "ü-name",
                                  "nul\0byte"])
def test_a_name_that_is_not_a_name_exits_2_saying_what_is_allowed(tmp_path, capsys, name):
    space = write(tmp_path / "space.yaml", {"name": name, **STUDY})
    assert main(["validate", str(space)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "name:" in err and ALLOWED in err and "at most 100 characters" in err
    assert str(space) in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["ok-name_1.2", "n" * 100, "A", "1", "_x", "x."])
def test_a_name_of_letters_digits_and_dash_underscore_dot_is_valid(tmp_path, capsys, name):
    space = write(tmp_path / "space.yaml", {"name": name, **STUDY})
    assert main(["validate", str(space)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == name


def test_a_file_name_that_is_no_study_name_asks_for_a_name_key(tmp_path, capsys):
    space = write(tmp_path / "my study.yaml", STUDY)  # no name: key, the stem would be it
    assert main(["validate", str(space)]) == 2
    err = capsys.readouterr().err
    assert "'my study'" in err and "set `name:`" in err and ALLOWED in err
    # with a name: key, the file may be called anything
    write(space, {"name": "my-study", **STUDY})
    assert main(["validate", str(space)]) == 0


def test_the_name_rule_is_reported_with_every_other_problem():
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "../x", "seed": -1, **{k: v for k, v in STUDY.items()
                                                      if k != "seed"}})
    assert [p.path for p in info.value.problems] == ["name", "seed"]


def test_search_with_a_bad_name_creates_nothing(tmp_path, capsys):
    outside = tmp_path / "outside"
    (outside / "ray").mkdir(parents=True)
    (outside / "ray" / "keep.txt").write_text("not the study's")
    space = write(tmp_path / "space.yaml", {"name": str(outside), **STUDY})
    store, root = tmp_path / "store" / "mlflow.db", tmp_path / "root"
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["search", str(space), "--tracking-uri", f"sqlite:///{store}",
                 "--study-root", str(root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "name:" in err and ALLOWED in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no store, no root
    assert (outside / "ray" / "keep.txt").read_text() == "not the study's"
    assert sorted(p.name for p in outside.iterdir()) == ["ray"]  # no journal written there


@pytest.mark.slow  # loads the data and imports Ray and torch before it is refused
def test_a_study_folder_that_leads_outside_the_root_is_refused_not_emptied(tmp_path, capsys):
    """A study folder that is a link to elsewhere: the new study would empty its ``ray``
    folder; nothing outside --study-root is ever deleted."""
    outside = tmp_path / "outside"
    (outside / "ray").mkdir(parents=True)
    (outside / "ray" / "keep.txt").write_text("not the study's")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linked")
    space = write(tmp_path / "space.yaml", {"name": "linked", **STUDY})
    store = tmp_path / "store" / "mlflow.db"
    code = main(["search", str(space), "--tracking-uri", f"sqlite:///{store}",
                 "--study-root", str(root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(root / "linked") in err and str(outside.resolve()) in err and "--study-root" in err
    assert (outside / "ray" / "keep.txt").read_text() == "not the study's"
    assert sorted(p.name for p in outside.iterdir()) == ["ray"]
    assert not store.parent.exists()
