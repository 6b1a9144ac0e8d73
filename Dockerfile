# mlci: one image that runs every stage (`docker run adult-model run`), and keeps the
# tutorial's workflow (`docker run -d --name model adult-model idle` + `docker container exec`).
#
# Base: the official python:3.11-slim. For reproducible production builds pin its digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> -t adult-model .
# (find it with `docker buildx imagetools inspect python:3.11-slim`).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- deps: the third-party packages, in a virtualenv (rebuilt only when the lock changes) ----
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements-runtime.lock /build/
# Behind a TLS-intercepting proxy, pass its CA bundle as a BuildKit secret (in no layer):
#   docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t adult-model .
# Bytecode is compiled here once: the image runs with a read-only filesystem and
# PYTHONDONTWRITEBYTECODE, so it could not be cached later. Test suites are not shipped.
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/venv/bin/pip install --no-compile -r /build/requirements-runtime.lock \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*/*' -exec rm -rf {} + \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib

# ---- wheel: mlci itself (a code-only change rebuilds from here, in seconds) ----------------
FROM deps AS wheel
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && python -m venv /opt/build && /opt/build/bin/pip install --no-compile "setuptools>=77" wheel
COPY pyproject.toml README.md LICENSE /build/
COPY src /build/src
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /wheels /build

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
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 mlci && useradd --uid 10001 --gid mlci --no-create-home --shell /usr/sbin/nologin mlci \
 && mkdir -p /data/processed /data/model /data/results /data/state /data/mlflow \
 && chmod 1777 /data/processed /data/model /data/results /data/state /data/mlflow
COPY --from=deps /opt/venv /opt/venv
COPY data/raw/ /data/raw/
COPY params.yaml /app/params.yaml
RUN --mount=type=bind,from=wheel,source=/wheels,target=/tmp/wheels \
    /opt/venv/bin/pip install --no-deps --no-index --no-compile /tmp/wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3*/site-packages/mlci \
 && /opt/venv/bin/python -m pip uninstall -y -q pip
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["mlci"]
CMD ["run"]

# ---- serve: the model server (issue 6) goes here, as `FROM pipeline AS serve` with its own
# CMD and HEALTHCHECK, so `docker build --target serve` shares every layer above.
