"""Where runs are tracked, and getting there: the URI, a reachability check, MLflow's quiet settings.

Nothing here imports MLflow at module load: ``check_reachable`` runs before any work, in a
process that may never need MLflow at all.
"""

from __future__ import annotations

import contextlib
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
        if db.exists():
            _check_sqlite(db, timeout)


def _check_sqlite(db: Path, timeout: float) -> None:
    """A damaged file or one left mid-migration is named now, not discovered (or waited on) mid-run."""
    import sqlite3

    way_out = ("move it aside (a new one is made), restore a backup, or point MLFLOW_TRACKING_URI elsewhere; "
               "--no-track runs without tracking")
    try:
        con = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            raise TrackingError(f"tracking database {db}: still locked by another process after {timeout:g} s; "
                                "wait for it, or pass --no-track") from None
        raise TrackingError(f"tracking database {db}: cannot be read ({e}); {way_out}") from None
    except sqlite3.DatabaseError as e:
        raise TrackingError(f"tracking database {db}: not an SQLite database ({e}): damaged; {way_out}") from None
    leftovers = sorted(name for name in tables if name.startswith("_alembic_tmp_"))
    if leftovers:
        raise TrackingError(f"tracking database {db}: left half-way through a schema migration ({', '.join(leftovers)});"
                            f" {way_out}")


def git_info(cwd: Path | None = None) -> dict[str, str]:
    """Commit and dirtiness of the working tree, when it is a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    out: dict[str, str] = {}
    try:
        out["git_commit"] = git("rev-parse", "HEAD")
        out["git_dirty"] = str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out["git_remote"] = git("config", "--get", "remote.origin.url")
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout: what the CI's variables say still counts
    branch = ci_branch()
    if branch is None and out:
        try:
            name = git("rev-parse", "--abbrev-ref", "HEAD")
            branch = None if name == "HEAD" else name  # detached: no branch
        except (OSError, subprocess.SubprocessError):
            pass
    if branch:
        out["git_branch"] = branch
    if pull_request():
        out["pull_request"] = "true"
    return out


#: MLflow's own tag for the commit a run was made from (the UI's "Source" shows it).
GIT_COMMIT = "mlflow.source.git.commit"


def commit_of(tags: dict[str, str]) -> str | None:
    """A run's commit: MLflow's standard tag, or ``mlci.git_commit`` on runs recorded before it."""
    return tags.get(GIT_COMMIT) or tags.get(T + "git_commit")


def standard_tags(command: str, git: dict[str, str]) -> dict[str, str]:
    """MLflow's conventional run tags (``mlflow.user``, ``mlflow.source.*``), so its UI and clients show
    who ran what from where; a CI job is a ``JOB`` named after the pipeline, anything else ``LOCAL``."""
    env = os.environ
    job = (" ".join(filter(None, (env.get("GITHUB_REPOSITORY"), env.get("GITHUB_WORKFLOW"))))
           if env.get("GITHUB_ACTIONS") == "true" else env.get("JOB_NAME"))
    tags = {"mlflow.user": who(), "mlflow.source.name": job or f"mlci {command}",
            "mlflow.source.type": "JOB" if job else "LOCAL"}
    for key, name in (("git_commit", GIT_COMMIT), ("git_branch", "mlflow.source.git.branch"),
                      ("git_remote", "mlflow.source.git.repoURL")):
        if git.get(key):
            tags[name] = git[key]
    return tags


def ci_branch() -> str | None:
    """The branch a CI job builds, from the CI's own variables (its checkout is often detached)."""
    env = os.environ
    if env.get("MLCI_BRANCH"):  # said outright (the webhook says which branch it builds)
        return env["MLCI_BRANCH"]
    if env.get("GITHUB_ACTIONS") == "true":
        return env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME") or None
    if env.get("CHANGE_BRANCH"):  # Jenkins multibranch: a pull request's source branch
        return env["CHANGE_BRANCH"]
    for name in ("BRANCH_NAME", "GIT_BRANCH", "CI_COMMIT_REF_NAME"):  # Jenkins, GitLab
        if env.get(name):
            return env[name].removeprefix("origin/")
    return None


def pull_request() -> bool:
    env = os.environ
    return (env.get("GITHUB_EVENT_NAME", "").startswith("pull_request") or bool(env.get("CHANGE_ID"))
            or bool(env.get("CI_MERGE_REQUEST_IID")))


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def quiet_mlflow() -> None:
    """MLflow's settings for mlci (:func:`mlflow_environment`) and its loggers at ERROR."""
    mlflow_environment()
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)


def mlflow_environment() -> None:
    """The environment variables mlci sets for MLflow (only where the user has not)."""
    # Bounded waits on a server that does not answer well: a few seconds of retries, then a clear error.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # stdout belongs to mlci (`--json` prints exactly one document there).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's tqdm bar for artifact downloads would land in mlci's stderr and the server's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's usage telemetry: network calls from CI, and a thread that changes os.environ.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def tracking_failed(uri: str, e: BaseException) -> TrackingError:
    """Any failure of the store or server while tracking, as one line."""
    if isinstance(e, TrackingError):
        return e
    return TrackingError(f"tracking at {uri} failed: {one_line(e)}; pass --no-track to run without tracking")


@contextlib.contextmanager
def store_lock(uri: str, wait: float = 300.0):
    """Serialise this host's writers of one SQLite store (creating or migrating it included).

    SQLite lets one writer in at a time and MLflow migrates a new store on first use: two runs that
    race through a migration leave it half-done (``_alembic_tmp_*`` tables) and every later use fails.
    A server store needs no lock here (the server serialises)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from mlci.fileio import flock

    db = Path(uri.removeprefix("sqlite:///"))
    fd = os.open(str(db) + ".mlci-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not flock(fd, wait):
            raise TrackingError(f"tracking database {db}: another mlci run kept it busy for {wait:g} s; "
                                "try again, or pass --no-track")
        yield
    finally:
        os.close(fd)
