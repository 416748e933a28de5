#!/usr/bin/env bash
# The image's roles. The first argument picks one; anything else runs as given.
#
#   ray-head            the Ray head: GCS and the dashboard; no trials unless RAY_HEAD_CPUS > 0
#   ray-worker          a Ray worker node joining RAY_HEAD_ADDRESS; trials run here
#   mlflow              the MLflow tracking server; artifacts served over HTTP from /mlflow
#   hpo ARGS...         runs `hpo ARGS...`; for `hpo search` it first joins the cluster as a
#                       node with no CPUs or GPUs (a Ray driver needs a local node; no trial
#                       lands on it, data reach workers through Ray's object store), and is the
#                       only process that talks to MLflow
#
# Settings (environment): RAY_AUTH_MODE (default token) and RAY_AUTH_TOKEN (from .ray.env, made
# by docker/make-token.sh); RAY_HEAD_ADDRESS (default ray-head:6379); RAY_HEAD_CPUS (default 0);
# RAY_WORKER_CPUS, RAY_WORKER_GPUS (default: detected); RAY_OBJECT_STORE_BYTES (default: Ray's);
# MLFLOW_DB (sqlite | postgres), MLFLOW_BACKEND_STORE_URI (overrides MLFLOW_DB),
# MLFLOW_ALLOWED_HOSTS; for postgres: POSTGRES_HOST, POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD.
set -euo pipefail

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
HEAD="${RAY_HEAD_ADDRESS:-ray-head:6379}"

need_token() {
  if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    echo "hpo-entrypoint: RAY_AUTH_MODE=token but RAY_AUTH_TOKEN is empty; run" \
         "docker/make-token.sh to write .ray.env, then start again" >&2
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
    uri="${MLFLOW_BACKEND_STORE_URI:-}"
    if [ -z "$uri" ]; then
      case "${MLFLOW_DB:-sqlite}" in
        sqlite) uri="sqlite:////mlflow/mlflow.db" ;;
        postgres)
          : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is empty; run docker/make-token.sh}"
          pg_host="${POSTGRES_HOST:-postgres}" pg_user="${POSTGRES_USER:-mlflow}"
          pg_db="${POSTGRES_DB:-mlflow}"
          uri="postgresql+psycopg2://${pg_user}:${POSTGRES_PASSWORD}@${pg_host}:5432/${pg_db}"
          # Wait for the database (it has its own service, in the `postgres` profile).
          python - "$uri" <<'PY'
import sys, time
import sqlalchemy
engine = sqlalchemy.create_engine(sys.argv[1])
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
    mkdir -p /mlflow/artifacts
    # Clients reach the server as mlflow:5000 inside the network and as localhost or 127.0.0.1
    # through the published port; MLflow's DNS-rebinding guard refuses other Host headers.
    hosts="${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}"
    exec mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri "$uri" \
      --artifacts-destination /mlflow/artifacts --serve-artifacts --allowed-hosts "$hosts" "$@"
    ;;
  hpo)
    shift
    if [ "${1:-}" = search ]; then
      need_token
      wait_for_head
      # A Ray driver needs a Ray node on its own machine; this one offers trials nothing.
      # shellcheck disable=SC2046
      if ! ray start --address="$HEAD" --num-cpus=0 --num-gpus=0 --disable-usage-stats \
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
