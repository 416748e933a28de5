"""``--resume``: which study may go on, and how an interrupted round continues."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hpo.config.spec import Spec
from hpo.errors import InputError
from hpo.execution.round import pack_size
from hpo.tracking.journal import Journal, JournalState, RoundState
from hpo.tracking.store import Tracker
from hpo.trial.status import TrialStatus

__all__ = ["continuation", "drop_unjournaled_runs", "fingerprint", "resumable"]


def fingerprint(spec: Spec) -> str:
    """The study file as resolved: a resumed study must be the same one."""
    return hashlib.sha256(spec.to_yaml().encode()).hexdigest()[:16]


def resumable(spec: Spec, journal: Journal, folder: Path) -> JournalState:
    """The journal of an interrupted study of this spec, or an input error saying why not."""
    if not journal.exists():
        raise InputError(f"--resume: no interrupted study {spec.name!r} in {folder} "
                         f"(run without --resume to start it)")
    past = journal.replay()
    if past.study_run_id is None:
        raise InputError(f"--resume: {journal.path} holds no study start; run without --resume")
    if past.fingerprint != fingerprint(spec):
        raise InputError(f"--resume: the study file changed since study {spec.name!r} started "
                         f"(resume needs the same file and seed); run without --resume to start "
                         f"a new study")
    if past.finished:
        raise InputError(f"--resume: study {spec.name!r} already finished; run without "
                         f"--resume to start a new one")
    return past


def drop_unjournaled_runs(tracker: Tracker, past: JournalState) -> None:
    """The journal is the record: a run the killed driver created in the instant before it
    could journal it (a round or trial run) is deleted, so MLflow holds no orphans; a trial
    the journal holds as ended whose run was not yet marked ended (the driver died between
    the two) is completed from the journal, and one whose run is not there at all (the bulk
    writer journals a batch of trials before it writes their runs) is written from it."""
    known = ({past.study_run_id} | {r.run_id for r in past.rounds.values()}
             | {t.run_id for t in past.trials.values()})
    ended = {t.run_id: key for key, t in past.trials.items() if t.finished and t.run_id}
    there: set[str] = set()
    parents = [past.study_run_id]
    while parents:
        parent = parents.pop()
        for run in tracker.client.search_runs(
                [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                max_results=50000):
            run_id = run.info.run_id
            there.add(run_id)
            if run_id not in known:
                tracker.client.delete_run(run_id)
            elif run_id in ended and _unfinished(run, past.trials[ended[run_id]]):
                _complete(tracker, past, ended[run_id])
            if run.data.tags.get("hpo.kind") == "round":
                parents.append(run_id)
    missing = [key for run_id, key in ended.items() if run_id not in there]
    if missing:
        _write_missing(tracker, past, missing)


def _write_missing(tracker: Tracker, past: JournalState, keys: list[tuple[int, str]]) -> None:
    """The runs of ended trials MLflow lacks, as the bulk writer would have written them
    (``BulkRuns.write`` leaves a run that is there after all, e.g. deleted by hand, alone)."""
    import time

    from hpo.tracking.bulk import TrialRun, metric_history
    from hpo.tracking.trials import bulk_runs, end_tags, start_tags, trial_label

    runs = bulk_runs(tracker)
    if runs is None:  # a store written one by one has every journaled trial's run
        return
    now = int(time.time() * 1000)
    trials = []
    for key in keys:
        record = past.trials[key]
        round_state = past.rounds.get(record.round)
        if round_state is None:
            continue
        steps = past.steps.get(key) or list(range(1, len(record.history) + 1))
        start, end, stamps = past.times.get(key, (now, now, []))
        stamps = stamps if len(stamps) == len(steps) else [end] * len(steps)
        tags, status = end_tags(record)
        trials.append(TrialRun(
            name=trial_label(record), start_time=start, end_time=end, status=status,
            parent_run_id=round_state.run_id, params=record.params,
            metrics=metric_history(zip(steps, stamps, record.history)),
            tags=start_tags(record, record.round), end_tags=tags, run_id=record.run_id))
    runs.write(trials)


def _unfinished(run: Any, record: Any) -> bool:
    """Whether an ended trial's run may lack some of its end: not (yet) in the status the
    journal gives it (RUNNING, or ended as a stop left it), or failed (then it is cheap to
    look: failed trials are few)."""
    from hpo.tracking.trials import end_tags

    _, status = end_tags(record)
    return run.info.status != status or status == "FAILED"


def _complete(tracker: Tracker, past: JournalState, key: tuple[int, str]) -> None:
    """Write what MLflow lacks of an ended trial's run: the epochs not yet there (each
    (metric, step) once), its tags, its end."""
    from hpo.tracking.trials import end_tags

    record = past.trials[key]
    steps = past.steps.get(key) or list(range(1, len(record.history) + 1))
    names = {name for epoch in record.history for name in epoch}
    there = {(m.key, m.step) for name in names
             for m in tracker.client.get_metric_history(record.run_id, name)}
    for step, metrics in zip(steps, record.history):
        tracker.buffer_metrics(record.run_id, {k: v for k, v in metrics.items()
                                               if (k, step) not in there}, step=step)
    tags, status = end_tags(record)
    tracker.end_run(record.run_id, status, tags=tags)


def _delete_if_there(tracker: Tracker, run_id: str | None) -> None:
    """Delete the run; the bulk writer writes a trial's run only when it ends, so a trial cut
    short by a killed driver may have none."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return
    try:
        tracker.client.delete_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def continuation(spec: Spec, journal: Journal, past: JournalState, k: int, total: int,
                 tracker: Tracker, before: RoundState) -> dict[str, Any]:
    """How an interrupted round goes on: the journal's finished trials count toward its budget
    and teach the searcher; the trials the interruption cut short run again first with their
    values and MLflow runs (pack members, which Optuna asks for in packs, are dropped and
    sampled anew); new samples fill the rest."""
    records = past.round_records(k)
    final = [r for r in records if r.status is not TrialStatus.RUNNING]
    cut = [r for r in records if r.status is TrialStatus.RUNNING]
    if pack_size(spec, total) > 1:
        for r in cut:
            _delete_if_there(tracker, r.run_id)
            journal.append("trial_drop", round=k, trial_id=r.trial_id)
        cut = []
    journal.append("round_resume", round=k)
    tracker.client.update_run(before.run_id, status="RUNNING")  # KILLED or FAILED before
    metric = spec.search.metric
    indices = {r.index for r in records}
    return {"num_trials": total - len(final),
            "done": [(r.sampled, r.metric(metric)) for r in final if r.sampled],
            "rerun": [r.sampled for r in cut], "attempt": before.resumes + 1,
            # the round's earlier samples, in order, for the sampler to draw again unseen
            "asked": [i in indices for i in range(1, max(indices, default=0) + 1)],
            "round_trials": total}
