"""What ``mlci serve`` is told: address, polling, limits, CORS, logging."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    log_format: str = "text"  # or "json": one object per line (serving/logs.py)
    metrics: bool = True  # GET /metrics and the request path's counting (serving/metrics.py)
    log_predictions: Path | None = None  # the prediction log's directory (serving/predlog.py); None: off
    log_sample: float = 1.0
    log_max_bytes: int = 256 << 20
    log_flush_seconds: float = 10.0
