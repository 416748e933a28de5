"""What the user reads: tables, the progress line, advice in the notes' words, the study's
report, and plots (matplotlib, loaded on first use)."""

from hpo._lazy import lazy_exports
from hpo.report.advice import advice
from hpo.report.progress import ProgressLine
from hpo.report.study import description, final_report, markdown_report, round_table, sanity_table
from hpo.report.tables import fmt_range, fmt_value, table

__all__ = ["ProgressLine", "activation_histograms", "advice", "description", "final_report",
           "fmt_range", "fmt_value", "learning_curves", "markdown_report", "optuna_figures",
           "round_figure", "round_table", "sanity_table", "table"]

__getattr__ = lazy_exports(__name__, {
    name: "hpo.report.plots"
    for name in ("activation_histograms", "learning_curves", "optuna_figures", "round_figure")
})
