#!/usr/bin/env bash
# Writes the cluster's secrets to an env file that git ignores (default: .ray.env at the
# repository root, mode 600): the Ray authentication token and the PostgreSQL password.
# docker-compose passes the file to the services at run time; no secret is in the image or in a
# study file. Re-running keeps an existing file unless --force is given (a new token means every
# node and driver must restart with it).
#   usage: docker/make-token.sh [--force] [PATH]
set -euo pipefail
force=0
if [ "${1:-}" = --force ]; then force=1; shift; fi
root="$(cd "$(dirname "$0")/.." && pwd)"
file="${1:-$root/.ray.env}"
if [ -e "$file" ] && [ "$force" = 0 ]; then
  echo "$file exists; keeping it (pass --force to replace its secrets)" >&2
  exit 0
fi
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }  # $1 random bytes as hex
umask 077
tmp="$(mktemp "$file.XXXXXX")"
cat >"$tmp" <<ENV
# Secrets of the hpo docker-compose cluster. Never commit this file (.gitignore lists it).
RAY_AUTH_TOKEN=$(hex 32)
POSTGRES_PASSWORD=$(hex 24)
ENV
mv "$tmp" "$file"
echo "wrote $file (Ray token and PostgreSQL password)" >&2
