"""Where runs are tracked, and getting there: the URI, a reachability check, MLflow's quiet settings.

Nothing here imports MLflow at module load: ``check_reachable`` runs before any work, in a
process that may never need MLflow at all.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from mlci.errors import TRACKING, MlciError

DEFAULT_URI = "sqlite:///mlflow.db"
T = "mlci."  # tag prefix


class TrackingError(MlciError):
    """The tracking server or registry cannot do what was asked (exit 8)."""

    exit_code = TRACKING


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the SQLite file in the working directory (made absolute: MLflow
    caches stores by URI, so a relative one would follow the first directory it was used in)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when the tracking store cannot be reached. No MLflow import."""
    hint = "start it, fix MLFLOW_TRACKING_URI, or pass --no-track to run without tracking"
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking server {uri} answered /health with HTTP {resp.status}; {hint}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(f"tracking server {uri} is unreachable ({reason}); {hint}") from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
            raise TrackingError(f"tracking database {db}: directory missing or not writable; {hint}")


def git_info(cwd: Path | None = None) -> dict[str, str]:
    """Commit and dirtiness of the working tree, when it is a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # stdout belongs to mlci (`--json` prints exactly one document there).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's tqdm bar for artifact downloads would land in mlci's stderr and the server's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)


def use_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` in this process, tracking and registry both.

    MLflow also exports them to os.environ "so that subprocesses inherit them": ours must not (a
    server in one test, a later run in another workspace would track there), so the environment
    is put back as it was."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
