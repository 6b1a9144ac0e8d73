"""The workspace lock (``.mlci/workspace.lock``, ``flock``): two runs never interleave their writes."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from mlci.config import settings as S
from mlci.errors import BusyError
from mlci.fileio import flock


@contextlib.contextmanager
def workspace_lock(s: S.Settings, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on the workspace; wait up to ``wait`` seconds for it."""
    s.state_dir.mkdir(parents=True, exist_ok=True)
    path = s.state_dir / "workspace.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not flock(fd, wait):
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise BusyError(f"another mlci process (pid {holder}) is using this workspace ({s.workdir}); "
                            "wait for it, or pass --wait SECONDS")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
