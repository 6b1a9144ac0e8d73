"""``POST /predict``: one route of the FastAPI application, two ways through it.

FastAPI's own way -- parse the body into Python objects, build a pydantic model per record,
resolve the endpoint's dependencies -- was most of a single record's time, and a large part of a
10,000-record batch's (measured; README, "Serving"). So the route (``PredictRoute``, matched by FastAPI's router like any
other) first tries the common case, a valid JSON body (``fast_path``): msgspec decodes and
validates it in one pass (``schema.request_decoder``: the request model's rules), the ``FastScorer``
scores it, and orjson writes the answer. Whatever msgspec refuses -- bad JSON, an empty or oversized
batch, any invalid record -- and any body with another content type goes on, as it came, to the
route's FastAPI endpoint (``predict``, typed with the pydantic request and response models, which
is also what ``/openapi.json`` documents): pydantic accepts it after all or makes the 422, and an
oversized batch is the 413. msgspec is only ever stricter than pydantic, so the answers are
pydantic's either way (``tests/test_serve.py`` checks both paths on the same good and bad bodies,
byte for byte).

Both ways sit behind the application's one middleware stack: the body limit (``limits.BodyLimit``)
has read the body, whole, before the route sees it, and CORS, when configured, adds its headers to
either answer.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations at run time,
# and the request model is a local variable of ``add_predict`` (one per served dataset).

from typing import Annotated

import orjson
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import Field

from mlci.serving.limits import replay, too_many_records
from mlci.serving.schema import Detail, record_model, request_decoder, response_model

JSON = "application/json"
MAX_ERRORS = 100  # validation errors listed in one 422


def add_predict(app: FastAPI, holder, opts, scored=None) -> None:
    """``POST /predict`` for the model ``holder`` serves now (its schema is the API's for good).
    ``scored(loaded, records, encoded, probabilities, labels, scope)``, when given, is told of every 200 answer
    (metrics, live drift, prediction log: ``app._on_scored``), on the event loop's thread."""
    first = holder.current
    Record = record_model(first.dataset, first.scorer.categories, opts.unknown_categories)
    decoder = request_decoder(first.dataset, first.scorer.categories, opts.unknown_categories, opts.max_batch)
    max_batch = opts.max_batch

    async def predict(
        body: Annotated[Record | Annotated[list[Record], Field(min_length=1)], Body()],  # type: ignore[valid-type]
        request: Request,
    ):
        # async and synchronous inside: no thread hop per request; the booster call is short, and one
        # event loop thread is also what makes the scorer's preallocated row safe.
        loaded = holder.current  # one read: this request is answered by this model, whatever swaps meanwhile
        records = body if isinstance(body, list) else [body]
        if len(records) > max_batch:  # normally refused before validation (OrjsonRequest); kept as the rule
            return JSONResponse({"detail": too_many_records(len(records), max_batch)}, status_code=413)
        return Response(answer(loaded, [r.__dict__ for r in records], request.scope, scored), media_type=JSON)

    too_large = {413: {"model": Detail, "description": "Body or batch over the configured limits."}}
    app.router.add_api_route(
        "/predict", predict, methods=["POST"], summary="Score one record or a list of records",
        response_model=response_model(first.scorer.positive_label, first.scorer.negative_label),
        responses=too_large, route_class_override=predict_route(holder, decoder, max_batch, scored))
    routes = app.router.routes
    routes.insert(0, routes.pop())  # matched first: not after the docs' four routes, on every request


def answer(loaded, records: list, scope=None, scored=None) -> bytes:
    """The 200 body for validated records (see ``FastScorer.encode``), from both request paths."""
    scorer = loaded.scorer
    encoded = scorer.encode(records)  # the booster's matrix: the live drift bins it when scraped
    p = scorer.proba(encoded)
    labels = scorer.labels(p)
    probabilities = p.tolist()
    if scored is not None:
        scored(loaded, records, encoded, probabilities, labels, scope)
    return orjson.dumps({"model": loaded.info["name"], "version": loaded.info["version"],
                         "predictions": [{"probability": v, "prediction": c} for v, c in zip(probabilities, labels)]})


def predict_route(holder, decoder, max_batch: int, scored=None) -> type[APIRoute]:
    """The route class of ``POST /predict``: msgspec's path in front of the endpoint FastAPI built."""
    import msgspec

    refused = msgspec.MsgspecError

    class PredictRoute(APIRoute):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if decoder is not None:
                self.app = fast_path(self.app, holder, decoder.decode, refused, scored)

        def get_route_handler(self):
            handler = super().get_route_handler()

            async def with_orjson(request: Request) -> Response:
                return await handler(OrjsonRequest(request.scope, request.receive, max_batch))

            return with_orjson

    return PredictRoute


def fast_path(pydantic_path, holder, decode, refused, scored=None):
    """The route's ASGI app: a body msgspec takes is scored and answered here; any other goes on to
    ``pydantic_path`` (FastAPI's request handling of the endpoint) as it came."""
    headers = [(b"content-type", b"application/json")]

    async def app(scope, receive, send):
        body = await read_body(receive)
        if body is None:  # the client went away: nobody to answer
            return
        if is_plain_json(scope["headers"]):
            try:
                data = decode(body)
            except refused:
                pass
            else:
                out = answer(holder.current, data if type(data) is list else [data], scope, scored)
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"%d" % len(out)), *headers]})
                return await send({"type": "http.response.body", "body": out})
        return await pydantic_path(scope, replay(body, receive), send)

    return app


async def read_body(receive) -> bytes | None:
    """The request body (one message: ``BodyLimit`` has read it whole); None if the client went away."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_plain_json(headers) -> bool:
    """No content type, or exactly ``application/json``: the msgspec path's bodies. Any other (a charset,
    ``+json``, form data) is left to FastAPI's own reading of the content type."""
    for k, v in headers:
        if k == b"content-type":
            return v.lower() == b"application/json"
    return True


class OrjsonRequest(Request):
    """The pydantic path's request: orjson parses the body, and a batch over ``max_batch`` is a 413 before
    validation (pydantic would check every record of it first, and a body of empty objects makes a dozen
    errors per record)."""

    def __init__(self, scope, receive, max_batch: int):
        super().__init__(scope, receive)
        self.max_batch = max_batch

    async def json(self):
        # orjson parses a 10,000-record body in well under half json's time; its error is a
        # json.JSONDecodeError, which FastAPI turns into the usual 422.
        if not hasattr(self, "_json"):
            body = orjson.loads(await self.body())
            if isinstance(body, list) and len(body) > self.max_batch:
                raise HTTPException(413, too_many_records(len(body), self.max_batch))
            self._json = body
        return self._json


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The 422: pydantic's errors, at most ``MAX_ERRORS``, located as body.age or body.3.age."""
    # ``Record | list[Record]`` reports every error under both branches; keep the branch the body took.
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
