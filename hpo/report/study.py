"""The study in words: round tables, the final report on the terminal, report.md in MLflow.

Each table is built once and rendered either for the terminal or as markdown.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpo.config.spec import Spec
from hpo.report.advice import advice
from hpo.report.tables import fmt_range, fmt_value, table
from hpo.tracking.store import ui_command
from hpo.trial.metrics import METRICS
from hpo.trial.record import TrialRecord, ranked

__all__ = ["description", "final_report", "markdown_report", "round_table", "sanity_table"]

CHANGE_HEADERS = ("parameter", "range", "next range", "reason", "best value")
#: Fixed fields the final report shows beside the searched ones.
SHOWN_FIXED = ("arch", "hidden", "epochs", "optimizer")


def sanity_table(results: Sequence[Any], *, markdown: bool = False) -> str:
    """The babysitting checks (``hpo.sanity.CheckResult``): pass/fail, measured, expected; the
    likely cause of each failure under the table (a column in markdown)."""
    if markdown:
        rows = [(r.name, "pass" if r.passed else "**FAIL**", r.measured, r.expected, r.cause)
                for r in results]
        return table(("check", "result", "measured", "expected", "likely cause"), rows,
                     markdown=True) + "\n"
    rows = [(r.name, "pass" if r.passed else "FAIL", r.measured, r.expected) for r in results]
    text = table(("check", "result", "measured", "expected"), rows)
    causes = [f"  {r.name}: {r.cause}" for r in results if not r.passed]
    return text + ("\nlikely causes:\n" + "\n".join(causes) if causes else "")


def _changes(summary: Any, *, markdown: bool = False) -> str:
    rows = [(c.name, fmt_range(c.old), fmt_range(c.new), c.reason, fmt_value(c.best))
            for c in summary.changes]
    return table(CHANGE_HEADERS, rows, markdown=markdown)


def round_table(spec: Spec, summary: Any) -> str:
    """A round (``hpo.study.RoundSummary``) on the terminal: its best and how its ranges moved."""
    metric = spec.search.metric
    head = (f"\nround {summary.index}: {summary.trials} trials, best {metric} "
            f"{fmt_value(summary.best_metric)} (trial {summary.best_name})")
    return head + ("\n" + _changes(summary) if summary.changes else "")


def _top(spec: Spec, records: Sequence[TrialRecord], *, markdown: bool) -> str:
    """The best trials: 10 with their update/weight ratio in markdown, 5 on the terminal; the
    training side of the metric beside it (train accuracy, or the trainable's ``train_X``)."""
    metric, names = spec.search.metric, list(spec.distributions())
    train = _train_twin(metric)
    extra = ("update/weight",) if markdown else ()
    rows = [(r.name, r.metric(metric), r.last.get(train), r.status,
             *((r.last.get("update_ratio"),) if markdown else ()),
             *(fmt_value(r.sampled.get(n)) for n in names)) for r in records]
    head = "train_acc" if train == "train_accuracy" else train
    return table(("trial", metric, head, "status", *extra, *names), rows, markdown=markdown)


def _train_twin(metric: str) -> str:
    """``val_rmse`` -> ``train_rmse``; hpo's own metrics show the train accuracy."""
    if metric.startswith("val_") and metric not in METRICS:
        return "train_" + metric[len("val_"):]
    return "train_accuracy"


def _ranked(result: Any) -> list[TrialRecord]:
    spec = result.spec
    return ranked(result.records, metric=spec.search.metric, mode=spec.search.resolved_mode)


def _advice(result: Any) -> list[str]:
    spec = result.spec
    last = result.rounds[-1].ranges if result.rounds else None
    return advice(result.records, metric=spec.search.metric, gap_threshold=spec.gap.threshold,
                  last_ranges=last)


def markdown_report(result: Any) -> str:
    """The whole study (``hpo.study.StudyResult``) as markdown: sanity, rounds, top trials,
    final evaluation, advice."""
    spec, metric = result.spec, result.spec.search.metric
    parts = [f"# Study {spec.name}", "",
             f"{len(result.records)} trials in {len(result.rounds)} round(s), seed {spec.seed}, "
             f"sampler {spec.search.sampler}, metric {metric} ({spec.search.resolved_mode})."
             + (" Stopped early: the last round neither widened a range nor improved enough."
                if result.stopped_early else ""), ""]
    if result.sanity:
        parts += ["## Sanity checks", "", sanity_table(result.sanity, markdown=True)]
    parts += ["## Rounds", ""]
    for summary in result.rounds:
        parts.append(f"### Round {summary.index}: best {metric} "
                     f"{fmt_value(summary.best_metric)} (trial {summary.best_name})")
        parts.append("")
        if summary.changes:
            parts.append(_changes(summary, markdown=True))
        else:
            parts.append(table(("parameter", "range"), [(n, fmt_range(d)) for n, d in
                                                        summary.ranges.items()], markdown=True))
        parts.append("")
    parts += ["## Top trials", "", _top(spec, _ranked(result)[:10], markdown=True), ""]
    parts += ["## Best configuration", "", "```yaml", result.spec.with_fixed(
        result.best.sampled).to_yaml().rstrip(), "```", ""]
    if result.final is not None:
        parts += ["## Final evaluation", "", result.final.summary() + ".", ""]
    parts += ["## What the trials say", ""]
    parts += [f"- {a}" for a in _advice(result)]
    return "\n".join(parts) + "\n"


def final_report(result: Any, top: int = 5) -> str:
    """The end of ``hpo search`` on the terminal: top trials, the best configuration, the final
    evaluation, advice, and how to open the MLflow UI."""
    spec, metric = result.spec, result.spec.search.metric
    best_first = _ranked(result)
    lines = [f"\ntop {min(top, len(best_first))} of {len(result.records)} trials",
             _top(spec, best_first[:top], markdown=False)]
    best = result.best
    lines.append(f"\nbest configuration (trial {best.name}), {metric} = "
                 f"{best.metric(metric):.4f}:")
    lines += [f"  {k}: {fmt_value(v)}" for k, v in best.params.items()
              if k in best.sampled or k in SHOWN_FIXED]
    lines.append(f"written to {result.best_yaml} (reproduce: hpo train {result.best_yaml})")
    if result.final is not None:
        lines.append(f"\nfinal evaluation: {result.final.summary()}")
    lines.append("\nwhat the trials say:")
    lines += [f"  - {a}" for a in _advice(result)]
    lines.append(f"MLflow UI: {_ui_command(result.tracking_uri)}")
    return "\n".join(lines)


def _ui_command(uri: str) -> str:
    """``hpo ui ...`` as the user can type it: plain ``hpo`` where it is this environment's on
    the PATH, else its path (``.venv/bin/hpo``), as the README writes it."""
    command = ui_command(uri)
    hpo_bin = Path(sys.executable).parent / "hpo"
    if not command.startswith("hpo ") or not hpo_bin.exists():
        return command
    on_path = shutil.which("hpo")
    if on_path is not None and Path(on_path).resolve() == hpo_bin.resolve():
        return command
    relative = os.path.relpath(hpo_bin)
    shown = relative if not relative.startswith("..") else str(hpo_bin)
    return f"{shown} {command[len('hpo '):]}"


def description(spec: Spec, best: TrialRecord, counts: dict[str, int], rounds: int) -> str:
    """The study run's MLflow description (``mlflow.note.content``)."""
    metric = spec.search.metric
    params = ", ".join(f"{k}={fmt_value(v)}" for k, v in best.sampled.items())
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (f"Study **{spec.name}**: {sum(counts.values())} trials in {rounds} round(s) "
            f"({statuses}). Best: trial {best.name}, {metric} = "
            f"{best.metric(metric):.4f}, with {params or 'the fixed configuration'}.")
