"""The sanity gate: the lecture's checks before any trial, logged on a run, strict or not."""

from __future__ import annotations

from hpo.config.spec import Spec
from hpo.data.dataset import Dataset
from hpo.errors import SanityCheckFailed
from hpo.report.study import sanity_table
from hpo.tracking.store import Tracker

__all__ = ["sanity_gate"]


def sanity_gate(spec: Spec, data: Dataset, tracker: Tracker, run_id: str, *, quiet: bool) -> list:
    """Run the babysitting checks, log them on ``run_id``; under sanity.strict a failure stops."""
    from hpo.sanity.checks import run_sanity_checks
    from hpo.trial.train import trial_threads

    with trial_threads(spec.search.resources_per_trial["cpu"]):
        results = run_sanity_checks(spec, data)
    passed = all(r.passed for r in results)
    if not quiet:
        print(f"\nsanity checks (babysitting) on the middle of the space:\n"
              f"{sanity_table(results)}", flush=True)
    tracker.log_metrics(run_id, {k: v for r in results for k, v in r.values.items()})
    tracker.set_tags(run_id, {"hpo.sanity": "passed" if passed else "failed"})
    tracker.log_text(run_id, "# Sanity checks\n\n" + sanity_table(results, markdown=True),
                     "sanity.md")
    if not passed and spec.sanity.strict:
        failed = ", ".join(r.name for r in results if not r.passed)
        raise SanityCheckFailed(
            f"sanity check(s) failed: {failed}. The study stops before any trial "
            f"(sanity.strict). Fix the setup, or run again with --force to skip the checks.")
    return results
