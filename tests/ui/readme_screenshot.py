"""Take the README's picture of the MLflow UI: the default study (``make search``), for real.

Starts an ``mlflow server`` on loopback, runs ``hpo search search_spaces/digits_mlp.yaml``
against it (3 rounds x 16 trials, about a minute on two cores), then starts ``hpo ui`` on that
store, opens its root URL in headless Chromium, clicks the study's experiment, expands the
study and its last round with the same helpers as the browser test, shows the searched
parameters and the trial status, and writes the screenshot.

    .venv/bin/python tests/ui/readme_screenshot.py [--out docs/images/mlflow-ui.png]

Not a test (pytest does not collect it); it needs what the browser test needs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))  # the repository: test_mlflow_ui imports tests.fixtures

from conftest import CHROMIUM, CHROMIUM_ARGS, REPO, MlflowServer, hpo_ui
from test_mlflow_ui import choose_columns, close_assistant, expand, run_link

SPACE = REPO / "search_spaces" / "digits_mlp.yaml"
COLUMNS_ON = ("val_accuracy", "lr", "weight_decay", "activation", "init", "batchnorm",
              "hpo.status")
COLUMNS_OFF = ("Dataset", "Source")
VIEWPORT = {"width": 1720, "height": 1000}  # every column above fits beside the run tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "mlflow-ui.png")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="hpo-readme-") as tmp:
        server = MlflowServer(Path(tmp) / "server").start()
        try:
            env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
            search = subprocess.run(
                [sys.executable, "-m", "hpo", "search", str(SPACE), "--tracking-uri",
                 server.url, "--quiet"], check=False, cwd=tmp, env=env, timeout=1200)
            if search.returncode != 0:
                return search.returncode
            client = MlflowClient(tracking_uri=server.url)
            exp = client.get_experiment_by_name("digits-mlp")
            runs = client.search_runs([exp.experiment_id], max_results=1000)
            rounds = sorted((r for r in runs if r.data.tags.get("hpo.kind") == "round"),
                            key=lambda r: int(r.data.tags["hpo.round"]))
            last = rounds[-1]
            trials = [r.info.run_name for r in runs
                      if r.data.tags.get("mlflow.parentRunId") == last.info.run_id]
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.set_default_timeout(30_000)
                with hpo_ui(f"sqlite:///{server.root / 'mlflow.db'}") as url:  # as a user gets there: the root URL, one click
                    page.goto(f"{url}/")
                    page.get_by_role("link", name="digits-mlp", exact=True).first.click(
                        timeout=90_000)
                    _screenshot_runs(page, last, trials, args.out)
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


def _screenshot_runs(page, last, trials, out: Path) -> None:
    """The study expanded to its last round's trials, the chosen columns shown."""
    run_link(page, "digits-mlp").wait_for(timeout=90_000)
    close_assistant(page)
    expand(page, "digits-mlp")
    run_link(page, last.info.run_name).wait_for()
    expand(page, last.info.run_name)
    for name in trials:
        run_link(page, name).wait_for()
    choose_columns(page, COLUMNS_ON, COLUMNS_OFF)
    page.screenshot(path=str(out))


if __name__ == "__main__":
    raise SystemExit(main())
