"""``--resume``: which interrupted study may go on (``resumable``), and the fingerprint that says
a study file is the same one."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.config.spec import parse_spec
from hpo.errors import InputError
from hpo.study.resume import fingerprint, resumable
from hpo.tracking.journal import Journal

STUDY = {
    "name": "resumable",
    "seed": 1,
    "data": {"source": "digits", "val_fraction": 0.2},
    "model": {"hidden": [16], "activation": {"choice": ["relu", "tanh"]}},
    "train": {"epochs": 1, "lr": {"loguniform": [0.001, 0.1]}},
}
SPEC = parse_spec(STUDY)


@pytest.fixture
def journal(tmp_path) -> Journal:
    return Journal(tmp_path / "resumable" / "journal.jsonl")


def started(journal: Journal, spec=SPEC) -> Journal:
    journal.reset()
    journal.append("study", fingerprint=fingerprint(spec), study_run_id="run-1")
    journal.append("round_start", round=1, run_id="r1", ranges={})
    return journal


def refused(journal: Journal, spec=SPEC) -> str:
    with pytest.raises(InputError) as caught:
        resumable(spec, journal, journal.path.parent)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert message.startswith("--resume: ") and "without --resume" in message  # how to go on
    return message


def test_an_interrupted_study_of_the_same_file_goes_on(journal):
    state = resumable(SPEC, started(journal), journal.path.parent)
    assert state.study_run_id == "run-1" and list(state.rounds) == [1]
    assert not state.finished


def test_no_journal_is_no_study_to_resume(journal):
    message = refused(journal)
    assert "no interrupted study 'resumable'" in message
    assert str(journal.path.parent) in message  # where it looked


def test_an_empty_journal_is_no_study_to_resume(journal):
    journal.reset()  # the driver died before the study's first line
    assert "no interrupted study" in refused(journal)


def test_a_journal_without_the_study_start_is_refused(journal):
    journal.reset()
    journal.append("sanity")
    message = refused(journal)
    assert "holds no study start" in message and str(journal.path) in message


def test_a_changed_study_file_is_refused(journal):
    changed = parse_spec({**STUDY, "train": {"epochs": 1, "lr": {"loguniform": [0.001, 0.5]}}})
    message = refused(started(journal), changed)
    assert "the study file changed since study 'resumable' started" in message
    assert "same file and seed" in message


def test_another_seed_is_another_study(journal):
    """``--seed`` overrides the file's seed (as the CLI does it): resume needs the same one."""
    reseeded = dataclasses.replace(SPEC, seed=2)
    assert "the study file changed" in refused(started(journal), reseeded)


def test_a_finished_study_is_not_resumed(journal):
    started(journal).append("study_end")
    message = refused(journal)
    assert "study 'resumable' already finished" in message


def test_the_fingerprint_is_of_the_resolved_study():
    again = parse_spec(STUDY)
    assert fingerprint(again) == fingerprint(SPEC)
    assert len(fingerprint(SPEC)) == 16 and int(fingerprint(SPEC), 16) >= 0
    # the same study written otherwise: keys in another order, a default spelled out
    reordered = {k: STUDY[k] for k in reversed(list(STUDY))}
    reordered["model"] = {"activation": {"choice": ["relu", "tanh"]}, "hidden": [16],
                          "batchnorm": False}
    assert fingerprint(parse_spec(reordered)) == fingerprint(SPEC)


@pytest.mark.parametrize("change", [
    {"seed": 2},
    {"name": "other"},
    {"train": {"epochs": 2, "lr": {"loguniform": [0.001, 0.1]}}},
    {"model": {"hidden": [16], "activation": {"choice": ["relu", "elu"]}}},
    {"search": {"trials_per_round": 7}},
])
def test_the_fingerprint_changes_with_the_study(change):
    assert fingerprint(parse_spec({**STUDY, **change})) != fingerprint(SPEC)


def test_the_fingerprint_is_the_same_in_another_process():
    """A resumed study runs in a new driver: nothing process-specific (hash seeds, ids) may
    enter it."""
    code = ("import sys, json; from hpo.config.spec import parse_spec; "
            "from hpo.study.resume import fingerprint; "
            "print(fingerprint(parse_spec(json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(STUDY)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
                          env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == fingerprint(SPEC)
