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

from mlci.webhook.app import Config, app

__all__ = ["Config", "app"]
