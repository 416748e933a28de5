"""The study journal: what ``--resume`` reads back after the driver stopped at any instant."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from hpo.errors import InputError
from hpo.tracking.journal import Journal, JournalState, RoundState
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus


def record(round_: int, index: int, trial_id: str, *, status: TrialStatus = TrialStatus.RUNNING,
           lr: float = 0.01, **extra) -> TrialRecord:
    return TrialRecord(round=round_, index=index, trial_id=trial_id,
                       params={"lr": lr, "hidden": (64, 32), "activation": "relu"},
                       sampled={"lr": lr, "hidden": (64, 32)}, status=status, **extra)


@pytest.fixture
def journal(tmp_path) -> Journal:
    j = Journal(tmp_path / "study" / "journal.jsonl")
    j.reset()
    return j


def write_study(journal: Journal) -> None:
    """A study interrupted in round 2: round 1 done, one trial of round 2 finished, one not."""
    journal.append("study", fingerprint="f1", study_run_id="s1")
    journal.append("sanity", passed=True)
    journal.append("round_start", round=1, run_id="r1", ranges={"lr": {"loguniform": [1e-4, 1]}})
    a = record(1, 1, "a")
    journal.append("trial_start", record=a.to_json())
    a.status, a.history, a.run_id = TrialStatus.OK, [{"val_accuracy": 0.5, "epoch": 1}], "ra"
    journal.append("trial_end", record=a.to_json())
    journal.append("round_end", round=1, next_ranges={"lr": {"loguniform": [1e-3, 0.1]}},
                   stopped_early=False)
    journal.append("round_start", round=2, run_id="r2", ranges={"lr": {"loguniform": [1e-3, 0.1]}})
    b = record(2, 1, "b", run_id="rb")
    journal.append("trial_start", record=b.to_json())
    b.status, b.history = TrialStatus.OVERFITTING, [{"val_accuracy": 0.7, "epoch": 1}]
    journal.append("trial_end", record=b.to_json())
    journal.append("trial_start", record=record(2, 2, "c", run_id="rc").to_json())


def test_a_new_journal_is_empty_and_replays_to_nothing(tmp_path):
    j = Journal(tmp_path / "deep" / "folder" / "journal.jsonl")
    assert not j.exists()
    assert j.replay() == JournalState()
    j.reset()  # makes its folder
    assert j.path.exists() and not j.exists()  # an empty file is no journal to resume


def test_append_then_replay_gives_the_study_state(journal):
    write_study(journal)
    assert journal.exists()
    state = journal.replay()
    assert (state.fingerprint, state.study_run_id) == ("f1", "s1")
    assert state.sanity_done and not state.finished
    assert state.rounds == {
        1: RoundState(index=1, run_id="r1", ranges={"lr": {"loguniform": [1e-4, 1]}}, done=True,
                      next_ranges={"lr": {"loguniform": [1e-3, 0.1]}}),
        2: RoundState(index=2, run_id="r2", ranges={"lr": {"loguniform": [1e-3, 0.1]}}),
    }
    assert set(state.trials) == {(1, "a"), (2, "b"), (2, "c")}
    # a trial's end replaces its start: the last line about it wins
    assert state.trials[(1, "a")].status is TrialStatus.OK
    assert state.trials[(1, "a")].run_id == "ra"
    assert state.trials[(1, "a")].history == [{"val_accuracy": 0.5, "epoch": 1}]
    assert state.trials[(2, "b")].status is TrialStatus.OVERFITTING
    assert state.trials[(2, "c")].status is TrialStatus.RUNNING  # cut short by the stop

    journal.append("round_resume", round=2)
    journal.append("round_resume", round=2)
    journal.append("round_end", round=2, stopped_early=True)
    journal.append("study_end")
    state = journal.replay()
    assert state.rounds[2].resumes == 2
    assert state.rounds[2].done and state.rounds[2].stopped_early
    assert state.rounds[2].next_ranges is None
    assert state.finished


def test_each_event_is_one_json_line_on_disk_at_once(journal):
    journal.append("study", fingerprint="f", study_run_id="s")
    # no close, no flush by the caller: the line is there for a reader in another process
    assert json.loads(journal.path.read_text()) == {"event": "study", "fingerprint": "f",
                                                    "study_run_id": "s"}
    journal.append("round_start", round=1, run_id="r", ranges={"hidden": {"choice": [(1, 2)]}})
    lines = journal.path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["ranges"] == {"hidden": {"choice": [[1, 2]]}}  # tuples as lists


def test_a_line_cut_short_ends_the_replay_there(journal):
    """A driver killed mid-write leaves a partial last line: what came before it counts. A cut
    line with lines after it is a damaged journal: an input error naming the file and line."""
    write_study(journal)
    full = journal.replay()
    text = journal.path.read_text()
    lines = text.splitlines(keepends=True)
    cut = "".join(lines[:3]) + lines[3][: len(lines[3]) // 2]  # half of round 1's first trial
    journal.path.write_text(cut)
    state = journal.replay()
    assert state.rounds.keys() == {1} and not state.rounds[1].done
    assert state.trials == {} and state.sanity_done and state.study_run_id == "s1"

    assert state != full
    journal.path.write_text(cut + "\n" + "".join(lines[3:]))
    with pytest.raises(InputError, match=r"journal\.jsonl:4: the study journal is damaged"):
        journal.replay()


def test_a_rekeyed_trial_keeps_its_record_under_the_new_id(journal):
    write_study(journal)
    journal.append("trial_rekey", round=2, old="c", new="c2")
    state = journal.replay()
    assert (2, "c") not in state.trials
    moved = state.trials[(2, "c2")]
    assert moved.trial_id == "c2" and moved.run_id == "rc" and moved.index == 2
    # its end, under the new id, is the same trial
    moved.status, moved.history = TrialStatus.OK, [{"val_accuracy": 0.8, "epoch": 1}]
    journal.append("trial_end", record=moved.to_json())
    assert [r.trial_id for r in journal.replay().round_records(2)] == ["b", "c2"]


def test_a_rekey_of_an_unknown_trial_changes_nothing(journal):
    write_study(journal)
    journal.append("trial_rekey", round=2, old="nobody", new="x")
    journal.append("trial_rekey", round=1, old="c", new="x")  # c is a round 2 trial
    assert journal.replay() == _replayed_without_last(journal, 2)


def test_a_dropped_trial_is_gone(journal):
    write_study(journal)
    journal.append("trial_drop", round=2, trial_id="c")
    journal.append("trial_drop", round=1, trial_id="b")  # b is in round 2: stays
    state = journal.replay()
    assert set(state.trials) == {(1, "a"), (2, "b")}


def _replayed_without_last(journal: Journal, n: int) -> JournalState:
    lines = journal.path.read_text().splitlines(keepends=True)
    other = Journal(journal.path.with_name("copy.jsonl"))
    other.path.write_text("".join(lines[:-n]))
    return other.replay()


def test_round_records_are_one_rounds_trials_in_index_order(journal):
    journal.append("study", fingerprint="f", study_run_id="s")
    # journaled as the trials started and ended, not in index order
    for rnd, idx, tid in [(1, 3, "z"), (2, 1, "q"), (1, 1, "y"), (1, 2, "x"), (2, 2, "p")]:
        journal.append("trial_start", record=record(rnd, idx, tid).to_json())
    state = journal.replay()
    assert [(r.index, r.trial_id) for r in state.round_records(1)] == [(1, "y"), (2, "x"),
                                                                        (3, "z")]
    assert [r.trial_id for r in state.round_records(2)] == ["q", "p"]
    assert state.round_records(3) == []


def test_a_trial_record_survives_json_with_its_tuples_and_status():
    original = TrialRecord(
        round=2, index=7, trial_id="abc_00006",
        params={"lr": 0.03, "hidden": (128, 64), "activation": "elu", "batchnorm": True,
                "kernel": [3, 3]},
        sampled={"lr": 0.03, "hidden": (128, 64)},
        run_id="run-1", history=[{"val_accuracy": 0.9, "val_loss": math.inf, "epoch": 1}],
        status=TrialStatus.DIVERGED, error=None, flags=["dead-units", "update-ratio-high"],
        node="node-1", attempts=3)
    line = json.dumps(original.to_json(), allow_nan=True)  # as the journal writes it
    back = TrialRecord.from_json(json.loads(line))
    # JSON has no tuples: every list in params and sampled comes back as a tuple
    assert back == dataclasses.replace(original, params={**original.params, "kernel": (3, 3)})
    assert back.status is TrialStatus.DIVERGED and isinstance(back.status, TrialStatus)
    assert back.params["hidden"] == (128, 64) and back.sampled["hidden"] == (128, 64)
    assert back.history[0]["val_loss"] == math.inf
    assert back.name == "2-07"


@pytest.mark.parametrize("status", list(TrialStatus))
def test_every_status_round_trips_through_the_journal(journal, status):
    journal.append("trial_end", record=record(1, 1, "t", status=status, error="boom").to_json())
    back = journal.replay().trials[(1, "t")]
    assert back.status is status
    assert back.error == "boom"
