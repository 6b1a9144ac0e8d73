"""Real servers for the team-scale tests: PostgreSQL (Debian's package) and `mlflow server`, on loopback.

Both are started by the tests themselves, on free ports, in temporary
directories, and stopped at the end. Without PostgreSQL installed the tests
skip with a visible reason, except under CI=true, where they must run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Until ``GET url`` answers 2xx; fails with the tail of the server's ``log`` when it exits first
    or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} never answered (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run; .ci/run installs PostgreSQL)")
    pytest.skip(reason)


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A throwaway PostgreSQL cluster owned by the `postgres` user when we are root."""

    def __init__(self):
        bindir = pg_bin()
        if bindir is None:
            unavailable("PostgreSQL is not installed (Debian package `postgresql`)")
        self.bin, self.port = bindir, free_port()
        # Its own directory (pytest's are private to root, and PostgreSQL refuses to run as root).
        self.root = Path(tempfile.mkdtemp(prefix="mlci-pg-"))
        self.data = self.root / "pgdata"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user, self.user)

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        return subprocess.run(prefix + list(cmd), capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> "Postgres":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                  "--encoding=UTF8", "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off", "start")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "mlflow")
        return self

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"


class MlflowServer:
    """`mlflow server` on a PostgreSQL backend store with a local artifact root, on loopback."""

    def __init__(self, backend_uri: str, root: Path):
        self.port, self.root, self.backend_uri = free_port(), root, backend_uri
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "MlflowServer":
        mlflow = Path(sys.executable).with_name("mlflow")
        self.log = open(self.root / "mlflow-server.log", "w")
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", self.backend_uri,
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "2"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root,
        )
        wait_until_answers(f"{self.uri}/health", self.proc, self.root / "mlflow-server.log", timeout)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"
