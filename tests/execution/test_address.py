"""A Ray address that cannot be reached fails at once, naming it, before anything is written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from hpo.errors import InputError, RunError
from hpo.execution.cluster import check_reachable
from tests.fixtures.ports import free_port


def test_a_closed_port_is_a_run_error_naming_the_address():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RunError, match=address) as info:
        check_reachable(address)
    assert info.value.exit_code == 1


def test_the_address_may_come_from_ray_address(monkeypatch):
    address = f"localhost:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(RunError, match=f"{address}.*RAY_ADDRESS"):
        check_reachable(None)


def test_a_listening_port_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")


@pytest.mark.parametrize("address", ["auto", "local", "ray://127.0.0.1:1", None])
def test_addresses_that_are_no_host_and_port_are_left_to_ray(monkeypatch, address):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_reachable(address)  # nothing to check here: Ray finds or starts the cluster


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:port", "127.0.0.1:70000", ":6379"])
def test_a_malformed_address_is_an_input_error(address):
    with pytest.raises(InputError) as info:
        check_reachable(address)
    assert info.value.exit_code == 2 and repr(address) in str(info.value)


@pytest.mark.slow  # a real `hpo search` process: imports torch and loads the data
def test_search_on_an_unreachable_address_exits_1_at_once_and_writes_nothing(tmp_path):
    study = {"name": "far", "data": {"source": "digits"},
             "model": {"hidden": [16], "activation": "relu"},
             "train": {"epochs": 1, "lr": {"loguniform": [0.001, 0.1]}},
             "search": {"rounds": 1, "trials_per_round": 2}, "sanity": {"enabled": False}}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(study))
    root, store = tmp_path / "root", tmp_path / "store" / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hpo", "search", str(space), "--address", "127.0.0.1:1",
         "--study-root", str(root), "--tracking-uri", f"sqlite:///{store}", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30
    assert done.returncode == 1, done.stderr
    assert "127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr
    assert not store.parent.exists()  # no MLflow store, experiment or run
    assert not root.exists()  # no study folder, no journal
