"""A push's run and the webhook's configuration."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
    build_ca: str | None = None  # a proxy's CA certificate file, for pip in `docker build` (PIP_CA, in no layer)
    max_body_bytes: int = 1 << 20
    timeout: float = 1800.0
