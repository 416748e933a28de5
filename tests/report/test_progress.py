"""The round's progress line: at each quarter off a terminal, at most so often on one."""

from __future__ import annotations

from hpo.report.progress import ProgressLine
from hpo.trial.direction import Direction
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus


def _line(total: int, *, tty: bool) -> ProgressLine:
    line = ProgressLine(round_index=1, rounds=3, total=total, metric="val_accuracy",
                        direction=Direction.MAX)
    line.tty = tty
    return line


def _finish(line: ProgressLine, records: list[TrialRecord], i: int, accuracy: float) -> None:
    records.append(TrialRecord(round=1, index=i, trial_id=str(i), params={}, sampled={},
                               status=TrialStatus.OK, history=[{"val_accuracy": accuracy}]))
    line(records)


def test_progress_prints_each_quarter_of_the_round_with_its_best(capsys):
    line, records = _line(8, tty=False), []
    for i, accuracy in enumerate([0.5, 0.7, 0.6, 0.9, 0.8, 0.1, 0.2, 0.3], start=1):
        _finish(line, records, i, accuracy)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ")[1] for line in lines] == [
        "2/8 trials, best val_accuracy 0.7000", "4/8 trials, best val_accuracy 0.9000",
        "6/8 trials, best val_accuracy 0.9000", "8/8 trials, best val_accuracy 0.9000"]


def test_progress_on_a_terminal_is_redrawn_at_most_so_often_and_ends_the_round(
        capsys, monkeypatch):
    import hpo.report.progress

    monkeypatch.setattr(hpo.report.progress, "PROGRESS_INTERVAL_S", 3600.0)
    line, records = _line(1000, tty=True), []
    for i in range(1, 1001):
        _finish(line, records, i, i / 1000)
    drawn = capsys.readouterr().err.split("\r")[1:]
    # the first trial's line, then nothing for the interval, then the round's last, which ends
    assert [d.split("] ")[1] for d in drawn] == [
        "1/1000 trials, best val_accuracy 0.0010",
        "1000/1000 trials, best val_accuracy 1.0000\n"]
