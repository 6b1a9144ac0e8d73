"""The HTTP application of ``mlci serve``: one FastAPI app, one middleware stack.

* ``POST /predict`` (``predict.py``): msgspec and the fast scorer for a valid body, pydantic's
  422s and the batch limit's 413 for the rest; never pandas (``scoring.py``).
* ``GET /health``, ``/ready``, ``/model``: the process, whether a model is loaded, which one
  (and the latest model that was not installed, and why).
* ``POST /admin/reload``: look at the model source now (``holder.py``), with the bearer token
  of ``MLCI_SERVE_TOKEN``; disabled when that is unset.
* The middleware: CORS only when origins are configured, and the body limit
  (``limits.BodyLimit``) in front of every route.
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
    app = FastAPI(lifespan=_lifespan(holder), title="mlci model server", version="1",
                  description=_description(holder, opts), **NO_TELEMETRY)
    app.add_exception_handler(RequestValidationError, validation_error)
    add_predict(app, holder, opts)
    _add_status(app, holder)
    _add_reload(app, holder, os.environ.get(TOKEN_ENV) or None)
    if opts.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(opts.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])
    app.add_middleware(BodyLimit, max_bytes=opts.max_body_bytes)  # added last: the outer one, before CORS
    return app


def _lifespan(holder: ModelHolder):
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    return lifespan


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
