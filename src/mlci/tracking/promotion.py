"""Moving the champion by hand (``mlci promote``, ``mlci rollback``).

On a SQLite store at a schema revision it knows, ``direct.py`` writes MLflow's rows itself, without
MLflow's 2-3 s start-up; on any other store (a tracking server, another revision, remote artifacts)
MLflow's client does it (``registry.Registry``). Either way the same checks come first and the same
rows and tags are written (``tests/integration/test_tracking.py`` compares them).
"""

from __future__ import annotations

from mlci.tracking import direct


def promote(uri: str, tracking: dict, version: str, reason: str) -> str | None:
    """Make ``version`` the champion; the previous champion's version, or None."""
    previous = direct.promote(uri, tracking, version, reason)
    if previous is not direct.UNKNOWN:
        return previous
    from mlci.tracking.registry import Registry

    return Registry(uri, tracking).promote(version, reason)


def rollback(uri: str, tracking: dict, reason: str) -> tuple[str, str]:
    """Move the champion back to the version promoted before it: (from, to)."""
    moved = direct.rollback(uri, tracking, reason)
    if moved is not direct.UNKNOWN:
        return moved
    from mlci.tracking.registry import Registry

    return Registry(uri, tracking).rollback(reason)
