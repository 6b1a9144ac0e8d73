"""Tracking in a helper process, so MLflow's start-up cost overlaps the pipeline's own work.

Importing MLflow and opening its store costs about as much as the whole
pipeline on the bundled data (measured: ~3 s of a ~6 s run on this 2-core
machine). Done in-process it would double a run; done here, in a second
process started before the first stage, it runs on the other core while the
pipeline imports pandas and trains. The pipeline talks to it over a pipe,
one JSON line per request and reply:

    -> {"op": "begin", "command": "run"}          <- {"ok": true, "run_id": ..., "champion": "3"}
    -> {"op": "champion_model", "version": "3"}   <- {"ok": true, "path": ..., "sha256": ...}
    -> {"op": "model_ready"}                      <- {"ok": true}   (registers it meanwhile)
    -> {"op": "finish", "statuses": {...}, "error": null}  <- {"ok": true, "summary": {...}}
    -> {"op": "abort", "status": "FAILED"}        <- {"ok": true}

If the pipeline dies, the pipe closes and the worker marks the run FAILED.
The logic itself is :class:`Session`, which also runs in-process
(``MLCI_TRACKING_INPROCESS=1``, handy in a debugger).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

from . import settings as S
from .errors import MlciError
from .tracking import TrackingError


class Session:
    """One tracked command: an MLflow run from begin to finish (in whichever process runs it)."""

    def __init__(self, command: str, params_file: str | None, overrides: list[str]):
        from .resolve import resolve

        self.command = command
        self.s = S.from_env(params_file)
        self.params = resolve(self.s.params_file, overrides, self.s.state_dir)
        self.registry = self.run_id = self.champion = None
        # Work started in the background (warm-up, early registration) and the requests that
        # follow take turns on the store: one lock, held per operation.
        self._store = threading.Lock()
        self._background: list[threading.Thread] = []
        self._champion_file: dict | None = None

    def begin(self) -> dict:
        from . import recording

        self.registry, self.run_id = recording.begin(self.command, self.s, self.params)
        if self.command in ("gate", "run"):
            self.champion = recording.Champion(self.registry, self.s)
        return {"run_id": self.run_id, "champion": self.champion.version if self.champion else None}

    def champion_model(self, version: str) -> dict:
        """Where the champion's verified model file is; the pipeline scores it itself."""
        got = self._champion_file
        if got is not None and got["version"] == version:
            return {"path": got["path"], "sha256": got["sha256"]}
        with self._store:
            path = self.registry.fetch(version)
            return {"path": str(path), "sha256": self.registry.version(version).tags.get("mlci.model_sha256")}

    def warm_up(self) -> None:
        """While the pipeline trains: fetch the champion's model (the gate will want it) and
        import what registering a model needs. Never scikit-learn: this process only moves
        verified bytes (the pipeline process scores models)."""
        try:
            if self.champion is not None and self.champion.version is not None:
                version = self.champion.version
                self._champion_file = {"version": version, **self.champion_model(version)}
        except Exception:  # noqa: BLE001 - only a head start: the gate's own request reports errors
            pass
        try:
            import mlflow.models  # noqa: F401
            import mlflow.pyfunc  # noqa: F401
        except Exception:  # noqa: BLE001
            pass

    def model_ready(self) -> dict:
        """Train has written the model: register it now, while the pipeline gates, tests and
        reports, so that finish() has only the verdict left to record."""
        from . import recording

        def register() -> None:
            try:
                with self._store:
                    recording.ensure_registered(self.registry, self.run_id, self.s)
            except Exception:  # noqa: BLE001 - finish() registers again and reports any error
                pass

        self.background(register)
        return {}

    def background(self, fn) -> None:
        thread = threading.Thread(target=fn, daemon=True)
        thread.start()
        self._background.append(thread)

    def finish(self, statuses: dict[str, str], error: str | None) -> dict:
        from . import recording

        for thread in self._background:
            thread.join()
        with self._store:
            summary = recording.finish(self.registry, self.run_id, self.s, self.params, statuses, self.champion,
                                       error)
        self.run_id = None
        return {"summary": summary}

    def abort(self, status: str = "FAILED") -> dict:
        if self.registry is not None and self.run_id is not None:
            with self._store:
                self.registry.end_run(self.run_id, status)
            self.run_id = None
        return {}


def serve() -> int:
    """The worker's loop: requests on stdin, replies on stdout, until EOF."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else that prints must not corrupt the protocol
    args = json.loads(sys.argv[1])
    session = None

    def reply(obj: dict) -> None:
        try:
            out.write(json.dumps(obj) + "\n")
            out.flush()
        except (BrokenPipeError, ValueError):
            pass  # the pipeline is gone; EOF on stdin follows and the run is marked FAILED

    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        try:
            if session is None:
                session = Session(args["command"], args["params_file"], args["overrides"])
            result = getattr(session, op)(**req)
            reply({"ok": True, **result})
            if op == "begin":  # in the background: a cached run's finish must not wait for it
                threading.Thread(target=session.warm_up, daemon=True).start()
        except MlciError as e:
            reply({"ok": False, "error": e.message, "exit_code": e.exit_code})
        except Exception as e:  # noqa: BLE001 - reported to the pipeline as one line
            reply({"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:500] if str(e) else ''}",
                   "exit_code": TrackingError.exit_code})
    if session is not None:  # the pipeline went away without finishing: never leave the run RUNNING
        try:
            session.abort("FAILED")
        except Exception:  # noqa: BLE001
            pass
    return 0


class Worker:
    """The pipeline's side: starts the worker, which begins the MLflow run at once, and talks to it."""

    def __init__(self, command: str, params_file: str | None, overrides: list[str]):
        args = json.dumps({"command": command, "params_file": params_file, "overrides": overrides})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlci.tracking_worker", args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        )
        self._begin: dict | None = None
        self._send("begin")  # not waited for: the pipeline starts meanwhile

    def begun(self) -> dict:
        """The reply to "begin" (waits for it the first time)."""
        if self._begin is None:
            self._begin = self._receive()
        return self._begin

    def call(self, op: str, **kwargs: Any) -> dict:
        self.begun()
        self._send(op, **kwargs)
        return self._receive()

    def close(self) -> None:
        """Close the pipe; the worker ends its run if it was not finished, then exits by itself
        (MLflow's shutdown takes a second we need not wait for)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def _send(self, op: str, **kwargs: Any) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the worker is gone: _receive says so

    def _receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise TrackingError(f"the tracking worker exited (code {self.proc.wait()}); "
                                "pass --no-track to run without tracking")
        reply = json.loads(line)
        if not reply.pop("ok"):
            err = TrackingError(reply["error"])
            err.exit_code = reply.get("exit_code", TrackingError.exit_code)
            raise err
        return reply


class LocalWorker(Worker):
    """The same interface, in this process (MLCI_TRACKING_INPROCESS=1)."""

    def __init__(self, command: str, params_file: str | None, overrides: list[str]):
        self.session = Session(command, params_file, overrides)
        self._begin = None

    def begun(self) -> dict:
        if self._begin is None:
            self._begin = self._do("begin")
        return self._begin

    def call(self, op: str, **kwargs: Any) -> dict:
        self.begun()
        return self._do(op, **kwargs)

    def close(self) -> None:
        pass

    def _do(self, op: str, **kwargs: Any) -> dict:
        try:
            return getattr(self.session, op)(**kwargs)
        except MlciError:
            raise
        except Exception as e:  # noqa: BLE001
            raise TrackingError(f"{type(e).__name__}: {str(e).splitlines()[0][:500] if str(e) else ''}") from None


def start(command: str, params_file: str | None, overrides: list[str]) -> Worker:
    cls = LocalWorker if os.environ.get("MLCI_TRACKING_INPROCESS") else Worker
    return cls(command, params_file, overrides)


if __name__ == "__main__":
    sys.exit(serve())
