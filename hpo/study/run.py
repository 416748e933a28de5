"""``hpo search``: load data, reach MLflow, then rounds of Ray Tune trials refined coarse-to-fine.

This is where the layers meet: the study file (config), the data, Ray (execution), MLflow and
the journal (tracking), the tables (report). Each step below takes the one ``Study`` object.
"""

from __future__ import annotations

import errno
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hpo.usercode as usercode
from hpo.config.spec import Spec
from hpo.data import TorchData
from hpo.data.dataset import Dataset, load_dataset, require_classification
from hpo.errors import HpoError, InputError, RunError
from hpo.execution.cluster import RayStart
from hpo.execution.interrupt import INTERRUPTS, Interrupted
from hpo.report.study import description, final_report, markdown_report
from hpo.study.babysit import sanity_gate
from hpo.study.context import Study, study_dir_for
from hpo.study.lock import StudyLock
from hpo.study.resume import drop_unjournaled_runs, fingerprint, resumable
from hpo.study.rounds import Rounds, RoundSummary, best_effort, run_rounds, stop_status
from hpo.tracking.journal import Journal, JournalState
from hpo.tracking.store import Tracker, resolve_tracking_uri
from hpo.trial.metrics import METRICS
from hpo.trial.record import TrialRecord, ranked

__all__ = ["RoundSummary", "StudyResult", "run_study", "study_dir_for"]


@dataclass
class StudyResult:
    spec: Spec
    records: list[TrialRecord]
    rounds: list[RoundSummary]
    best: TrialRecord
    study_run_id: str
    tracking_uri: str
    best_yaml: Path
    stopped_early: bool = False
    final: Any = None  # hpo.study.final.FinalEvaluation
    sanity: list[Any] | None = None  # hpo.sanity.CheckResult, when the checks ran

    @property
    def best_config(self) -> dict[str, Any]:
        """The best trial's every resolved model/train value (what best.yaml fixes)."""
        return dict(self.best.params)

    @property
    def best_metric(self) -> float | None:
        return self.best.metric(self.spec.search.metric)

    @property
    def trials(self) -> list[TrialRecord]:
        """The trials that count, best first (finished, not diverged, with a metric)."""
        return ranked(self.records, metric=self.spec.search.metric,
                      mode=self.spec.search.resolved_mode)

    @property
    def run_id(self) -> str:
        """The study's MLflow run."""
        return self.study_run_id

    @property
    def folder(self) -> Path:
        """The study folder (journal, best.yaml, Ray's round state)."""
        return self.best_yaml.parent


def run_study(
    spec: Spec,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    quiet: bool = False,
    force: bool = False,
    resume: bool = False,
    study_root: str | Path = "hpo_runs",
    ray_start: RayStart | None = None,
) -> StudyResult:
    """Run every round of ``spec``; input errors surface before anything is logged.

    With ``resume`` the study continues from its folder's journal: finished rounds are read
    back, the interrupted round goes on from its journaled trials, and the same MLflow runs go
    on. ``ray_start``: a Ray being started on this machine (``start_ray_soon``), which the
    study uses instead of starting one, and shuts down if it stops before using it.
    """
    with INTERRUPTS.handling():  # Ctrl-C and SIGTERM stop the study, whatever it is doing
        try:
            return _run_study(spec, address=address, tracking_uri=tracking_uri, quiet=quiet,
                              force=force, resume=resume, study_root=study_root,
                              ray_start=ray_start)
        finally:
            if ray_start is not None:
                ray_start.close()  # after the study shut down the Ray it took


def _run_study(spec: Spec, *, address: str | None, tracking_uri: str | None, quiet: bool,
               force: bool, resume: bool, study_root: str | Path,
               ray_start: RayStart | None) -> StudyResult:
    data = prepare(spec)  # input errors (exit 2) before anything is logged
    import ray

    from hpo.execution.cluster import check_reachable, disconnect_local_ray, start_ray

    check_reachable(address)  # ray.init would retry for minutes, after the study run is written
    folder = _study_folder(spec, study_root)
    lock = StudyLock(folder).acquire()  # one driver per study
    started_ray = False
    try:
        journal = Journal(folder / "journal.jsonl")
        past = resumable(spec, journal, folder) if resume else None
        # The store first: an unreachable one fails before Ray is reached (a Ray on this machine
        # has been starting since the study began, and stops again); the store opens while it
        # starts. Then Ray, before the study run, so that a cluster that refuses this driver (a
        # wrong token, no Ray there) leaves no study run or journal behind.
        tracker = Tracker.opened(resolve_tracking_uri(tracking_uri, spec.tracking.uri),
                                 spec.name)
        started_ray = (ray_start.take() if ray_start is not None
                       else start_ray(address, study=spec))
        INTERRUPTS.install()  # ray.init's fatal-signal handler would abort on SIGTERM
        with INTERRUPTS.deferred(check=False):  # a study run and journal, or neither
            study = _open(spec, data, tracker, journal, past, quiet=quiet)
    except BaseException:
        try:
            if started_ray:
                ray.shutdown()
        finally:
            lock.release()
        raise
    status, stopping = "FAILED", None
    try:
        # Ray started first: the trial workers it starts import torch while the checks run.
        INTERRUPTS.check()  # one that came while the study opened
        sanity = None
        skipped = _no_sanity_checks(spec, data)
        if skipped:
            study.say(f"\nsanity checks skipped: {skipped}")
        elif spec.sanity.enabled and not force and not (study.past
                                                         and study.past.sanity_done):
            sanity = sanity_gate(spec, data, study.tracker, study.run_id, quiet=quiet)
            study.journal.append("sanity")
        rounds = run_rounds(study, ray.put(data), data.num_classes if data is not None else 0)
        if started_ray:  # the trials are done: Ray's processes stop while the final work runs
            with INTERRUPTS.deferred():  # a signal mid-way would lose the node to stop
                stopping, started_ray = _in_background(disconnect_local_ray()), False
        result = _conclude(study, data, rounds, sanity)
        status = "FINISHED"
        return result
    except BaseException as exc:
        status = stop_status(exc)
        _stopped(study, exc, status)
        if isinstance(exc, Exception) and (error := _as_run_error(exc, study)) is not exc:
            raise error from exc
        raise
    finally:
        try:
            best_effort(study.tracker.end_run, study.run_id, status)
            if started_ray:
                ray.shutdown()  # ends the trials a signal cut short
            elif stopping is not None:
                stopping.result()
        finally:
            lock.release()


def _stopped(study: Study, exc: BaseException, status: str) -> None:
    """A study that stops before its end leaves no run RUNNING (the round under way; its
    trials' runs were ended by the round) and a journal that says so."""
    if study.open_round:
        best_effort(study.tracker.end_run, study.open_round, status)
    reason = str(exc) if isinstance(exc, Interrupted) else type(exc).__name__  # e.g. SIGINT
    best_effort(study.journal.append, "interrupted", reason=reason, status=status)
    if isinstance(exc, Interrupted):
        exc.resumable = True


def _as_run_error(exc: Exception, study: Study) -> Exception:
    """What stopped the study, as one line: a full disk or a store gone is no bug of hpo's."""
    exc = _underlying(exc)
    if isinstance(exc, HpoError):
        return exc
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return RunError(f"the disk is full{where} ({exc.strerror}); free space, then resume "
                        f"the study with --resume")
    if "disk is full" in text or "No space left" in text:
        return RunError(f"the disk is full: {text}; free space, then resume the study with "
                        f"--resume")
    if _is_tracking_error(exc):
        return RunError(f"the MLflow tracking store {study.tracker.uri} stopped answering "
                        f"({text or type(exc).__name__}); when it is back, resume the study "
                        f"with --resume")
    return exc


def _underlying(exc: Exception) -> Exception:
    """Tune hands an error of its callbacks (the round writer's: a full disk, a store gone)
    on as a TuneError of the traceback's text; the error itself is that one's context."""
    from ray.tune.error import TuneError

    while isinstance(exc, TuneError) and isinstance(exc.__cause__ or exc.__context__,
                                                    Exception):
        exc = exc.__cause__ or exc.__context__
    return exc


def _is_tracking_error(exc: Exception) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("mlflow", "requests", "urllib3", "sqlalchemy"))


def _no_sanity_checks(spec: Spec, data: Dataset | TorchData | None) -> str | None:
    """Why the lecture's checks cannot run on this study, if they cannot."""
    if spec.trainable is not None:
        return ("they train the model with hpo's own loop, and this study's trainable is a "
                "loop of its own")
    if isinstance(data, TorchData):
        return "they need the data in memory, and data.loader returned torch Datasets"
    return None


def prepare(spec: Spec) -> Dataset | TorchData | None:
    """The study's data, and the user's code tried once: what would fail every trial fails
    here, as an input error, before anything is logged. None: a trainable with no data:."""
    from hpo.sanity.checks import middle_config
    from hpo.trial.train import build_trial_model

    usercode.search_path(spec.folder)
    if spec.data is None:
        return None
    data = load_dataset(spec.data, seed=spec.seed, folder=spec.folder)
    if spec.trainable is None:
        require_classification(data)
        if isinstance(data, TorchData) and spec.search.pack != 1:
            raise InputError("search.pack: packed trials train from arrays in memory, and "
                             f"data.loader {spec.data.loader} returned torch Datasets; "
                             "set search.pack: 1")
        if spec.builder is not None:  # a builder that returns no nn.Module fails here
            build_trial_model(middle_config(spec), data)
    return data


def _open(spec: Spec, data: Dataset | None, tracker: Tracker, journal: Journal,
          past: JournalState | None, *, quiet: bool) -> Study:
    """The study's MLflow run and journal: new, or the interrupted one's with --resume."""
    folder = journal.path.parent  # inside the study root (_study_folder): emptied below
    study = Study(spec=spec, tracker=tracker, journal=journal, folder=folder, quiet=quiet,
                  past=past)
    summary = data.summary() if data is not None else "no data: section (the trainable's own)"
    study.say(f"study {spec.name!r}: {summary}"
              + (f" (resuming from {journal.path})" if past else ""))
    if past is None:
        for left in ("ray", "checkpoints"):  # a new study of this name: not the last one's
            shutil.rmtree(folder / left, ignore_errors=True)
        journal.reset()
        study.run_id = tracker.start_run(
            spec.name, tags={"hpo.kind": "study", "hpo.seed": str(spec.seed)},
            params={**{f"search.{k}": v for k, v in _search_params(spec).items()},
                    **spec.fixed()},
        )
        tracker.log_text(study.run_id, spec.to_yaml(), "study.yaml")
        journal.append("study", fingerprint=fingerprint(spec), study_run_id=study.run_id)
    else:
        study.run_id = past.study_run_id
        tracker.set_tags(study.run_id, {"hpo.resumed": "true"})
        tracker.client.update_run(study.run_id, status="RUNNING")  # KILLED or FAILED before
        drop_unjournaled_runs(tracker, past)
    return study


def _in_background(fn: Any, *args: Any) -> Future:
    """``fn(*args)`` on a thread of its own; ``result()`` waits for it and raises its error."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpo-background")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one call


def _study_folder(spec: Spec, study_root: str | Path) -> Path:
    """The study's folder, which must lie inside ``study_root``: a new study empties parts of
    it. The name rule keeps ``name`` a single name; a link can still lead elsewhere."""
    folder = study_dir_for(spec, study_root)
    root, real = Path(study_root).resolve(), folder.resolve()
    if real == root or not real.is_relative_to(root):
        raise InputError(f"study folder {folder} leads to {real}, outside --study-root {root}: "
                         f"hpo deletes and overwrites files in a study folder, so it must lie "
                         f"inside the study root; remove the link, or choose another "
                         f"--study-root or name")
    return folder


def _conclude(study: Study, data: Dataset, rounds: Rounds, sanity: list[Any] | None
              ) -> StudyResult:
    """best.yaml, the final evaluation, the study run's tags and report."""
    from hpo.study.final import finish

    spec, tracker, records = study.spec, study.tracker, rounds.records
    best = study.best(records)
    if best is None:
        raise RunError(f"no trial of study {spec.name!r} finished with a finite "
                       f"{spec.search.metric}; see the failed runs in MLflow ({tracker.uri})")
    best_yaml = study.folder / "best.yaml"
    best_yaml.write_text(spec.with_fixed(best.sampled).to_yaml())
    tracker.log_artifact(study.run_id, best_yaml)
    tracker.log_metrics(study.run_id, {f"best_{k}": v for k, v in best.last.items()
                                       if k in METRICS or k == study.metric})
    final = finish(study, data, records, [s.ranges for s in rounds.summaries])
    counts = _status_counts(records)
    tracker.set_tags(study.run_id, {
        "hpo.best_trial": best.name,
        "hpo.trials": len(records),
        "mlflow.note.content": description(spec, best, counts, len(rounds.summaries)),
        **{f"hpo.trials.{s}": n for s, n in counts.items()},
    })
    result = StudyResult(spec=spec, records=records, rounds=rounds.summaries, best=best,
                         study_run_id=study.run_id, tracking_uri=tracker.uri,
                         best_yaml=best_yaml, stopped_early=rounds.stopped_early, final=final,
                         sanity=sanity)
    tracker.log_text(study.run_id, markdown_report(result), "report.md")
    study.journal.append("study_end")
    print(final_report(result), flush=True)  # --quiet prints this alone: the study's result
    return result


def _search_params(spec: Spec) -> dict[str, Any]:
    s = spec.search
    return {"metric": s.metric, "mode": s.resolved_mode, "sampler": s.sampler,
            "rounds": s.rounds, "trials_per_round": s.trials_per_round,
            "scheduler": s.scheduler,
            **({"data.source": spec.data.source,
                "data.preprocess": ",".join(spec.data.preprocess)} if spec.data else {})}


def _status_counts(records: list[TrialRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r.status)] = counts.get(str(r.status), 0) + 1
    return counts
