"""``mlci serve``: the model behind HTTP, loaded safely and swapped without a dropped request.

* Where the model comes from: the registry's champion alias (default) or a
  model directory (``--model-dir``). Either way the pickle's bytes are checked
  against the sha256 recorded at training time before they are unpickled
  (a pickle is code).
* Hot swap: a poller re-reads the source every ``poll`` seconds (and
  ``POST /admin/reload`` asks it to at once). A new model is fetched,
  verified, loaded and smoke-predicted off the request path, then installed by
  one reference assignment: a request in flight keeps the model it started
  with. A model that fails any step is not installed; the old one keeps
  serving, and the failure is logged and shown under ``last_error`` in
  ``GET /model``.
* The request path: a valid ``POST /predict`` is decoded and validated by msgspec and scored in
  front of the FastAPI application (``FastPredict``); anything else, invalid bodies included, is
  FastAPI's, whose pydantic validation makes the 422s. It never touches pandas: see ``scoring.py``.

FastAPI, uvicorn and MLflow are imported only by this command.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run time,
# and the request model is a local variable of ``create_app`` (one per served dataset).

import contextlib
import hmac
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from mlci.timestamps import iso_from_ms, utc_now
from mlci.errors import SERVE, MlciError, PrerequisiteError, UsageError
from mlci.data.dataset import BUILTIN_DATASETS, Column, DatasetDef, load_dataset_def
from mlci.serving.schema import record_model, request_decoder, response_model, schema_key
from mlci.serving.scoring import FastScorer, UnsupportedModel, smoke_records

log = logging.getLogger("mlci.serve")
TOKEN_ENV = "MLCI_SERVE_TOKEN"
MAX_ERRORS = 100  # validation errors listed in one 422


class ServeError(MlciError):
    """The server cannot start: the address is in use or not allowed (exit 9)."""

    exit_code = SERVE


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 8000
    poll: float = 30.0
    unknown_categories: str = "reject"
    max_batch: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    access_log: bool = False


@dataclass(frozen=True)
class Loaded:
    """One loaded model and everything ``GET /model`` says about it. Never mutated once installed."""

    ident: str  # what the source calls it: a version, or the model file's sha256
    scorer: FastScorer
    dataset: DatasetDef
    key: tuple
    info: dict


@dataclass
class Candidate:
    ident: str
    pipeline: Any
    card: dict
    info: dict = field(default_factory=dict)


# -- where models come from ---------------------------------------------------------------------


class RegistrySource:
    """The registered model's alias (``champion``) in the MLflow registry."""

    def __init__(self, uri: str, tracking: dict):
        from mlci.tracking.registry import Registry

        self.registry = Registry(uri, tracking)
        self.name, self.alias = self.registry.name, self.registry.alias
        self.describe = f"{self.name}@{self.alias} ({uri})"
        self.nothing_hint = "no champion yet: run `mlci run` or `mlci promote`, or pass --model-dir"

    def current(self) -> str | None:
        mv = self.registry.champion()
        return str(mv.version) if mv else None

    def load(self, version: str) -> Candidate:
        from mlci.modeling.artifact import unpickle_verified
        from mlci.tracking.store import T, TrackingError

        reg = self.registry
        mv = reg.version(version)
        expected = mv.tags.get(T + "model_sha256")
        # A directory of our own, removed once loaded: a long-running server swaps many times.
        with tempfile.TemporaryDirectory(prefix="mlci-serve-") as tmp:
            path = reg.fetch(version, Path(tmp))  # raises unless the downloaded bytes match the registry's sha256
            pipeline = unpickle_verified(path.read_bytes(), expected, lambda actual: TrackingError(
                f"{self.name} v{version}: model artifact sha256 {actual} does not match the registry's {expected}"))
            card_path = path.with_name("model.json")
            card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        run = reg.client.get_run(mv.run_id) if mv.run_id else None
        if not card.get("dataset") and run is not None and run.data.params.get("dataset") in BUILTIN_DATASETS:
            # Registered before versions carried their card: the run names its (built-in) dataset.
            ds = load_dataset_def(run.data.params["dataset"])
            card = {"dataset": ds.model_dump(mode="json"), "positive_label": ds.positive_label}
        metrics = {k: v for k, v in (run.data.metrics.items() if run else ())
                   if k.startswith(("validation_", "test_"))}
        tags = run.data.tags if run else {}
        info = {
            "name": self.name,
            "version": str(version),
            "alias": self.alias,
            "source": "registry",
            "metrics": dict(sorted(metrics.items())),
            "trained_at": card.get("trained_at") or iso_from_ms(mv.creation_timestamp),
            "git_commit": tags.get(T + "git_commit"),
            "data_sha256": mv.tags.get(T + "data_sha256") or card.get("data_sha256"),
            "model_sha256": expected,
            "run_id": mv.run_id,
        }
        return Candidate(str(version), pipeline, card, info)


class DirSource:
    """A model directory (``model.pkl`` + ``model.json``), as ``mlci train`` writes it."""

    def __init__(self, model_dir: Path, results_dir: Path | None = None):
        self.model_dir = model_dir
        self.results_dir = results_dir
        self.name, self.alias = str(model_dir), None
        self.describe = str(model_dir)
        self.nothing_hint = "no model.json there: run `mlci train` first"

    def current(self) -> str | None:
        from mlci.fileio import read_json
        from mlci.config.settings import MODEL_CARD

        try:
            return read_json(self.model_dir / MODEL_CARD).get("sha256")
        except (OSError, ValueError):
            return None

    def load(self, ident: str) -> Candidate:
        from mlci.config.settings import TRAIN_METADATA
        from mlci.modeling.artifact import load_model

        pipeline, card = load_model(self.model_dir)  # checks model.pkl against model.json's sha256
        metrics: dict = {}
        meta = self.results_dir / TRAIN_METADATA if self.results_dir else None
        if meta and meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                data = {}
            if data.get("model_sha256") == card.get("sha256"):  # the metrics of this very model only
                metrics = {k: v for k, v in data.items() if k.startswith("validation_") and isinstance(v, (int, float))}
        info = {
            "name": str(self.model_dir),
            "version": str(card.get("sha256", "")).removeprefix("sha256:")[:12],
            "alias": None,
            "source": "directory",
            "metrics": dict(sorted(metrics.items())),
            "trained_at": card.get("trained_at"),
            "git_commit": card.get("git_commit"),
            "data_sha256": card.get("data_sha256"),
            "model_sha256": card.get("sha256"),
            "run_id": None,
        }
        return Candidate(card.get("sha256", ident), pipeline, card, info)


# -- loading, checking, swapping ------------------------------------------------------------------


def prepare(c: Candidate) -> Loaded:
    """Everything that can fail, done before the model is installed: fast path, schema, smoke test."""
    ds = _dataset_of(c)
    positive = c.card.get("positive_label") or ds.positive_label
    try:
        scorer = FastScorer(c.pipeline, positive)
    except UnsupportedModel as e:
        raise ValueError(f"cannot serve this model: {e}") from None
    if set(scorer.features) != {f.name for f in ds.features}:
        raise ValueError(f"the model's inputs {scorer.features} are not the dataset's features")
    ranges = {f.name: (f.min, f.max) for f in ds.features}
    scorer.verify(c.pipeline, smoke_records(scorer.features, scorer.categories, ranges))
    info = dict(c.info, loaded_at=utc_now('milliseconds'))
    return Loaded(c.ident, scorer, ds, schema_key(ds, scorer.categories), info)


def _dataset_of(c: Candidate) -> DatasetDef:
    """The declared schema from the model card; for a version registered without one, what the model knows."""
    if c.card.get("dataset"):
        return DatasetDef.model_validate(c.card["dataset"])
    names = list(getattr(c.pipeline, "feature_names_in_", []))
    classes = [str(x) for x in c.pipeline.classes_]
    if not names or len(classes) != 2:
        raise ValueError("no model card and the model does not name its inputs; cannot build a request schema")
    scorer = FastScorer(c.pipeline, classes[1])
    cols = [Column(name=n, type="categorical" if n in scorer.categories else "numeric") for n in names]
    return DatasetDef(name="model", columns=[*cols, Column(name="__label__", type="label")], target="__label__",
                      positive_label=classes[1], negative_label=classes[0])


class ModelHolder:
    """The model in service, and the only place that replaces it."""

    def __init__(self, source, poll: float):
        self.source = source
        self.poll = poll
        self.current: Loaded | None = None  # read by requests without a lock: one reference
        self.last_error: dict | None = None
        self.last_check: str | None = None
        # The ident that failed: not retried until the source moves, /admin/reload asks, or retry_after
        # seconds passed (a download can fail for a passing reason; a corrupt version fails again, logged).
        self._failed: str | None = None
        self._failed_at = 0.0
        self.retry_after = max(300.0, 10 * poll)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load_initial(self) -> Loaded:
        """At start-up a model that cannot be served is an error the CLI reports with its exit code."""
        ident = self.source.current()
        if ident is None:
            raise PrerequisiteError(f"{self.source.describe}: no model to serve ({self.source.nothing_hint})")
        candidate = self.source.load(ident)
        try:
            self.current = prepare(candidate)
        except ValueError as e:
            raise PrerequisiteError(f"{self.source.describe} ({ident}): {e}") from None
        self.last_check = utc_now('milliseconds')
        return self.current

    def check(self, force: bool = False) -> dict:
        """Look at the source once; install a new model if it moved and the new one is sound."""
        with self._lock:
            self.last_check = utc_now('milliseconds')
            try:
                ident = self.source.current()
            except Exception as e:  # noqa: BLE001 - the registry being away must not stop serving
                return self._failure(None, f"cannot read the model source: {_one_line(e)}")
            old = self.current
            if ident is None or (old is not None and ident == old.ident):
                return {"status": "unchanged", "version": old.info["version"] if old else None}
            if ident == self._failed and not force and time.monotonic() - self._failed_at < self.retry_after:
                return {"status": "kept", "version": old.info["version"] if old else None,
                        "error": self.last_error["error"] if self.last_error else None}
            try:
                new = prepare(self.source.load(ident))
                if old is not None and new.key != old.key:
                    raise ValueError("its input schema differs from the served model's (restart the server to "
                                     "serve it: the API's schema is fixed at start-up)")
            except Exception as e:  # noqa: BLE001 - whatever went wrong, the old model keeps serving
                return self._failure(ident, _one_line(e))
            self.current = new  # the swap: requests that already hold `old` finish with it
            self._failed, self.last_error = None, None
            log.warning("now serving %s version %s (was %s)", new.info["name"], new.info["version"],
                        old.info["version"] if old else None)
            return {"status": "swapped", "version": new.info["version"],
                    "previous": old.info["version"] if old else None}

    def _failure(self, ident: str | None, error: str) -> dict:
        self._failed, self._failed_at = ident, time.monotonic()
        self.last_error = {"version": ident, "error": error, "at": utc_now('milliseconds')}
        served = self.current.info["version"] if self.current else None
        log.error("model %s not loaded, still serving version %s: %s", ident, served, error)
        return {"status": "kept", "version": served, "error": error}

    def start(self) -> None:
        if self.poll > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlci-model-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            self.check()


def _one_line(e: BaseException) -> str:
    text = str(getattr(e, "message", None) or e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:400] if text else ''}"


# -- the HTTP application -----------------------------------------------------------------------


class BodyLimit:
    """413 for a request body over ``max_bytes``, declared or streamed, before anything parses it.

    The rest of an oversized body is read and dropped (up to four times the limit) before the answer:
    a server that closes with unread data makes the kernel reset the connection, and the client sees
    "connection reset" instead of the 413.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        for k, v in scope["headers"]:
            if k == b"content-length":
                if not v.isdigit():
                    return await _send_json(send, 400, {"detail": "invalid Content-Length"})
                if int(v) > self.max_bytes:
                    return await self._reject(receive, send, 0, int(v))
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reject(receive, send, size, None, more=msg.get("more_body", False))
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _reject(self, receive, send, size: int, declared: int | None, more: bool = True) -> None:
        if declared is None or declared <= 4 * self.max_bytes:
            while more and size <= 4 * self.max_bytes:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                size += len(msg.get("body", b""))
                more = msg.get("more_body", False)
        await _send_json(send, 413, _too_large(self.max_bytes))


def _replay(body: bytes, receive, more: bool = False):
    """An ASGI ``receive`` that hands over ``body`` (already read), then defers to ``receive``
    (for the rest of the body if ``more``)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


class FastPredict:
    """``POST /predict`` for the common case, answered in front of the FastAPI application.

    FastAPI parses the body into Python objects, builds a pydantic model per record, resolves the
    endpoint's dependencies and passes every request through its telemetry check and three
    middlewares: for a single record that was most of the server's time, for a 10,000-record batch
    over 100 ms (measured). Here the body is decoded and validated in one pass by msgspec
    (``schema.request_decoder``: the request model's rules), scored and answered with the bytes
    the endpoint would send. Everything else goes on to the FastAPI application with the body as it
    came, and that answers it: other paths and methods, another content type, a body over the size
    limit (``BodyLimit``'s 413), a request with an ``Origin`` when CORS is on (the CORS middleware's
    headers), and anything msgspec refuses -- bad JSON, an empty or oversized batch, any invalid
    record -- which pydantic accepts after all or turns into its own 422, or the batch limit's 413.
    """

    def __init__(self, app, holder, decoder, answer, max_body_bytes: int, cors: bool):
        import msgspec

        self.app = app  # the FastAPI application
        self.holder = holder
        self.decode = decoder.decode
        self.answer = answer
        self.max_body_bytes = max_body_bytes
        self.cors = cors
        self.refused = msgspec.MsgspecError

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        for k, v in scope["headers"]:
            if (k == b"content-type" and v.lower() != b"application/json"
                    or k == b"content-length" and (not v.isdigit() or int(v) > self.max_body_bytes)
                    or k == b"origin" and self.cors):
                return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_body_bytes:  # streamed past the limit: BodyLimit reads the rest, answers 413
                return await self.app(scope, _replay(b"".join(chunks), receive, more), send)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            data = self.decode(body)
        except self.refused:
            return await self.app(scope, _replay(body, receive), send)
        out = self.answer(self.holder.current, data if type(data) is list else [data])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(out)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})


def _too_large(limit: int) -> dict:
    return {"detail": f"request body larger than {limit} bytes (--max-body-bytes)"}


async def _send_json(send, status: int, payload: dict) -> None:
    import orjson

    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def create_app(holder: ModelHolder, opts: Options):
    """The ASGI application to serve: the FastAPI app, behind ``FastPredict`` (its ``.app``) when the
    schema can be expressed for msgspec."""
    from fastapi import Body, FastAPI, Header, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.routing import APIRoute
    from pydantic import BaseModel, Field
    import orjson

    first = holder.current
    ds = first.dataset
    Record = record_model(ds, first.scorer.categories, opts.unknown_categories)
    PredictResponse = response_model(first.scorer.positive_label, first.scorer.negative_label)
    decoder = request_decoder(ds, first.scorer.categories, opts.unknown_categories, opts.max_batch)

    def answer(loaded: Loaded, records: list) -> bytes:
        """The 200 body for validated records (see ``FastScorer.encode``), from both request paths."""
        p, labels = loaded.scorer.score(records)
        return orjson.dumps({"model": loaded.info["name"], "version": loaded.info["version"],
                             "predictions": [{"probability": v, "prediction": c} for v, c in zip(p.tolist(), labels)]})

    class Detail(BaseModel):
        detail: str

    class Health(BaseModel):
        status: Literal["ok"]

    class Ready(BaseModel):
        ready: bool
        version: str | None = None

    class LoadError(BaseModel):
        version: str | None
        error: str
        at: str

    class ModelInfo(BaseModel):
        name: str
        version: str
        alias: str | None
        source: Literal["registry", "directory"]
        metrics: dict[str, float]
        trained_at: str | None
        git_commit: str | None
        data_sha256: str | None
        model_sha256: str | None
        run_id: str | None
        loaded_at: str
        last_check: str | None = Field(None, description="When the source was last looked at.")
        last_error: LoadError | None = Field(None, description="Why the latest new model was not installed.")

    class ReloadResult(BaseModel):
        status: Literal["swapped", "unchanged", "kept"]
        version: str | None
        previous: str | None = None
        error: str | None = None

    token = os.environ.get(TOKEN_ENV) or None

    class OrjsonRequest(Request):
        async def json(self):
            # orjson parses a 10,000-record body in well under half json's time; its error is a
            # json.JSONDecodeError, which FastAPI turns into the usual 422.
            if not hasattr(self, "_json"):
                body = orjson.loads(await self.body())
                # Before validation: pydantic would check every record of an oversized batch first (and
                # a body of empty objects makes a dozen errors per record).
                if isinstance(body, list) and len(body) > opts.max_batch:
                    raise HTTPException(413, f"{len(body)} records; at most {opts.max_batch} per request "
                                             "(--max-batch)")
                self._json = body
            return self._json

    class OrjsonRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def with_orjson(request: Request):
                return await handler(OrjsonRequest(request.scope, request.receive))

            return with_orjson

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    unknown_note = ("rejected (422)" if opts.unknown_categories == "reject"
                    else "accepted and scored as missing")
    app = FastAPI(
        lifespan=lifespan,
        title="mlci model server",
        version="1",
        description=(f"Scores raw records of dataset {ds.name!r} with the model from {holder.source.describe}. "
                     f"Unknown categories are {unknown_note}; "
                     f"at most {opts.max_batch} records and {opts.max_body_bytes} bytes per request (413 beyond)."),
    )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        # ``Record | list[Record]`` reports every error under both branches; keep the branch the body took,
        # so the location reads body.age or body.3.age.
        errors, body = exc.errors(), getattr(exc, "body", None)
        branch = "list[Record]" if isinstance(body, list) else "Record"
        kept = []
        for err in errors:
            loc = list(err.get("loc", ()))
            if len(loc) > 1 and loc[0] == "body" and loc[1] in ("Record", "list[Record]"):
                if loc[1] != branch:
                    continue
                loc.pop(1)
            kept.append({"loc": loc, "msg": err.get("msg", ""), "type": err.get("type", "")})
            if len(kept) == MAX_ERRORS:  # a batch of bad records: the first ones say what is wrong
                break
        return JSONResponse({"detail": kept or [{"loc": ["body"], "msg": "invalid request", "type": "invalid"}]},
                            status_code=422)

    app.router.route_class = OrjsonRoute
    too_large = {413: {"model": Detail, "description": "Body or batch over the configured limits."}}

    @app.post("/predict", response_model=PredictResponse, responses=too_large,
              summary="Score one record or a list of records")
    async def predict(
        body: Annotated[Record | Annotated[list[Record], Field(min_length=1)], Body()],  # type: ignore[valid-type]
    ):
        # async and synchronous inside: no thread hop per request; the booster call is short, and one
        # event loop thread is also what makes the scorer's preallocated row safe.
        loaded = holder.current  # one read: this request is answered by this model, whatever swaps meanwhile
        records = body if isinstance(body, list) else [body]
        if len(records) > opts.max_batch:  # normally refused before validation (OrjsonRequest); kept as the rule
            return JSONResponse({"detail": f"{len(records)} records; at most {opts.max_batch} per request "
                                           "(--max-batch)"}, status_code=413)
        return Response(answer(loaded, [r.__dict__ for r in records]), media_type="application/json")

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

    if opts.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(opts.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])
    app.add_middleware(BodyLimit, max_bytes=opts.max_body_bytes)
    if decoder is None:
        return app
    return FastPredict(app, holder, decoder, answer, opts.max_body_bytes, bool(opts.cors_origins))


# -- the command ----------------------------------------------------------------------------------


def open_source(model_dir: Path | None, tracking: dict, results_dir: Path | None):
    if model_dir is not None:
        if not model_dir.is_dir():
            raise PrerequisiteError(f"{model_dir}: not a directory (--model-dir)")
        return DirSource(model_dir, results_dir)
    from mlci.tracking.store import TrackingError, check_reachable, tracking_uri

    uri = tracking_uri()
    check_reachable(uri)
    try:
        return RegistrySource(uri, tracking)
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingError(f"model registry at {uri}: {_one_line(e)}") from None


def bind(host: str, port: int):
    """Bind before anything else is started, so a taken port is one clear line and exit 9."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: {e.strerror}") from None
    family, _, proto, _, addr = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a response's body waits for the client's delayed ACK of its headers (40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(source, opts: Options, echo=print) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if opts.unknown_categories not in ("reject", "accept"):
        raise UsageError("--unknown-categories must be reject or accept")
    holder = ModelHolder(source, opts.poll)
    loaded = holder.load_initial()
    app = create_app(holder, opts)
    sock = bind(opts.host, opts.port)
    port = sock.getsockname()[1]
    echo(f"serving {loaded.info['name']} version {loaded.info['version']} on http://{opts.host}:{port} "
         f"(source {source.describe}; poll {opts.poll:g} s)")
    # uvloop and httptools (dependencies) are what uvicorn picks when they are installed: about
    # 1.6x the requests per second of asyncio and h11 (measured side by side). X-Forwarded-For
    # only changes the client address the access log shows: read only when the log is on.
    config = uvicorn.Config(app, log_level="info", access_log=opts.access_log, lifespan="on",
                            timeout_keep_alive=30, server_header=False, proxy_headers=opts.access_log)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        holder.stop()
        sock.close()
