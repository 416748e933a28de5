"""After the last round: the best (and top-k) models, evaluated, logged, reported.

A trial of hpo's own loop leaves its trained weights in its folder (``Trial.checkpoint_dir``,
``hpo.trial.train.WEIGHTS_FILE``), and the final evaluation loads the top trials' from there.
While the study runs, ``KeptWeights`` deletes the weights of every ended trial that is not
among the ``ENSEMBLE_TOP_K`` best so far, so the study's disk holds a few models, not one per
trial. A trial with no weights there (run on another machine of a cluster, packed, cut short by
the scheduler) is trained again in the driver: a trial is a pure function of (configuration,
data, seed), so on CPU the retrain, with the trials' thread count, is the trial bit for bit.
Where the study gives trials a GPU and the driver has one, the retrain runs there too
(``trial_device``), and matches the trial as far as the GPU's arithmetic repeats itself; the
trained model then comes back to the CPU for scoring and logging.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo.config.spec import Spec
from hpo.data.dataset import Dataset
from hpo.study.context import Study
from hpo.tracking.store import Tracker
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

__all__ = ["FinalEvaluation", "KeptWeights", "evaluate_final", "finish", "log_best_model"]

#: Trials whose softmax outputs are averaged into the ensemble (the notes' "model ensembles").
ENSEMBLE_TOP_K = 3


@dataclass
class FinalEvaluation:
    split: str  # "test", or "val" when the data set has no test split
    best_accuracy: float
    ensemble_accuracy: float | None
    ensemble_members: list[str] = field(default_factory=list)
    model: Any = None
    activations: dict[str, dict[str, Any]] = field(default_factory=dict)
    activations_skipped: str | None = None  # why a network of the user's has no statistics

    @property
    def ensemble_wins(self) -> bool | None:
        if self.ensemble_accuracy is None:
            return None
        return self.ensemble_accuracy > self.best_accuracy

    def metrics(self) -> dict[str, float]:
        out = {f"final_{self.split}_accuracy": self.best_accuracy}
        if self.ensemble_accuracy is not None:
            out[f"ensemble_{self.split}_accuracy"] = self.ensemble_accuracy
        return out

    def summary(self) -> str:
        text = f"best configuration retrained: {self.split} accuracy {self.best_accuracy:.4f}"
        if self.ensemble_accuracy is not None:
            verdict = "beats" if self.ensemble_wins else "does not beat"
            text += (f"; ensemble of the top {len(self.ensemble_members)} trials "
                     f"({', '.join(self.ensemble_members)}): {self.ensemble_accuracy:.4f}, "
                     f"which {verdict} the single best")
        if self.split == "val":
            text += " (no test split: set data.test_fraction for an unbiased estimate)"
        if self.activations_skipped:
            text += f"; activation statistics skipped: {self.activations_skipped}"
        return text


def _retrain(spec: Spec, data: Dataset, params: dict[str, Any]) -> Any:
    from hpo.trial.train import train_trial, trial_device, trial_threads

    resources = spec.search.resources_per_trial
    with trial_threads(resources["cpu"]):
        outcome = train_trial(params, data, seed=spec.seed, keep_model=True,
                              device=trial_device(resources["gpu"] > 0))
    outcome.model.cpu()
    return outcome


@torch.no_grad()
def _probabilities(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    model.eval()
    return torch.softmax(model(torch.from_numpy(np.array(x))), dim=1)  # (N, classes)


def _trained(spec: Spec, data: Dataset, record: TrialRecord, study_folder: Path | None) -> Any:
    """The trial's trained model (a TrialOutcome): the weights it kept, else a retrain."""
    from hpo.trial.train import TrialOutcome, kept_model

    model = None if study_folder is None else kept_model(
        record.params, data, _trial_folder(study_folder, record))
    return TrialOutcome(model=model) if model is not None else _retrain(spec, data,
                                                                          record.params)


def _trial_folder(study_folder: Path, record: TrialRecord) -> Path:
    from hpo.execution.round import trial_folder

    return trial_folder(study_folder, record.round, record.sampled)


class KeptWeights:
    """Keeps the weights of the ``ENSEMBLE_TOP_K`` best ended trials of the study so far, and
    deletes every other ended trial's, as trials end (``seen``, with the records of a round)."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self._seen: set[tuple[int, str]] = set()
        self._best: list[TrialRecord] = []

    def seen(self, records: Iterable[TrialRecord]) -> None:
        fresh = [r for r in records if r.finished and (r.round, r.trial_id) not in self._seen]
        if not fresh:
            return
        self._seen.update((r.round, r.trial_id) for r in fresh)
        candidates = [*self._best, *fresh]
        self._best = self.study.ranked(candidates)[:ENSEMBLE_TOP_K]
        for record in candidates:
            if not any(record is kept for kept in self._best):
                _drop_weights(_trial_folder(self.study.folder, record))


def _drop_weights(folder: Path) -> None:
    """A trial's kept weights, and its folder with them when nothing else is in it."""
    from hpo.trial.train import WEIGHTS_FILE

    try:
        (folder / WEIGHTS_FILE).unlink()
    except FileNotFoundError:  # kept none (diverged, packed), or dropped already
        return
    with contextlib.suppress(OSError):  # not empty: the folder is the trial's, not only ours
        folder.rmdir()


def evaluate_final(spec: Spec, data: Dataset, ranked: Sequence[Any],
                   study_folder: Path | None = None) -> FinalEvaluation:
    """The models of ``ranked[0]`` (the best) and the next few, kept by their trials in
    ``study_folder`` or trained again, scored on test (else val)."""
    from hpo.trial.instruments import activation_stats, activations_found

    split = "test" if len(data.y_test) else "val"
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    members = list(ranked[:ENSEMBLE_TOP_K])
    outcomes = [_trained(spec, data, r, study_folder) for r in members]
    usable = [(r, o) for r, o in zip(members, outcomes)
              if o.status is not TrialStatus.DIVERGED]
    best_model = outcomes[0].model
    labels = torch.from_numpy(np.array(y))
    probs = [_probabilities(o.model, x) for _, o in usable]
    best_acc = float((probs[0].argmax(1) == labels).float().mean())
    ensemble_acc = None
    if len(probs) > 1:
        mean = torch.stack(probs).mean(0)  # (N, classes): averaged softmax
        ensemble_acc = float((mean.argmax(1) == labels).float().mean())
    acts = activation_stats(best_model, torch.from_numpy(np.array(data.x_val[:512])),
                            ranked[0].params.get("activation"))
    return FinalEvaluation(split=split, best_accuracy=best_acc, ensemble_accuracy=ensemble_acc,
                           ensemble_members=[r.name for r, _ in usable] if ensemble_acc else [],
                           model=best_model, activations=acts,
                           activations_skipped=None if acts else activations_found(best_model))


def log_best_model(tracker: Tracker, run_id: str, model: torch.nn.Module, data: Dataset) -> None:
    """The best model as an MLflow PyTorch model with an input example and a signature."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model.eval()
    example = np.array(data.x_val[:5], dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(tracker.uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(
            model, name="model", input_example=example,
            signature=infer_signature(example, output),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preprocess.npz"
        data.preprocessor.save(path)
        tracker.log_artifact(run_id, path, "model")
    tracker.log_text(run_id, _preprocessing_note(data.preprocessor.steps),
                     "model/preprocess.md")


def _preprocessing_note(steps: Sequence[str]) -> str:
    return (f"# Preprocessing\n\nThe model takes inputs after: {', '.join(steps) or 'nothing'}, "
            f"fitted on the training split. Apply the same transform to raw inputs:\n\n"
            f"```python\nimport mlflow, torch\nfrom hpo.data import Preprocessor\n\n"
            f"mlflow.set_tracking_uri(TRACKING_URI)  # logged models are looked up through it\n"
            f"x = Preprocessor.load('preprocess.npz').transform(raw)  # raw as the source loads it"
            f"\nlogits = mlflow.pytorch.load_model(f'runs:/{{RUN_ID}}/model')(torch.from_numpy(x))"
            f"\n```\n")



def finish(study: Study, data: Dataset | None, records: list[TrialRecord],
           range_history: list[dict[str, Any]]) -> FinalEvaluation | None:
    """Final evaluation, the best model, and the study-level plots, on the study's run. A
    user's trainable keeps its model to itself: its study gets the plots only."""
    from hpo.report.aside import OptunaFiguresAside
    from hpo.report.plots import activation_histograms, close, learning_curves

    # Optuna's figures are drawn in a process of their own meanwhile (hpo.report.aside)
    with OptunaFiguresAside(records, range_history, study.metric, study.direction) as optuna:
        ranked = study.ranked(records)
        figures = {"plots/learning_curves.png": learning_curves(ranked, metric=study.metric)}
        final = None
        if study.spec.trainable is None and isinstance(data, Dataset):  # arrays hpo trained on
            final = evaluate_final(study.spec, data, ranked, study.folder)
            study.tracker.log_metrics(study.run_id, final.metrics())
            log_best_model(study.tracker, study.run_id, final.model, data)
            if final.activations:
                figures["plots/activations_best.png"] = activation_histograms(
                    final.activations, f"activations of the best trial ({ranked[0].name})")
        for name, fig in figures.items():
            study.tracker.log_figure(study.run_id, fig, name)
            close(fig)
        for png in optuna.drawn().values():
            study.tracker.log_artifact(study.run_id, png, "plots")
    return final
