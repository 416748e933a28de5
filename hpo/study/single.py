"""``hpo train``: one fixed configuration, trained in-process and logged as one MLflow run."""

from __future__ import annotations

import sys
from typing import Any

from hpo.errors import Problem, SpecError
from hpo.report.tables import fmt_value
from hpo.config.spec import Spec
from hpo.tracking.store import Tracker, resolve_tracking_uri

__all__ = ["check_only", "train_fixed"]


def check_only(spec: Spec, *, tracking_uri: str | None = None) -> bool:
    """``hpo check``: the sanity checks as a table, logged as one MLflow run; True if all pass."""
    import dataclasses

    from hpo.data.dataset import load_dataset
    from hpo.study.babysit import sanity_gate

    data = load_dataset(spec.data, seed=spec.seed)
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
    """Train the study's fixed configuration with the study's seed; returns the TrialOutcome."""
    from hpo.data.dataset import load_dataset
    from hpo.trial.train import train_trial, trial_device

    searched = spec.distributions()
    if searched:
        raise SpecError([Problem(f"{_section(spec, n)}.{n}", "hpo train needs fixed values, "
                                 "not a search distribution", d.to_yaml(), "a fixed value")
                         for n, d in searched.items()], spec.source)
    data = load_dataset(spec.data, seed=spec.seed)
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

        outcome = train_trial(params, data, seed=spec.seed, report=report,
                              device=trial_device(spec.search.resources_per_trial["gpu"] > 0))
        tracker.set_tags(run_id, {"hpo.status": outcome.status})
        status = "FINISHED"
        last = outcome.last
        print(f"{spec.name}: val_accuracy {last.get('val_accuracy', 0):.4f}, val_loss "
              f"{last.get('val_loss', float('nan')):.4f} after {len(outcome.history)} epoch(s) "
              f"({outcome.status}); MLflow run {run_id} in {uri}")
        return outcome
    finally:
        tracker.end_run(run_id, status)


def _section(spec: Spec, name: str) -> str:
    return "model" if name in spec.model else "train"
