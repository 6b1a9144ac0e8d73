"""`mlci webhook`: a real `git push` to a local bare repository whose post-receive hook POSTs a signed
GitHub-style push event; the server checks out the commit and runs the pipeline. Plus hostile requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import PATH_VARS, ROOT, adult_data, processes_under, repo_files
from servers import free_port

SECRET = "s3cret-for-tests"
HOSTILE = "$(touch${IFS}pwned)"  # a legal branch name
HOOK = """#!{python}
# post-receive: POST a signed GitHub-style push event per updated ref.
import hashlib, hmac, json, sys, urllib.request, uuid
for line in sys.stdin:
    old, new, ref = line.split()
    body = json.dumps({{"ref": ref, "before": old, "after": new, "pusher": {{"name": "test"}},
                       "repository": {{"full_name": "acme/adult", "clone_url": {bare!r}}}}}).encode()
    sig = "sha256=" + hmac.new({secret!r}.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request({url!r}, data=body, method="POST", headers={{
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sig}})
    print(urllib.request.urlopen(req, timeout=10).read().decode())
"""


class Server:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.bare = tmp / "origin.git"
        self.work = tmp / "project"
        self.cwd = tmp / "server"
        self.cwd.mkdir()
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = None

    def git(self, *args: str, cwd: Path | None = None) -> str:
        cmd = ["git", "-c", "user.email=dev@example.invalid", "-c", "user.name=dev", *args]
        return subprocess.run(cmd, cwd=cwd or self.work, check=True, capture_output=True, text=True).stdout.strip()

    def request(self, body: bytes, *, event: str = "push", signature: str | None = "sign",
                delivery: str | None = None, headers: dict | None = None) -> tuple[int, dict]:
        h = {"Content-Type": "application/json", "X-GitHub-Event": event,
             "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
        if signature == "sign":
            h["X-Hub-Signature-256"] = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        elif signature is not None:
            h["X-Hub-Signature-256"] = signature
        h.update(headers or {})
        req = urllib.request.Request(self.url + "/github-webhook/", data=body, method="POST", headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def wait(self, commit: str, timeout: float = 240) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            done = [r for r in self.get("/runs") if r["commit"] == commit and r["finished_at"]]
            if done:
                return self.get(f"/runs/{done[0]['id']}")
            time.sleep(0.5)
        raise AssertionError(f"no finished run for {commit}: {self.get('/runs')}")


def start(tmp: Path, files: dict[str, Path], runner: str, *extra: str) -> Server:
    """A project repository with ``files``, its bare origin (with the hook) and a webhook server."""
    import os

    srv = Server(tmp)
    for name, source in files.items():
        (srv.work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, srv.work / name)
    srv.git("init", "-q", "-b", "main")
    srv.git("add", "-A")
    srv.git("commit", "-qm", "the project")
    srv.git("init", "-q", "--bare", str(srv.bare), cwd=srv.tmp)
    hook = srv.bare / "hooks" / "post-receive"
    hook.write_text(HOOK.format(python=sys.executable, bare=str(srv.bare), secret=SECRET,
                                url=srv.url + "/github-webhook/"))
    hook.chmod(0o755)
    srv.git("remote", "add", "origin", str(srv.bare))
    port = srv.url.rsplit(":", 1)[1]
    srv.proc = subprocess.Popen(
        [sys.executable, "-m", "mlci", "webhook", "--repo-url", str(srv.bare), "--branch", "main",
         "--repository", "acme/adult", "--workdir", str(srv.tmp / "runs"), "--runner", runner, "--port", port,
         "--max-body-bytes", "65536", *extra],
        cwd=srv.cwd, env={**{k: v for k, v in os.environ.items() if k not in PATH_VARS},
                          "MLCI_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.DEVNULL, stderr=open(srv.tmp / "server.log", "w"))
    deadline = time.time() + 60
    while True:
        try:
            srv.get("/health")
            return srv
        except OSError:
            if time.time() > deadline or srv.proc.poll() is not None:
                raise AssertionError((srv.tmp / "server.log").read_text()[-3000:]) from None
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Host runner: the project is params.yaml and the data; the installed mlci runs it."""
    files = {"params.yaml": ROOT / "params.yaml", "data/raw/adult.data": adult_data()}
    srv = start(tmp_path_factory.mktemp("webhook"), files, "host", "--branch", HOSTILE)
    yield srv
    srv.proc.terminate()
    srv.proc.wait(timeout=30)


def test_push_runs_the_pipeline_queues_supersedes_and_reports_the_gate(server):
    server.git("push", "-q", "origin", "main")
    first = server.git("rev-parse", "HEAD")
    # Two more pushes while the first runs: the second waits, the third replaces it.
    params = server.work / "params.yaml"
    params.write_text(params.read_text() + "\n# a change\n")
    server.git("commit", "-qam", "second")
    server.git("push", "-q", "origin", "main")
    second = server.git("rev-parse", "HEAD")
    params.write_text(params.read_text().replace("min: 0.8", "min: 0.99"))  # a gate that cannot pass
    server.git("commit", "-qam", "third: impossible gate")
    server.git("push", "-q", "origin", "main")
    third = server.git("rev-parse", "HEAD")

    run = server.wait(first)
    assert run["status"] == "passed" and run["exit_code"] == 0 and run["runner"] == "host"
    assert run["gate"]["passed"] is True and run["metrics"]["test_acc"] >= 0.85
    assert "train" in run["log"] and "is the champion" in run["log"]
    superseded = server.wait(second)
    assert superseded["status"] == "superseded" and superseded["started_at"] is None
    failed = server.wait(third)
    assert failed["status"] == "gate-failed" and failed["exit_code"] == 3 and failed["gate"]["passed"] is False
    # The first push replayed (same body and signature, a new delivery id): nothing runs again.
    body = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": first,
                       "repository": {"full_name": "acme/adult"}}).encode()
    status, reply = server.request(body)
    assert status == 202 and "already built" in reply["ignored"]
    assert len([r for r in server.get("/runs") if r["commit"] == first]) == 1
    # Finished runs leave nothing running but the server itself.
    assert processes_under(server.tmp, but=(server.proc.pid,)) == []


def test_hostile_branch_name_is_only_data(server):
    root = server.git("rev-list", "--max-parents=0", "HEAD")  # the project as first committed (gate passes)
    server.git("checkout", "-q", "-b", HOSTILE, root)
    (server.work / "note.txt").write_text("hello\n")
    # A pushed top-level `mlci` package must not stand in for the installed one, nor see the secret.
    fake = server.work / "mlci"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("import os, pathlib\n"
                                      "pathlib.Path('pwned-env').write_text(repr(dict(os.environ)))\n")
    server.git("add", "note.txt", "mlci")
    server.git("commit", "-qm", "on a hostile branch")
    server.git("push", "-q", "origin", HOSTILE)
    commit = server.git("rev-parse", "HEAD")
    run = server.wait(commit)
    assert run["branch"] == HOSTILE and run["status"] == "passed" and run["gate"]["passed"] is True
    assert not list(server.tmp.rglob("pwned*")) and not (Path.cwd() / "pwned").exists()


def push_body(branch: str = "main", **extra) -> bytes:
    payload = {"ref": f"refs/heads/{branch}", "before": "0" * 40, "after": "a" * 40,
               "repository": {"full_name": "acme/adult"}, **extra}
    return json.dumps(payload).encode()


def test_bad_requests_run_nothing(server):
    before = len(server.get("/runs"))
    body = push_body()
    forged = "sha256=" + hmac.new(b"wrong secret", body, hashlib.sha256).hexdigest()
    replayed_sig = "sha256=" + hmac.new(SECRET.encode(), push_body(branch="other"), hashlib.sha256).hexdigest()
    cases = [
        (server.request(body, signature=None), 401),  # unsigned
        (server.request(body, signature=forged), 401),  # forged
        (server.request(body, signature=replayed_sig), 401),  # a real signature, replayed with another body
        (server.request(body, signature="sha1=" + "0" * 40), 401),  # wrong scheme
        (server.request(b"x" * 70_000), 413),  # oversized
        (server.request(b"{not json"), 400),  # malformed, yet signed
        (server.request(json.dumps({"ref": 5}).encode()), 400),  # not a push payload
        (server.request(push_body(after="../../etc")), 400),  # not a commit id
        (server.request(push_body(branch="feature")), 202),  # a branch nobody watches
        (server.request(push_body(repository={"full_name": "evil/repo"})), 202),  # another repository
        (server.request(body, event="issues"), 202),  # another event
        (server.request(push_body(after="0" * 40)), 202),  # a deleted branch
    ]
    for (status, reply), expected in cases:
        assert status == expected, reply
        assert ("error" in reply) if expected >= 400 else ("ignored" in reply)
    assert server.request(b"{}", event="ping")[0] == 200
    # The same delivery twice (a replay of a valid request): the second is ignored.
    delivery = str(uuid.uuid4())
    unknown = push_body(after="b" * 40)  # a commit that does not exist: the run fails, cleanly
    assert server.request(unknown, delivery=delivery)[0] == 202
    status, reply = server.request(unknown, delivery=delivery)
    assert status == 202 and "already received" in reply["ignored"]
    runs = server.get("/runs")
    assert len(runs) == before + 1
    run = server.wait("b" * 40, timeout=60)
    assert run["status"] == "failed" and "not found" in run["error"]
    assert server.proc.poll() is None  # still serving


def test_push_runs_the_pipeline_in_the_commits_image(tmp_path):
    """Docker runner: the pushed commit is this repository; its own Dockerfile builds the image that runs."""
    from docker_harness import PROXY_CAS, docker_cli, engine_or_skip, ensure_base_image, proxy_ca

    engine_or_skip()
    ensure_base_image()
    files = {name: ROOT / name for name in repo_files()}
    extra = []
    if PROXY_CAS:
        (tmp_path / "proxy-ca.pem").write_text(proxy_ca())
        extra = ["--build-ca", str(tmp_path / "proxy-ca.pem")]
    import os

    os.environ.setdefault("MLCI_DOCKER", docker_cli())  # the server inherits it
    srv = start(tmp_path, files, "docker", *extra)
    try:
        srv.git("push", "-q", "origin", "main")
        run = srv.wait(srv.git("rev-parse", "HEAD"), timeout=900)
        assert run["runner"] == "docker" and run["status"] == "passed", run["log"][-3000:]
        assert run["gate"]["passed"] is True and run["metrics"]["test_acc"] >= 0.85
        with urllib.request.urlopen(f"{srv.url}/runs/{run['id']}/log", timeout=30) as resp:
            log = resp.read().decode()
        # The command line shows a placeholder (BuildKit's own progress lines do print build arguments;
        # the CA is public, and no layer of the image holds it: test_container greps the image).
        assert "docker build --build-arg PIP_CA=<the proxy's CA>" in log or "docker build --build-arg MLCI" in log
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)


def test_two_branches_pushed_at_once_on_a_fresh_store_are_both_recorded(tmp_path):
    """One push updating two watched branches: their runs go side by side, into one new SQLite store."""
    files = {"params.yaml": ROOT / "params.yaml", "data/raw/adult.data": adult_data()}
    srv = start(tmp_path, files, "host", "--branch", "second")
    try:
        params = srv.work / "params.yaml"
        srv.git("checkout", "-q", "-b", "second")
        params.write_text(params.read_text().replace("n_estimators: 400", "n_estimators: 300", 1))
        srv.git("commit", "-qam", "a second model")
        second = srv.git("rev-parse", "HEAD")
        main = srv.git("rev-parse", "main")
        assert not list(tmp_path.rglob("mlflow.db"))  # the store does not exist yet
        srv.git("push", "-q", "origin", "main", "second")
        runs = {name: srv.wait(commit) for name, commit in (("main", main), ("second", second))}
        for name, run in runs.items():
            assert run["status"] == "passed" and "tracked: run" in run["log"], (name, run["log"][-2000:])
        assert "is the champion" in runs["main"]["log"] and "challenger" in runs["second"]["log"]
        (store,) = tmp_path.rglob("mlflow.db")
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}", registry_uri=f"sqlite:///{store}")
        exp = client.get_experiment_by_name("adult")
        recorded = client.search_runs([exp.experiment_id], "tags.`mlci.command` = 'run'")
        assert sorted(r.data.tags["mlflow.source.git.branch"] for r in recorded) == ["main", "second"]
        assert processes_under(srv.tmp, but=(srv.proc.pid,)) == []
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)
