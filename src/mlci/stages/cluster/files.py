"""Directory outputs of the Dask engine, replaced whole."""

from __future__ import annotations

import shutil
from pathlib import Path


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the directory ``tmp`` where ``target`` is (a file or a directory from an earlier run):
    the old one is removed only once the new one is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not tmp.exists():
        tmp.mkdir(parents=True)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    tmp.rename(target)


def remove_dir(tmp: Path, tries: int = 5) -> None:
    """Remove a temporary directory that cancelled tasks may still be writing into: a worker's
    running task is not stopped by a cancel, so a file may appear while it is being removed.
    The tasks never create the directory itself, so once it is gone they cannot write again."""
    import time

    for _ in range(tries):
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            return
        time.sleep(0.5)
