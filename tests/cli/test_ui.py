"""``hpo ui``: one way to open the UI (what a search's last line suggests), and the UI itself,
started as a user starts it, answering within seconds and gone within seconds of Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hpo.cli import main
from hpo.report import study as report_study
from hpo.tracking.store import DEFAULT_URI
from tests.fixtures.ports import free_port

HPO_BIN = Path(sys.executable).parent / "hpo"
#: What the issue asks for on an idle machine is 5 s; a loaded 2-core CI box gets more.
ANSWER_BOUND_S = 20.0
#: After SIGINT: the server's grace period (1.5 s) plus Python's exit.
EXIT_BOUND_S = 3.0


# -- the line that says how to open the UI ----------------------------------------------------


@pytest.mark.skipif(not HPO_BIN.exists(), reason="no hpo script beside this Python")
def test_the_ui_line_names_this_environments_hpo_as_the_user_types_it(monkeypatch, tmp_path):
    monkeypatch.setattr(report_study.shutil, "which", lambda name: None)  # not on the PATH
    monkeypatch.chdir(HPO_BIN.parents[2])  # where .venv is: the README's .venv/bin/hpo
    assert report_study._ui_command(DEFAULT_URI) == f"{os.path.relpath(HPO_BIN)} ui"
    monkeypatch.chdir(tmp_path)  # elsewhere: the full path
    assert report_study._ui_command("sqlite:///x.db") == (
        f"{HPO_BIN} ui --tracking-uri sqlite:///x.db")
    # on the PATH (an activated venv): plain hpo
    monkeypatch.setattr(report_study.shutil, "which", lambda name: str(HPO_BIN))
    assert report_study._ui_command("sqlite:///x.db") == "hpo ui --tracking-uri sqlite:///x.db"
    # a server has a UI of its own
    assert report_study._ui_command("http://host:5000") == "open http://host:5000"


def test_hpo_ui_on_a_server_says_to_open_it_and_starts_nothing(capsys):
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:9"]) == 0
    out = capsys.readouterr().out
    assert "open http://127.0.0.1:9" in out


def test_hpo_ui_on_a_taken_port_exits_2_naming_the_option_before_starting(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--tracking-uri", "sqlite:///never.db", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: the port is taken on 127.0.0.1" in err
    assert "pass --port with a free one" in err and "starting" not in err


# -- the UI, for real -------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_hpo_ui_answers_within_seconds_links_the_runs_and_stops_on_ctrl_c(tmp_path):
    from hpo.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = Tracker(uri, "ui-cli-study").ensure_experiment()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.monotonic()
    ui = subprocess.Popen([sys.executable, "-m", "hpo", "ui", "--tracking-uri", uri,
                           "--port", str(port)], cwd=tmp_path, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not _answers(f"{base}/") and time.monotonic() - started < ANSWER_BOUND_S:
            assert ui.poll() is None, ui.communicate()[0]
            time.sleep(0.1)
        answered_s = time.monotonic() - started
        print(f"\nhpo ui answered HTTP 200 after {answered_s:.1f} s")
        assert answered_s < ANSWER_BOUND_S, f"no answer within {ANSWER_BOUND_S} s"
        time.sleep(1.0)  # the ready line and its links follow the first answer
        servers = _children(ui.pid)
        assert len(servers) == 1, servers  # one process serves: no workers, no job runner
        assert _group(servers[0]) == servers  # alone in its own process group

        stopping = time.monotonic()
        ui.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = ui.communicate(timeout=30)
        exit_s = time.monotonic() - stopping
        print(f"hpo ui exited {exit_s:.2f} s after SIGINT")
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
    assert ui.returncode == 0, out
    assert exit_s < EXIT_BOUND_S, out
    assert _group(servers[0]) == [], "a process of the UI outlived hpo ui"
    assert f"MLflow UI starting on {base} (store {uri}); Ctrl-C stops it" in out
    assert re.search(rf"MLflow UI ready after [\d.]+ s: {re.escape(base)}\n", out), out
    link = (f"  ui-cli-study: {base}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning")
    assert link in out.splitlines(), out
    assert "Traceback" not in out, out
