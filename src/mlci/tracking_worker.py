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

Even overlapped, that start-up is ~4 s of CPU that competes with training on
two cores, so by default the worker stays: a daemon per workspace, listening
on ``<state dir>/tracking.sock``, serving one run after another with MLflow
already imported and its store open, and exiting after
``MLCI_TRACKING_DAEMON_IDLE`` seconds (default 600) without a run. It speaks
the same protocol over the socket, after a hello that carries the client's
environment and working directory (so a run sees exactly what a fresh worker
would) and the code identity (a daemon of other code or another interpreter
steps down and a new one starts). A closed connection is a dead pipeline: the
run is marked FAILED, as with the pipe. While it serves a run, another client
gets "busy" and starts a worker of its own. ``MLCI_TRACKING_DAEMON=0`` turns
it off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
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
        preload()

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
    _serve_session(sys.stdin, out, json.loads(sys.argv[1]))
    return 0


def _serve_session(lines, out, args: dict) -> bool:
    """Answer one client's requests until it finishes (returns True) or goes away."""
    session = None

    def reply(obj: dict) -> None:
        try:
            out.write(json.dumps(obj) + "\n")
            out.flush()
        except (BrokenPipeError, ConnectionError, ValueError, OSError):
            pass  # the pipeline is gone; EOF follows and the run is marked FAILED

    for line in _until_gone(lines):
        req = json.loads(line)
        op = req.pop("op")
        try:
            if session is None:
                session = Session(args["command"], args["params_file"], args["overrides"])
            result = getattr(session, op)(**req)
            reply({"ok": True, **result})
            if op == "begin":  # in the background: a cached run's finish must not wait for it
                threading.Thread(target=session.warm_up, daemon=True).start()
            if op in ("finish", "abort"):
                return True  # one run per session: the daemon is free for the next at once
        except MlciError as e:
            reply({"ok": False, "error": e.message, "exit_code": e.exit_code})
        except Exception as e:  # noqa: BLE001 - reported to the pipeline as one line
            reply({"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:500] if str(e) else ''}",
                   "exit_code": TrackingError.exit_code})
    if session is not None:  # the pipeline went away without finishing: never leave the run RUNNING
        try:
            session.abort("FAILED")
        except Exception as e:  # noqa: BLE001 - the next run marks it FAILED instead
            print(f"mlci tracking: could not mark run {session.run_id} FAILED: {e}", file=sys.stderr, flush=True)
    return False


def _until_gone(lines):
    """Lines until EOF; a reset connection (the client died with our reply unread) is an EOF too."""
    while True:
        try:
            line = lines.readline()
        except OSError:
            return
        if not line:
            return
        yield line


def preload() -> None:
    """Import what registering a model needs (a head start: errors surface where it is used)."""
    try:
        import mlflow  # noqa: F401
        import mlflow.models  # noqa: F401
        import mlflow.pyfunc  # noqa: F401
    except Exception:  # noqa: BLE001
        pass


class Worker:
    """The pipeline's side: starts the worker, which begins the MLflow run at once, and talks to it."""

    def __init__(self, command: str, params_file: str | None, overrides: list[str]):
        args = json.dumps({"command": command, "params_file": params_file, "overrides": overrides})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlci.tracking_worker", args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        )
        self._w, self._r = self.proc.stdin, self.proc.stdout
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
            self._w.close()
        except OSError:
            pass

    def _send(self, op: str, **kwargs: Any) -> None:
        try:
            self._w.write(json.dumps({"op": op, **kwargs}) + "\n")
            self._w.flush()
        except OSError:
            pass  # the worker is gone: _receive says so

    def _receive(self) -> dict:
        try:
            line = self._r.readline()
        except OSError:
            line = ""
        if not line:
            raise TrackingError(f"the tracking worker exited ({self._gone()}); pass --no-track to run without tracking")
        reply = json.loads(line)
        if not reply.pop("ok"):
            err = TrackingError(reply["error"])
            err.exit_code = reply.get("exit_code", TrackingError.exit_code)
            raise err
        return reply

    def _gone(self) -> str:
        return f"code {self.proc.wait()}"


class DaemonWorker(Worker):
    """The same interface, to the workspace's daemon over its socket."""

    def __init__(self, sock, reader):
        self.sock = sock
        self._r = reader  # the one that read the daemon's answer to the hello (it may have buffered)
        self._w = sock.makefile("w", encoding="utf-8")
        self._begin = None
        self._send("begin")

    def close(self) -> None:
        for f in (self._w, self._r, self.sock):  # the socket closes only once its files are closed too
            try:
                f.close()
            except OSError:
                pass

    def _gone(self) -> str:
        return "the tracking daemon closed the connection; see .mlci/tracking-daemon.log"


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


def start(command: str, params_file: str | None, overrides: list[str], state_dir: Path | None = None) -> Worker:
    if os.environ.get("MLCI_TRACKING_INPROCESS"):
        return LocalWorker(command, params_file, overrides)
    if state_dir is not None and os.environ.get("MLCI_TRACKING_DAEMON", "1") not in ("0", "false", "no", "off"):
        args = {"command": command, "params_file": params_file, "overrides": overrides}
        connected = _daemon_connection(Path(state_dir), args)
        if connected is not None:
            return DaemonWorker(*connected)  # the hello carried the run's arguments
    return Worker(command, params_file, overrides)


# -- the daemon -------------------------------------------------------------------------------

SOCKET, DAEMON_LOCK, DAEMON_LOG = "tracking.sock", "tracking-daemon.lock", "tracking-daemon.log"


def identity() -> str:
    """What a daemon must share with its client: this code, this interpreter, these packages."""
    import sysconfig

    from .resolve import code_hash

    site = Path(sysconfig.get_paths()["purelib"])
    stamp = site.stat().st_mtime_ns if site.exists() else 0
    return f"{code_hash()}|{sys.executable}|{sys.version}|{stamp}"


def _daemon_connection(state_dir: Path, args: dict):
    """A connected socket whose daemon accepted this run, and its reader; or None (then a worker
    of our own)."""
    import time

    path = state_dir / SOCKET
    if len(os.fsencode(path.absolute())) > 100:  # AF_UNIX paths are limited to ~107 bytes
        return None
    me = identity()
    for attempt in range(2):
        sock = _connect(path)
        if sock is None:
            _spawn_daemon(state_dir)
            deadline = time.monotonic() + 10
            while sock is None and time.monotonic() < deadline:
                time.sleep(0.02)
                sock = _connect(path)
            if sock is None:
                return None
        hello = {"op": "hello", "identity": me, "cwd": os.getcwd(), "env": dict(os.environ), "args": args}
        reader = sock.makefile("r", encoding="utf-8")
        try:
            sock.sendall((json.dumps(hello) + "\n").encode())
            answer = json.loads(reader.readline() or "{}")
        except (OSError, ValueError):
            answer = {}
        if answer.get("ok"):
            return sock, reader
        reader.close()
        sock.close()
        if answer.get("reason") != "stale" or attempt:
            return None  # busy, or broken: a worker of our own
        # A daemon of other code: it steps down; wait until its socket is gone, then start ours.
        deadline = time.monotonic() + 10
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return None


def _connect(path: Path):
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def _spawn_daemon(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / DAEMON_LOG, "ab") as log:
        # Its own session, no descriptor of ours: it outlives this run and holds none of its pipes
        # or locks (a test harness capturing our output is not kept waiting by it).
        subprocess.Popen([sys.executable, "-m", "mlci.tracking_worker", "--daemon", str(state_dir.absolute())],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                         start_new_session=True, cwd=os.getcwd(), env=os.environ.copy())


def daemon(state_dir: Path) -> int:
    """Serve runs one at a time on ``state_dir/tracking.sock`` until idle for long enough."""
    import fcntl
    import socket
    import time

    idle_limit = float(os.environ.get("MLCI_TRACKING_DAEMON_IDLE") or 600)
    path = state_dir / SOCKET
    lock = open(state_dir / DAEMON_LOCK, "w")
    deadline = time.monotonic() + 5
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            # Held: a live daemon (its socket is there: leave it be) or one stepping down (it
            # removes its socket first, then exits: wait for it).
            if path.exists() or time.monotonic() > deadline:
                return 0
            time.sleep(0.05)
    lock.write(str(os.getpid()))  # who serves this workspace (`kill $(cat .mlci/tracking-daemon.lock)`)
    lock.flush()
    path.unlink(missing_ok=True)  # a dead daemon's
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(8)
    me = identity()
    # Import while nobody waits yet: what every run needs first (the store, the client).
    threading.Thread(target=preload, daemon=True).start()
    busy = threading.Lock()
    state = {"last": time.monotonic(), "stop": False}
    import signal

    # `kill` (TERM) stops it cleanly: the socket goes, a run it served is marked FAILED by the next.
    signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))
    server.settimeout(1.0)
    base_env = dict(os.environ)
    try:
        while not state["stop"]:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                if not busy.locked() and time.monotonic() - state["last"] > idle_limit:
                    break
                continue
            threading.Thread(target=_daemon_client, args=(conn, me, busy, state, base_env), daemon=True).start()
    finally:
        path.unlink(missing_ok=True)  # ours: a successor binds only once it holds the lock we hold
        server.close()
    return 0


def _daemon_client(conn, me: str, busy: threading.Lock, state: dict, base_env: dict) -> None:
    import time

    with conn:
        reader = conn.makefile("r", encoding="utf-8")
        writer = conn.makefile("w", encoding="utf-8")
        try:
            hello = json.loads(reader.readline() or "{}")
        except ValueError:
            return
        if hello.get("op") != "hello":
            return
        if hello.get("identity") != me:
            state["stop"] = True  # other code: step down, the client starts a daemon of its own
            writer.write(json.dumps({"ok": False, "reason": "stale"}) + "\n")
            writer.flush()
            return
        if not busy.acquire(blocking=False):
            writer.write(json.dumps({"ok": False, "reason": "busy"}) + "\n")
            writer.flush()
            return
        try:
            # The run sees the client's world: its directory and environment, as a fresh worker would.
            os.chdir(hello["cwd"])
            os.environ.clear()
            os.environ.update(hello["env"])
            writer.write(json.dumps({"ok": True}) + "\n")
            writer.flush()
            _serve_session(reader, writer, hello["args"])
        except OSError:
            pass
        finally:
            os.environ.clear()
            os.environ.update(base_env)
            state["last"] = time.monotonic()
            busy.release()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--daemon"]:
        sys.exit(daemon(Path(sys.argv[2])))
    sys.exit(serve())
