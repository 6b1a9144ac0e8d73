"""CI definitions, checked offline: the Jenkins Job Builder jobs render to the tutorial's chain, the
Jenkinsfile passes npm-groovy-lint, and every step is a real mlci command."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import ROOT, processes_under, repo_files

BIN = Path(sys.executable).parent
GROOVY_LINT = "npm-groovy-lint@15.2.2"  # 15: Node 20 and the installed Java (18 needs Node 22)
CHAIN = ["github-to-container", "preprocessing", "train", "test"]
MONITOR = "monitor-and-retrain"


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict[str, ET.Element]:
    out = tmp_path_factory.mktemp("jjb")
    proc = subprocess.run([BIN / "jenkins-jobs", "test", ROOT / "jenkins" / "jobs.yaml", "-o", out],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {p.name: ET.parse(p).getroot() for p in out.iterdir()}


def shell(job: ET.Element) -> str:
    return "\n".join(c.text for c in job.iter("command"))


def mlci_commands(text: str) -> list[list[str]]:
    """Every `mlci ...` invocation in shell text, as argument lists."""
    found = []
    for m in re.finditer(r"\bmlci ([a-z][a-z-]*(?: --?[a-z-]+)*)", text):
        found.append(shlex.split(m.group(1)))
    return found


def test_jjb_renders_the_tutorials_four_jobs(jobs):
    assert sorted(jobs) == sorted(CHAIN + [MONITOR])
    for name, job in jobs.items():
        assert job.findtext(".//com.coravy.hudson.plugins.github.GithubProjectProperty/projectUrl").startswith(
            "https://github.com/"), name
        assert job.findtext("concurrentBuild") == "false"
    first = jobs["github-to-container"]
    assert first.find("scm").get("class") == "hudson.plugins.git.GitSCM"
    assert first.find("triggers/com.cloudbees.jenkins.GitHubPushTrigger") is not None
    assert first.findtext(".//hudson.plugins.git.BranchSpec/name") == "*/main"
    assert "docker build -t adult-model ." in shell(first) and "adult-model idle" in shell(first)


def test_jjb_chain_builds_each_job_after_a_stable_upstream(jobs):
    for upstream, downstream in zip(CHAIN, CHAIN[1:]):
        trigger = jobs[downstream].find("triggers/jenkins.triggers.ReverseBuildTrigger")
        assert trigger is not None, downstream
        assert trigger.findtext("upstreamProjects") == upstream
        assert trigger.findtext("threshold/name") == "SUCCESS"  # "only if the build is stable"
        assert jobs[downstream].find("scm").get("class") == "hudson.scm.NullSCM"  # works on the container
    steps = [shell(jobs[name]) for name in CHAIN[1:]]
    assert "mlci preprocess" in steps[0] and "mlci train" in steps[1]
    last = steps[2]
    order = [last.index(s) for s in ("mlci gate", "mlci test", "train_metadata.json", "mlci run")]
    assert order == sorted(order)
    assert "trap '" in last and "docker rm -f model" in last  # the tutorial's final `docker rm -f model`, even on failure


def test_jjb_jobs_have_jenkins_basics(jobs):
    """No overlapping chains, a timeout, the container gone after any failure, JUnit and the archive."""
    for name, job in jobs.items():
        if name == MONITOR:
            continue
        assert job.findtext("blockBuildWhenDownstreamBuilding") == "true", name
        assert job.findtext("blockBuildWhenUpstreamBuilding") == "true", name
        timeout = job.find(".//hudson.plugins.build__timeout.BuildTimeoutWrapper")
        assert timeout is not None and "30" in ET.tostring(timeout, encoding="unicode"), name
        assert "docker rm -f model" in shell(job) and "trap " in shell(job), name  # cleanup on any failure
    test = jobs["test"]
    junit = test.find("publishers/hudson.tasks.junit.JUnitResultArchiver")
    assert junit is not None and junit.findtext("testResults") == "results/junit.xml"
    archived = test.findtext("publishers/hudson.tasks.ArtifactArchiver/artifacts")
    assert "results/*.json" in archived and "results/report.*" in archived
    assert "docker cp model:/data/results ./results" in shell(test)


def test_jjb_monitor_job_retrains_only_on_the_monitors_failure(jobs):
    """Nightly, outside the push chain: `mlci monitor` on the prediction logs; exit 12 (a rule failed)
    runs the pipeline on the fresh data (which gates against the champion); any other failure fails."""
    job = jobs[MONITOR]
    assert job.findtext("triggers/hudson.triggers.TimerTrigger/spec") == "H 3 * * *"
    assert job.find("triggers/jenkins.triggers.ReverseBuildTrigger") is None
    text = shell(job)
    assert text.index("monitor /data/predictions") < text.index('"$rc" -eq 12') < text.index("{image} run".replace(
        "{image}", "adult-model"))
    assert 'exit "$rc"' in text and "mlci-predictions:/data/predictions:ro" in text
    for path in (ROOT / "jenkins" / "monitor.Jenkinsfile", ROOT / ".github" / "workflows" / "monitor.yml"):
        t = path.read_text()
        assert "monitor" in t and "12" in t, path
    flow = (ROOT / ".github" / "workflows" / "monitor.yml").read_text()
    assert "schedule:" in flow and "cron:" in flow
    assert flow.index("mlci monitor") < flow.index("steps.monitor.outputs.exit_code == '12'") < flow.index(
        "python3 tasks.py run")


def test_every_ci_step_is_a_real_mlci_command(jobs):
    from mlci.cli import main

    texts = [shell(j) for j in jobs.values()] + [(ROOT / "Jenkinsfile").read_text(),
                                                  (ROOT / "jenkins" / "monitor.Jenkinsfile").read_text()]
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        texts.append(workflow.read_text())
    used = [c for t in texts for c in mlci_commands(t)]
    assert len(used) >= 10
    for args in used:
        command = main.commands.get(args[0])
        assert command is not None, args
        options = {o for p in command.params for o in p.opts}
        assert all(a in options for a in args[1:] if a.startswith("-")), args


def test_jenkinsfile_is_the_same_pipeline_in_one_job():
    text = (ROOT / "Jenkinsfile").read_text()
    stages = re.findall(r"stage\('([^']+)'\)", text)
    assert stages == ["Build image", "Preprocess", "Train", "Gate", "Test", "Promote"]
    for needed in ("githubPush()", "disableConcurrentBuilds()", "timeout(", "junit ", "results/junit.xml",
                   "archiveArtifacts", "post {", "always {", 'docker rm -f "$CONTAINER"'):
        assert needed in text, needed
    # No logic only Groovy knows: every step is a single-quoted shell command.
    assert not re.search(r"\b(if|for|while|def|script)\b\s*[({]", text)


def groovy_lint(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("npx (Node.js) is missing: .ci/run installs it")
    return subprocess.run([npx, "--yes", GROOVY_LINT, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_groovy_passes_npm_groovy_lint_and_a_broken_jenkinsfile_does_not(tmp_path):
    broken = tmp_path / "Jenkinsfile"
    broken.write_text((ROOT / "Jenkinsfile").read_text().replace("stage('Train') {", "stage('Train') {{", 1))
    try:
        good = [groovy_lint("--failon", "warning", "--output", "txt", path, cwd=ROOT)
                for path in ("Jenkinsfile", "jenkins/monitor.Jenkinsfile", "jenkins/adult_model_job.groovy")]
        bad = groovy_lint("--failon", "error", "--output", "txt", "Jenkinsfile", cwd=tmp_path)
    finally:
        groovy_lint("--killserver", cwd=tmp_path)  # its CodeNarc server would outlive the test
    for proc in good:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert bad.returncode != 0 and "error" in bad.stdout.lower()


def test_jenkins_controller_as_code_is_consistent():
    """What can be checked without the jenkins/jenkins image and its plugins (see jenkins/README.md)."""
    import yaml

    here = ROOT / "jenkins"
    casc = yaml.safe_load((here / "casc.yaml").read_text())
    compose = yaml.safe_load((here / "docker-compose.yml").read_text())
    dockerfile = (here / "Dockerfile").read_text()
    plugins = {line.split(":")[0].strip() for line in (here / "plugins.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert dockerfile.startswith("#") and "FROM jenkins/jenkins:lts-jdk17" in dockerfile
    (job,) = casc["jobs"]
    assert f"COPY --chown=jenkins:jenkins adult_model_job.groovy {job['file']}" in dockerfile
    assert "CASC_JENKINS_CONFIG=/var/jenkins_home/casc" in dockerfile
    assert "scriptPath('Jenkinsfile')" in (here / "adult_model_job.groovy").read_text()
    service = compose["services"]["jenkins"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"] and service["build"] == "."
    # Every plugin the configuration, the job and the Jenkinsfile need.
    assert {"configuration-as-code", "job-dsl", "workflow-aggregator", "git", "github", "junit",
            "timestamper"} <= plugins
    lint = subprocess.run([BIN / "hadolint", here / "Dockerfile"], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_github_workflow_runs_under_act(tmp_path):
    """The workflow's own steps, run by act on this machine (host mode: no containers)."""
    import os

    repo = tmp_path / "repo"
    for name in repo_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    (repo / ".venv").symlink_to(ROOT / ".venv")  # set up already: `tasks.py run` finds it current
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "ci"]):
        subprocess.run(git + args, cwd=repo, check=True)
    noop = ROOT / "tests" / "act" / "noop-action"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # act's copies of the tree go there
    # Every pinned action but checkout (act's own) is mapped to the no-op at its pinned commit.
    pinned = re.findall(r"uses: (actions/(?!checkout)[\w-]+@[0-9a-f]{40})", (ROOT / ".github/workflows/pipeline.yml")
                        .read_text())
    assert len(pinned) == 3
    # The team's tracking store (the MLFLOW_TRACKING_URI secret), shared by the push and the pull request.
    store = tmp_path / "team" / "mlflow.db"
    store.parent.mkdir()

    def act(*args: str) -> str:
        proc = subprocess.run(
            [BIN / "act", *args, "-P", "ubuntu-latest=-self-hosted", "-W", ".github/workflows/pipeline.yml",
             "-s", f"MLFLOW_TRACKING_URI=sqlite:///{store}",
             *[a for ref in pinned for a in ("--local-repository", f"{ref}={noop}")]],
            cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Job succeeded" in out, out[-4000:]
        assert "Success - Main Preprocess, train, gate, test, report, promote" in out
        assert processes_under(tmp_path) == []  # the job's tracked run left no process behind
        return out

    out = act("push")
    assert "Summary - ### Model metrics" in out  # `mlci diff --md` reached the job summary
    assert '"test_acc"' in out and "is the champion" in out

    # A pull request that changes the model: registered and marked the challenger; champion stays.
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("n_estimators: 400", "n_estimators: 300", 1))
    for args in (["checkout", "-qb", "fewer-trees"], ["commit", "-qam", "fewer trees"]):
        subprocess.run(git + args, cwd=repo, check=True)
    event = tmp_path / "pull_request.json"
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": {"ref": "fewer-trees"},
                                                  "base": {"ref": "master"}}}))
    out = act("pull_request", "-e", str(event))
    assert "a pull request never promotes" in out
    import mlflow

    registry = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}", registry_uri=f"sqlite:///{store}")
    assert str(registry.get_model_version_by_alias("adult-income", "champion").version) == "1"
    assert str(registry.get_model_version_by_alias("adult-income", "challenger").version) == "2"

    # The nightly monitor (monitor.yml, dispatched by hand) against the same store's champion.
    import pandas as pd
    from conftest import adult_data, kaggle_csv

    monitor_pins = re.findall(r"uses: (actions/(?!checkout)[\w-]+@[0-9a-f]{40})",
                              (ROOT / ".github/workflows/monitor.yml").read_text())
    fresh = tmp_path / "fresh"  # fresh labelled data: the first 12,000 people
    fresh.mkdir()
    (fresh / "adult.data").write_text("".join(adult_data().read_text().splitlines(True)[:12_000]))
    batch = pd.read_csv(kaggle_csv(tmp_path)).drop(columns=["income"])

    def monitor(logs: pd.DataFrame, succeeds: bool = True) -> str:
        logs.to_csv(tmp_path / "logs.csv", index=False)
        proc = subprocess.run(
            [BIN / "act", "workflow_dispatch", "-P", "ubuntu-latest=-self-hosted", "-W", ".github/workflows/monitor.yml",
             "-s", f"MLFLOW_TRACKING_URI=sqlite:///{store}", "--var", f"MLCI_PREDICTION_LOGS={tmp_path / 'logs.csv'}",
             "--var", f"MLCI_FRESH_DATA_DIR={fresh}",
             *[a for ref in monitor_pins for a in ("--local-repository", f"{ref}={noop}")]],
            cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert (proc.returncode == 0) == succeeds and ("Job succeeded" in out) == succeeds, out[-4000:]
        assert processes_under(tmp_path) == []
        return out

    quiet = monitor(batch.sample(n=8_000, random_state=5))  # the champion's own population: no rule fails
    assert "Success - Main Monitor the champion" in quiet and "Main Retrain on the fresh data" not in quiet
    assert "Summary - " in quiet  # monitor.md reached the job summary
    versions = lambda: sorted(int(v.version) for v in registry.search_model_versions("name = 'adult-income'"))  # noqa: E731
    assert versions() == [1, 2]
    # Ages moved up by 15: the monitor exits 12, so the pipeline runs on the fresh data. Its model
    # (12,000 people) is registered and gated against the champion like any push; it falls short
    # of the champion's ROC-AUC, so the champion stays and the nightly job fails with the gate's exit.
    drifted = monitor(batch.sample(n=8_000, random_state=6).assign(age=lambda f: f["age"] + 15), succeeds=False)
    assert "feature age drifted" in drifted and "Success - Main Monitor the champion" in drifted
    retrain = drifted.split("Main Retrain on the fresh data", 1)[1]
    assert "gate failed" in retrain and "champion" in retrain and "Failure - Main Retrain on the fresh data" in retrain
    assert "exit status 3" in retrain
    assert versions() == [1, 2, 3] and str(registry.get_model_version_by_alias("adult-income", "champion").version) == "1"


def test_github_workflow_is_hardened():
    """zizmor (the GitHub Actions auditor) finds nothing; and what it cannot judge, checked by hand."""
    workflow = ROOT / ".github" / "workflows" / "pipeline.yml"
    for flow in (workflow, ROOT / ".github" / "workflows" / "monitor.yml"):
        proc = subprocess.run([BIN / "zizmor", "--offline", "--format", "plain", str(flow)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    text = workflow.read_text()
    uses = re.findall(r"uses: (\S+)", text)
    assert uses and all(re.fullmatch(r"[\w./-]+@[0-9a-f]{40}", u) for u in uses)  # pinned to commits
    assert "persist-credentials: false" in text and "permissions:\n  contents: read" in text
    assert "hashFiles('requirements-runtime.lock')" in text
