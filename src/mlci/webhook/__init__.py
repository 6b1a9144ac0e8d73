"""`mlci webhook`: a git push runs the pipeline, for teams without Jenkins.

GitHub (or a ``post-receive`` hook) POSTs push events to ``/github-webhook/``,
the path Jenkins' GitHub plugin uses. A request runs nothing unless its
``X-Hub-Signature-256`` is the HMAC-SHA256 of the exact body under the shared
secret (``MLCI_WEBHOOK_SECRET``). Events for other repositories, branches or
types are acknowledged (2xx) with the reason and ignored.

A push becomes a run: the pushed commit is checked out into a fresh directory
and ``mlci run`` runs there — in the commit's own image when a Docker engine
is reachable (``--runner docker``), else as a process on this machine. One run
at a time per branch; a newer push replaces a queued one (marked superseded).
``GET /runs`` and ``GET /runs/{id}`` serve status, verdict and log.

Nothing from a payload reaches a shell: commands are argument lists, the
commit is checked as 40 hex digits, the branch is only compared with the
watched ones and used as data, and where code comes from is configured
(``--repo-url``), never taken from the payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

# At module level: FastAPI resolves the endpoints' annotations (strings here) in this namespace.
# Only `mlci webhook` imports this module.
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

SHA = re.compile(r"[0-9a-f]{40}")
# The server's own workspace settings must not leak into a checkout's run.
LOCAL_VARS = ("RAW_DATA_DIR", "RAW_DATA_FILE", "PROCESSED_DATA_DIR", "MODEL_DIR", "RESULTS_DIR", "MLCI_PARAMS",
              "MLCI_STATE_DIR", "MLCI_LOCK_FILE")
ZERO = "0" * 40


@dataclass
class Run:
    id: str
    branch: str
    commit: str
    delivery: str | None
    status: str = "queued"  # queued, running, passed, gate-failed, failed, superseded
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    runner: str | None = None
    gate: dict | None = None
    metrics: dict | None = None
    error: str | None = None

    def public(self) -> dict:
        return asdict(self)


@dataclass
class Config:
    secret: bytes
    repo_url: str
    workdir: Path
    branches: tuple[str, ...] = ("main",)
    repository: str | None = None  # "owner/name" the events must be about; None: any
    runner: str = "auto"  # auto, docker, host
    build_secrets: tuple[str, ...] = ()  # "id=path": BuildKit secrets for `docker build` (e.g. a proxy's CA)
    max_body_bytes: int = 1 << 20
    timeout: float = 1800.0


class Runs:
    """Queue and history: one running per branch, at most one waiting (the newest push)."""

    def __init__(self, config: Config):
        self.config = config
        self.lock = threading.Lock()
        self.all: dict[str, Run] = {}
        self.waiting: dict[str, Run] = {}
        self.active: set[str] = set()
        self.deliveries: set[str] = set()

    def submit(self, branch: str, commit: str, delivery: str | None) -> tuple[Run | None, str]:
        with self.lock:
            if delivery and delivery in self.deliveries:
                return None, f"delivery {delivery} was already received"
            if delivery:
                self.deliveries.add(delivery)
            run = Run(uuid.uuid4().hex[:12], branch, commit, delivery)
            self.all[run.id] = run
            replaced = self.waiting.pop(branch, None)
            if replaced is not None:
                replaced.status, replaced.finished_at = "superseded", time.time()
                replaced.error = f"superseded by run {run.id} (a newer push)"
            if branch in self.active:
                self.waiting[branch] = run
                return run, "queued behind the running one"
            self.active.add(branch)
        threading.Thread(target=self._work, args=(run,), daemon=True).start()
        return run, "started"

    def _work(self, run: Run) -> None:
        while True:
            execute(run, self.config)
            with self.lock:
                following = self.waiting.pop(run.branch, None)
                if following is None:
                    self.active.discard(run.branch)
                    return
            run = following

    def log(self, run: Run) -> str:
        path = run_dir(self.config, run) / "log.txt"
        return path.read_text(errors="replace") if path.exists() else ""


def run_dir(config: Config, run: Run) -> Path:
    """Where a run's checkout, log and (docker runner) results live."""
    return config.workdir / "runs" / run.id


def execute(run: Run, config: Config) -> None:
    """Check out the commit into a fresh directory and run the pipeline there."""
    base = run_dir(config, run)
    src = base / "src"
    base.mkdir(parents=True, exist_ok=True)
    log_path = base / "log.txt"
    run.status, run.started_at = "running", time.time()
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            def step(*cmd: str, **kw) -> int:
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                proc = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=config.timeout, **kw)
                return proc.returncode

            if step("git", "clone", "--quiet", "--no-checkout", "--", config.repo_url, str(src)):
                raise RuntimeError("git clone failed")
            if step("git", "-C", str(src), "checkout", "--quiet", "--detach", run.commit):
                raise RuntimeError(f"commit {run.commit} not found in {config.repo_url}")
            run.runner = _runner(config.runner)
            # MLflow's store outlives the checkouts (the champion is what the next push is compared
            # with): a team server if MLFLOW_TRACKING_URI says so, else a SQLite file in the workdir.
            store = config.workdir / "mlflow"
            store.mkdir(exist_ok=True)
            if run.runner == "docker":
                tag = f"mlci-webhook:{run.commit[:12]}"
                secrets = [a for spec in config.build_secrets for a in ("--secret", _secret(spec))]
                if step(docker_cli(), "build", *secrets, "-t", tag, str(src), env=DOCKER_ENV):
                    raise RuntimeError("docker build failed")
                results_dir = base / "results"
                results_dir.mkdir()
                for d in (results_dir, store):
                    d.chmod(0o777)  # the image runs as an unprivileged user
                uri = ["-e", "MLFLOW_TRACKING_URI"] if os.environ.get("MLFLOW_TRACKING_URI") else []
                code = step(docker_cli(), "run", "--rm", *uri, "-v", f"{results_dir}:/data/results",
                            "-v", f"{store}:/data/mlflow", tag, "run", env=DOCKER_ENV)
            else:
                env = {k: v for k, v in os.environ.items() if k not in LOCAL_VARS}
                env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(store / 'mlflow.db').absolute()}")
                code = step(sys.executable, "-m", "mlci", "run", cwd=src, env=env)
                results_dir = src / "results"
        run.exit_code = code
        run.gate = _read(results_dir / "gate.json")
        run.metrics = {k: v for name in ("train_metadata.json", "test_metadata.json")
                       for k, v in (_read(results_dir / name) or {}).items() if k.endswith(("_acc", "_roc_auc"))}
        run.status = "passed" if code == 0 else "gate-failed" if code == 3 else "failed"
        if code not in (0, 3):
            run.error = f"mlci run exited with {code}; see the log"
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        run.status, run.error = "failed", str(e)
    finally:
        run.finished_at = time.time()


def docker_cli() -> str:
    """``MLCI_DOCKER`` (a client that builds with BuildKit secrets, e.g. Debian's /usr/bin/docker) or `docker`."""
    return os.environ.get("MLCI_DOCKER") or shutil.which("docker") or "docker"


DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "1"}


def _secret(spec: str) -> str:
    ident, _, path = spec.partition("=")
    return f"id={ident},src={path}"


def _runner(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        up = subprocess.run([docker_cli(), "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        up = False
    return "docker" if up else "host"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


def app(config: Config):
    runs = Runs(config)
    api = FastAPI(title="mlci webhook", docs_url=None, redoc_url=None)

    @api.post("/github-webhook/")
    async def github_webhook(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return JSONResponse({"error": f"body larger than {config.max_body_bytes} bytes"}, status_code=413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return JSONResponse({"error": f"body larger than {config.max_body_bytes} bytes"}, status_code=413)
        if not signature_ok(config.secret, body, request.headers.get("x-hub-signature-256")):
            return JSONResponse({"error": "missing or wrong X-Hub-Signature-256"}, status_code=401)
        event = request.headers.get("x-github-event", "")
        if event == "ping":
            return {"ok": True, "pong": True}
        if event != "push":
            return JSONResponse({"ignored": f"event {event!r} is not a push"}, status_code=202)
        try:
            payload = json.loads(body)
            ref, commit = payload["ref"], payload["after"]
            repository = (payload.get("repository") or {}).get("full_name")
            if not isinstance(ref, str) or not isinstance(commit, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not a GitHub push payload (needs ref and after)"}, status_code=400)
        if config.repository and repository != config.repository:
            return JSONResponse({"ignored": f"repository {repository!r} is not {config.repository!r}"},
                                status_code=202)
        branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
        if branch is None or branch not in config.branches:
            return JSONResponse({"ignored": f"ref {ref!r} is not a watched branch"}, status_code=202)
        if commit == ZERO:
            return JSONResponse({"ignored": "branch deleted"}, status_code=202)
        if not SHA.fullmatch(commit):
            return JSONResponse({"error": "after: not a 40-hex-digit commit"}, status_code=400)
        run, note = runs.submit(branch, commit, request.headers.get("x-github-delivery"))
        if run is None:
            return JSONResponse({"ignored": note}, status_code=202)
        return JSONResponse({"run": run.id, "status": run.status, "note": note}, status_code=202)

    @api.get("/runs")
    def list_runs():
        return [r.public() for r in sorted(runs.all.values(), key=lambda r: -r.queued_at)]

    @api.get("/runs/{run_id}")
    def get_run(run_id: str):
        run = runs.all.get(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        return {**run.public(), "log": runs.log(run)[-20000:]}

    @api.get("/runs/{run_id}/log", response_class=PlainTextResponse)
    def get_log(run_id: str):
        run = runs.all.get(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        return runs.log(run)

    @api.get("/health")
    def health():
        return {"ok": True}

    api.state.runs = runs
    return api
