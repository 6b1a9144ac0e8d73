"""The server's log: one handler on stderr, text (as before) or JSON lines (``--log-format json``).

Everything goes through the root logger -- mlci's own lines, uvicorn's (its own logging set-up is
turned off: ``log_config=None``), and the access log of ``observe.Observe`` -- so one format holds for
every line. In JSON each line is one object: time, level, logger, message, and the request's fields
(method, path, status, duration_ms, request_id, records) when it is an access-log line.

Other libraries' noise stays out: Python warnings are ignored in the server process unless the user
asked for them (``-W`` / ``PYTHONWARNINGS``), and MLflow's download progress bars are off
(``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``, set for every mlci command that talks to MLflow).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from datetime import datetime, timezone

#: The access log's fields, in this order, in a JSON line (and the text line's layout).
REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "request_id", "records")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in REQUEST_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            # One line still: the exception's type and message, not a multi-line traceback.
            out["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Set up the server process's logging (replacing any handler of an earlier call)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not sys.warnoptions and not os.environ.get("PYTHONWARNINGS"):
        warnings.simplefilter("ignore")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that log at INFO about their own business (MLflow's downloads, alembic's migrations
    # of a SQLite store): their warnings and errors only.
    for name in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
