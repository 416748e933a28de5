"""The journal survives a driver killed mid-write, and refuses a journal damaged elsewhere.

A kill (or a full disk) while an event is written leaves a prefix of its line: replay drops it
and cuts it off the file, so the next event starts on a line of its own. A bad line that is
not the last one is no torn write: replay refuses it, naming the file and the line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from hpo.errors import InputError
from hpo.tracking.journal import Journal, JournalState
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus


def _record(round_: int, index: int, trial_id: str, **extra) -> TrialRecord:
    return TrialRecord(round=round_, index=index, trial_id=trial_id,
                       params={"lr": 0.01, "hidden": (64, 32), "activation": "relu"},
                       sampled={"lr": 0.01, "hidden": (64, 32)}, **extra)


def _write_study(journal: Journal) -> None:
    """Round 1 with two trials, one ended; the last event is a trial's end."""
    journal.reset()
    journal.append("study", fingerprint="f1", study_run_id="s1")
    journal.append("round_start", round=1, run_id="r1", ranges={"lr": {"loguniform": [1e-4, 1]}})
    a = _record(1, 1, "a", run_id="ra")
    journal.append("trial_start", record=a.to_json())
    journal.append("trial_start", record=_record(1, 2, "b", run_id="rb").to_json())
    a.status, a.history = TrialStatus.OK, [{"val_accuracy": 0.5, "epoch": 1}]
    journal.append("trial_end", record=a.to_json())


def _state_of(path, text: bytes) -> JournalState:
    path.write_bytes(text)
    return Journal(path).replay()


@pytest.fixture
def folder(tmp_path):
    """A folder on tmpfs where there is one: the every-byte loop below fsyncs about a thousand
    times, 3 ms each on a disk and nothing in memory (what is tested is the bytes, not the
    disk)."""
    if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="hpo-journal-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def written(folder) -> tuple[Journal, bytes]:
    journal = Journal(folder / "study" / "journal.jsonl")
    _write_study(journal)
    return journal, journal.path.read_bytes()


def test_each_event_is_written_whole_and_ends_its_line(written):
    journal, text = written
    assert text.endswith(b"\n")
    lines = text.split(b"\n")[:-1]
    assert [json.loads(line)["event"] for line in lines] == [
        "study", "round_start", "trial_start", "trial_start", "trial_end"]


def test_a_torn_last_line_at_every_byte_is_dropped_and_cut_off(written, folder):
    journal, text = written
    last_start = text.rstrip(b"\n").rfind(b"\n") + 1
    before = _state_of(folder / "before.jsonl", text[:last_start])  # without the last event
    assert before.trials[(1, "a")].status is TrialStatus.RUNNING
    full = journal.replay()
    assert full.trials[(1, "a")].status is TrialStatus.OK

    # every cut inside the last line: from nothing of it to all of it but its newline
    for cut in range(last_start + 1, len(text)):
        journal.path.write_bytes(text[:cut])
        torn = Journal(journal.path)
        assert torn.replay() == before, f"cut at byte {cut}"
        # the torn bytes are gone from the file before anything is appended
        assert journal.path.read_bytes() == text[:last_start], f"cut at byte {cut}"
        torn.append("trial_end", record=full.trials[(1, "a")].to_json())
        again = Journal(journal.path).replay()
        assert again == full, f"cut at byte {cut}"
        assert journal.path.read_bytes() == text


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(written):
    """Even without a replay first (a new study's first append never follows a replay)."""
    journal, text = written
    journal.path.write_bytes(text + b'{"event": "trial_end", "rec')
    fresh = Journal(journal.path)
    fresh.append("study_end")
    assert journal.path.read_bytes() == text + b'{"event": "study_end"}\n'
    assert fresh.replay().finished


def test_a_torn_last_line_that_parses_but_lacks_its_newline_is_dropped(written, folder):
    journal, text = written
    last_start = text.rstrip(b"\n").rfind(b"\n") + 1
    journal.path.write_bytes(text[:-1])  # the whole event, but not its newline
    assert journal.replay() == _state_of(folder / "before.jsonl", text[:last_start])
    assert journal.path.read_bytes() == text[:last_start]


@pytest.mark.parametrize("garbage", [b"not json at all", b"", b'{"event": "trial_e',
                                     b"[1, 2]", b'{"no_event": 1}'])
def test_a_bad_line_in_the_middle_is_an_input_error_naming_file_and_line(written, garbage):
    journal, text = written
    lines = text.split(b"\n")
    damaged = b"\n".join([*lines[:2], garbage, *lines[2:]])
    journal.path.write_bytes(damaged)
    with pytest.raises(InputError) as info:
        journal.replay()
    message = str(info.value)
    assert f"{journal.path}:3" in message
    assert "--resume" in message  # how to go on
    assert info.value.exit_code == 2
    assert journal.path.read_bytes() == damaged  # nothing cut off a journal it refused


def test_an_event_that_contradicts_the_journal_is_an_input_error_naming_its_line(written):
    journal, text = written
    journal.path.write_bytes(text + b'{"event": "round_end", "round": 7}\n'
                             + b'{"event": "study_end"}\n')
    with pytest.raises(InputError, match=f"{journal.path}:6"):
        journal.replay()


def test_invalid_utf8_in_the_middle_is_an_input_error_naming_file_and_line(written):
    journal, text = written
    lines = text.split(b"\n")
    lines[1] = lines[1][:20] + b"\xff\xfe" + lines[1][20:]
    journal.path.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError) as info:
        journal.replay()
    assert f"{journal.path}:2" in str(info.value)
    assert "UTF-8" in str(info.value)


def test_invalid_utf8_in_a_torn_last_line_is_dropped_like_any_torn_line(written, folder):
    journal, text = written
    last_start = text.rstrip(b"\n").rfind(b"\n") + 1
    journal.path.write_bytes(text[:last_start] + b'{"event": "\xe2\x82')
    assert journal.replay() == _state_of(folder / "before.jsonl", text[:last_start])
    assert journal.path.read_bytes() == text[:last_start]

