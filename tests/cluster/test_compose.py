"""docker-compose end to end: build the image, bring up a Ray head, two workers and the MLflow
server, run a small study from the one-off `hpo` service, read its runs back from the MLflow
server, run a study whose trainable only the driver's container can read (its code reaches the
workers in Ray's runtime environment), and tear everything down with `down -v`. On the way: the
MLflow server refuses requests without its login (401), the read-only viewer can read but not
write, each service holds only its own secrets and no process has one on its command line.

One cluster serves the module (the ``cluster`` fixture builds the image and brings it up once);
``test_down_v_leaves_nothing`` tears it down, so it comes last.

Docker comes from ../shared/tools/docker-standin.sh when this machine lacks it (it installs
Debian's docker.io and docker-compose, starts dockerd, and builds a stand-in python:3.11-slim
where no registry is reachable; it needs root). The test skips, saying why, only when Docker
cannot run at all. The image stays behind (as hpo:test) so that a second run reuses its layers.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.fixtures.ports import free_port
from tests.fixtures.runs import runs_by_kind

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT.parent / "shared" / "tools" / "docker-standin.sh"
DOCKER = "/usr/bin/docker"  # Debian's client, matching Debian's dockerd
BASE_IMAGE = "python:3.11-slim"
IMAGE = "hpo:test"

STUDY = {
    "name": "compose-digits",
    "seed": 1,
    "data": {"source": "digits", "preprocess": ["zero_center"]},
    "model": {"hidden": [16], "activation": {"choice": ["relu", "tanh"]}, "init": "he",
              "batchnorm": False},
    "train": {"epochs": 2, "batch_size": 64, "lr": {"loguniform": [1e-2, 0.3]}},
    "search": {"rounds": 1, "trials_per_round": 4, "resources_per_trial": {"cpu": 1}},
    "sanity": {"enabled": False},
}


def run(args: list[str], *, timeout: float, env: dict | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {done.returncode}\n"
                             f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def docker_works() -> str | None:
    """None when the Docker client, daemon and docker-compose all answer; else why not."""
    if not Path(DOCKER).exists():
        return f"{DOCKER} is missing"
    if shutil.which("docker-compose") is None:
        return "docker-compose is missing"
    info = run([DOCKER, "info"], timeout=60)
    return None if info.returncode == 0 else f"dockerd does not answer: {info.stderr[-500:]}"


def base_image_present() -> bool:
    return run([DOCKER, "image", "inspect", BASE_IMAGE], timeout=60).returncode == 0


def dockerd_pids() -> set[int]:
    found = run(["pgrep", "-x", "dockerd"], timeout=30)
    return {int(pid) for pid in found.stdout.split()}


@pytest.fixture(scope="module")
def docker() -> Iterator[None]:
    """Docker, docker-compose and the base image, set up here if this machine lacks them; a
    Docker daemon started here is stopped when the module's tests end."""
    before = dockerd_pids()
    try:
        _set_up_docker()
        yield
    finally:
        for pid in dockerd_pids() - before:
            os.kill(pid, signal.SIGTERM)  # dockerd stops its containers and containerd
        deadline = time.monotonic() + 60
        while dockerd_pids() - before and time.monotonic() < deadline:
            time.sleep(0.5)


def _set_up_docker() -> None:
    if docker_works() is None and not base_image_present():
        run([DOCKER, "pull", BASE_IMAGE], timeout=300)  # a machine with a registry
    if docker_works() is not None or not base_image_present():
        if not STANDIN.exists():
            pytest.skip(f"Docker cannot run ({docker_works() or 'no ' + BASE_IMAGE}) and "
                        f"{STANDIN} is not there to set it up")
        if os.geteuid() != 0:
            pytest.skip(f"Docker cannot run ({docker_works() or 'no ' + BASE_IMAGE}); "
                        f"setting it up with {STANDIN.name} needs root")
        setup = run(["bash", str(STANDIN)], timeout=1800)
        if setup.returncode != 0:
            pytest.skip(f"Docker cannot run here: {STANDIN.name} failed:\n"
                        f"{setup.stdout[-1500:]}{setup.stderr[-1500:]}")
    reason = docker_works()
    if reason is not None or not base_image_present():
        pytest.skip(f"Docker cannot run here: {reason or 'no ' + BASE_IMAGE}")


class Stack:
    """One docker-compose project with its own name, ports, secrets and study folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.timings: dict[str, float] = {}
        self.project = f"hpotest{secrets.token_hex(3)}"
        self.secrets = folder / "secrets"  # docker/make-token.sh's folder, one file a service
        self.spaces = folder / "spaces"
        self.mlflow_port, self.dashboard_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "HPO_IMAGE": IMAGE,
            "HPO_SECRETS": str(self.secrets),
            "HPO_SPACES": str(self.spaces),
            "MLFLOW_PORT": str(self.mlflow_port),
            "RAY_DASHBOARD_PORT": str(self.dashboard_port),
            "RAY_WORKER_CPUS": "1",  # two workers, one trial each at a time: trials spread
            "RAY_OBJECT_STORE_BYTES": str(200 * 1024 * 1024),
            "RAY_SHM_SIZE": "512m",
        }
        for name in ("HPO_BIND", "COMPOSE_PROFILES", "COMPOSE_FILE", "MLFLOW_DB"):
            self.env.pop(name, None)  # the defaults under test

    def compose(self, *args: str, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess:
        return run(["docker-compose", *args], timeout=timeout, env=self.env, check=check)

    def secret(self, file: str, name: str) -> str:
        for line in (self.secrets / file).read_text().splitlines():
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1]
        raise AssertionError(f"no {name} in {self.secrets / file}")

    def token(self) -> str:
        return self.secret("ray.env", "RAY_AUTH_TOKEN")

    def secrets_by_name(self) -> dict[str, str]:
        """Every secret make-token.sh wrote, by a name of its own."""
        return {"ray token": self.token(),
                "admin password": self.secret("mlflow.env", "MLFLOW_AUTH_ADMIN_PASSWORD"),
                "viewer password": self.secret("mlflow.env", "MLFLOW_VIEWER_PASSWORD"),
                "csrf key": self.secret("mlflow.env", "MLFLOW_FLASK_SERVER_SECRET_KEY"),
                "postgres password": self.secret("postgres.env", "POSTGRES_PASSWORD")}

    @contextlib.contextmanager
    def login(self, user: str) -> Iterator[None]:
        """MLflow's client in this process logged in as ``user`` (admin or viewer), the way
        a user of the cluster logs in: MLFLOW_TRACKING_USERNAME and _PASSWORD."""
        file = {"admin": "hpo.env", "viewer": "viewer.env"}[user]
        names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        before = {name: os.environ.get(name) for name in names}
        os.environ.update({name: self.secret(file, name) for name in names})
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def down(self) -> None:
        self.compose("--profile", "driver", "down", "-v", "--remove-orphans", timeout=300,
                     check=False)


@pytest.fixture(scope="module")
def stack(docker) -> Iterator[Stack]:
    # Bind-mounted into containers that run as uid 1000: world-readable, not pytest's 0700.
    folder = Path(tempfile.mkdtemp(prefix="hpo-compose-", dir="/tmp"))
    stack = Stack(folder)
    stack.spaces.mkdir()
    (stack.spaces / "compose.yaml").write_text(yaml.safe_dump(STUDY))
    for path in (folder, stack.spaces, stack.spaces / "compose.yaml"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    run(["bash", str(ROOT / "docker" / "make-token.sh"), str(stack.secrets)], timeout=30,
        check=True)
    atexit.register(stack.down)  # even if pytest itself is interrupted
    try:
        yield stack
    finally:
        stack.down()
        atexit.unregister(stack.down)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_nodes(stack: Stack, nodes: int, timeout: float = 240) -> str:
    deadline, out = time.time() + timeout, ""
    while time.time() < deadline:
        status = stack.compose("exec", "-T", "ray-head", "ray", "status", timeout=60, check=False)
        out = status.stdout + status.stderr
        if status.returncode == 0 and out.split("Pending:")[0].count(" node_") == nodes:
            return out
        time.sleep(3)
    raise AssertionError(f"the cluster never had {nodes} nodes:\n{out}\n"
                         + stack.compose("logs", "--tail=40", check=False).stdout[-6000:])


def wait_for_mlflow(stack: Stack, timeout: float = 300) -> None:
    """Until the MLflow server answers on its published port (/health needs no login)."""
    deadline, why = time.time() + timeout, ""
    while time.time() < deadline:
        try:
            if http_status(f"http://127.0.0.1:{stack.mlflow_port}/health")[0] == 200:
                return
        except OSError as exc:  # not listening yet, or reset while its workers start
            why = repr(exc)
        time.sleep(2)
    raise AssertionError(f"MLflow did not answer in {timeout:.0f} s ({why}):\n"
                         + stack.compose("logs", "--tail=60", "mlflow", check=False).stdout)


@pytest.fixture(scope="module")
def cluster(stack) -> Stack:
    """The image built and the cluster up, once for the module: a head, two workers with one
    CPU each, and the MLflow server. ``stack`` takes it down."""
    t = time.time()
    stack.compose("build", timeout=2400)
    stack.timings["build"] = time.time() - t
    t = time.time()
    stack.compose("up", "-d", "--scale", "ray-worker=2", timeout=600)
    wait_for_nodes(stack, 3)  # head + 2 workers
    wait_for_mlflow(stack)
    stack.timings["up"] = time.time() - t
    return stack


#: Run in a ray-worker container: its Ray node id, from its raylet's command line.
RAYLET_NODE_ID = textwrap.dedent("""\
    from pathlib import Path

    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\\0")
        except OSError:
            continue
        if args[0].endswith(b"/raylet"):
            print(*[a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--node_id=")])
""")


def worker_node_ids(stack: Stack, workers: int = 2) -> set[str]:
    """The Ray node ids of the ray-worker containers (what a trial's hpo.node tag holds)."""
    ids = set()
    for index in range(1, workers + 1):
        done = stack.compose("exec", "-T", f"--index={index}", "ray-worker", "python", "-c",
                             RAYLET_NODE_ID, timeout=120)
        ids.update(done.stdout.split())
    assert len(ids) == workers, ids
    return ids


def http_status(url: str, token: str | None = None, *, basic: tuple[str, str] | None = None,
                method: str = "GET", data: bytes | None = None) -> tuple[int, str, dict]:
    """Status, body and headers (lower-case names) of one request, with a bearer token or a
    basic-auth login."""
    request = urllib.request.Request(url, method=method, data=data)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if basic:
        login = base64.b64encode(":".join(basic).encode()).decode()
        request.add_header("Authorization", f"Basic {login}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, response.read().decode(), headers
    except urllib.error.HTTPError as exc:
        headers = {k.lower(): v for k, v in exc.headers.items()}
        return exc.code, exc.read().decode(errors="replace"), headers


#: What each service's containers may hold of make-token.sh's secrets (the rest they must not).
SERVICE_SECRETS = {
    "ray-head": {"ray token"},
    "ray-worker": {"ray token"},
    "mlflow": {"admin password", "viewer password", "csrf key", "postgres password"},
    "hpo": {"ray token", "admin password"},
}


def container_env(stack: Stack, container: str) -> list[str]:
    inspect = run([DOCKER, "inspect", container], timeout=60, check=True)
    return json.loads(inspect.stdout)[0]["Config"]["Env"] or []


def held_secrets(secrets_: dict[str, str], texts: list[str]) -> set[str]:
    """The names of the secrets whose value appears in any of ``texts``."""
    return {name for name, value in secrets_.items() if any(value in t for t in texts)}


def check_secrets_per_service(stack: Stack) -> None:
    """Each running service's environment holds only its own secrets, and no process of any
    container (what the host's `ps` shows) has a secret on its command line."""
    secrets_ = stack.secrets_by_name()
    for service in ("ray-head", "ray-worker", "mlflow"):
        containers = stack.compose("ps", "-q", service).stdout.split()
        assert containers, service
        for container in containers:
            env = container_env(stack, container)
            assert held_secrets(secrets_, env) <= SERVICE_SECRETS[service], (service, env)
            top = run([DOCKER, "top", container, "-eo", "pid,args"], timeout=60, check=True)
            assert top.stdout.count("\n") > 1, top.stdout  # the processes are listed
            assert not held_secrets(secrets_, [top.stdout]), (service, top.stdout)
            # The store's URI (where PostgreSQL's would be) travels in the environment too.
            assert "sqlite:" not in top.stdout and "--backend-store-uri" not in top.stdout
        if service == "mlflow":  # it needs its passwords, not the Ray token
            assert held_secrets(secrets_, env) >= {"csrf key", "postgres password"}
    # The driver's one-off container, as `docker-compose run --rm hpo` makes it.
    env = stack.compose("run", "--rm", "--no-deps", "--entrypoint", "sh", "hpo", "-c", "env",
                        timeout=120).stdout.splitlines()
    assert held_secrets(secrets_, env) == SERVICE_SECRETS["hpo"], sorted(
        held_secrets(secrets_, env))


def test_compose_cluster_runs_a_study_and_mlflow_keeps_it(cluster):
    stack, timings = cluster, cluster.timings
    # No secret in the image: not in its environment, and no env file in the build context.
    config = json.loads(run([DOCKER, "image", "inspect", IMAGE], timeout=60, check=True).stdout)
    secret_names = ("RAY_AUTH_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD",
                    "MLFLOW_VIEWER_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD")
    assert not any(e.startswith(secret_names) for e in config[0]["Config"]["Env"] or [])
    listing = run([DOCKER, "run", "--rm", "--entrypoint", "ls", IMAGE, "-a", "/opt/hpo"],
                  timeout=120, check=True).stdout.split()
    assert not [n for n in listing if n.endswith(".env") or n in (".git", ".venv")], listing

    # Published ports listen on loopback only; the dashboard wants the token.
    for service, port in (("mlflow", 5000), ("ray-head", 8265)):
        published = stack.compose("port", service, str(port)).stdout.strip()
        assert published.startswith("127.0.0.1:"), (service, published)
    dashboard = f"http://127.0.0.1:{stack.dashboard_port}/api/version"
    assert http_status(dashboard)[0] == 401
    code, body, _ = http_status(dashboard, stack.token())
    assert code == 200 and json.loads(body)["ray_version"] == "2.60.0"

    # MLflow asks for a login: nothing without one, or with a wrong password; /health is open
    # (the healthcheck's). An artifact upload without one is refused too.
    uri = f"http://127.0.0.1:{stack.mlflow_port}"
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=10"
    code, body, headers = http_status(search)
    assert code == 401, (code, body)
    assert headers.get("www-authenticate", "").startswith("Basic"), headers
    assert http_status(search, basic=("admin", "not-the-password"))[0] == 401
    upload = f"{uri}/api/2.0/mlflow-artifacts/artifacts/0/evil/model.pkl"
    assert http_status(upload, method="PUT", data=b"pickle")[0] == 401
    assert http_status(f"{uri}/health")[0] == 200
    admin = ("admin", stack.secret("hpo.env", "MLFLOW_TRACKING_PASSWORD"))
    assert http_status(search, basic=admin)[0] == 200
    check_secrets_per_service(stack)

    t = time.time()
    study = stack.compose("run", "--rm", "hpo", "search", "search_spaces/compose.yaml",
                          timeout=900, check=False)
    timings["study"] = time.time() - t
    assert study.returncode == 0, study.stdout[-6000:] + study.stderr[-6000:]

    # The MLflow server, from the host, through the published port, logged in as the viewer:
    # it reads everything and changes nothing.
    with stack.login("viewer"):
        check_study_runs(stack, uri)
        client = MlflowClient(tracking_uri=uri)
        study_run = runs_by_kind(uri, "compose-digits")["study"][0].info.run_id
        refused = {
            "delete a run": lambda: client.delete_run(study_run),
            "upload an artifact": lambda: client.log_text(study_run, "x", "best_model/evil.txt"),
            "tag a run": lambda: client.set_tag(study_run, "evil", "1"),
            "make an experiment": lambda: client.create_experiment("viewer-made"),
        }
        for what, attempt in refused.items():
            try:
                attempt()
            except (MlflowException, requests.HTTPError) as exc:  # an upload raises the latter
                assert "403" in str(exc), (what, exc)
            else:
                raise AssertionError(f"the viewer could {what}")
    with stack.login("admin"):
        check_study_runs(stack, uri)  # and nothing of the viewer's attempts landed
        assert MlflowClient(tracking_uri=uri).get_experiment_by_name("viewer-made") is None


def check_study_runs(stack: Stack, uri: str) -> None:
    """The compose-digits study's runs as the logged-in user reads them."""
    client, kinds = MlflowClient(tracking_uri=uri), runs_by_kind(uri, "compose-digits")
    assert len(kinds["study"]) == 1 and kinds["study"][0].info.status == "FINISHED"
    trials = kinds["trial"]
    assert len(trials) == 4
    assert all(r.info.status == "FINISHED" and "val_accuracy" in r.data.metrics for r in trials)
    assert len({r.data.tags["hpo.node"] for r in trials}) == 2  # both workers trained
    study_run = kinds["study"][0].info.run_id
    assert "best.yaml" in [a.path for a in client.list_artifacts(study_run)]
    best = client.download_artifacts(study_run, "best.yaml", str(stack.folder))
    assert yaml.safe_load(Path(best).read_text())["name"] == "compose-digits"
    assert "evil" not in kinds["study"][0].data.tags


#: A trainable of the user's, in a folder that only the driver's container mounts, under a name
#: that is in no package and not in the image. Each epoch also reports ``shipped``: 1.0 when the
#: module was imported from a working_dir that Ray unpacked in its session's runtime resources.
SHIPPED_LOOP = textwrap.dedent("""\
    import os
    import time


    def fit(config, trial):
        here = os.path.realpath(__file__)
        shipped = float("/runtime_resources/working_dir_files/_ray_pkg_" in here)
        for epoch in (1, 2):
            time.sleep(0.5)
            trial.report(epoch=epoch, val_score=config["lr"] * epoch, train_score=config["lr"],
                         shipped=shipped)
""")


def test_a_trainable_only_the_driver_can_read_reaches_the_workers(cluster):
    stack = cluster
    folder = stack.folder / "own-code"  # a study folder of the user's, on the host
    folder.mkdir()
    (folder / "compose_shipped_loop.py").write_text(SHIPPED_LOOP)
    (folder / "study.yaml").write_text(yaml.safe_dump({
        "name": "compose-shipped", "seed": 1, "trainable": "compose_shipped_loop:fit",
        "train": {"epochs": 2, "lr": {"loguniform": [1e-2, 0.3]}},
        "search": {"metric": "val_score", "mode": "max", "rounds": 1, "trials_per_round": 4,
                   "resources_per_trial": {"cpu": 1}},
        "sanity": {"enabled": False},
    }))
    for path in (folder, *folder.iterdir()):  # read by the container's uid 1000
        path.chmod(0o755 if path.is_dir() else 0o644)

    t = time.time()
    study = stack.compose("run", "--rm", "-v", f"{folder}:/study:ro", "hpo", "search",
                          "/study/study.yaml", timeout=900, check=False)
    stack.timings["shipped study"] = time.time() - t
    assert study.returncode == 0, study.stdout[-6000:] + study.stderr[-6000:]

    uri = f"http://127.0.0.1:{stack.mlflow_port}"
    with stack.login("admin"):
        client, kinds = MlflowClient(tracking_uri=uri), runs_by_kind(uri, "compose-shipped")
        assert len(kinds["study"]) == 1 and kinds["study"][0].info.status == "FINISHED"
        trials = kinds["trial"]
        assert len(trials) == 4
        for r in trials:
            assert r.info.status == "FINISHED", r.data.tags
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_score")]
            assert steps == [1, 2], (r.data.tags["hpo.trial"], steps)
            assert r.data.metrics["shipped"] == 1.0, r.data.tags["hpo.trial"]
    # Only the workers offer CPUs (the head and the driver's node none): both trained.
    assert {r.data.tags["hpo.node"] for r in trials} == worker_node_ids(stack)


def test_the_postgres_password_is_on_no_command_line(cluster):
    """MLFLOW_DB=postgres: PostgreSQL's password reaches MLflow as libpq's PGPASSWORD, never in
    the store's URI on a command line. No PostgreSQL here (its image needs a registry): the
    mlflow role waits for one, and what runs meanwhile is what the host's `ps` would show."""
    password = secrets.token_hex(24)
    name = f"{cluster.project}-pg"
    run([DOCKER, "run", "-d", "--rm", "--name", name, "--network", "none",
         "-e", "MLFLOW_DB=postgres", "-e", "POSTGRES_HOST=nowhere", "-e", f"PGPASSWORD={password}",
         "-e", "MLFLOW_AUTH_ADMIN_PASSWORD=" + secrets.token_hex(12),
         "-e", "MLFLOW_VIEWER_PASSWORD=" + secrets.token_hex(12),
         "-e", "MLFLOW_FLASK_SERVER_SECRET_KEY=" + secrets.token_hex(12), IMAGE, "mlflow"],
        timeout=60, check=True)
    try:
        deadline, top = time.time() + 60, ""
        while time.time() < deadline:  # until the wait for the database runs
            top = run([DOCKER, "top", name, "-eo", "pid,args"], timeout=60).stdout
            if "python -" in top:
                break
            time.sleep(0.5)
        assert "python -" in top, top
        assert password not in top and "postgresql" not in top, top
    finally:
        run([DOCKER, "rm", "-f", name], timeout=60)


def test_down_v_leaves_nothing(cluster):
    stack, timings = cluster, cluster.timings
    t = time.time()
    stack.down()
    timings["down"] = time.time() - t
    label = f"label=com.docker.compose.project={stack.project}"
    left = run([DOCKER, "ps", "-aq", "--filter", label], timeout=60, check=True).stdout.split()
    volumes = run([DOCKER, "volume", "ls", "-q", "--filter", label], timeout=60,
                  check=True).stdout.split()
    assert not left and not volumes, (left, volumes)
    print("compose timings (s):", {k: round(v, 1) for k, v in timings.items()})
