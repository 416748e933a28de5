"""Fixtures for tests against a real ``mlflow server`` and a real headless Chromium.

The server: ``mlflow server`` on a free loopback port, a sqlite backend and a proxied artifact
folder under the test's tmp, started in its own process group and always stopped.

The browser: Debian's ``chromium`` (Playwright cannot download its own browsers here), installed
with apt-get on a fresh machine, driven by Playwright for Python. A test that cannot get a
browser skips with the reason; one that gets a browser and does not find what it looks for fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.ports import free_port

REPO = Path(__file__).resolve().parents[2]
#: Screenshots and other evidence a CI job keeps (git-ignored).
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
APT_PACKAGES = ("chromium", "chromium-driver")


@contextlib.contextmanager
def hpo_ui(store_uri: str, cwd: Path | None = None) -> Iterator[str]:
    """``hpo ui`` on ``store_uri``, started as a user starts it (in ``cwd``, where its artifact
    proxy keeps ``mlartifacts/``): its URL once it says it answers; stopped with Ctrl-C (SIGINT)
    at the end."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hpo", "ui", "--tracking-uri", store_uri,
                                "--port", str(port)], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if "ready after" in line:
                break
        else:
            raise RuntimeError(f"hpo ui exited {process.wait()} without answering")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A running server for the module's tests; stopped after the last of them."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_mlflow_server(tmp_path) -> Iterator:
    """``start_mlflow_server()`` -> a running server; every one started is stopped at the end."""
    servers: list[MlflowServer] = []

    def start() -> MlflowServer:
        server = MlflowServer(tmp_path / f"server-{len(servers)}")
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def run_search(space: dict, folder: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    """``hpo search`` of ``space`` (a study as a dict) in ``folder``, logging to ``tracking_uri``."""
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "hpo", "search", "space.yaml", "--tracking-uri",
                           tracking_uri, "--quiet"], check=False, cwd=folder, capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.fixture(scope="session")
def hpo_search():
    """``hpo_search(space, folder, tracking_uri)`` -> the finished ``hpo search`` process."""
    return run_search


# -- chromium + playwright -------------------------------------------------------------------


def _install_chromium() -> str | None:
    """apt-get install chromium chromium-driver where missing; None, or why there is none."""
    if CHROMIUM.exists():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install {APT_PACKAGES}"
    if os.geteuid() != 0:
        return (f"{CHROMIUM} is missing and installing it needs root: "
                f"sudo apt-get install -y {' '.join(APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", *APT_PACKAGES]):
        try:
            done = subprocess.run(command, check=False, env=env, capture_output=True, text=True,
                                  timeout=900)
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} took more than 900 s"
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            return f"{' '.join(command)} failed ({done.returncode}):\n{tail}"
    return None if CHROMIUM.exists() else f"{APT_PACKAGES} installed, but no {CHROMIUM}"


@pytest.fixture(scope="session")
def sync_api():
    return pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed (pip install "
        "playwright, pinned in requirements.lock)")


@pytest.fixture(scope="session")
def chromium(sync_api) -> Path:
    reason = _install_chromium()
    if reason:
        pytest.skip(f"no Chromium for the browser tests: {reason}")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(sync_api, chromium):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS,
                                    timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)  # every wait is bounded
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
