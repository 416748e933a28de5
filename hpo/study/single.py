"""``hpo train``: one fixed configuration, trained in-process and logged as one MLflow run."""

from __future__ import annotations

import sys
from typing import Any

from hpo.errors import InputError, Problem, SpecError
from hpo.report.tables import fmt_value
from hpo.config.spec import Spec
from hpo.tracking.store import Tracker, resolve_tracking_uri
from hpo.trial.contract import Trial, TrialStopped
from hpo.trial.status import TrialStatus

__all__ = ["check_only", "train_fixed"]


def check_only(spec: Spec, *, tracking_uri: str | None = None) -> bool:
    """``hpo check``: the sanity checks as a table, logged as one MLflow run; True if all pass."""
    import dataclasses

    from hpo.study.babysit import sanity_gate
    from hpo.study.run import prepare

    if spec.trainable is not None:
        raise InputError(f"hpo check: the sanity checks train the model with hpo's own loop, "
                         f"and {spec.source or 'this study'} names a trainable of its own "
                         f"({spec.trainable}); run it with hpo.Trial.local() instead")
    data = prepare(spec)
    tracker = Tracker(resolve_tracking_uri(tracking_uri, spec.tracking.uri), spec.name)
    tracker.check()
    run_id = tracker.start_run(f"check {spec.name}", tags={"hpo.kind": "check"})
    lenient = dataclasses.replace(spec, sanity=dataclasses.replace(spec.sanity, strict=False))
    try:
        results = sanity_gate(lenient, data, tracker, run_id, quiet=False)
    finally:
        tracker.end_run(run_id)
    return all(r.passed for r in results)


def train_fixed(spec: Spec, *, tracking_uri: str | None = None, quiet: bool = False) -> Any:
    """Train the study's fixed configuration with the study's seed and a trial's torch threads,
    through the trial contract (hpo's own loop, or the study's trainable), logged as one MLflow
    run; returns the TrialOutcome (the reported epochs and the status)."""
    from hpo.execution.round import study_fit
    from hpo.study.run import prepare
    from hpo.trial.train import TrialOutcome, trial_device, trial_threads

    searched = spec.distributions()
    if searched:
        raise SpecError([Problem(f"{_section(spec, n)}.{n}", "hpo train needs fixed values, "
                                 "not a search distribution", d.to_yaml(), "a fixed value")
                         for n, d in searched.items()], spec.source)
    data = prepare(spec)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    tracker = Tracker(uri, spec.name)
    tracker.check()
    params = spec.fixed()
    run_id = tracker.start_run(f"train {spec.name}", params=params,
                               tags={"hpo.kind": "train", "hpo.seed": str(spec.seed)})
    status = "FAILED"
    try:
        def report(metrics: dict[str, float]) -> None:
            tracker.buffer_metrics(run_id, metrics, step=int(metrics["epoch"]))
            if not quiet:
                print(f"epoch {int(metrics['epoch']):3d}  " + "  ".join(
                    f"{k} {fmt_value(v)}" for k, v in metrics.items()
                    if k not in ("epoch", "diverged")), file=sys.stderr)

        trial = Trial(send=report, seed=spec.seed, data=data, metric=spec.search.metric,
                      direction=spec.search.resolved_mode,
                      device=trial_device(spec.search.resources_per_trial["gpu"] > 0))
        try:
            # torch's threads as a Ray trial of this study has them (hpo.execution.round): a
            # float32 matmul splits its work by thread, so another count changes the
            # last bits, which training amplifies (a retrain must be the trial's computation)
            with trial_threads(spec.search.resources_per_trial["cpu"]):
                study_fit(spec)(params, trial)
        except TrialStopped:
            pass
        outcome = TrialOutcome(status=TrialStatus.DIVERGED if trial.diverged else TrialStatus.OK,
                               history=trial.reports)
        tracker.set_tags(run_id, {"hpo.status": outcome.status})
        status = "FINISHED"
        print(f"{spec.name}: {_last_words(spec, outcome.last)} after {len(outcome.history)} "
              f"epoch(s) ({outcome.status}); MLflow run {run_id} in {uri}")
        return outcome
    finally:
        tracker.end_run(run_id, status)


def _last_words(spec: Spec, last: dict[str, float]) -> str:
    """The last epoch's metric (and validation loss, for hpo's own loop)."""
    if spec.trainable is None:
        return (f"val_accuracy {last.get('val_accuracy', 0):.4f}, val_loss "
                f"{last.get('val_loss', float('nan')):.4f}")
    metric = spec.search.metric
    return f"{metric} {last.get(metric, float('nan')):.4f}"


def _section(spec: Spec, name: str) -> str:
    return "model" if name in spec.model else "train"
