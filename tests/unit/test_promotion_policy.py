"""Who may move the champion: the promotion policy, from the parameters and where the run happens."""

from __future__ import annotations

import pytest

from mlci.tracking.record import promotion_refused
from mlci.tracking.store import ci_branch, pull_request

POLICY = {"promote": True, "promote_branches": ["main", "master"]}


@pytest.mark.parametrize("git, refused", [
    ({}, None),  # not a checkout, no CI: a laptop's run promotes, as always
    ({"git_branch": "main"}, None),
    ({"git_branch": "feature/x"}, "branch 'feature/x' does not promote"),
    ({"git_branch": "main", "pull_request": "true"}, "a pull request never promotes"),
])
def test_branches_and_pull_requests(git, refused):
    got = promotion_refused(POLICY, git)
    assert (got is None) if refused is None else got.startswith(refused)


def test_promotion_off_and_every_branch():
    assert "promotion is off" in promotion_refused({**POLICY, "promote": False}, {"git_branch": "main"})
    assert promotion_refused({"promote": True, "promote_branches": []}, {"git_branch": "anything"}) is None


@pytest.mark.parametrize("env, branch, pr", [
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF_NAME": "main", "GITHUB_EVENT_NAME": "push"}, "main", False),
    ({"GITHUB_ACTIONS": "true", "GITHUB_HEAD_REF": "fix", "GITHUB_REF_NAME": "7/merge",
      "GITHUB_EVENT_NAME": "pull_request"}, "fix", True),
    ({"GIT_BRANCH": "origin/main"}, "main", False),  # Jenkins' git plugin
    ({"BRANCH_NAME": "PR-7", "CHANGE_ID": "7", "CHANGE_BRANCH": "fix"}, "fix", True),  # Jenkins multibranch
    ({"MLCI_BRANCH": "release"}, "release", False),
    ({}, None, False),
])
def test_the_ci_says_which_branch(monkeypatch, env, branch, pr):
    for name in ("GITHUB_ACTIONS", "GITHUB_REF_NAME", "GITHUB_HEAD_REF", "GITHUB_EVENT_NAME", "GIT_BRANCH",
                 "BRANCH_NAME", "CHANGE_ID", "CHANGE_BRANCH", "MLCI_BRANCH", "CI_COMMIT_REF_NAME",
                 "CI_MERGE_REQUEST_IID"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert ci_branch() == branch and pull_request() is pr
