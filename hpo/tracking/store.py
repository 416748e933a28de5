"""MLflow: the run tree (study -> round -> trial), batched logging from the driver, artifacts.

Trials never talk to MLflow: a Ray Tune callback hands their results to ``Tracker`` (from
writer threads of its own, several at once on a tracking server), which writes them with
``log_batch``: a trial's start is a new run and its parameters, its end one batch of every
epoch's metrics and its tags, then its status. So tracking costs four writes per trial, not per
epoch, and Tune's loop never waits for them.

``serve_ui`` runs the MLflow UI on a store for ``hpo ui``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.errors import InputError, RunError, TrackingUnreachable

__all__ = ["Tracker", "resolve_tracking_uri", "runs_url", "serve_ui", "server_healthy",
           "sqlite_path", "store_creation", "ui_command"]

DEFAULT_URI = "sqlite:///mlflow.db"
_MAX_PARAM_LEN = 6000
#: MLflow 3's UI shows an experiment as "GenAI" (traces, an overview of LLM calls) or as
#: "Model training" (the runs table); this experiment tag names the kind, for the UIs that read it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: Seconds ``serve_ui`` gives the UI to stop after a signal before it kills what is left.
UI_STOP_GRACE_S = 1.5


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """--tracking-uri, then the study file's tracking.uri, then MLFLOW_TRACKING_URI, then sqlite."""
    return cli_uri or spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def ui_command(uri: str) -> str:
    """How to look at a study logged to ``uri``: ``open URI`` for a server, else ``hpo ui``
    (naming the store unless it is the default, which ``hpo ui`` opens by itself)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return "hpo ui" if uri == DEFAULT_URI else f"hpo ui --tracking-uri {shlex.quote(uri)}"


def runs_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table (study -> rounds -> trials) in the UI's "Model training" view.

    MLflow 3.17's UI takes that view from this URL parameter, else from a switch it keeps in the
    browser ("GenAI" until flipped); it does not read the experiment's kind tag.
    """
    base = base_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _param_value(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)[:_MAX_PARAM_LEN]


@dataclass
class _Buffer:
    """Metrics of one trial waiting for the next flush: (key, value, step, timestamp)."""

    items: list[tuple[str, float, int, int]] = field(default_factory=list)


class Tracker:
    """Everything the study writes to MLflow goes through here (driver process only)."""

    def __init__(self, uri: str, experiment: str) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # with an http store MLflow prints "View run ... at ..." per ended run; --quiet is quiet
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)

        self.uri = uri
        self.experiment_name = experiment
        with store_creation(uri):  # MLflow makes a new sqlite store's tables right here
            self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id: str | None = None
        # run id -> its metrics not yet written. Writer threads share the dict, never an
        # entry: a run's buffer is its trial's thread's, and setdefault and pop are atomic.
        self._buffers: dict[str, _Buffer] = {}

    @classmethod
    def opened(cls, uri: str, experiment: str) -> Tracker:
        """The store reached (``check``) and the study's experiment made (``ensure_experiment``):
        what a study does with its store before anything else."""
        tracker = cls(uri, experiment)
        tracker.check()
        tracker.ensure_experiment()
        return tracker

    # -- set-up -------------------------------------------------------------------------------
    def check(self) -> None:
        """Reach the store before any trial runs; an unreachable server is a RunError."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot track"
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise TrackingUnreachable(
                f"cannot reach the MLflow tracking store {self.uri!r}: {reason}\n"
                f"start the server, or pass --tracking-uri (default: {DEFAULT_URI})"
            ) from None

    def ensure_experiment(self) -> str:
        """The study's experiment, created or reused (restored if deleted), marked as model
        training so that a UI that reads the kind opens it on its runs, not on GenAI traces."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            self.experiment_id = self.client.create_experiment(
                self.experiment_name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG,
                                               EXPERIMENT_KIND)
        return self.experiment_id

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, name: str, *, parent: str | None = None,
                  tags: Mapping[str, str] | None = None,
                  params: Mapping[str, Any] | None = None) -> str:
        from mlflow.entities import Param

        if self.experiment_id is None:
            self.ensure_experiment()
        all_tags = dict(tags or {})
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        if params:
            self.client.log_batch(run_id, params=[Param(k, _param_value(v))
                                                  for k, v in params.items()])
        return run_id

    def buffer_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        now = int(time.time() * 1000)
        buf = self._buffers.setdefault(run_id, _Buffer())
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
                    value):
                buf.items.append((key, float(value), step, now))

    def flush(self, run_id: str, tags: Mapping[str, Any] | None = None) -> None:
        """Write the run's buffered metrics (and ``tags``, in the same call)."""
        from mlflow.entities import Metric, RunTag

        buf = self._buffers.pop(run_id, None)
        metrics = [Metric(k, v, ts, step) for k, v, step, ts in (buf.items if buf else [])]
        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        chunks = [metrics[i:i + 1000] for i in range(0, len(metrics), 1000)]  # MLflow's limit
        for i, chunk in enumerate(chunks or [[]]):
            if chunk or (run_tags and i == 0):
                self.client.log_batch(run_id, metrics=chunk, tags=run_tags if i == 0 else [])

    def discard(self, run_id: str) -> None:
        """Drop metrics not yet written (a retried trial starts its epochs over)."""
        self._buffers.pop(run_id, None)

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
        self.buffer_metrics(run_id, metrics, step)
        self.flush(run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end_run(self, run_id: str, status: str = "FINISHED",
                tags: Mapping[str, Any] | None = None) -> None:
        self.flush(run_id, tags)
        self.client.set_terminated(run_id, status=status)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_figure(self, run_id: str, figure: Any, name: str, *,
                   also: Sequence[tuple[str, str]] = ()) -> None:
        """``figure`` as the PNG ``name`` of ``run_id``, and of each (run id, name) of ``also``:
        drawn once (a few tenths of a second a figure), however many runs show it."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            drawn = Path(tmp) / "figure.png"
            figure.savefig(drawn)
            for run, artifact in ((run_id, name), *also):
                path = Path(artifact)
                named = drawn.with_name(path.name)
                if not named.exists():
                    os.link(drawn, named)
                folder = path.parent.as_posix()
                self.client.log_artifact(run, str(named), None if folder == "." else folder)


# -- a new sqlite store -----------------------------------------------------------------------


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (relative to the working directory, or absolute
    with four slashes); None for any other store and for an in-memory one."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def store_creation(uri: str) -> Iterator[None]:
    """Around the first use of the store ``uri``: a new sqlite file is made readable by its
    owner only (0600: it holds every run), and one process at a time makes its tables.

    Two processes that open one new ``mlflow.db`` at once both find it without tables and
    both create them: the second dies with ``table ... already exists``. Holding an exclusive
    flock on the file's folder while the first use makes them serializes that; the lock is on
    the folder, not the file, because closing another descriptor of the database would drop
    sqlite's own (POSIX) locks on it. A store that is no local sqlite file is left as it is.
    """
    path = sqlite_path(uri)
    try:
        lock = os.open(path.parent, os.O_RDONLY) if path is not None else None
    except OSError:  # no such folder, or not readable: MLflow says what is wrong
        lock = None
    if path is None or lock is None:
        yield
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor closes
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:  # there already (or not ours to make): as it is
            pass
        else:
            with os.fdopen(fd, "wb") as new:
                _copy_blank_tables(new)
        yield
    finally:
        os.close(lock)


def _copy_blank_tables(out: Any) -> None:
    """Fill a new store's file with MLflow's tables, as its migrations leave them, from a copy
    made once per MLflow version (``blank_tables``); without one, MLflow makes them itself.

    MLflow runs its ~60 schema migrations for every new store: ~3.4 s of the driver's CPU here,
    before the first trial. The copy holds only the tables (no experiment): opening the store,
    MLflow adds its Default experiment, with this store's artifact location, as for any store.
    """
    blank = blank_tables()
    if blank is not None:
        with open(blank, "rb") as src:
            shutil.copyfileobj(src, out)


#: The page size of a new store hpo makes (sqlite's default is 4096), set when the blank tables
#: are made: each metric row goes into four B-trees (the table and three indexes). With MLflow's
#: random run ids the bulk writer recorded 450 against 402 trials/s in it; with hpo's ids in time
#: order (``bulk.new_run_id``) the gain is within noise: 666 against 651 at 2,000 trials, 631
#: against 619 at 10,000 (``benchmarks/results/bulk_writes*.md``). MLflow's own calls, which
#: keep random ids, still write into these pages.
PAGE_SIZE = 16384


def blank_tables() -> Path | None:
    """A sqlite file holding the tables MLflow's migrations make for a new store, and nothing
    else, in pages of PAGE_SIZE, made on first use in hpo's cache folder; None where it cannot
    be made."""
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpo"
    path = cache / f"mlflow-{mlflow.__version__}-tables-{PAGE_SIZE}.db"
    if path.is_file():
        return path
    part = cache / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables

        cache.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(f"sqlite:///{part}")
        try:
            _initialize_tables(engine)  # what SqlAlchemyStore does for a store with no tables
        finally:
            engine.dispose()
        with contextlib.closing(sqlite3.connect(part)) as db:  # VACUUM: the pages' new size
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("VACUUM")
        os.replace(part, path)  # whole, or not at all: another process may make it at once
    except Exception:  # noqa: BLE001 - no cache (read-only home...): MLflow makes the tables
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        return None
    return path


# -- the UI -----------------------------------------------------------------------------------


def serve_ui(uri: str, *, host: str, port: int, say: Callable[[str], None]) -> int:
    """Run the MLflow UI on the store ``uri`` until SIGINT (Ctrl-C), SIGTERM or SIGHUP; 0 then.

    ``mlflow ui`` answered after ~40 s on 2 cores and took ~25 s to exit: it imports MLflow
    (~5 s) only to start a second Python that imports it again, with 4 server workers and a job
    runner of 7 processes (GenAI evaluation jobs) beside it. Here one Python serves the same app
    with one worker and no job runner (``_serve_here``): ~4 s to answer on an idle machine. It
    runs in its own process group: a stop asks it to end (SIGINT), and what is left after
    ``UI_STOP_GRACE_S`` is killed, so nothing outlives ``hpo ui``. Says when the UI answers,
    with a link to each experiment's runs table. A UI that stops by itself (its port taken, a
    store it cannot open) is a RunError; a port already taken is an InputError, found before.
    """
    if not _can_listen(host, port):
        raise InputError(f"--port {port}: the port is taken on {host} (another MLflow UI?); "
                         f"pass --port with a free one")
    base = f"http://{_url_host(host)}:{port}"
    say(f"MLflow UI starting on {base} (store {uri}); Ctrl-C stops it")
    command = [sys.executable, "-c", "import sys; from hpo.tracking.store import _serve_here; "
               "_serve_here(sys.argv[1], sys.argv[2], int(sys.argv[3]))", uri, host, str(port)]
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    started = time.monotonic()
    process = subprocess.Popen(command, start_new_session=True)
    try:
        ready = False
        while process.poll() is None and not stop.is_set():
            if not ready and server_healthy(base):
                ready = True
                say(f"MLflow UI ready after {time.monotonic() - started:.1f} s: {base}")
                for name, experiment_id in _experiments(base):
                    say(f"  {name}: {runs_url(base, experiment_id)}")
            stop.wait(0.2)
    finally:
        _stop_group(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set() or process.returncode == 0:
        return 0
    raise RunError(f"the MLflow UI stopped with exit code {process.returncode} (its output is "
                   f"above); if port {port} is taken, pass --port")


def _serve_here(uri: str, host: str, port: int) -> None:
    """What ``mlflow ui --workers 1`` serves, in this process (``serve_ui`` starts one for it).

    It does what ``mlflow ui`` does before it starts its server: it names the stores and the
    artifact proxy (``./mlartifacts``, served as ``mlflow-artifacts:/``) in the environment
    variables the app reads (MLflow's internal ``mlflow.server.constants``) and opens the stores
    (making a new sqlite file's tables); then it runs the same FastAPI app on uvicorn, in this
    process, with the runs tables as its default view (``hpo.tracking.ui_app``). No job runner:
    nothing here starts GenAI evaluation jobs.
    """
    import warnings

    warnings.simplefilter("ignore")  # the app's imports warn about their own dependencies
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    import uvicorn
    from mlflow.server import constants
    from mlflow.server.handlers import initialize_backend_stores

    artifact_root = "mlflow-artifacts:/"
    os.environ.update({
        constants.BACKEND_STORE_URI_ENV_VAR: uri,
        constants.REGISTRY_STORE_URI_ENV_VAR: uri,
        constants.ARTIFACT_ROOT_ENV_VAR: artifact_root,
        constants.SERVE_ARTIFACTS_ENV_VAR: "true",
        constants.ARTIFACTS_DESTINATION_ENV_VAR: os.path.abspath("mlartifacts"),
    })
    with store_creation(uri):  # a new sqlite file: 0600, its tables made once
        initialize_backend_stores(uri, uri, artifact_root)
    uvicorn.run("hpo.tracking.ui_app:app", host=host, port=port, workers=1,
                log_level="warning")


def _can_listen(host: str, port: int) -> bool:
    """Whether the server could listen on ``host:port`` (as uvicorn does: SO_REUSEADDR, so a
    port a stopped UI left in TIME_WAIT counts as free); True when ``host`` does not resolve,
    which the server then reports itself."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
    except OSError:
        return True
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError:
            return False
    return True


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"  # listening on every address: this machine's is one of them
    return f"[{host}]" if ":" in host else host


def server_healthy(base: str, timeout: float = 0.5) -> bool:
    """Whether the MLflow server at ``base`` answers its ``/health`` within ``timeout`` s."""
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _experiments(base: str, limit: int = 20) -> list[tuple[str, str]]:
    """(name, id) of the store's experiments, most recently updated first, without MLflow's
    empty "Default"; [] when the server does not say."""
    body = json.dumps({"max_results": limit, "order_by": ["last_update_time DESC"]}).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            found = json.load(response).get("experiments", [])
    except (urllib.error.URLError, OSError, ValueError):
        return []
    return [(e["name"], e["experiment_id"]) for e in found if e.get("experiment_id") != "0"]


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to the server (one is a graceful shutdown; a second would cut it short), then
    SIGKILL to whatever of its process group is left after the grace period."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=UI_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is the UI's alone
    except ProcessLookupError:
        pass
    process.wait()
