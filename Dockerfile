# One image for every part of the cluster: the Ray head, Ray workers, the MLflow server and the
# `hpo` driver (docker/entrypoint.sh picks the role). CPU PyTorch by default.
#
# GPU workers: build with CUDA wheels of the same torch version, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t hpo:cuda .
# (the CUDA runtime comes inside those wheels; the host needs the NVIDIA driver and the NVIDIA
# container toolkit). BASE_IMAGE swaps the base, for example for a CUDA image that carries
# Python 3.11 and pip. An empty TORCH_INDEX_URL installs torch from the default index only.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    MPLBACKEND=Agg

# The dependencies first, in their own layer: editing the code does not reinstall them.
# An unreachable torch index is skipped (pip would retry it for every package, for many
# minutes) with a note: torch then comes from pip's configured indexes and find-links.
COPY requirements.lock docker/requirements-cluster.lock /tmp/pins/
RUN index="$TORCH_INDEX_URL"; \
    if [ -n "$index" ] && ! python -c "import sys, urllib.request; \
urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=15)" "$index" 2>/dev/null; \
    then echo "note: torch index $index unreachable; using pip's configured indexes" >&2; \
         index=""; fi; \
    pip install ${index:+--extra-index-url "$index"} \
        -r /tmp/pins/requirements.lock -r /tmp/pins/requirements-cluster.lock \
    && python -c "import torch, ray, mlflow, optuna; print('torch', torch.__version__)"

COPY . /opt/hpo
RUN pip install --no-deps /opt/hpo \
    && install -m 0755 /opt/hpo/docker/entrypoint.sh /usr/local/bin/hpo-entrypoint \
    && useradd --create-home --uid 1000 hpo \
    && mkdir -p /work/hpo_runs /mlflow \
    && cp -r /opt/hpo/search_spaces /work/search_spaces \
    && chown -R hpo:hpo /work /mlflow

# Nothing here runs as root. No secret is baked in: the Ray token and the MLflow logins arrive
# at run time through the environment, each service's own (docker-compose's env_file, from the
# folder docker/make-token.sh writes).
USER hpo
WORKDIR /work
ENTRYPOINT ["hpo-entrypoint"]
CMD ["hpo", "--help"]
