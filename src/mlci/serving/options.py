"""What ``mlci serve`` is told: address, polling, limits, CORS, logging."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 8000
    poll: float = 30.0
    unknown_categories: str = "reject"
    max_batch: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    access_log: bool = False
