# mlci: one image that runs every stage (`docker run adult-model run`), and keeps the
# tutorial's workflow (`docker run -d --name model adult-model idle` + `docker container exec`).
# `docker build -t adult-model .` builds it (the last stage, `pipeline`); `--target serve` builds the
# model server. No BuildKit feature is used: Docker's legacy builder builds it as well.
#
# Base: the official python:3.11-slim. For reproducible production builds pin its digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> -t adult-model .
# (find it with `docker buildx imagetools inspect python:3.11-slim`).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- deps: the third-party packages, in a virtualenv (rebuilt only when the lock changes) ----
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# binutils for `strip`, in this stage only; libgomp1 (LightGBM's) to load every shared object
# after stripping. Not version-pinned: see the pipeline stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
# MLCI_EXTRAS=best adds the best profile's CatBoost, XGBoost and Optuna (about +300 MB; README,
# "The best profile"): docker build --build-arg MLCI_EXTRAS=best ...
ARG MLCI_EXTRAS=""
COPY requirements-runtime.lock requirements-best.lock /build/
# Behind a TLS-intercepting proxy, pass the proxy's CA certificate (PEM text) as a build argument:
#   docker build --build-arg PIP_CA="$(cat /path/to/proxy-ca.crt)" -t adult-model .
# pip trusts it for this build only; it is written to a temporary file and removed in the same step,
# so it is in no layer, and this stage's arguments are not in the final image's history.
ARG PIP_CA=""
# Then what a running pipeline never reads goes: pip and setuptools, the packages' test suites,
# build-only files (C/C++ and Cython sources and headers, type stubs, static libraries), and the
# symbol tables of compiled modules (strip --strip-unneeded). Not of the libraries auditwheel vendored into
# `*.libs/`: patchelf rewrote those, and strip breaks them (OpenBLAS would not load). Every shared
# object is then loaded once, so a broken one fails the build, not a run.
# Bytecode is compiled here once: the image runs with a read-only filesystem and
# PYTHONDONTWRITEBYTECODE, so it could not be cached later.
RUN if [ -n "$PIP_CA" ]; then printf '%s\n' "$PIP_CA" > /tmp/pip-ca.pem && export PIP_CERT=/tmp/pip-ca.pem; fi \
 && case "$MLCI_EXTRAS" in \
      "") lock=/build/requirements-runtime.lock ;; \
      best) lock=/build/requirements-best.lock ;; \
      *) echo "MLCI_EXTRAS: unknown extra '$MLCI_EXTRAS' (known: best)" >&2; exit 2 ;; \
    esac \
 && /opt/venv/bin/pip install --no-compile -r "$lock" \
 && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*/*' -exec rm -rf {} + \
 && find /opt/venv/lib -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' \
      -o -name '*.hpp' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.a' \) -delete \
 && find /opt/venv/lib -type f \( -name '*.so' -o -name '*.so.*' \) ! -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && find /opt/venv/lib -type f \( -name '*.so' -o -name '*.so.*' \) -exec /opt/venv/bin/python -c \
      'import ctypes, os, sys; [ctypes.CDLL(p) for p in sys.argv[1:]]; os._exit(0)' {} + \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib \
 && rm -f /tmp/pip-ca.pem

# ---- wheel: mlci itself (a code-only change rebuilds from here, in seconds) ----------------
FROM deps AS wheel
ARG PIP_CA=""
RUN if [ -n "$PIP_CA" ]; then printf '%s\n' "$PIP_CA" > /tmp/pip-ca.pem && export PIP_CERT=/tmp/pip-ca.pem; fi \
 && python -m venv /opt/build && /opt/build/bin/pip install --no-compile "setuptools>=77" wheel \
 && rm -f /tmp/pip-ca.pem
COPY pyproject.toml README.md LICENSE /build/
COPY src /build/src
# The package's copy of the bundled data is a link to data/raw/ (one file in the repository).
COPY data/raw/ /build/data/raw/
# Installed into a staging prefix laid out like the venv: the final image copies only mlci's own files
# over the (cached) dependency layer. The venv has no pip: the build venv's pip installs into it.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /wheels /build \
 && /opt/build/bin/python -m pip --python /opt/venv/bin/python install --no-deps --no-index --no-compile \
      --prefix /staging /wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /staging/lib

# ---- runtime: what both final images share -------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
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
# The official base ships its standard library without bytecode, and this user could not write
# any: compiled here, or every start would compile what it imports from source.
RUN python -m compileall -q -j 0 -x '/(site-packages|dist-packages|test|idlelib|tkinter|turtledemo|lib2to3)/' \
      "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
COPY --from=wheel /staging/ /opt/venv/
# Where the image came from (the container test checks them): docker build --build-arg
# MLCI_REVISION="$(git rev-parse HEAD)" ... (tasks.py and the CI jobs pass it).
ARG MLCI_VERSION=0.1.0
ARG MLCI_REVISION=unknown
LABEL org.opencontainers.image.title="mlci" \
      org.opencontainers.image.description="Preprocess, train, gate, test, track and serve a tabular binary classifier" \
      org.opencontainers.image.source="https://github.com/mlci/mlci" \
      org.opencontainers.image.version="${MLCI_VERSION}" \
      org.opencontainers.image.revision="${MLCI_REVISION}" \
      org.opencontainers.image.licenses="MIT"
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["mlci"]

# ---- serve: the model server. The same layers as the pipeline image; only what runs differs:
#   docker build --target serve -t adult-model-serve .
#   docker run -d -p 127.0.0.1:8000:8000 -v mlci-mlflow:/data/mlflow adult-model-serve     # the champion
#   docker run -d -p 127.0.0.1:8000:8000 -v "$PWD/models:/models:ro" -e MLCI_SERVE_MODEL_DIR=/models \
#     adult-model-serve                                                                      # a model directory
FROM runtime AS serve
# Inside its own network namespace the server must listen on all of the container's addresses
# for a published port to reach it; publish it on the host's loopback (`-p 127.0.0.1:...`).
ENV MLCI_SERVE_HOST=0.0.0.0 \
    MLCI_SERVE_PORT=8000
EXPOSE 8000
# Healthy = a model is loaded and answering (/ready), not merely a process that is up.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]
CMD ["serve"]

# ---- pipeline: the pipeline image, the default target (last, so a plain `docker build` makes it) ----
FROM runtime AS pipeline
CMD ["run"]
