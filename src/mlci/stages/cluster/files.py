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
