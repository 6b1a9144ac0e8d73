# mlci: one image that runs every stage (`docker run adult-model run`), and keeps the
# tutorial's workflow (`docker run -d --name model adult-model idle` + `docker container exec`).
#
# Base: the official python:3.11-slim. For reproducible production builds pin its digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> -t adult-model .
# (find it with `docker buildx imagetools inspect python:3.11-slim`).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: wheels into a virtualenv --------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements-runtime.lock /build/
# Dependencies first: a code-only change reuses this layer. Behind a TLS-intercepting proxy,
# pass its CA bundle as a BuildKit secret (never stored in any layer):
#   docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t adult-model .
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/venv/bin/pip install --no-compile -r /build/requirements-runtime.lock
COPY pyproject.toml README.md LICENSE /build/
COPY src /build/src
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/venv/bin/pip install --no-deps --no-compile /build \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && find /opt/venv -name '__pycache__' -path '*/tests/*' -prune -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3*/site-packages/pip* /opt/venv/bin/pip*

# ---- pipeline: the final image ------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS pipeline
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAW_DATA_DIR=/data/raw \
    RAW_DATA_FILE=adult.data \
    PROCESSED_DATA_DIR=/data/processed \
    MODEL_DIR=/data/model \
    RESULTS_DIR=/data/results \
    MLCI_PARAMS=/app/params.yaml \
    MLCI_STATE_DIR=/data/state \
    MLCI_LOCK_FILE=/data/state/mlci.lock \
    MLFLOW_TRACKING_URI=sqlite:////data/mlflow/mlflow.db \
    XDG_CACHE_HOME=/data/state/cache \
    HOME=/data/state
# LightGBM needs the OpenMP runtime. Not version-pinned: the slim base moves between Debian
# releases, and the package comes from whatever release the pinned base digest is.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 mlci && useradd --uid 10001 --gid mlci --no-create-home --shell /usr/sbin/nologin mlci \
 && mkdir -p /data/processed /data/model /data/results /data/state /data/mlflow \
 && chmod 1777 /data/processed /data/model /data/results /data/state /data/mlflow
COPY --from=builder /opt/venv /opt/venv
COPY data/raw/ /data/raw/
COPY params.yaml /app/params.yaml
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["mlci"]
CMD ["run"]

# ---- serve: the model server (issue 6) goes here, as `FROM pipeline AS serve` with its own
# CMD and HEALTHCHECK, so `docker build --target serve` shares every layer above.
