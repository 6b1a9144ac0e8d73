"""The model in service, and hot swap: the only place that replaces it.

A poller re-reads the source every ``poll`` seconds (and ``POST /admin/reload`` asks it to at
once). A new model is fetched, verified, loaded and smoke-predicted off the request path
(``sources.prepare``), then installed by one reference assignment: a request in flight keeps the
model it started with. A model that fails any step is not installed; the old one keeps serving,
and the failure is logged and shown under ``last_error`` in ``GET /model``.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from mlci.errors import PrerequisiteError
from mlci.serving.sources import Loaded, one_line, prepare
from mlci.timestamps import utc_now

log = logging.getLogger("mlci.serve")


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
        #: Looks that installed a new model, and those that could not (``mlci_model_reloads_total``).
        self.reloads = {"success": 0, "failure": 0}
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
                return self._failure(None, f"cannot read the model source: {one_line(e)}")
            old = self.current
            if ident is None or (old is not None and ident == old.ident):
                return {"status": "unchanged", "version": old.info["version"] if old else None}
            if ident == self._failed and not force and time.monotonic() - self._failed_at < self.retry_after:
                return {"status": "kept", "version": old.info["version"] if old else None,
                        "error": self.last_error["error"] if self.last_error else None}
            try:
                new = self._prepare(ident, old)
            except Exception as e:  # noqa: BLE001 - whatever went wrong, the old model keeps serving
                return self._failure(ident, one_line(e))
            self.current = new  # the swap: requests that already hold `old` finish with it
            gc.freeze()  # the new model's objects too, as at start-up (server.py): no long full collections
            self._failed, self.last_error = None, None
            self.reloads["success"] += 1
            log.warning("now serving %s version %s (was %s)", new.info["name"], new.info["version"],
                        old.info["version"] if old else None)
            return {"status": "swapped", "version": new.info["version"],
                    "previous": old.info["version"] if old else None}

    def _prepare(self, ident: str, old: Loaded | None) -> Loaded:
        new = prepare(self.source.load(ident))
        if old is not None and new.key != old.key:
            raise ValueError("its input schema differs from the served model's (restart the server to "
                             "serve it: the API's schema is fixed at start-up)")
        return new

    def _failure(self, ident: str | None, error: str) -> dict:
        self._failed, self._failed_at = ident, time.monotonic()
        self.reloads["failure"] += 1
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
