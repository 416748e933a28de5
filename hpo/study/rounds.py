"""The round loop: each round runs on Ray (or is read back from the journal), then refines."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from hpo.report.progress import ProgressLine
from hpo.report.study import round_table
from hpo.report.tables import fmt_range
from hpo.space.distributions import Distribution, parse_distribution
from hpo.space.refinement import Change, FinishedTrial, refine, should_stop
from hpo.study.context import Study
from hpo.study.final import KeptWeights
from hpo.study.resume import continuation
from hpo.tracking.journal import RoundState
from hpo.tracking.trials import RoundWriter
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

__all__ = ["RoundSummary", "best_effort", "run_rounds", "stop_status"]


@dataclass
class RoundSummary:
    index: int
    ranges: dict[str, Distribution]
    run_id: str
    best_name: str | None = None
    best_metric: float | None = None
    changes: list[Change] = field(default_factory=list)
    trials: int = 0


@dataclass
class Rounds:
    """What the rounds left: every trial, a summary per round, and whether they stopped early."""

    records: list[TrialRecord] = field(default_factory=list)
    summaries: list[RoundSummary] = field(default_factory=list)
    stopped_early: bool = False


def run_rounds(study: Study, data_ref: Any, num_classes: int) -> Rounds:
    """Round 1 on the study's ranges, each later round on the ranges the previous one refined;
    rounds the journal shows finished are read back, not run."""
    spec = study.spec
    ranges = spec.distributions()
    rounds_total = spec.search.rounds if ranges else 1
    if not ranges:
        _say_fixed(study)
    out, weights = Rounds(), KeptWeights(study)
    for k in range(1, rounds_total + 1):
        before = study.past.rounds.get(k) if study.past else None
        if before is not None and before.done:  # finished before the interruption
            round_records = study.past.round_records(k)
            out.records += round_records
            out.summaries.append(_summary(study, k, _ranges_from(before.ranges), before.run_id,
                                          round_records))
            if before.stopped_early or before.next_ranges is None:
                out.stopped_early = before.stopped_early
                return out
            ranges = _ranges_from(before.next_ranges)
            continue
        if before is not None:
            ranges = _ranges_from(before.ranges)
        weights.seen(out.records)  # the rounds read back from the journal
        round_run, round_records = _run_round(study, k, ranges, before, data_ref, num_classes,
                                              weights, last=k == rounds_total)
        out.records += round_records
        summary = _summary(study, k, ranges, round_run, round_records)
        out.summaries.append(summary)
        next_ranges, out.stopped_early = _end_round(study, summary, round_records, out.summaries,
                                                    last=k == rounds_total)
        if next_ranges is None or out.stopped_early:
            return out
        ranges = next_ranges
    return out


def _say_fixed(study: Study) -> None:
    """Say that a study with nothing searched runs one trial (the same configuration from the
    same seed would train the same network again), unless the study file asked for just that."""
    search = study.spec.search
    parts = []
    if search.trials_per_round > 1:
        parts.append(f"one trial per round (search.trials_per_round {search.trials_per_round} "
                     f"does not apply)")
    if search.rounds > 1:
        parts.append(f"one round (search.rounds {search.rounds} does not apply)")
    if parts:
        study.say("nothing is searched: " + " and ".join(parts))


def _ranges_from(forms: dict[str, Any]) -> dict[str, Distribution]:
    return {n: parse_distribution(f) for n, f in forms.items()}


def _trials_per_round(study: Study) -> int:
    return study.spec.search.trials_per_round if study.spec.distributions() else 1


def _run_round(study: Study, k: int, ranges: dict[str, Distribution], before: RoundState | None,
               data_ref: Any, num_classes: int, weights: KeptWeights, *, last: bool
               ) -> tuple[str, list[TrialRecord]]:
    """Round k's trials on Ray, each journaled and in MLflow; (round run, round's records)."""
    from hpo.execution.callback import StudyCallback
    from hpo.execution.cluster import await_warm_workers, prestart_warm_workers
    from hpo.execution.round import run_round

    spec, tracker, journal = study.spec, study.tracker, study.journal
    total = _trials_per_round(study)
    plan: dict[str, Any] = {"num_trials": total}
    if before is not None:  # interrupted in this round: go on from the journal
        round_run = before.run_id
        study.open_round = round_run
        plan = continuation(spec, journal, study.past, k, total, tracker, before)
    else:
        round_run = tracker.start_run(
            f"round {k}", parent=study.run_id,
            tags={"hpo.kind": "round", "hpo.round": str(k)},
            params={f"range.{n}": fmt_range(d) for n, d in ranges.items()},
        )
        study.open_round = round_run
        journal.append("round_start", round=k, run_id=round_run,
                       ranges={n: d.to_yaml() for n, d in ranges.items()})
    if plan["num_trials"] > 0:
        sink = RoundWriter(tracker, journal, round_index=k, round_run=round_run)
        line = ProgressLine(round_index=k, rounds=spec.search.rounds, total=total,
                            metric=study.metric, direction=study.direction, quiet=study.quiet)

        def progress(records: Collection[TrialRecord]) -> None:  # after each trial's end
            line(records)
            weights.seen(records)

        callback = StudyCallback(spec=spec, ranges=ranges, round_index=k, events=sink,
                                 known=journal.replay().round_records(k), progress=progress,
                                 num_classes=num_classes, continued=before is not None)
        try:
            await_warm_workers(spec)
            run_round(spec, ranges, round_index=k, data_ref=data_ref,
                      storage=study.folder / "ray", callbacks=[callback], **plan)
            if not last:  # they start while this round's results are written
                prestart_warm_workers(spec)
        except BaseException as exc:  # a signal or an error: no trial's run left RUNNING
            best_effort(sink.abandon, callback.records.values(), stop_status(exc))
            failure = sink.failure  # reached Tune's loop as a TuneError of its traceback
            if isinstance(exc, Exception) and failure is not None and failure is not exc:
                raise failure from exc
            raise
        sink.drain()  # every trial's MLflow run and journal line written before going on
    return round_run, journal.replay().round_records(k)


def stop_status(exc: BaseException) -> str:
    """The MLflow status of the runs a study leaves as it stops on ``exc``."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


def best_effort(fn: Any, *args: Any, **kwargs: Any) -> None:
    """A clean-up step as a study stops: the error that stopped it is the one to report, so
    one of the clean-up's own (a full disk, a store gone) does not replace it."""
    with contextlib.suppress(Exception):  # see above; the study is already failing
        fn(*args, **kwargs)


def _end_round(study: Study, summary: RoundSummary, records: list[TrialRecord],
               summaries: list[RoundSummary], *, last: bool
               ) -> tuple[dict[str, Distribution] | None, bool]:
    """Log the round, refine its ranges; (next round's ranges or None, stopped early)."""
    spec, tracker, k = study.spec, study.tracker, summary.index
    if summary.best_metric is not None:
        tracker.log_metrics(summary.run_id, {f"best_{study.metric}": summary.best_metric})
    next_ranges, stopped_early = None, False
    if not last and summary.best_metric is not None:
        refinement = refine(summary.ranges, finished_trials(study, records),
                            spec.refine_settings())
        summary.changes, next_ranges = refinement.changes, refinement.ranges
        tracker.log_text(summary.run_id, json.dumps(_changes_json(refinement.changes), indent=2),
                         "refinement.json")
        stopped_early = _should_stop(study, summaries, refinement.changes)
    _log_round_figure(study, summary, next_ranges, records)
    study.say(round_table(spec, summary))
    if stopped_early:
        study.say(f"stopping early after round {k}: no range widened and the best "
                  f"improved by less than {spec.search.min_improvement:g}")
    tracker.end_run(summary.run_id)
    study.open_round = None
    study.journal.append("round_end", round=k, stopped_early=stopped_early,
                         next_ranges={n: d.to_yaml() for n, d in next_ranges.items()}
                         if next_ranges else None)
    return next_ranges, stopped_early


def _summary(study: Study, k: int, ranges: dict[str, Distribution], run_id: str,
             records: list[TrialRecord]) -> RoundSummary:
    summary = RoundSummary(index=k, ranges=dict(ranges), run_id=run_id, trials=len(records))
    best = study.best(records)
    if best is not None:
        summary.best_name, summary.best_metric = best.name, best.metric(study.metric)
    return summary


def finished_trials(study: Study, records: list[TrialRecord]) -> list[FinishedTrial]:
    return [FinishedTrial(params=r.sampled, metric=r.metric(study.metric),
                          status=r.status, overfitting=r.status is TrialStatus.OVERFITTING,
                          loss=r.metric("val_loss"))
            for r in records]


def _should_stop(study: Study, summaries: list[RoundSummary], changes: list[Change]) -> bool:
    if len(summaries) < 2 or summaries[-1].best_metric is None:
        return False
    previous = [s.best_metric for s in summaries[:-1] if s.best_metric is not None]
    if not previous:
        return False
    return should_stop(previous_best=study.direction.best(previous),
                       best=summaries[-1].best_metric, changes=changes,
                       min_improvement=study.spec.search.min_improvement, mode=study.direction)


def _changes_json(changes: list[Change]) -> list[dict[str, Any]]:
    return [{"parameter": c.name, "old": c.old.to_yaml(), "new": c.new.to_yaml(),
             "reason": c.reason, "best": list(c.best) if isinstance(c.best, tuple) else c.best}
            for c in changes]


def _log_round_figure(study: Study, summary: RoundSummary,
                      next_ranges: dict[str, Distribution] | None,
                      records: list[TrialRecord]) -> None:
    from hpo.report.plots import close, round_figure

    fig = round_figure(summary.index, study.metric, study.direction, summary.ranges,
                       next_ranges, records)
    if fig is not None:
        study.tracker.log_figure(summary.run_id, fig, f"round_{summary.index}.png",
                                 also=[(study.run_id, f"plots/round_{summary.index}.png")])
        close(fig)
