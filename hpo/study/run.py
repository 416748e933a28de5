"""The study: load data, reach MLflow, then rounds of Ray Tune trials refined coarse-to-fine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.errors import InputError, RunError, SanityCheckFailed
from hpo.journal import Journal, JournalState, ranked
from hpo.report import advice, fmt_range, fmt_value, table
from hpo.space import Distribution, parse_distribution
from hpo.spec import Spec
from hpo.tracking import Tracker, resolve_tracking_uri, ui_command

__all__ = ["RoundSummary", "StudyResult", "run_study", "study_dir_for"]


@dataclass
class RoundSummary:
    index: int
    ranges: dict[str, Distribution]
    run_id: str
    best_name: str | None = None
    best_metric: float | None = None
    changes: list[Any] = field(default_factory=list)  # hpo.refine.Change
    trials: int = 0


@dataclass
class StudyResult:
    spec: Spec
    records: list[Any]  # hpo.callback.TrialRecord
    rounds: list[RoundSummary]
    best: Any  # TrialRecord
    study_run_id: str
    tracking_uri: str
    best_yaml: Path
    stopped_early: bool = False
    final: Any = None  # hpo.final.FinalEvaluation
    sanity: list[Any] | None = None  # hpo.diagnostics.CheckResult, when the checks ran


def study_dir_for(spec: Spec, root: str | Path = "hpo_runs") -> Path:
    return Path(root) / spec.name


def _say(quiet: bool, text: str = "") -> None:
    if not quiet:
        print(text, flush=True)


def run_study(
    spec: Spec,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    quiet: bool = False,
    force: bool = False,
    resume: bool = False,
    study_root: str | Path = "hpo_runs",
) -> StudyResult:
    """Run every round of ``spec``; input errors surface before anything is logged.

    With ``resume`` the study continues from its folder's journal: finished rounds are read
    back, the interrupted round goes on from its journaled trials, and the same MLflow runs go
    on.
    """
    import ray

    from hpo.data import load_dataset
    from hpo.tune import start_ray

    data = load_dataset(spec.data, seed=spec.seed)  # DataError (exit 2) before any logging
    folder = study_dir_for(spec, study_root)
    journal = Journal(folder / "journal.jsonl")
    past = _resumable(spec, journal, folder) if resume else None
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    tracker = Tracker(uri, spec.name)
    tracker.check()  # an unreachable server fails here, before any trial
    tracker.ensure_experiment()
    _say(quiet, f"study {spec.name!r}: {data.summary()}"
         + (f" (resuming from {journal.path})" if past else ""))

    if past is None:
        shutil.rmtree(folder / "ray", ignore_errors=True)  # a new study of this name
        journal.reset()
        study_run = tracker.start_run(
            spec.name, tags={"hpo.kind": "study", "hpo.seed": str(spec.seed)},
            params={**{f"search.{k}": v for k, v in _search_params(spec).items()},
                    **{k: v for k, v in spec.fixed().items()}},
        )
        tracker.log_text(study_run, spec.to_yaml(), "study.yaml")
        journal.append("study", fingerprint=_fingerprint(spec), study_run_id=study_run)
    else:
        study_run = past.study_run_id
        tracker.set_tags(study_run, {"hpo.resumed": "true"})
        _drop_unjournaled_runs(tracker, past)
    started_ray, status = False, "FAILED"
    try:
        # Ray first: the trial workers it starts import torch while the sanity checks run.
        started_ray = start_ray(address)
        sanity = None
        if spec.sanity.enabled and not force and not (past and past.sanity_done):
            sanity = sanity_gate(spec, data, tracker, study_run, quiet=quiet)
            journal.append("sanity")
        records, summaries, stopped_early = _rounds(
            spec, tracker, journal, past, study_run, ray.put(data), data.num_classes, folder,
            quiet)
        best_record = _best(spec, records)
        if best_record is None:
            raise RunError(f"no trial of study {spec.name!r} finished with a finite "
                           f"{spec.search.metric}; see the failed runs in MLflow ({uri})")
        best_yaml = folder / "best.yaml"
        best_yaml.write_text(spec.with_fixed(best_record.sampled).to_yaml())
        tracker.log_artifact(study_run, best_yaml)
        tracker.log_metrics(study_run, {f"best_{k}": v for k, v in best_record.last.items()
                                        if k in ("val_accuracy", "val_loss", "train_accuracy",
                                                 "train_loss", "gap")})
        final = _finish(spec, data, records, summaries, tracker, study_run, quiet)
        counts = _status_counts(records)
        tracker.set_tags(study_run, {
            "hpo.best_trial": best_record.name,
            "hpo.trials": len(records),
            "mlflow.note.content": _description(spec, best_record, counts, len(summaries)),
            **{f"hpo.trials.{s}": n for s, n in counts.items()},
        })
        status = "FINISHED"
        result = StudyResult(spec=spec, records=records, rounds=summaries, best=best_record,
                             study_run_id=study_run, tracking_uri=uri, best_yaml=best_yaml,
                             stopped_early=stopped_early, final=final, sanity=sanity)
        tracker.log_text(study_run, markdown_report(result), "report.md")
        journal.append("study_end")
        _say(quiet, final_report(result))
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_run(study_run, status)
        if started_ray:
            ray.shutdown()


def _fingerprint(spec: Spec) -> str:
    return hashlib.sha256(spec.to_yaml().encode()).hexdigest()[:16]


def _resumable(spec: Spec, journal: Journal, folder: Path) -> JournalState:
    """The journal of an interrupted study of this spec, or an input error saying why not."""
    if not journal.exists():
        raise InputError(f"--resume: no interrupted study {spec.name!r} in {folder} "
                         f"(run without --resume to start it)")
    past = journal.replay()
    if past.study_run_id is None:
        raise InputError(f"--resume: {journal.path} holds no study start; run without --resume")
    if past.fingerprint != _fingerprint(spec):
        raise InputError(f"--resume: the study file changed since study {spec.name!r} started "
                         f"(resume needs the same file and seed); run without --resume to start "
                         f"a new study")
    if past.finished:
        raise InputError(f"--resume: study {spec.name!r} already finished; run without "
                         f"--resume to start a new one")
    return past


def _drop_unjournaled_runs(tracker: Tracker, past: JournalState) -> None:
    """The journal is the record: a run the killed driver created in the instant before it
    could journal it (a round or trial run) is deleted, so MLflow holds no orphans."""
    known = ({past.study_run_id} | {r.run_id for r in past.rounds.values()}
             | {t.run_id for t in past.trials.values()})
    parents = [past.study_run_id]
    while parents:
        parent = parents.pop()
        for run in tracker.client.search_runs(
                [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                max_results=50000):
            if run.info.run_id not in known:
                tracker.client.delete_run(run.info.run_id)
            if run.data.tags.get("hpo.kind") == "round":
                parents.append(run.info.run_id)


def _ranges_from(forms: dict[str, Any]) -> dict[str, Distribution]:
    return {n: parse_distribution(f) for n, f in forms.items()}


def _rounds(spec: Spec, tracker: Tracker, journal: Journal, past: JournalState | None,
            study_run: str, data_ref: Any, num_classes: int, folder: Path,
            quiet: bool) -> tuple[list[Any], list[RoundSummary], bool]:
    """The round loop: each round runs (or is read back from the journal), then refines."""
    from hpo.callback import StudyCallback
    from hpo.tune import await_warm_workers, prestart_warm_workers, run_round

    ranges = spec.distributions()
    rounds_total = spec.search.rounds if ranges else 1
    trials_per_round = spec.search.trials_per_round if ranges else 1
    records: list[Any] = []
    summaries: list[RoundSummary] = []
    for k in range(1, rounds_total + 1):
        before = past.rounds.get(k) if past else None
        if before is not None and before.done:  # finished before the interruption
            round_records = past.round_records(k)
            records += round_records
            summaries.append(_summary(spec, k, _ranges_from(before.ranges), before.run_id,
                                      round_records))
            if before.stopped_early or before.next_ranges is None:
                return records, summaries, before.stopped_early
            ranges = _ranges_from(before.next_ranges)
            continue
        plan: dict[str, Any] = {"num_trials": trials_per_round}
        if before is not None:  # interrupted in this round: go on from the journal
            round_run, ranges = before.run_id, _ranges_from(before.ranges)
            plan = _continuation(spec, journal, past, k, trials_per_round, tracker, before)
        else:
            round_run = tracker.start_run(
                f"round {k}", parent=study_run,
                tags={"hpo.kind": "round", "hpo.round": str(k)},
                params={f"range.{n}": fmt_range(d) for n, d in ranges.items()},
            )
            journal.append("round_start", round=k, run_id=round_run,
                           ranges={n: d.to_yaml() for n, d in ranges.items()})
        if plan["num_trials"] > 0:
            callback = StudyCallback(spec=spec, ranges=ranges, round_index=k,
                                     round_run=round_run, tracker=tracker, journal=journal,
                                     total=trials_per_round, quiet=quiet,
                                     num_classes=num_classes, continued=before is not None)
            await_warm_workers(spec)
            try:
                run_round(spec, ranges, round_index=k, data_ref=data_ref,
                          storage=folder / "ray", callbacks=[callback], **plan)
                if k < rounds_total:  # they start while this round's results are written
                    prestart_warm_workers(spec)
            finally:  # every trial's MLflow run and journal line written before going on
                callback.drain()
        round_records = journal.replay().round_records(k)
        records += round_records
        summary = _summary(spec, k, ranges, round_run, round_records)
        summaries.append(summary)
        if summary.best_metric is not None:
            tracker.log_metrics(round_run, {f"best_{spec.search.metric}": summary.best_metric})
        next_ranges, stopped_early = None, False
        if k < rounds_total and summary.best_metric is not None:
            refinement = _refine(spec, ranges, round_records)
            summary.changes, next_ranges = refinement.changes, refinement.ranges
            tracker.log_text(round_run, json.dumps(_changes_json(refinement.changes), indent=2),
                             "refinement.json")
            stopped_early = _should_stop(spec, summaries, refinement.changes)
        _log_round_figure(spec, tracker, round_run, study_run, summary, next_ranges,
                          round_records)
        _say(quiet, _round_table(spec, summary))
        if stopped_early:
            _say(quiet, f"stopping early after round {k}: no range widened and the best "
                        f"improved by less than {spec.search.min_improvement:g}")
        tracker.end_run(round_run)
        journal.append("round_end", round=k, stopped_early=stopped_early,
                       next_ranges={n: d.to_yaml() for n, d in next_ranges.items()}
                       if next_ranges else None)
        if next_ranges is None or stopped_early:
            return records, summaries, stopped_early
        ranges = next_ranges
    return records, summaries, False


def _continuation(spec: Spec, journal: Journal, past: JournalState, k: int, total: int,
                  tracker: Tracker, before: Any) -> dict[str, Any]:
    """How an interrupted round goes on: the journal's finished trials count toward its budget
    and teach the searcher; the trials the interruption cut short run again first with their
    values and MLflow runs (pack members, which Optuna asks for in packs, are dropped and
    sampled anew); new samples fill the rest."""
    from hpo.tune import pack_size

    records = past.round_records(k)
    final = [r for r in records if r.status != "running"]
    cut = [r for r in records if r.status == "running"]
    if pack_size(spec, total) > 1:
        for r in cut:
            tracker.client.delete_run(r.run_id)
            journal.append("trial_drop", round=k, trial_id=r.trial_id)
        cut = []
    journal.append("round_resume", round=k)
    metric = spec.search.metric
    return {"num_trials": total - len(final),
            "done": [(r.sampled, r.metric(metric)) for r in final if r.sampled],
            "rerun": [r.sampled for r in cut], "attempt": before.resumes + 1}


def _summary(spec: Spec, k: int, ranges: dict[str, Distribution], run_id: str,
             records: list[Any]) -> RoundSummary:
    summary = RoundSummary(index=k, ranges=dict(ranges), run_id=run_id, trials=len(records))
    best = _best(spec, records)
    if best is not None:
        summary.best_name, summary.best_metric = best.name, best.metric(spec.search.metric)
    return summary


def sanity_gate(spec: Spec, data: Any, tracker: Tracker, run_id: str, *, quiet: bool) -> list:
    """Run the babysitting checks, log them on ``run_id``; under sanity.strict a failure stops."""
    from hpo.diagnostics import run_sanity_checks, sanity_table
    from hpo.trainable import trial_threads

    with trial_threads(spec.search.resources_per_trial["cpu"]):
        results = run_sanity_checks(spec, data)
    text = sanity_table(results)
    passed = all(r.passed for r in results)
    _say(quiet, f"\nsanity checks (babysitting) on the middle of the space:\n{text}")
    tracker.log_metrics(run_id, {k: v for r in results for k, v in r.values.items()})
    tracker.set_tags(run_id, {"hpo.sanity": "passed" if passed else "failed"})
    tracker.log_text(run_id, "# Sanity checks\n\n" + _markdown_sanity(results), "sanity.md")
    if not passed and spec.sanity.strict:
        failed = ", ".join(r.name for r in results if not r.passed)
        raise SanityCheckFailed(
            f"sanity check(s) failed: {failed}. The study stops before any trial "
            f"(sanity.strict). Fix the setup, or run again with --force to skip the checks.")
    return results


def _markdown_sanity(results: list) -> str:
    rows = [(r.name, "pass" if r.passed else "**FAIL**", r.measured, r.expected, r.cause)
            for r in results]
    return table(("check", "result", "measured", "expected", "likely cause"), rows,
                 markdown=True) + "\n"


def _ranked(spec: Spec, records: list[Any]) -> list[Any]:
    return ranked(records, metric=spec.search.metric, mode=spec.search.resolved_mode)


def _log_round_figure(spec: Spec, tracker: Tracker, round_run: str, study_run: str,
                      summary: RoundSummary, next_ranges: Any, records: list[Any]) -> None:
    from hpo.plots import close, round_figure

    fig = round_figure(summary.index, spec.search.metric, spec.search.resolved_mode,
                       summary.ranges, next_ranges, records)
    if fig is not None:
        tracker.log_figure(round_run, fig, f"round_{summary.index}.png")
        tracker.log_figure(study_run, fig, f"plots/round_{summary.index}.png")
        close(fig)


def _finish(spec: Spec, data: Any, records: list[Any], summaries: list[RoundSummary],
            tracker: Tracker, study_run: str, quiet: bool) -> Any:
    """Final evaluation, the best model, and the study-level plots."""
    from hpo.final import evaluate_final, log_best_model
    from hpo.plots import activation_histograms, close, learning_curves, optuna_figures

    ranked = _ranked(spec, records)
    final = evaluate_final(spec, data, ranked)
    tracker.log_metrics(study_run, final.metrics())
    log_best_model(tracker, study_run, final.model, data)
    figures = {"plots/learning_curves.png": learning_curves(ranked),
               "plots/activations_best.png": activation_histograms(
                   final.activations, f"activations of the best trial ({ranked[0].name})")}
    figures.update({f"plots/{k}": v for k, v in optuna_figures(
        records, [s.ranges for s in summaries], spec.search.metric,
        spec.search.resolved_mode).items()})
    for name, fig in figures.items():
        tracker.log_figure(study_run, fig, name)
        close(fig)
    return final


def _search_params(spec: Spec) -> dict[str, Any]:
    s = spec.search
    return {"metric": s.metric, "mode": s.resolved_mode, "sampler": s.sampler,
            "rounds": s.rounds, "trials_per_round": s.trials_per_round,
            "scheduler": s.scheduler, "data.source": spec.data.source,
            "data.preprocess": ",".join(spec.data.preprocess)}


def _finished_trials(spec: Spec, records: list[Any]) -> list[Any]:
    from hpo.refine import FinishedTrial

    return [FinishedTrial(params=r.sampled, metric=r.metric(spec.search.metric),
                          status=r.status, overfitting=r.status == "overfitting",
                          loss=r.metric("val_loss"))
            for r in records]


def _refine(spec: Spec, ranges: dict[str, Distribution], records: list[Any]) -> Any:
    from hpo.refine import RefineSettings, refine

    return refine(ranges, _finished_trials(spec, records), RefineSettings.from_spec(spec))


def _should_stop(spec: Spec, summaries: list[RoundSummary], changes: list[Any]) -> bool:
    from hpo.refine import should_stop

    if len(summaries) < 2 or summaries[-1].best_metric is None:
        return False
    previous = [s.best_metric for s in summaries[:-1] if s.best_metric is not None]
    if not previous:
        return False
    pick = max if spec.search.resolved_mode == "max" else min
    return should_stop(previous_best=pick(previous), best=summaries[-1].best_metric,
                       changes=changes, min_improvement=spec.search.min_improvement,
                       mode=spec.search.resolved_mode)


def _best(spec: Spec, records: list[Any]) -> Any:
    best = _ranked(spec, records)[:1]
    return best[0] if best else None


def _status_counts(records: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def _changes_json(changes: list[Any]) -> list[dict[str, Any]]:
    return [{"parameter": c.name, "old": c.old.to_yaml(), "new": c.new.to_yaml(),
             "reason": c.reason, "best": _jsonable(c.best)} for c in changes]


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _round_table(spec: Spec, summary: RoundSummary) -> str:
    metric = spec.search.metric
    head = (f"\nround {summary.index}: {summary.trials} trials, best {metric} "
            f"{fmt_value(summary.best_metric)} (trial {summary.best_name})")
    if not summary.changes:
        return head
    rows = [(c.name, fmt_range(c.old), fmt_range(c.new), c.reason, fmt_value(c.best))
            for c in summary.changes]
    return head + "\n" + table(("parameter", "range", "next range", "reason", "best value"), rows)


def _description(spec: Spec, best: Any, counts: dict[str, int], rounds: int) -> str:
    metric = spec.search.metric
    params = ", ".join(f"{k}={fmt_value(v)}" for k, v in best.sampled.items())
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (f"Study **{spec.name}**: {sum(counts.values())} trials in {rounds} round(s) "
            f"({statuses}). Best: trial {best.name}, {metric} = "
            f"{best.metric(metric):.4f}, with {params or 'the fixed configuration'}.")


def markdown_report(result: StudyResult) -> str:
    """The whole study as markdown: sanity, rounds, top trials, final evaluation, advice."""
    spec, metric = result.spec, result.spec.search.metric
    parts = [f"# Study {spec.name}", "",
             f"{len(result.records)} trials in {len(result.rounds)} round(s), seed {spec.seed}, "
             f"sampler {spec.search.sampler}, metric {metric} ({spec.search.resolved_mode})."
             + (" Stopped early: the last round neither widened a range nor improved enough."
                if result.stopped_early else ""), ""]
    if result.sanity:
        parts += ["## Sanity checks", "", _markdown_sanity(result.sanity)]
    parts += ["## Rounds", ""]
    for summary in result.rounds:
        parts.append(f"### Round {summary.index}: best {metric} "
                     f"{fmt_value(summary.best_metric)} (trial {summary.best_name})")
        parts.append("")
        if summary.changes:
            parts.append(table(("parameter", "range", "next range", "reason", "best value"),
                               [(c.name, fmt_range(c.old), fmt_range(c.new), c.reason,
                                 fmt_value(c.best)) for c in summary.changes], markdown=True))
        else:
            parts.append(table(("parameter", "range"), [(n, fmt_range(d)) for n, d in
                                                        summary.ranges.items()], markdown=True))
        parts.append("")
    ranked = _ranked(spec, result.records)
    names = list(spec.distributions())
    parts += ["## Top trials", "", table(
        ("trial", metric, "train_acc", "status", "update/weight", *names),
        [(r.name, r.metric(metric), r.last.get("train_accuracy"), r.status,
          r.last.get("update_ratio"), *(fmt_value(r.sampled.get(n)) for n in names))
         for r in ranked[:10]], markdown=True), ""]
    parts += ["## Best configuration", "", "```yaml", result.spec.with_fixed(
        result.best.sampled).to_yaml().rstrip(), "```", ""]
    if result.final is not None:
        parts += ["## Final evaluation", "", result.final.summary() + ".", ""]
    parts += ["## What the trials say", ""]
    parts += [f"- {a}" for a in advice(result.records, metric=metric,
                                       gap_threshold=spec.gap.threshold)]
    return "\n".join(parts) + "\n"


def final_report(result: StudyResult, top: int = 5) -> str:
    spec, metric = result.spec, result.spec.search.metric
    best_first = _ranked(spec, result.records)
    names = list(spec.distributions())
    rows = [(r.name, r.metric(metric), r.last.get("train_accuracy"), r.status,
             *(fmt_value(r.sampled.get(n)) for n in names)) for r in best_first[:top]]
    lines = [f"\ntop {min(top, len(best_first))} of {len(result.records)} trials",
             table(("trial", metric, "train_acc", "status", *names), rows)]
    best = result.best
    lines.append(f"\nbest configuration (trial {best.name}), {metric} = "
                 f"{best.metric(metric):.4f}:")
    lines += [f"  {k}: {fmt_value(v)}" for k, v in best.params.items()
              if k in best.sampled or k in ("arch", "hidden", "epochs", "optimizer")]
    lines.append(f"written to {result.best_yaml} (reproduce: hpo train {result.best_yaml})")
    if result.final is not None:
        lines.append(f"\nfinal evaluation: {result.final.summary()}")
    lines.append("\nwhat the trials say:")
    lines += [f"  - {a}" for a in advice(result.records, metric=metric,
                                         gap_threshold=spec.gap.threshold)]
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    command = ui_command(result.tracking_uri)
    if command.startswith("mlflow ") and mlflow_bin.exists():
        relative = os.path.relpath(mlflow_bin)
        shown = relative if not relative.startswith("..") else str(mlflow_bin)
        command = f"{shown} {command[len('mlflow '):]}"
    lines.append(f"MLflow UI: {command}")
    return "\n".join(lines)
