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
# Behind a TLS-intercepting proxy, pass its CA bundle as a BuildKit secret (in no layer):
#   docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t adult-model .
# Then what a running pipeline never reads goes: pip and setuptools, the packages' test suites,
# build-only files (C/C++ and Cython sources and headers, type stubs, static libraries), and the
# symbol tables of compiled modules (strip --strip-unneeded). Not of the libraries auditwheel vendored into
# `*.libs/`: patchelf rewrote those, and strip breaks them (OpenBLAS would not load). Every shared
# object is then loaded once, so a broken one fails the build, not a run.
# Bytecode is compiled here once: the image runs with a read-only filesystem and
# PYTHONDONTWRITEBYTECODE, so it could not be cached later.
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
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
# The official base ships its standard library without bytecode, and this user could not write
# any: compiled here, or every start would compile what it imports from source.
RUN python -m compileall -q -j 0 -x '/(site-packages|dist-packages|test|idlelib|tkinter|turtledemo|lib2to3)/' \
      "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
# The venv has no pip: the wheel stage's pip installs mlci into it.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/tmp/wheels \
    --mount=type=bind,from=wheel,source=/opt/build,target=/opt/build \
    /opt/build/bin/python -m pip --python /opt/venv/bin/python install --no-deps --no-index --no-compile \
      /tmp/wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3*/site-packages/mlci
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["mlci"]
CMD ["run"]

# ---- serve: the model server. The same layers as the pipeline image; only what runs differs:
#   docker build --target serve -t adult-model-serve .
#   docker run -d -p 127.0.0.1:8000:8000 -v mlci-mlflow:/data/mlflow adult-model-serve     # the champion
#   docker run -d -p 127.0.0.1:8000:8000 -v "$PWD/models:/models:ro" -e MLCI_SERVE_MODEL_DIR=/models \
#     adult-model-serve                                                                      # a model directory
FROM pipeline AS serve
# Inside its own network namespace the server must listen on all of the container's addresses
# for a published port to reach it; publish it on the host's loopback (`-p 127.0.0.1:...`).
ENV MLCI_SERVE_HOST=0.0.0.0 \
    MLCI_SERVE_PORT=8000
EXPOSE 8000
# Healthy = a model is loaded and answering (/ready), not merely a process that is up.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]
CMD ["serve"]
