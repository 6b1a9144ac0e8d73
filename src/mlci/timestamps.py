"""UTC timestamps as mlci writes them (ISO 8601, explicit offset)."""

from __future__ import annotations

import datetime as _dt


def utc_now(timespec: str = "seconds") -> str:
    """Now in UTC: ``seconds`` for what files record, ``milliseconds`` for audit tags and logs."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


def iso_from_ms(ms: int | None) -> str | None:
    """An epoch-milliseconds time (MLflow's) as ISO 8601 in UTC, to the second; None stays None."""
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="seconds") if ms else None
