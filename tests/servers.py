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


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` processes on loopback (the real thing, as a user starts
    it), each worker with one thread and a memory limit; stopped by pid."""

    def __init__(self, root: Path, workers: int = 2, memory_limit: str = "2GB", nanny: bool = True,
                 env: dict | None = None):
        self.root, self.n, self.memory_limit, self.nanny = root, workers, memory_limit, nanny
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        return subprocess.Popen([str(Path(sys.executable).with_name("dask")), *args], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env, cwd=self.root)

    def start(self) -> "DaskCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self.procs.append(self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--no-dashboard"))
        for i in range(self.n):
            args = ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--memory-limit",
                    self.memory_limit, "--no-dashboard", "--local-directory", str(self.root / f"w{i}")]
            if not self.nanny:
                args.append("--no-nanny")
            w = self._start(f"worker{i}", *args)
            self.procs.append(w)
            self.workers.append(w)
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(self.address, timeout=5) as c:
                    c.wait_for_workers(self.n, timeout=60)
                    return self
            except (OSError, TimeoutError):
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    logs = "".join((self.root / f).read_text()[-1500:] for f in ("scheduler.log", "worker0.log"))
                    raise AssertionError(f"the Dask cluster did not start:\n{logs}")
                time.sleep(0.5)

    def log(self, name: str) -> str:
        p = self.root / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


class MotoS3:
    """moto's S3 API in server mode (``moto_server``), on loopback: a real HTTP S3 endpoint."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> "MotoS3":
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "moto.log"
        self.proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                      "-p", str(self.port)], stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        wait_until_answers(f"{self.url}/moto-api/", self.proc, self.log, timeout=60)
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test", aws_secret_access_key="test",
                            region_name="us-east-1")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
