"""End to end in a browser: a study logged to a real ``mlflow server``, looked at in its UI.

A small study runs through ``hpo search --tracking-uri http://127.0.0.1:PORT``; headless
Chromium then opens the experiment's runs page by the link ``hpo ui`` prints, finds the study
run, expands it to its rounds and each round to its trials, shows the metric columns, and opens
the study run's Artifacts tab. Screenshots of both pages land in ``test-artifacts/`` for the CI
job to keep.

MLflow 3.17's UI shows an experiment in its "GenAI" view (traces) or its "Model training" view
(runs). It takes the view from the page's ``workflowType`` URL parameter, else from a switch the
browser keeps (GenAI until the user flips it); the experiment's ``mlflow.experimentKind`` tag,
which hpo sets, is not read. So the link ``hpo ui`` prints asks for the runs view, and the page
``hpo ui`` serves at its root sets the browser's switch to the runs view until the user flips
it (``hpo.tracking.ui_app``).
"""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from tests.fixtures.runs import runs_by_kind
from tests.ui.conftest import hpo_ui

from hpo.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, runs_url

pytestmark = pytest.mark.slow

NAME = "ui-study"
STUDY = {
    "name": NAME,
    "seed": 1,
    "data": {"source": "digits", "preprocess": ["zero_center"]},
    "model": {"hidden": [32], "activation": {"choice": ["relu", "tanh"]}, "init": "he",
              "batchnorm": {"choice": [True, False]}},
    "train": {"epochs": 2, "lr": {"loguniform": [1e-2, 0.3]}, "batch_size": 64},
    "search": {"rounds": 2, "trials_per_round": 3, "sampler": "random"},
    "sanity": {"enabled": False},  # the checks are not what the browser looks at
}
ROUNDS, TRIALS = 2, 3
#: What the study run's Artifacts tab lists at its top level.
STUDY_ARTIFACTS = ("best.yaml", "report.md", "study.yaml", "model", "plots")
#: Columns shown in the screenshot besides the defaults (metrics, params, tags by name).
COLUMNS_ON = ("val_accuracy", "train_accuracy", "gap", "lr", "activation", "batchnorm",
              "hpo.status")
#: Metric and status columns the runs table must show once chosen.
METRIC_COLUMNS = ("val_accuracy", "train_accuracy", "gap", "hpo.status")
COLUMNS_OFF = ("Dataset", "Source", "Models")


@pytest.fixture(scope="module")
def logged_study(mlflow_server, hpo_search, tmp_path_factory):
    """The study, logged to the server over HTTP: (server, experiment id, {kind: [runs]}, the
    finished ``hpo search`` process)."""
    run = hpo_search(STUDY, tmp_path_factory.mktemp("ui-study"), mlflow_server.url)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nserver:\n{mlflow_server.tail()}"
    kinds = runs_by_kind(mlflow_server.url, NAME)
    assert {k: len(v) for k, v in kinds.items()} == {"study": 1, "round": ROUNDS,
                                                      "trial": ROUNDS * TRIALS}
    return mlflow_server, kinds["study"][0].info.experiment_id, kinds, run


# -- page helpers (also used to take the README's screenshot) ---------------------------------


def runs_page(page, base_url: str, experiment_id: str) -> None:
    """The experiment's runs table, in the "Model training" view (not the GenAI overview), by
    the link ``hpo ui`` prints for it."""
    page.goto(runs_url(base_url, experiment_id))


def in_runs_view(page, experiment_id: str) -> bool:
    """The page is the experiment's runs table in the "Model training" view."""
    return bool(re.search(rf"#/experiments/{experiment_id}/runs\?(.*&)?"
                          rf"workflowType=machine_learning", page.url))


def close_assistant(page) -> None:
    """The MLflow Assistant side panel opens on a first visit, a moment after the table; it
    only hides columns."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    panel = page.get_by_placeholder("Ask a question...")  # the panel's prompt box
    try:
        panel.wait_for(timeout=5_000)
    except PlaywrightTimeout:
        return  # not shown: nothing to close
    page.get_by_role("button", name="Close").first.click()
    panel.wait_for(state="hidden")


def run_link(page, name: str):
    """The run's link in the runs table (the study run shares its name with the experiment)."""
    return page.get_by_role("gridcell").get_by_role("link", name=name, exact=True)


def run_row(page, name: str):
    return page.get_by_role("row").filter(has=run_link(page, name))


def row_cells(page, name: str):
    """Every cell of the run's row: ag-grid splits a row between its pinned-left part (the
    run name) and its scrolling part (metrics, params, tags); aria-rowindex joins them."""
    index = run_row(page, name).first.get_attribute("aria-rowindex")
    return page.locator(f'[role="row"][aria-rowindex="{index}"] [role="gridcell"]')


def expand(page, name: str) -> None:
    """Click the +/- expander in the Run Name cell of the run called ``name``."""
    run_row(page, name).locator('.ag-cell[col-id*="Run Name"] button').first.click()


def choose_columns(page, on: tuple[str, ...], off: tuple[str, ...]) -> None:
    """Toggle columns in the "Columns" selector: ``on`` are off by default, ``off`` are on."""
    page.get_by_role("button", name="Columns", exact=True).click()
    tree = page.get_by_test_id("column-selector-tree")
    search = page.get_by_placeholder("Search columns")
    for name in (*off, *on):
        search.fill(name)
        title = page.locator(".du-bois-light-tree-title",
                             has_text=re.compile(f"^{re.escape(name)}$"))
        tree.locator(".du-bois-light-tree-treenode").filter(has=title).first.locator(
            ".du-bois-light-tree-checkbox").click()
    page.keyboard.press("Escape")
    page.get_by_test_id("column-selector-tree").wait_for(state="hidden")
    page.evaluate("document.activeElement && document.activeElement.blur()")


# -- tests --------------------------------------------------------------------------------


def test_experiment_page_shows_the_study_and_its_nested_trials(page, logged_study,
                                                               artifacts_dir):
    server, experiment_id, kinds, _ = logged_study
    rounds = {r.data.tags["hpo.round"]: r.info.run_name for r in kinds["round"]}
    trials: dict[str, list[str]] = {}
    for t in kinds["trial"]:
        trials.setdefault(t.data.tags["hpo.round"], []).append(t.info.run_name)

    runs_page(page, server.url, experiment_id)
    run_link(page, NAME).wait_for(timeout=90_000)  # the first load compiles the React bundle
    close_assistant(page)
    assert page.get_by_text(f"{1 + ROUNDS + ROUNDS * TRIALS} matching runs").is_visible()
    # collapsed: only the study run is a row; its rounds and trials are nested under it
    for name in rounds.values():
        assert run_link(page, name).count() == 0
    expand(page, NAME)
    for name in rounds.values():
        run_link(page, name).wait_for()
    # each round opens onto its own trials, and only those
    for k in sorted(rounds):
        expand(page, rounds[k])
        for name in trials[k]:
            run_link(page, name).wait_for()
        for later in (j for j in trials if j > k):
            assert all(run_link(page, name).count() == 0 for name in trials[later])
    choose_columns(page, COLUMNS_ON, COLUMNS_OFF)
    headers = page.get_by_role("columnheader")
    for name in METRIC_COLUMNS:
        headers.filter(has_text=re.compile(f"^{re.escape(name)}$")).first.wait_for()
    assert in_runs_view(page, experiment_id), page.url  # never switched to the GenAI view
    best = kinds["study"][0].data.tags["hpo.best_trial"]
    best_run = next(t for t in kinds["trial"] if t.data.tags["hpo.trial"] == best)
    cells = row_cells(page, best_run.info.run_name)
    # the table shows what the best trial logged: its sampled activation and its status
    cells.get_by_text(best_run.data.params["activation"], exact=True).wait_for()
    cells.get_by_text(best_run.data.tags["hpo.status"], exact=True).wait_for()
    page.screenshot(path=str(artifacts_dir / "mlflow-ui-runs.png"))


def test_study_run_lists_its_artifacts(page, logged_study, artifacts_dir):
    server, experiment_id, kinds, _ = logged_study
    study_run = kinds["study"][0]
    runs_page(page, server.url, experiment_id)
    run_link(page, NAME).wait_for(timeout=90_000)
    close_assistant(page)
    run_link(page, NAME).click()
    page.wait_for_url(re.compile(f"/runs/{study_run.info.run_id}"))
    page.get_by_role("tab", name="Artifacts").click()
    tree = page.locator("main")
    for name in STUDY_ARTIFACTS:
        tree.get_by_text(name, exact=True).first.wait_for()
    tree.get_by_text("plots", exact=True).first.click()  # a folder: opens onto the figures
    tree.get_by_text("learning_curves.png", exact=True).wait_for()
    tree.get_by_text("round_1.png", exact=True).wait_for()
    # a file previews what the server's artifact proxy stored: best.yaml names the study
    tree.get_by_text("best.yaml", exact=True).first.click()
    page.get_by_text(re.compile(rf"name: {NAME}")).first.wait_for()
    page.screenshot(path=str(artifacts_dir / "mlflow-ui-artifacts.png"))


def test_the_study_experiment_is_marked_model_training_over_http(logged_study):
    server, experiment_id, _, _ = logged_study
    tags = MlflowClient(tracking_uri=server.url).get_experiment(experiment_id).tags
    assert tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND


@pytest.fixture
def hpo_ui_url(logged_study):
    """``hpo ui`` as a user starts it, on the store the study was logged to: its URL."""
    server, *_ = logged_study
    with hpo_ui(f"sqlite:///{server.root / 'mlflow.db'}") as url:
        yield url


def test_from_the_root_url_the_study_opens_on_its_runs(page, logged_study, hpo_ui_url,
                                                        artifacts_dir):
    """A fresh browser at ``hpo ui``'s root URL, one click on the study's experiment: the runs
    table with the study run, its rounds and their trials, without switching views."""
    _, experiment_id, kinds, _ = logged_study
    page.goto(f"{hpo_ui_url}/")
    page.get_by_role("link", name=NAME, exact=True).first.click(timeout=90_000)
    page.wait_for_url(re.compile(rf"#/experiments/{experiment_id}"))
    run_link(page, NAME).wait_for(timeout=90_000)  # the runs table, not traces
    close_assistant(page)
    expand(page, NAME)
    for round_run in kinds["round"]:
        run_link(page, round_run.info.run_name).wait_for()
        expand(page, round_run.info.run_name)
    for trial in kinds["trial"]:
        run_link(page, trial.info.run_name).wait_for()
    assert "/traces" not in page.url and "/overview" not in page.url, page.url
    page.screenshot(path=str(artifacts_dir / "mlflow-ui-from-root.png"))


def test_the_plain_mlflow_server_opens_on_its_genai_view_from_the_root(page, logged_study):
    """What ``hpo ui`` changes: MLflow's own server, same store and browser, opens the study on
    its GenAI view (if MLflow reads the experiment's kind tag again one day, this says so)."""
    server, experiment_id, _, _ = logged_study
    page.goto(f"{server.url}/")
    page.get_by_role("link", name=NAME, exact=True).first.click(timeout=90_000)
    page.wait_for_url(re.compile(rf"#/experiments/{experiment_id}/(overview|traces)"))


def test_quiet_search_against_a_server_prints_only_its_result(logged_study):
    *_, run = logged_study
    assert "View run" not in run.stdout and "View experiment" not in run.stdout, run.stdout
    # the final report (best configuration, final evaluation, the UI), not the round tables
    # (stdout without --quiet) or the progress lines (stderr)
    assert "best configuration (trial " in run.stdout and "MLflow UI: " in run.stdout
    assert "\nround 1: " not in run.stdout and "round 1/" not in run.stderr, run.stdout
