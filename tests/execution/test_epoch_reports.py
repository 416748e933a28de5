"""How results travel from a trial to the driver: ``EpochReports`` decides how many round trips
through Tune's driver a trial costs."""

from __future__ import annotations

from hpo.execution.round import EpochReports


def _epoch(n: int) -> dict[str, float]:
    return {"epoch": n, "val_accuracy": n / 10, "val_loss": 1.0 / n}


def test_every_epoch_reports_each_epoch_as_it_ends():
    sent: list[dict] = []
    reports = EpochReports(sent.append, every_epoch=True, top=("val_accuracy", "epoch"),
                           extra={"node": "n1"})
    for n in (1, 2, 3):
        reports(_epoch(n))
        assert len(sent) == n  # before the next epoch starts: a scheduler can stop it here
    reports.flush()
    assert len(sent) == 3
    assert [r["epochs"] for r in sent] == [[_epoch(1)], [_epoch(2)], [_epoch(3)]]
    assert sent[-1]["val_accuracy"] == 0.3 and sent[-1]["node"] == "n1"


def test_without_a_scheduler_epochs_travel_together():
    sent: list[dict] = []
    reports = EpochReports(sent.append, every_epoch=False, top=("val_accuracy", "epoch"),
                           extra={"node": "n1"}, interval=3600)
    for n in range(1, 11):
        reports(_epoch(n))
    assert sent == []  # ten short epochs: no round trip yet
    reports.flush()
    assert len(sent) == 1
    (report,) = sent
    assert report["epochs"] == [_epoch(n) for n in range(1, 11)]
    # what Tune's searcher and the trial's last result read: the last epoch's top keys, alone
    assert {k: v for k, v in report.items() if k != "epochs"} == {
        "epoch": 10, "val_accuracy": 1.0, "node": "n1"}
    reports.flush()
    assert len(sent) == 1  # nothing new, nothing sent


def test_slow_epochs_are_reported_as_they_end():
    sent: list[dict] = []
    reports = EpochReports(sent.append, every_epoch=False, top=("val_accuracy",), interval=0.0)
    reports(_epoch(1))
    reports(_epoch(2))
    assert [r["epochs"] for r in sent] == [[_epoch(1)], [_epoch(2)]]
