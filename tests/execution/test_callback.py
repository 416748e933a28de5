"""``StudyCallback`` on a real Ray Tune run: Tune's trial events become trial records and reach
the sink in Tune's order. One local Ray for the module; small function trainables that report
made-up epochs, so the test is about the callback, not training."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from hpo.config.spec import parse_spec
from hpo.space.bridge import encode
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus
from tests.fixtures.local_ray import local_ray

pytestmark = pytest.mark.slow

SPEC = parse_spec({
    "name": "callback", "seed": 0, "data": {"source": "digits"},
    "model": {"hidden": {"choice": [[32], [64, 32]]}, "activation": "relu"},
    "train": {"lr": {"loguniform": [1e-3, 1.0]}, "epochs": 2},
    "search": {"max_failures": 1},
})
RANGES = SPEC.distributions()

#: What each trial reports, by its learning rate (the trainable reads only ``lr``):
#: (train_accuracy, val_accuracy) per epoch, or how it ends.
TRIALS = {
    0.01: "ok",  # learns: val 0.7 -> 0.8
    0.02: "overfits",  # train 0.99, val 0.6 (gap above the default 0.1)
    0.03: "diverges",  # one epoch, then the loss explodes
    0.04: "fails once",  # the first attempt raises after an epoch; the retry learns
    0.5: "raises",  # raises after one epoch, every attempt
}


def trainable(config: dict) -> None:
    from ray import tune

    lr, marker = config["lr"], Path(config["marker_dir"]) / f"{config['lr']}"
    kind = TRIALS[lr]

    def epoch(n: int, train: float, val: float, **extra: float) -> dict:
        return {"epoch": n, "train_accuracy": train, "val_accuracy": val, "train_loss": 1 - train,
                "val_loss": 1 - val, "gap": train - val, "diverged": 0.0, **extra}

    if kind == "diverges":
        tune.report({"epochs": [epoch(1, 0.2, 0.2),
                                {**epoch(2, 0.0, 0.0), "diverged": 1.0,
                                 "val_loss": float("inf")}], "val_accuracy": 0.0})
        return
    if kind in ("raises", "fails once") and not (kind == "fails once" and marker.exists()):
        marker.touch()
        tune.report({"epochs": [epoch(1, 0.3, 0.3)], "val_accuracy": 0.3})
        raise ValueError(f"boom at lr={lr}")
    train, val = (0.99, 0.6) if kind == "overfits" else (0.85, 0.8)
    # two reports of one epoch each, and extra keys that are not trial metrics
    tune.report({"epochs": [epoch(1, train - 0.1, val - 0.1, update_ratio=2e-3)],
                 "val_accuracy": val - 0.1, "node": "n1"})
    tune.report({"epochs": [epoch(2, train, val, update_ratio=2e-3, **{"act.layer1.dead": 0.7})],
                 "val_accuracy": val, "node": "n1"})


class Recorder:
    """A ``TrialEvents`` sink that keeps each event with what the record said at that moment."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []
        self.progress_calls: list[list[tuple[str, TrialStatus]]] = []

    def _add(self, kind: str, record: TrialRecord, **extra) -> None:
        seen = {"status": record.status, "epochs": len(record.history), "id": record.trial_id,
                "attempts": record.attempts, "index": record.index, **extra}
        self.events.append((kind, record.trial_id, seen))

    def started(self, record: TrialRecord) -> None:
        self._add("started", record)

    def restarted(self, record: TrialRecord) -> None:
        self._add("restarted", record)

    def rekeyed(self, record: TrialRecord, old: str) -> None:
        self._add("rekeyed", record, old=old)

    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self._add("epoch", record, step=step, metrics=dict(metrics))

    def ended(self, record: TrialRecord) -> None:
        self._add("ended", record)

    def progress(self, records: Collection[TrialRecord]) -> None:
        self.progress_calls.append([(r.trial_id, r.status) for r in records])

    def of(self, trial_id: str) -> list[tuple[str, dict]]:
        return [(kind, seen) for kind, tid, seen in self.events if tid == trial_id]


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    with local_ray(__name__):
        yield


def run_tune(storage: Path, name: str, lrs: list[float], callback) -> None:
    from ray import tune

    hidden = encode(RANGES, {"lr": lrs[0], "hidden": (64, 32)})["hidden"]  # as Optuna sends it
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"lr": tune.grid_search(lrs), "hidden": hidden,
                     "marker_dir": str(storage)},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=2),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=[callback],
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    tuner.fit()


@pytest.fixture(scope="module")
def round_one(ray_session, tmp_path_factory):
    from hpo.execution.callback import StudyCallback

    sink = Recorder()
    callback = StudyCallback(spec=SPEC, ranges=RANGES, round_index=1, events=sink,
                             progress=sink.progress)
    run_tune(tmp_path_factory.mktemp("tune"), "round-1", list(TRIALS), callback)
    return callback, sink


def by_lr(callback) -> dict[float, TrialRecord]:
    return {r.sampled["lr"]: r for r in callback.records.values()}


def test_every_trial_gets_a_record_with_its_decoded_values(round_one):
    callback, _ = round_one
    records = by_lr(callback)
    assert set(records) == set(TRIALS)
    for record in records.values():
        assert record.round == 1
        # the string Optuna carries for a list choice comes back as the study file's value
        assert record.sampled == {"lr": record.sampled["lr"], "hidden": (64, 32)}
        assert record.params == SPEC.resolve(record.sampled)
    # Tune's creation order (grid order) is the trial's index in the round
    assert [records[lr].index for lr in TRIALS] == [1, 2, 3, 4, 5]
    assert sorted(r.name for r in records.values()) == ["1-01", "1-02", "1-03", "1-04", "1-05"]


def test_statuses_come_from_the_last_epoch(round_one):
    records = by_lr(round_one[0])
    assert {lr: records[lr].status for lr in TRIALS} == {
        0.01: TrialStatus.OK, 0.02: TrialStatus.OVERFITTING, 0.03: TrialStatus.DIVERGED,
        0.04: TrialStatus.OK, 0.5: TrialStatus.FAILED}
    assert all(isinstance(r.status, TrialStatus) for r in records.values())
    assert records[0.01].flags == ["dead-units"]  # act.layer1.dead 0.7: more than half dead
    assert records[0.01].node == "n1"


def test_the_failed_trial_keeps_its_error_and_the_epoch_it_finished(round_one):
    callback, sink = round_one
    failed = by_lr(callback)[0.5]
    assert failed.status is TrialStatus.FAILED
    assert "ValueError" in failed.error and "boom at lr=0.5" in failed.error
    assert "\n" not in failed.error  # the last line of the traceback, not all of it
    assert failed.attempts == 2  # search.max_failures: 1 retry, then it counts as failed
    assert [kind for kind, _ in sink.of(failed.trial_id)] == [
        "started", "epoch", "restarted", "epoch", "ended"]


def test_each_trial_starts_reports_its_epochs_then_ends(round_one):
    callback, sink = round_one
    for lr, record in by_lr(callback).items():
        kinds = [kind for kind, _ in sink.of(record.trial_id)]
        assert kinds[0] == "started" and kinds[-1] == "ended", (lr, kinds)
        assert kinds.count("started") == 1 and kinds.count("ended") == 1, (lr, kinds)
    ok = by_lr(callback)[0.01]
    events = sink.of(ok.trial_id)
    assert [(k, s.get("step")) for k, s in events] == [
        ("started", None), ("epoch", 1), ("epoch", 2), ("ended", None)]
    # as each event happened: running while it trained, its status set when it ended
    assert [s["status"] for _, s in events] == [TrialStatus.RUNNING] * 3 + [TrialStatus.OK]
    assert [s["epochs"] for _, s in events] == [0, 1, 2, 2]
    # an epoch's metrics are the trial's metrics only: not Tune's or hpo's bookkeeping
    metrics = events[2][1]["metrics"]
    assert metrics["val_accuracy"] == 0.8 and metrics["update_ratio"] == 2e-3
    assert not {"node", "epochs", "epoch", "trial_id", "training_iteration"} & set(metrics)
    assert ok.history == [events[1][1]["metrics"], metrics]


def test_a_retried_trial_starts_over_in_the_same_record(round_one):
    callback, sink = round_one
    retried = by_lr(callback)[0.04]
    events = sink.of(retried.trial_id)
    assert [k for k, _ in events] == ["started", "epoch", "restarted", "epoch", "epoch",
                                      "ended"]
    restarted = events[2][1]
    assert restarted["epochs"] == 0 and restarted["attempts"] == 2
    assert restarted["status"] is TrialStatus.RUNNING
    # the first attempt's epoch (val 0.3) is gone
    assert [h["val_accuracy"] for h in retried.history] == pytest.approx([0.7, 0.8])
    assert retried.attempts == 2 and retried.status is TrialStatus.OK


def test_progress_sees_the_records_after_each_trial_ends(round_one):
    callback, sink = round_one
    ends = sum(1 for kind, _, _ in sink.events if kind == "ended")
    assert ends == len(TRIALS)
    assert len(sink.progress_calls) == ends
    finished = [sum(s is not TrialStatus.RUNNING for _, s in call) for call in sink.progress_calls]
    assert finished == sorted(finished) and finished[-1] == len(TRIALS)
    assert sink.progress_calls[-1] == [(r.trial_id, r.status) for r in callback.records.values()]


def test_the_callback_pickles_without_its_sink_and_records(round_one):
    """Tune saves its callbacks with the experiment: the sink (MLflow, the journal) stays."""
    import pickle

    callback, _ = round_one
    copy = pickle.loads(pickle.dumps(callback))
    assert copy.events is None and copy.progress is None and copy.records == {}
    assert copy.round == 1 and copy.ranges == callback.ranges


def test_a_cut_short_trial_runs_again_under_its_new_id(ray_session, tmp_path):
    """An interrupted round goes on: the journal's RUNNING trial whose values come again is
    the same trial (same record, index and MLflow run) under Tune's new id; a finished one is
    left alone; a new trial counts on after the known ones."""
    from hpo.execution.callback import StudyCallback

    def known(index: int, trial_id: str, lr: float, status: TrialStatus) -> TrialRecord:
        sampled = {"lr": lr, "hidden": (64, 32)}
        return TrialRecord(round=2, index=index, trial_id=trial_id,
                           params=SPEC.resolve(sampled), sampled=sampled, status=status,
                           run_id=f"run-{trial_id}",
                           history=[{"epoch": 1, "val_accuracy": 0.1}])

    done = known(1, "done_1", 0.02, TrialStatus.OK)
    cut = known(2, "cut_2", 0.01, TrialStatus.RUNNING)
    before_done = dataclasses.replace(done, history=list(done.history))
    sink = Recorder()
    callback = StudyCallback(spec=SPEC, ranges=RANGES, round_index=2, events=sink,
                             known=[done, cut], progress=sink.progress, continued=True)
    run_tune(tmp_path, "round-2-resume1", [0.01, 0.03], callback)

    rekeyed = [(tid, seen) for kind, tid, seen in sink.events if kind == "rekeyed"]
    assert len(rekeyed) == 1
    new_id, seen = rekeyed[0]
    assert seen["old"] == "cut_2" and new_id != "cut_2"
    assert seen["epochs"] == 0  # its epochs start over
    assert callback.records[new_id] is cut and "cut_2" not in callback.records
    assert (cut.index, cut.run_id, cut.status) == (2, "run-cut_2", TrialStatus.OK)
    # its new epochs, not the journal's (val 0.1)
    assert [h["val_accuracy"] for h in cut.history] == pytest.approx([0.7, 0.8])
    assert [k for k, _ in sink.of(new_id)] == ["rekeyed", "epoch", "epoch", "ended"]
    # the finished trial was not touched; the new one is the round's third
    assert done == before_done and sink.of("done_1") == []
    (new,) = [r for r in callback.records.values() if r.sampled["lr"] == 0.03]
    assert new.index == 3 and new.status is TrialStatus.DIVERGED
    assert [k for k, _ in sink.of(new.trial_id)][0] == "started"
