"""The MLflow store's cost per trial through an MLflow tracking server backed by PostgreSQL.

    python benchmarks/tracking_server.py [--trials 150] [--warmup 20] [--repeats 3]
                                         [--threads 2 4] [--workers 2] [--no-sqlite]
                                         [--round-writer-only]

Issue #20 asks for the cost per trial on sqlite and on a tracking server with PostgreSQL;
``bulk_writes.py`` measured sqlite. This script starts its own PostgreSQL 15 (``initdb`` into a
temporary folder, ``pg_ctl`` on a free loopback port, its unix socket in that folder; as an
unprivileged user when run as root, since ``initdb`` refuses root) and a real ``mlflow server``
(the venv's, ``--backend-store-uri postgresql+psycopg2://...``, ``--workers`` 2 unless given:
MLflow's default is 4, the compose cluster runs 1; a temporary artifact folder), and writes
trials through ``Tracker`` as ``RoundWriter`` calls it: create_run, log_batch (params),
log_batch (metrics and end tags), set_terminated; four HTTP requests a trial. The trials are
``bulk_writes.py``'s (imported): 10 epochs x 10 metrics, 12 params, 9 tags, one in six FAILED
after 3 epochs.

Rows, each ``--repeats`` times, taking turns within a repeat (the load on a shared machine drifts):

- *server, PostgreSQL*: one client thread, ``--trials`` trials.
- *server, sqlite*: the same server command with a sqlite file as its store (skipped with
  ``--no-sqlite``).
- *sqlite file, no server*: ``Tracker`` on the sqlite file itself, as ``bulk_writes.py``'s *one by
  one*, measured again here under the same load.
- *server, PostgreSQL, N threads*: for each ``--threads`` N, the same ``--trials`` trials split
  over N client threads, each with its own ``Tracker``, at once: whether the server takes
  concurrent writers, and how trials/s scale.
- *RoundWriter, PostgreSQL, N writers*: the same trials handed to hpo's ``RoundWriter`` itself
  (started, its epochs, ended, one trial after another, as fast as the driver hands them on),
  with N = 1 and N = ``SERVER_WRITERS`` writer threads, until it drained: what a round's
  tracking costs a trial, journal (a write and fsync per start and end) included.
  ``--round-writer-only`` runs these rows alone (no sqlite store), into
  ``tracking_server_round_writer.{md,json}``.

Each store first gets ``--warmup`` trials (not timed; the server's first requests and
PostgreSQL's first plans cost more). Per trial: wall time, the client process's CPU time, the
server's CPU time (the ``mlflow server`` process group) and PostgreSQL's (the postmaster and its
backends); trials/s. After each row the runs are counted through the client: a row whose trials
are not all there, FINISHED or FAILED as written, says so. After the warm-up, a probe times one
GET (``/health``, and ``experiments/get`` through MLflow's REST API) on each server, on one
kept-alive connection (as MLflow's client sends its requests) and on a new connection each.
Both databases run with their defaults (PostgreSQL: fsync and synchronous_commit on). Writes
benchmarks/results/tracking_server.{md,json} (or into ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402 - benchmarks/ and the repository on sys.path first
from bulk_writes import KEYS, Trial, make_trials, one_by_one  # noqa: E402

from hpo.tracking.journal import Journal  # noqa: E402
from hpo.tracking.store import Tracker, blank_tables  # noqa: E402
from hpo.tracking.trials import SERVER_WRITERS, RoundWriter  # noqa: E402
from hpo.trial.record import TrialRecord  # noqa: E402
from hpo.trial.status import TrialStatus  # noqa: E402
from tests.fixtures.mlflow_server import MlflowServer  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: Seconds PostgreSQL and the MLflow server get to answer: a new PostgreSQL store runs MLflow's
#: ~60 schema migrations before the server listens, slow on a busy 2-core machine.
START_S = 180
PG_DATABASE, PG_ROLE = "mlflow", "hpo"
PROBE_REQUESTS = 21  # GETs per way of the one-request probe


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of ``pid`` and all its descendants, living or ended: a
    process's own times and those of its children it has reaped (a PostgreSQL backend that
    ends leaves its time with the postmaster). 0 once ``pid`` is gone."""
    if pid is None:
        return 0.0
    psutil = _bench.psutil()
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


# -- PostgreSQL --------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A PostgreSQL 15 cluster of its own in a temporary folder, on 127.0.0.1:``port``.

    As root, the cluster belongs to an unprivileged user (``postgres`` where Debian's package
    made it, else ``nobody``) and its commands run as that user: ``initdb`` refuses root.
    """

    folder: Path
    port: int
    user: str | None  # None: this process's own user

    @classmethod
    def made(cls, parent: Path) -> Postgres:
        """Its folder under ``parent`` (the user's own, where that is not this process's)."""
        user = None
        if os.geteuid() == 0:
            user = next(name for name in ("postgres", "nobody") if _user_exists(name))
        folder = Path(tempfile.mkdtemp(prefix="pg-", dir=parent))
        if user is not None:
            entry = pwd.getpwnam(user)
            parent.chmod(0o711)  # the user reaches its folder and lists nothing else here
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        return cls(folder, free_port(), user)

    def start(self) -> None:
        """initdb, start, and the MLflow database made; trust auth, loopback and a unix socket
        in its folder only."""
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_ROLE, "--auth=trust",
                   "-E", "UTF8", "--no-sync"])
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                   "-t", str(START_S), "-o",
                   f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c max_connections=50",
                   "start"])
        self._run([str(PG_BIN / "createdb"), "-h", str(self.folder), "-p", str(self.port),
                   "-U", PG_ROLE, PG_DATABASE])

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://{PG_ROLE}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def pid(self) -> int | None:
        """The postmaster's pid (its backends are its children)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _run(self, command: list[str]) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = {**os.environ, "HOME": str(self.folder), "LC_ALL": "C.UTF-8"}
        done = subprocess.run(command, cwd=self.folder, env=env, capture_output=True, text=True,
                              start_new_session=True, check=False, timeout=START_S + 30,
                              **kwargs)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}"
                               f"{done.stderr}\n{self.tail()}")

    def stop(self) -> None:
        """Fast shutdown (backends end their transactions), then SIGKILL whatever is left; the
        folder goes with it."""
        pid = self.pid()
        if pid is not None:
            try:
                self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                           "-t", "30", "stop"])
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"pg_ctl stop failed ({exc}); killing the postmaster", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no PostgreSQL log)"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# -- the writes --------------------------------------------------------------------------------


@dataclass
class Store:
    """One place trials are written to, and the processes whose CPU time it costs."""

    name: str
    uri: str
    pids: dict[str, Callable[[], int | None]]  # "server" / "postgres" -> a pid getter

    def tracker(self, experiment: str) -> tuple[Tracker, str]:
        tracker = Tracker(self.uri, experiment)
        tracker.ensure_experiment()
        round_run = tracker.start_run("round 1", tags={"hpo.kind": "round", "hpo.round": "1"})
        return tracker, round_run

    def cpu(self) -> dict[str, float]:
        return {who: cpu_s(pid()) for who, pid in self.pids.items()}


def write(store: Store, experiment: str, trials: list[Trial], threads: int) -> dict[str, Any]:
    """``trials`` written one by one, split over ``threads`` client threads (each its own
    ``Tracker``) that start together; wall and CPU seconds, and the trials that failed."""
    parts = [trials[i::threads] for i in range(threads)]
    trackers = [store.tracker(experiment) for _ in parts]
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def client(tracker: Tracker, round_run: str, part: list[Trial]) -> None:
        start.wait()
        for trial in part:
            try:
                one_by_one(tracker, round_run, [trial])
            except Exception as exc:  # noqa: BLE001 - counted and reported, not hidden
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    workers = [threading.Thread(target=client, args=(tracker, round_run, part), daemon=True)
               for (tracker, round_run), part in zip(trackers, parts)]
    for worker in workers:
        worker.start()
    servers = store.cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    start.wait()
    for worker in workers:
        worker.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    servers = {f"{who}_cpu_s": t - servers[who] for who, t in store.cpu().items()}
    return {"wall_s": wall, "cpu_s": cpu, **servers, "trials": len(trials), "threads": threads,
            "errors": errors}


def round_writer(store: Store, experiment: str, trials: list[Trial],
                 writers: int) -> dict[str, Any]:
    """``trials`` handed to a ``RoundWriter`` with ``writers`` threads, one after another and as
    fast as the driver can (each started, its epochs, ended), then drained; wall and CPU
    seconds from the first event to the drain's end."""
    tracker, round_run = store.tracker(experiment)
    folder = Path(tempfile.mkdtemp(prefix="journal-"))
    journal = Journal(folder / "journal.jsonl")
    journal.reset()
    errors: list[str] = []
    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run,
                         server_writers=writers)
    servers = store.cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    for i, trial in enumerate(trials):
        record = TrialRecord(round=1, index=i + 1, trial_id=f"t{i}", params=trial.params,
                             sampled={})
        writer.started(record)
        for step, metrics in enumerate(trial.epochs):
            record.history.append(metrics)
            writer.epoch(record, metrics, step)
        if trial.failed:
            record.status, record.error = TrialStatus.FAILED, "RuntimeError: diverged"
        else:
            record.status = TrialStatus.OK
        writer.ended(record)
    try:
        writer.drain()
    except Exception as exc:  # noqa: BLE001 - counted and reported, not hidden
        errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    servers = {f"{who}_cpu_s": t - servers[who] for who, t in store.cpu().items()}
    shutil.rmtree(folder, ignore_errors=True)
    return {"wall_s": wall, "cpu_s": cpu, **servers, "trials": len(trials), "threads": writers,
            "errors": errors}


def written(store: Store, experiment: str) -> dict[str, int]:
    """The experiment's runs by status, as the client reads them back."""
    tracker = Tracker(store.uri, experiment)
    exp = tracker.client.get_experiment_by_name(experiment)
    counts: dict[str, int] = {}
    token = None
    while True:
        page = tracker.client.search_runs([exp.experiment_id], max_results=1000,
                                          page_token=token)
        for run in page:
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
        token = page.token
        if not token:
            return counts


def request_ms(url: str, requests_each: int = PROBE_REQUESTS) -> dict[str, list[float]]:
    """ms per GET of ``url`` on one kept-alive connection (a ``requests.Session``, as MLflow's
    client keeps one) and on a new connection each (``Connection: close``)."""
    import requests

    def times(get: Callable[[], Any]) -> list[float]:
        out = []
        for _ in range(requests_each):
            start = time.perf_counter()
            get().raise_for_status()
            out.append((time.perf_counter() - start) * 1e3)
        return out

    with requests.Session() as session:
        kept = times(lambda: session.get(url, timeout=10))
    fresh = times(lambda: requests.get(url, headers={"Connection": "close"}, timeout=10))
    return {"kept-alive connection": kept, "new connection each": fresh}


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit in the block, so that its clean-up runs."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--trials", type=int, default=150, help="timed trials per row and repeat")
    p.add_argument("--warmup", type=int, default=20, help="untimed trials per store first")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="*", default=[2, 4],
                   help="client threads of the concurrent rows (PostgreSQL only)")
    p.add_argument("--workers", type=int, default=2, help="mlflow server --workers")
    p.add_argument("--no-sqlite", action="store_true",
                   help="skip the sqlite rows (server and file)")
    p.add_argument("--round-writer-only", action="store_true",
                   help="only the RoundWriter rows (no sqlite store), into "
                        "tracking_server_round_writer.{md,json}")
    p.add_argument("--out", type=Path, default=_bench.RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _bench.quiet_mlflow()
    info = _bench.machine()
    import mlflow
    import psycopg2

    info.update(mlflow=mlflow.__version__, psycopg2=psycopg2.__version__.split()[0])
    trials = make_trials(args.warmup + args.trials, args.epochs)
    warm, timed = trials[:args.warmup], trials[args.warmup:]
    if args.round_writer_only:
        args.no_sqlite, args.threads = True, []
    rows: list[tuple[str, str, int]] = [] if args.round_writer_only else [
        ("server, PostgreSQL", "pg", 1)]
    if not args.no_sqlite:
        rows += [("server, sqlite", "sqlite-server", 1), ("sqlite file, no server", "file", 1)]
    rows += [(f"server, PostgreSQL, {n} threads", "pg", n) for n in args.threads]
    rows += [(f"RoundWriter, PostgreSQL, {n} writer{'s' * (n > 1)}", "pg", n)
             for n in (1, SERVER_WRITERS)]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in rows}
    checks: dict[str, dict[str, int]] = {}
    started: dict[str, float] = {}
    with terminated_as_exit(), contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tracking-server-")))
        t0 = time.perf_counter()
        pg = Postgres.made(folder)
        stack.callback(pg.stop)  # after the servers stop (callbacks run last in, first out)
        pg.start()
        info["postgres"] = {"user": pg.user or pwd.getpwuid(os.geteuid()).pw_name,
                            "version": (pg.data / "PG_VERSION").read_text().strip()}
        started["postgres_s"] = time.perf_counter() - t0
        print(f"PostgreSQL on port {pg.port} as {info['postgres']['user']} "
              f"({started['postgres_s']:.1f} s)", flush=True)
        stores: dict[str, Store] = {}
        t0 = time.perf_counter()
        server = MlflowServer(folder / "server-pg", pg.uri, args.workers)
        stack.callback(server.stop)
        server.start()
        started["server_pg_s"] = time.perf_counter() - t0
        print(f"mlflow server on PostgreSQL: {server.url} ({started['server_pg_s']:.1f} s)",
              flush=True)
        stores["pg"] = Store("pg", server.url, {"server": lambda: server.pid, "postgres": pg.pid})
        if not args.no_sqlite:
            (folder / "server-sqlite").mkdir()
            db = folder / "server-sqlite" / "mlflow.db"
            blank = blank_tables()  # MLflow's tables, made once: no migrations at start
            if blank is not None:
                shutil.copy(blank, db)
            t0 = time.perf_counter()
            lite = MlflowServer(folder / "server-sqlite", f"sqlite:///{db}", args.workers)
            stack.callback(lite.stop)
            lite.start()
            started["server_sqlite_s"] = time.perf_counter() - t0
            print(f"mlflow server on sqlite: {lite.url} ({started['server_sqlite_s']:.1f} s)",
                  flush=True)
            stores["sqlite-server"] = Store("sqlite-server", lite.url, {"server": lambda: lite.pid})
            stores["file"] = Store("file", f"sqlite:///{folder / 'file.db'}", {})
        for key, store in stores.items():
            write(store, "warm-up", warm, 1)
        probes = {f"{path} ({key})": request_ms(stores[key].uri + path)
                  for key in ("pg", "sqlite-server") if key in stores
                  for path in ("/health", "/api/2.0/mlflow/experiments/get?experiment_id=0")}
        for r in range(args.repeats):
            for name, key, threads in rows:
                experiment = f"{name} #{r + 1}"
                how = round_writer if name.startswith("RoundWriter") else write
                result = how(stores[key], experiment, timed, threads)
                checks[experiment] = written(stores[key], experiment)
                results[name].append(result)
                print(f"{name}, repeat {r + 1}: {result['wall_s'] / len(timed) * 1e3:.1f} "
                      f"ms/trial, {len(result['errors'])} errors, runs {checks[experiment]}",
                      flush=True)
    info["load_avg_at_end"] = list(os.getloadavg())

    # what was written: each trial's run, FAILED or FINISHED as written, and each thread's round
    failed = sum(t.failed for t in timed)
    expected = {name: {"FINISHED": len(timed) - failed, "FAILED": failed,
                       "RUNNING": 1 if name.startswith("RoundWriter") else threads}
                for name, _, threads in rows}
    missing = {exp: got for exp, got in checks.items()
               if got != expected[exp.rsplit(" #", 1)[0]]}

    def per_trial(runs: list[dict[str, Any]], key: str) -> list[float]:
        return [run[key] / run["trials"] * 1e3 for run in runs if key in run]

    table_rows, summary = [], {}
    for name, key, threads in rows:
        runs = results[name]
        wall, cpu = per_trial(runs, "wall_s"), per_trial(runs, "cpu_s")
        srv, pgc = per_trial(runs, "server_cpu_s"), per_trial(runs, "postgres_cpu_s")
        rate = [run["trials"] / run["wall_s"] for run in runs]
        errors = sum(len(run["errors"]) for run in runs)
        summary[name] = {"wall_ms_per_trial": wall, "client_cpu_ms_per_trial": cpu,
                         "server_cpu_ms_per_trial": srv, "postgres_cpu_ms_per_trial": pgc,
                         "trials_per_s": rate, "errors": errors, "threads": threads}
        table_rows.append((name, threads, runs[0]["trials"], _bench.spread(wall, "{:.1f}"),
                           _bench.spread(cpu, "{:.1f}"),
                           _bench.spread(srv, "{:.1f}") if srv else "—",
                           _bench.spread(pgc, "{:.1f}") if pgc else "—",
                           _bench.spread(rate, "{:.1f}"), errors))
    table = _bench.markdown_table(
        ("store", "client threads", "trials", "wall ms/trial", "client CPU ms/trial",
         "server CPU ms/trial", "PostgreSQL CPU ms/trial", "trials/s", "errors"), table_rows)
    notes = [f"- Start-up: PostgreSQL (initdb, start, createdb) {started['postgres_s']:.1f} s; "
             f"the MLflow server on a new PostgreSQL database (its schema migrations) "
             f"{started['server_pg_s']:.1f} s"
             + (f"; on a sqlite file that already holds MLflow's tables "
                f"{started['server_sqlite_s']:.1f} s." if "server_sqlite_s" in started else ".")]
    if "server, PostgreSQL" in summary:
        one = _bench.median(summary["server, PostgreSQL"]["trials_per_s"])
        cpu_sum = [sum(run[k] for k in ("cpu_s", "server_cpu_s", "postgres_cpu_s"))
                   / run["trials"] * 1e3 for run in results["server, PostgreSQL"]]
        notes.append(f"- One client on the PostgreSQL-backed server: "
                     f"{_bench.median(summary['server, PostgreSQL']['wall_ms_per_trial']):.1f} "
                     f"ms wall per trial, of which the client, the server and PostgreSQL "
                     f"together spend {_bench.median(cpu_sum):.1f} ms of CPU; the rest is "
                     f"waiting (see the probe below).")
        for name, _, threads in rows:
            if threads > 1 and not name.startswith("RoundWriter"):
                rate = _bench.median(summary[name]["trials_per_s"])
                notes.append(f"- {threads} client threads on the PostgreSQL-backed server: "
                             f"{rate:.1f} trials/s, {rate / one:.2f}x one thread's {one:.1f}; "
                             f"{summary[name]['errors']} failed writes.")
    ones = [summary[name]["trials_per_s"] for name, _, n in rows
            if name.startswith("RoundWriter") and n == 1]
    for name, _, threads in rows:
        if ones and threads > 1 and name.startswith("RoundWriter"):
            rates = summary[name]["trials_per_s"]
            paired = [many / one for many, one in zip(rates, ones[0])]
            notes.append(f"- `RoundWriter` with {threads} writer threads: "
                         f"{_bench.median(rates):.1f} trials/s, "
                         f"{_bench.spread(paired, '{:.2f}')}x its one writer's "
                         f"{_bench.median(ones[0]):.1f} (ratio within each repeat); "
                         f"{summary[name]['errors']} failed writes.")
    probe_rows = [(f"GET {name}", _bench.spread(ways["kept-alive connection"], "{:.1f}"),
                   _bench.spread(ways["new connection each"], "{:.1f}"))
                  for name, ways in probes.items()]
    probe_table = _bench.markdown_table(("request (store)", "ms, one kept-alive connection",
                                         "ms, a new connection each"), probe_rows)
    notes.append("- Every row's runs read back through the client, by status: "
                 + ("all there, FINISHED or FAILED as written." if not missing else
                    f"NOT as written in {missing}."))
    text = (f"# MLflow writes per trial through a tracking server backed by PostgreSQL\n\n"
            f"{len(timed)} trials a row of {args.epochs} epochs × {len(KEYS)} metrics, "
            f"{len(timed[0].params)} params, 9 tags; one in six FAILED after 3 epochs "
            f"(`bulk_writes.py`'s trials). Written one by one through `Tracker` as `RoundWriter` "
            f"calls it (create_run, log_batch, log_batch, set_terminated: four requests a "
            f"trial), after {args.warmup} untimed trials per store. `mlflow server` "
            f"{info['mlflow']} with `--workers {args.workers}`, its store PostgreSQL "
            f"{info['postgres']['version']} (psycopg2 {info['psycopg2']}, defaults: fsync and "
            f"synchronous_commit on) or a sqlite file; all on this machine over loopback. "
            f"*sqlite file, no server*: `Tracker` on the file itself, in the client process. "
            f"With N client threads the same trials are split over N `Tracker`s writing at "
            f"once; wall ms/trial is the row's wall time over all its trials. *RoundWriter, N "
            f"writers*: the trials handed to hpo's `RoundWriter` with N writer threads (its "
            f"journal included), from the first event until it drained. CPU per trial: the "
            f"client process, the `mlflow server` process group, and the postmaster with its "
            f"backends. Each store holds the earlier rows' trials too (up to "
            f"{args.warmup + len(timed) * args.repeats * sum(k == 'pg' for _, k, _ in rows)} on "
            f"PostgreSQL). Median over {args.repeats} repeats, (min–max); the rows take turns "
            f"within a repeat.\n\n{table}\n\n" + "\n".join(notes) +
            f"\n\nOne request's wall time, after the warm-up, {PROBE_REQUESTS} "
            f"requests each (median (min–max)); MLflow's client keeps its connection "
            f"alive:\n\n{probe_table}" +
            f"\n\nMachine: {info['cores']} cores, shared with others' tests; load average "
            f"{[round(x, 2) for x in info['load_avg_at_start']]} at the start, "
            f"{[round(x, 2) for x in info['load_avg_at_end']]} at the end. Command: "
            f"`{_bench.command_line(argv)}`\n")
    raw = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": info,
           "start_s": started, "request_ms": probes, "results": results, "runs_read_back": checks,
           "summary": summary}
    stem = "tracking_server_round_writer" if args.round_writer_only else "tracking_server"
    if args.workers != 2:  # the results of the default kept beside these
        stem += f"_workers{args.workers}"
    md, js = _bench.write_results(stem, text, raw, args.out)
    print(text)
    print(f"wrote {md} and {js}")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
