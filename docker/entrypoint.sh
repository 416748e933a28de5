#!/usr/bin/env bash
# The image's roles. The first argument picks one; anything else runs as given.
#
#   ray-head            the Ray head: GCS and the dashboard; no trials unless RAY_HEAD_CPUS > 0
#   ray-worker          a Ray worker node joining RAY_HEAD_ADDRESS; trials run here
#   mlflow              the MLflow tracking server; artifacts served over HTTP from /mlflow
#   hpo ARGS...         runs `hpo ARGS...`; for `hpo search` it first joins the cluster as a
#                       node with no CPUs or GPUs (a Ray driver needs a local node; no trial
#                       lands on it, data reach workers through Ray's object store), and is the
#                       only process that talks to MLflow (MLFLOW_TRACKING_USERNAME/PASSWORD;
#                       the Ray node it starts does not get them)
#
# Settings (environment): RAY_AUTH_MODE (default token) and RAY_AUTH_TOKEN (from ray.env);
# RAY_HEAD_ADDRESS (default ray-head:6379); RAY_HEAD_CPUS (default 0); RAY_WORKER_CPUS,
# RAY_WORKER_GPUS (default: detected); RAY_OBJECT_STORE_BYTES (default: Ray's);
# MLFLOW_DB (sqlite | postgres), MLFLOW_BACKEND_STORE_URI (overrides MLFLOW_DB; put no password
# in it: PGPASSWORD), MLFLOW_ALLOWED_HOSTS; for postgres: POSTGRES_HOST, POSTGRES_USER,
# POSTGRES_DB, PGPASSWORD; MLflow's login (mlflow.env): MLFLOW_AUTH_ADMIN_USERNAME (admin),
# MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_VIEWER_USERNAME (viewer), MLFLOW_VIEWER_PASSWORD,
# MLFLOW_FLASK_SERVER_SECRET_KEY; MLFLOW_WORKERS (default 1). docker/make-token.sh writes the
# secrets, one file a service.
set -euo pipefail

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
HEAD="${RAY_HEAD_ADDRESS:-ray-head:6379}"

need_token() {
  if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    echo "hpo-entrypoint: RAY_AUTH_MODE=token but RAY_AUTH_TOKEN is empty; run" \
         "docker/make-token.sh to write the secrets (ray.env), then start again" >&2
    exit 2
  fi
}

object_store() {  # the option, when a size is set
  if [ -n "${RAY_OBJECT_STORE_BYTES:-}" ]; then
    echo "--object-store-memory=$RAY_OBJECT_STORE_BYTES"
  fi
}

wait_for_head() {  # `ray start --address` gives up quickly; the head may still be starting
  for _ in $(seq 60); do
    python - "$HEAD" <<'PY' && return 0
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
socket.create_connection((host, int(port)), timeout=2).close()
PY
    sleep 2
  done
  echo "hpo-entrypoint: the Ray head at $HEAD did not answer within 120 s" >&2
  exit 1
}

role="${1:-}"
case "$role" in
  ray-head)
    shift
    need_token
    # shellcheck disable=SC2046
    exec ray start --head --block --port=6379 --num-cpus="${RAY_HEAD_CPUS:-0}" \
      --include-dashboard=true --dashboard-host=0.0.0.0 --dashboard-port=8265 \
      --disable-usage-stats $(object_store) "$@"
    ;;
  ray-worker)
    shift
    need_token
    wait_for_head
    cpus=() gpus=()
    if [ -n "${RAY_WORKER_CPUS:-}" ]; then cpus=(--num-cpus="$RAY_WORKER_CPUS"); fi
    if [ -n "${RAY_WORKER_GPUS:-}" ]; then gpus=(--num-gpus="$RAY_WORKER_GPUS"); fi
    # shellcheck disable=SC2046
    exec ray start --block --address="$HEAD" "${cpus[@]}" "${gpus[@]}" \
      --disable-usage-stats $(object_store) "$@"
    ;;
  mlflow)
    shift
    # A login on every request but /health (MLflow's basic-auth app): the users admin (what
    # `hpo` logs in as) and viewer (read-only), made or reset here from mlflow.env. No secret
    # goes on a command line: the store's URI and the passwords reach MLflow in its
    # environment, PostgreSQL's password as libpq's PGPASSWORD (never inside the URI).
    : "${MLFLOW_AUTH_ADMIN_PASSWORD:?is empty: run docker/make-token.sh (it writes mlflow.env)}"
    : "${MLFLOW_VIEWER_PASSWORD:?is empty: run docker/make-token.sh (it writes mlflow.env)}"
    : "${MLFLOW_FLASK_SERVER_SECRET_KEY:?is empty: run docker/make-token.sh}"
    export MLFLOW_AUTH_ADMIN_USERNAME="${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"
    export MLFLOW_VIEWER_USERNAME="${MLFLOW_VIEWER_USERNAME:-viewer}"
    uri="${MLFLOW_BACKEND_STORE_URI:-}"
    auth_uri="sqlite:////mlflow/basic_auth.db"
    if [ -z "$uri" ]; then
      case "${MLFLOW_DB:-sqlite}" in
        sqlite) uri="sqlite:////mlflow/mlflow.db" ;;
        postgres)
          : "${PGPASSWORD:?is empty; run docker/make-token.sh (it writes mlflow.env)}"
          export PGPASSWORD
          pg_host="${POSTGRES_HOST:-postgres}" pg_user="${POSTGRES_USER:-mlflow}"
          pg_db="${POSTGRES_DB:-mlflow}"
          uri="postgresql+psycopg2://${pg_user}@${pg_host}:5432/${pg_db}"
          auth_uri="$uri"  # the users' tables beside MLflow's (their own alembic table)
          # Wait for the database (it has its own service, in the `postgres` profile).
          MLFLOW_BACKEND_STORE_URI="$uri" python - <<'PY'
import os, sys, time
import sqlalchemy
engine = sqlalchemy.create_engine(os.environ["MLFLOW_BACKEND_STORE_URI"])
for _ in range(60):
    try:
        engine.connect().close()
        break
    except sqlalchemy.exc.OperationalError:
        time.sleep(2)
else:
    sys.exit("hpo-entrypoint: PostgreSQL did not answer within 120 s")
PY
          ;;
        *) echo "hpo-entrypoint: MLFLOW_DB must be sqlite or postgres, not ${MLFLOW_DB}" >&2
           exit 2 ;;
      esac
    fi
    export MLFLOW_BACKEND_STORE_URI="$uri"
    mkdir -p /mlflow/artifacts
    # MLflow's auth settings (no secret in them): every user may read every experiment
    # (default_permission READ: what the viewer is for) and change none; only the admin writes.
    # Workspaces on, every user READ on the default one: without them any user, the viewer too,
    # may create experiments, and could take a study's name before `hpo` makes it.
    conf="$(mktemp -d)/basic_auth.ini"
    cat >"$conf" <<INI
[mlflow]
default_permission = READ
grant_default_workspace_access = true
database_uri = $auth_uri
admin_username = $MLFLOW_AUTH_ADMIN_USERNAME
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    export MLFLOW_AUTH_CONFIG_PATH="$conf"
    # The two users, made on the first start and given the passwords of mlflow.env on every
    # start (so `docker/make-token.sh --force` and a restart change them).
    python - <<'PY'
import logging, os
from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

logging.disable(logging.INFO)
store = SqlAlchemyStore()
store.init_db(read_auth_config().database_uri)
env = os.environ
for user, password, admin in (
        (env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"], True),
        (env["MLFLOW_VIEWER_USERNAME"], env["MLFLOW_VIEWER_PASSWORD"], False)):
    if not store.has_user(user, use_primary=True):
        store.create_user(user, password, is_admin=admin)
        print(f"hpo-entrypoint: MLflow user {user} made ({'admin' if admin else 'read-only'})")
    else:
        if not store.authenticate_user(user, password, use_primary=True):
            print(f"hpo-entrypoint: MLflow user {user}: password set from mlflow.env")
        store.update_user(user, password=password, is_admin=admin)
PY
    # The server needs neither password from here on (the admin exists), only the CSRF key.
    unset MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_VIEWER_PASSWORD
    # Clients reach the server as mlflow:5000 inside the network and as localhost or 127.0.0.1
    # through the published port; MLflow's DNS-rebinding guard refuses other Host headers.
    hosts="${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}"
    # One worker (MLflow's default is 4): one driver writes. With more, uvicorn hands its
    # workers a listening socket whose connections lose TCP_NODELAY (uvicorn issue #3149), and
    # each request on a kept-alive connection waits ~40 ms for the client's delayed ACK: 44 ms
    # instead of 3 ms for /health here (benchmarks/results/tracking_server.md).
    exec mlflow server --app-name basic-auth --enable-workspaces --host 0.0.0.0 --port 5000 \
      --workers "${MLFLOW_WORKERS:-1}" --artifacts-destination /mlflow/artifacts \
      --serve-artifacts --allowed-hosts "$hosts" "$@"
    ;;
  hpo)
    shift
    if [ "${1:-}" = search ]; then
      need_token
      wait_for_head
      # A Ray driver needs a Ray node on its own machine; this one offers trials nothing.
      # shellcheck disable=SC2046
      if ! env -u MLFLOW_TRACKING_USERNAME -u MLFLOW_TRACKING_PASSWORD \
          ray start --address="$HEAD" --num-cpus=0 --num-gpus=0 --disable-usage-stats \
          $(object_store) >/tmp/ray-start.log 2>&1; then
        cat /tmp/ray-start.log >&2
        exit 1
      fi
      export RAY_ADDRESS="$HEAD"
    fi
    exec hpo "$@"   # validate, check, train: no cluster needed
    ;;
  *)
    exec "$@"
    ;;
esac
