#!/usr/bin/env bash
# Writes the cluster's secrets into a folder that git ignores (default: .hpo-secrets at the
# repository root, mode 700, its files mode 600), one env file per service, so that each
# service gets only the secrets it needs (docker-compose.yml names them in `env_file`):
#
#   ray.env       RAY_AUTH_TOKEN                            ray-head, ray-worker, hpo
#   hpo.env       MLFLOW_TRACKING_USERNAME/PASSWORD (admin) hpo (the driver writes to MLflow)
#   mlflow.env    the MLflow admin's and viewer's passwords, mlflow (the server)
#                 the server's CSRF key, PGPASSWORD
#   postgres.env  POSTGRES_PASSWORD                         postgres (optional profile)
#   viewer.env    MLFLOW_TRACKING_USERNAME/PASSWORD (viewer) no service: hand it to viewers
#
# No secret is in the image or in a study file. Re-running keeps the secrets already there
# (from the folder, or from the .ray.env of earlier versions: its Ray token and PostgreSQL
# password) and adds the missing ones; --force makes all of them new (then restart every
# service: `docker-compose up -d --force-recreate`; the mlflow service sets the new MLflow
# passwords when it starts, but a PostgreSQL volume keeps the password it was made with).
#   usage: docker/make-token.sh [--force] [FOLDER]     (FOLDER default: $HPO_SECRETS, else
#                                                       .hpo-secrets)
set -euo pipefail
force=0
if [ "${1:-}" = --force ]; then force=1; shift; fi
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-${HPO_SECRETS:-$root/.hpo-secrets}}"
legacy="$root/.ray.env"  # the single env file of earlier versions

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
printf '# Secrets: never commit them.\n*\n' >"$dir/.gitignore"

hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }  # $1 random bytes as hex

# secret FILE NAME BYTES [LEGACY_NAME]: NAME's value in FILE (else in the legacy .ray.env),
# unless --force; else a new one of BYTES random bytes.
secret() {
  local value=""
  if [ "$force" = 0 ]; then
    if [ -f "$dir/$1" ]; then value="$(sed -n "s/^$2=//p" "$dir/$1" | head -n 1)"; fi
    if [ -z "$value" ] && [ -n "${4:-}" ] && [ -f "$legacy" ]; then
      value="$(sed -n "s/^$4=//p" "$legacy" | head -n 1)"
    fi
  fi
  if [ -z "$value" ]; then value="$(hex "$3")"; fi
  printf '%s' "$value"
}

ray_token="$(secret ray.env RAY_AUTH_TOKEN 32 RAY_AUTH_TOKEN)"
pg_password="$(secret postgres.env POSTGRES_PASSWORD 24 POSTGRES_PASSWORD)"
admin_password="$(secret mlflow.env MLFLOW_AUTH_ADMIN_PASSWORD 24)"
viewer_password="$(secret mlflow.env MLFLOW_VIEWER_PASSWORD 24)"
csrf_key="$(secret mlflow.env MLFLOW_FLASK_SERVER_SECRET_KEY 32)"
write() {  # write FILE: stdin into FILE, whole or not at all
  local tmp
  tmp="$(mktemp "$dir/.$1.XXXXXX")"
  cat >"$tmp"
  mv "$tmp" "$dir/$1"
}

write ray.env <<ENV
# Ray's token: ray-head, ray-worker and hpo (docker/make-token.sh wrote it; never commit it).
RAY_AUTH_TOKEN=$ray_token
ENV
write hpo.env <<ENV
# The hpo driver's MLflow login (the admin): it creates experiments and writes runs.
MLFLOW_TRACKING_USERNAME=admin
MLFLOW_TRACKING_PASSWORD=$admin_password
ENV
write mlflow.env <<ENV
# The MLflow server's secrets. It makes (or resets) the users admin and viewer with these
# passwords when it starts; the key protects its sign-up form against CSRF.
MLFLOW_AUTH_ADMIN_USERNAME=admin
MLFLOW_AUTH_ADMIN_PASSWORD=$admin_password
MLFLOW_VIEWER_USERNAME=viewer
MLFLOW_VIEWER_PASSWORD=$viewer_password
MLFLOW_FLASK_SERVER_SECRET_KEY=$csrf_key
# The PostgreSQL password (MLFLOW_DB=postgres only), read by libpq from the environment.
PGPASSWORD=$pg_password
ENV
write postgres.env <<ENV
# The PostgreSQL server's password (the optional \`postgres\` profile).
POSTGRES_PASSWORD=$pg_password
ENV
write viewer.env <<ENV
# A read-only MLflow login, for people who look at the studies: in the browser's login prompt
# at the MLflow URL, or for MLflow's Python client: set -a; . viewer.env; set +a
MLFLOW_TRACKING_USERNAME=viewer
MLFLOW_TRACKING_PASSWORD=$viewer_password
ENV
if [ "$force" = 1 ]; then said="all secrets new"; else said="secrets already there kept"; fi
echo "wrote $dir: ray.env hpo.env mlflow.env postgres.env viewer.env ($said)" >&2
