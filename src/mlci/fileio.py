"""Small I/O helpers: atomic writes, content hashes, JSON.

Every output mlci writes goes through :func:`atomic_path`: the data is
written to a temporary file in the same directory and renamed over the
target, so a reader (or a run killed half-way) sees the old file or the new
one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

TMP_PREFIX = ".mlci-tmp-"


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # Results must be readable by whoever mounted the volume, not only the writer.
        os.chmod(tmp_path, 0o644)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as e:
        raise _naming(e, target) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _naming(e: OSError, target: Path) -> OSError:
    """``e`` with the file it was about: a failed write (a full disk) names no file of its own."""
    if e.filename is None:
        e.filename = str(target)
    return e


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_set(files: dict[Path, bytes]) -> None:
    """Write several files as one output: every temporary is written first (a failure, a full disk say,
    leaves every target as it was), then each is renamed over its target."""
    written: list[tuple[Path, Path]] = []
    try:
        for target, data in files.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent)
            written.append((Path(tmp), target))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
        for tmp, target in written:
            os.replace(tmp, target)
    except OSError as e:
        raise _naming(e, target) from None
    finally:
        for tmp, _ in written:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_json(target: Path, obj: Any) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, shape: type = dict) -> Any:
    """A JSON file mlci wrote; a damaged one is a :class:`~mlci.errors.StateError` naming it."""
    from mlci.errors import StateError

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateError(f"{path}: damaged ({type(e).__name__}: {str(e)[:120]}); delete it, or rerun with --force "
                         "to make it again") from None
    if shape is not None and not isinstance(data, shape):
        raise StateError(f"{path}: damaged (a JSON {type(data).__name__}, expected an object); delete it, or rerun "
                         "with --force to make it again")
    return data


def remove_stale_temps(directory: Path) -> None:
    """Delete temporary files (and the Dask engine's temporary directories) left by a run that was
    killed mid-write."""
    if directory.is_dir():
        for p in directory.glob(f"{TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()


#: Hashes already computed in this process, by what identifies a file's content without reading it
#: (as DVC's state database does): a staleness check, the run-cache key and the lock entry of one
#: stage read its inputs once instead of three times (a 100x-row split is hundreds of MB).
_HASHED: dict[tuple, str] = {}


def file_hash(path: Path) -> str:
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        # Any rewrite changes one of these: our writes replace the file (a new inode), others touch
        # its mtime and ctime, which the kernel keeps in nanoseconds.
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = _HASHED.get(ident)
        if known is None:
            if len(_HASHED) > 10_000:  # a long-running server re-hashing a reloaded model: stay small
                _HASHED.clear()
            known = _HASHED[ident] = "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
        return known


def path_hash(path: Path) -> str | None:
    """A file's hash; a directory's (a partitioned Parquet output): the hash of its files' names and
    hashes, in name order; None when there is neither."""
    if path.is_file():
        return file_hash(path)
    if not path.is_dir():
        return None
    members = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(TMP_PREFIX))
    listing = "\n".join(f"{p.relative_to(path).as_posix()} {file_hash(p)}" for p in members)
    return "sha256-dir:" + hashlib.sha256(listing.encode()).hexdigest()


def bytes_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_json_or_none(path: Path) -> Any:
    """The file's JSON, or None when there is no such file."""
    return read_json(path) if Path(path).exists() else None


def flock(fd: int, wait: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, waiting up to ``wait`` seconds; False if it stayed taken."""
    import errno
    import fcntl
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
