"""The HTTP application of ``mlci serve``: one FastAPI app, one middleware stack.

* ``POST /predict`` (``predict.py``): msgspec and the fast scorer for a valid body, pydantic's
  422s and the batch limit's 413 for the rest; never pandas (``scoring.py``).
* ``GET /health``, ``/ready``, ``/model``: the process, whether a model is loaded, which one
  (and the latest model that was not installed, and why).
* ``POST /admin/reload``: look at the model source now (``holder.py``), with the bearer token
  of ``MLCI_SERVE_TOKEN``; disabled when that is unset.
* ``GET /metrics`` (``metrics.py``, unless ``--no-metrics``): Prometheus' text format; the live drift
  (``livedrift.py``) is computed when it is scraped.
* The middleware: CORS only when origins are configured, the body limit (``limits.BodyLimit``) in
  front of every route, and outermost ``observe.Observe``: the request id, the request's metrics
  and the access log.
* After every 200 of ``POST /predict`` (``_on_scored``): the prediction metrics, the live window,
  and the prediction log (``predlog.py``, ``--log-predictions``).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run time.

import contextlib
import hmac
import inspect
import os
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Header
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from mlci.serving.holder import ModelHolder
from mlci.serving.limits import BodyLimit
from mlci.serving.observe import Observe
from mlci.serving.predict import add_predict, validation_error
from mlci.serving.schema import Detail, Health, ModelInfo, Ready, ReloadResult

if TYPE_CHECKING:
    from mlci.serving.options import Options

TOKEN_ENV = "MLCI_SERVE_TOKEN"
# FastAPI's own OpenTelemetry hooks look for a configured provider on every request: a tenth of the
# application's time for one record (measured in process). mlci configures none, and the
# requests of the msgspec path were never seen by them (it used to sit in front of FastAPI): off.
NO_TELEMETRY = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
                if "telemetry" in inspect.signature(FastAPI).parameters else {})


def create_app(holder: ModelHolder, opts: "Options") -> FastAPI:
    """The ASGI application to serve the model of ``holder`` (loaded) with ``opts``."""
    metrics = window = plog = None
    first = holder.current
    if opts.metrics:
        from mlci.serving.livedrift import DriftCollector, LiveWindow
        from mlci.serving.metrics import Metrics, ModelCollector

        metrics = Metrics((first.scorer.positive_label, first.scorer.negative_label))
        metrics.add(ModelCollector(holder))
        window = LiveWindow(current=lambda: holder.current, unknown_accepted=opts.unknown_categories == "accept")
        metrics.add(DriftCollector(window))
    if opts.log_predictions is not None:
        from mlci.serving.predlog import PredictionLog

        types = {c.name: c.type for c in first.dataset.features}
        plog = PredictionLog(opts.log_predictions, [(f, types[f]) for f in first.scorer.features],
                             sample=opts.log_sample, max_bytes=opts.log_max_bytes,
                             flush_seconds=opts.log_flush_seconds)
        if metrics is not None:
            from mlci.serving.metrics import PredictionLogCollector

            metrics.add(PredictionLogCollector(plog))
    app = FastAPI(lifespan=_lifespan(holder, plog), title="mlci model server", version="1",
                  description=_description(holder, opts), **NO_TELEMETRY)
    app.state.metrics, app.state.window, app.state.prediction_log = metrics, window, plog
    app.add_exception_handler(RequestValidationError, validation_error)
    add_predict(app, holder, opts, _on_scored(metrics, window, plog, opts.access_log))
    _add_status(app, holder)
    if metrics is not None:
        _add_metrics(app, metrics)
    _add_reload(app, holder, os.environ.get(TOKEN_ENV) or None)
    if opts.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(opts.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization", "X-Request-ID"],
                           expose_headers=["X-Request-ID"])  # a browser's script may read the id
    app.add_middleware(BodyLimit, max_bytes=opts.max_body_bytes)  # before CORS
    # Outermost: its request id and status cover every answer, the body limit's 413s included.
    app.add_middleware(Observe, metrics=metrics, access_log=opts.access_log)
    return app


def _lifespan(holder: ModelHolder, plog=None):
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        holder.start()
        if plog is not None:
            plog.start()
        try:
            yield
        finally:
            holder.stop()
            if plog is not None:
                plog.close()  # what is queued is written before the process ends

    return lifespan


def _on_scored(metrics, window, plog, access_log: bool):
    """What happens after each 200 of POST /predict, on the event loop: counting and appending only
    (the drift is computed when scraped, the Parquet files written by the log's own thread)."""
    if metrics is None and plog is None and not access_log:
        return None  # the request path as it was: not even a call

    def scored(loaded, records, encoded, probabilities, labels, scope):
        scope["mlci.records"] = len(records)
        if metrics is not None:
            metrics.scored(probabilities, labels)
            window.add(loaded, records, encoded, probabilities)
        if plog is not None:
            plog.add(scope.get("mlci.request_id", ""), loaded.info.get("model_sha256") or "", records,
                     probabilities, labels)

    return scored


def _add_metrics(app: FastAPI, metrics) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST

    @app.get("/metrics", summary="The server's metrics in Prometheus' text format",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics_endpoint():
        import anyio

        # In a worker thread: the live drift is computed now (a few ms on a full window of this data's
        # 13 features, more with hundreds), and the event loop keeps answering requests meanwhile.
        body = await anyio.to_thread.run_sync(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _description(holder: ModelHolder, opts: "Options") -> str:
    unknown = "rejected (422)" if opts.unknown_categories == "reject" else "accepted and scored as missing"
    return (f"Scores raw records of dataset {holder.current.dataset.name!r} with the model from "
            f"{holder.source.describe}. Unknown categories are {unknown}; at most {opts.max_batch} records "
            f"and {opts.max_body_bytes} bytes per request (413 beyond).")


def _add_status(app: FastAPI, holder: ModelHolder) -> None:
    @app.get("/health", response_model=Health, summary="The process is up")
    async def health():
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/ready", response_model=Ready, responses={503: {"model": Ready}}, summary="A model is loaded")
    async def ready():
        loaded = holder.current
        if loaded is None:
            return JSONResponse({"ready": False, "version": None}, status_code=503)
        return {"ready": True, "version": loaded.info["version"]}

    @app.get("/model", response_model=ModelInfo, summary="The model answering requests")
    async def model():
        loaded = holder.current
        return {**loaded.info, "last_check": holder.last_check, "last_error": holder.last_error}


def _add_reload(app: FastAPI, holder: ModelHolder, token: str | None) -> None:
    auth_responses = {401: {"model": Detail, "description": "No bearer token."},
                      403: {"model": Detail, "description": "Wrong token, or reload disabled (no MLCI_SERVE_TOKEN)."}}

    @app.post("/admin/reload", response_model=ReloadResult, responses=auth_responses,
              summary="Look at the model source now (Authorization: Bearer $MLCI_SERVE_TOKEN)")
    async def reload(authorization: Annotated[str | None, Header()] = None):
        import anyio

        if token is None:
            return JSONResponse({"detail": f"admin reload is disabled ({TOKEN_ENV} is not set)"}, status_code=403)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return JSONResponse({"detail": "bearer token required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return JSONResponse({"detail": "wrong token"}, status_code=403)
        # Loading takes seconds: off the event loop, so requests keep being answered meanwhile.
        return await anyio.to_thread.run_sync(lambda: holder.check(force=True))
