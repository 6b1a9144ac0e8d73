"""``mlci serve``: the model behind HTTP, loaded safely and swapped without a dropped request.

* Where the model comes from, and its sha256 check: ``sources.py``.
* The model in service and hot swap: ``holder.py``.
* The HTTP application: ``app.py`` (``POST /predict``: ``predict.py``, ``scoring.py``, ``schema.py``).
* Here: the listening socket and uvicorn (the options: ``options.py``).

FastAPI, uvicorn and MLflow are imported only by this command.
"""

from __future__ import annotations

import gc
import logging

from mlci.errors import SERVE, MlciError, UsageError
from mlci.serving.app import create_app
from mlci.serving.holder import ModelHolder
from mlci.serving.options import Options


class ServeError(MlciError):
    """The server cannot start: the address is in use or not allowed (exit 9)."""

    exit_code = SERVE


def bind(host: str, port: int):
    """Bind before anything else is started, so a taken port is one clear line and exit 9."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: {e.strerror}") from None
    family, _, proto, _, addr = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a response's body waits for the client's delayed ACK of its headers (tens of milliseconds a request).
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
    """Load the model of ``source``, bind, and serve until stopped."""
    import uvicorn

    from mlci.serving.logs import configure

    configure(opts.log_format)
    if opts.log_format == "json":  # the start-up line too is a JSON line then
        echo = logging.getLogger("mlci.serve").info  # noqa: F811
    if opts.unknown_categories not in ("reject", "accept"):
        raise UsageError("--unknown-categories must be reject or accept")
    if opts.log_predictions is not None:
        check_writable(opts.log_predictions)
    holder = ModelHolder(source, opts.poll)
    loaded = holder.load_initial()
    app = create_app(holder, opts)
    # Everything loaded so far (the libraries, the model) goes to the collector's permanent generation:
    # a full collection then visits only what serving made since. Without it a generation-2 collection,
    # triggered by whichever thread allocates (the prediction log's feeder, a /metrics scrape), held the
    # GIL for 100-150 ms (measured with gc.callbacks), and every request waited it out.
    gc.freeze()
    sock = bind(opts.host, opts.port)
    port = sock.getsockname()[1]
    echo(f"serving {loaded.info['name']} version {loaded.info['version']} on http://{opts.host}:{port} "
         f"(source {source.describe}; poll {opts.poll:g} s)")
    # uvloop and httptools (dependencies) are what uvicorn picks when they are installed: about
    # more requests per second than asyncio and h11 (measured side by side; README, "Serving"). X-Forwarded-For
    # only changes the client address the access log shows: read only when the log is on.
    # log_config=None: uvicorn's lines go through the root logger's one handler (serving/logs.py), in the
    # chosen format; its own access log is off, ``observe.Observe`` writes one with the request id.
    config = uvicorn.Config(app, log_level="info", log_config=None, access_log=False, lifespan="on",
                            timeout_keep_alive=30, server_header=False, proxy_headers=opts.access_log)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        holder.stop()
        sock.close()


def check_writable(directory) -> None:
    """``--log-predictions DIR``: made if missing, and written to once now, so that a directory that can
    never take a file is one line and exit 11 at start-up, not a stream of write errors later."""
    import tempfile

    from mlci.errors import io_failure

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".mlci-write-test-"):
            pass
    except OSError as e:
        raise io_failure(e, "writing prediction logs (--log-predictions)") from None
