"""The webhook's HTTP side: signed GitHub push events in, one run per branch at a time, status out."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid

# At module level: FastAPI resolves the endpoints' annotations (strings here) in this namespace.
# Only `mlci webhook` imports this module.
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from mlci.webhook.model import Config, Run
from mlci.webhook.runner import execute, run_dir

SHA = re.compile(r"[0-9a-f]{40}")
ZERO = "0" * 40

__all__ = ["Config", "app"]


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
            # The delivery id is not signed: a replayed body with a new one must not run anything either.
            # A commit is built once per branch, unless its run failed for a reason outside the pipeline.
            done = [r for r in self.all.values() if r.branch == branch and r.commit == commit and r.status in
                    ("queued", "running", "passed", "gate-failed")]
            if done:
                return None, f"commit {commit[:12]} on {branch!r} was already built or is queued (run {done[0].id})"
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


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it is larger than ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


def _push(config: Config, body: bytes) -> tuple[str, str] | JSONResponse:
    """(branch, commit) of a signed push event that concerns us, or the answer to give instead."""
    try:
        payload = json.loads(body)
        ref, commit = payload["ref"], payload["after"]
        repository = (payload.get("repository") or {}).get("full_name")
        if not isinstance(ref, str) or not isinstance(commit, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        return JSONResponse({"error": "not a GitHub push payload (needs ref and after)"}, status_code=400)
    if config.repository and repository != config.repository:
        return JSONResponse({"ignored": f"repository {repository!r} is not {config.repository!r}"}, status_code=202)
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    if branch is None or branch not in config.branches:
        return JSONResponse({"ignored": f"ref {ref!r} is not a watched branch"}, status_code=202)
    if commit == ZERO:
        return JSONResponse({"ignored": "branch deleted"}, status_code=202)
    if not SHA.fullmatch(commit):
        return JSONResponse({"error": "after: not a 40-hex-digit commit"}, status_code=400)
    return branch, commit


def app(config: Config):
    runs = Runs(config)
    api = FastAPI(title="mlci webhook", docs_url=None, redoc_url=None)

    @api.post("/github-webhook/")
    async def github_webhook(request: Request):
        body = await _body(request, config.max_body_bytes)
        if body is None:
            return JSONResponse({"error": f"body larger than {config.max_body_bytes} bytes"}, status_code=413)
        if not signature_ok(config.secret, body, request.headers.get("x-hub-signature-256")):
            return JSONResponse({"error": "missing or wrong X-Hub-Signature-256"}, status_code=401)
        event = request.headers.get("x-github-event", "")
        if event == "ping":
            return {"ok": True, "pong": True}
        if event != "push":
            return JSONResponse({"ignored": f"event {event!r} is not a push"}, status_code=202)
        push = _push(config, body)
        if isinstance(push, JSONResponse):
            return push
        run, note = runs.submit(*push, request.headers.get("x-github-delivery"))
        if run is None:
            return JSONResponse({"ignored": note}, status_code=202)
        return JSONResponse({"run": run.id, "status": run.status, "note": note}, status_code=202)

    def find(run_id: str) -> Run:
        run = runs.all.get(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        return run

    @api.get("/runs")
    def list_runs():
        return [r.public() for r in sorted(runs.all.values(), key=lambda r: -r.queued_at)]

    @api.get("/runs/{run_id}")
    def get_run(run_id: str):
        run = find(run_id)
        return {**run.public(), "log": runs.log(run)[-20000:]}

    @api.get("/runs/{run_id}/log", response_class=PlainTextResponse)
    def get_log(run_id: str):
        return runs.log(find(run_id))

    @api.get("/health")
    def health():
        return {"ok": True}

    api.state.runs = runs
    return api
