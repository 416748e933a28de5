"""What a study records: MLflow runs (study -> round -> trial), the journal ``--resume`` reads,
and the writer thread that keeps both off Tune's loop. MLflow loads on first use."""

from hpo.tracking.journal import Journal, JournalState, RoundState
from hpo.tracking.store import Tracker, resolve_tracking_uri, ui_command
from hpo.tracking.trials import RoundWriter, trial_label
from hpo.tracking.writer import Writer

__all__ = ["Journal", "JournalState", "RoundState", "RoundWriter", "Tracker", "Writer",
           "resolve_tracking_uri", "trial_label", "ui_command"]
