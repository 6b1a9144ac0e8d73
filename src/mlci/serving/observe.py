"""The outermost middleware: a request id on every answer, the request's metrics, the access log.

* ``X-Request-ID``: the client's own when it sent a sane one (``SANE_ID``: at most 128 characters
  that cannot break a log line or a header), else a new one (a random per-process prefix and a
  counter: unique, and cheaper than a uuid4 per request). It is in ``scope["mlci.request_id"]`` for the
  routes (the prediction log stores it) and on every response, the body limit's 413s included.
* ``metrics.Metrics.request``: route, status and latency, once the answer's start is sent.
* ``--access-log``: one line per request (JSON with ``--log-format json``) with method, path, status,
  duration_ms, request_id and records (the records scored, for POST /predict).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

SANE_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
HEADER = b"x-request-id"

access = logging.getLogger("mlci.access")


class Observe:
    def __init__(self, app, metrics=None, access_log: bool = False):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        prefix = os.urandom(4).hex()
        self._ids = (f"{prefix}-{n:x}" for n in itertools.count(1))

    def request_id(self, headers) -> str:
        for k, v in headers:
            if k == HEADER:
                if SANE_ID.fullmatch(v):
                    return v.decode("ascii")
                break
        return next(self._ids)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        rid = self.request_id(scope["headers"])
        scope["mlci.request_id"] = rid
        header = (HEADER, rid.encode("ascii"))
        status = 500  # what the server answers when the app fails before starting a response

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.request(scope["path"], status, seconds)
            if self.access_log:
                records = scope.get("mlci.records")
                access.info("%s %s %d %.2f ms id=%s%s", scope["method"], scope["path"], status, seconds * 1e3, rid,
                            f" records={records}" if records is not None else "",
                            extra={"method": scope["method"], "path": scope["path"], "status": status,
                                   "duration_ms": round(seconds * 1e3, 3), "request_id": rid, "records": records})
