"""Where the Dask engine's raw data is: a file, a directory or a glob of CSV or Parquet files, on
this machine or on object storage (``s3://...``), listed and opened through fsspec.

Credentials and endpoints come from the storage's own configuration (for S3: the AWS variables
and files, ``AWS_ENDPOINT_URL`` for an S3 API elsewhere than AWS), never from params.yaml.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mlci.errors import DataError

CSV_SUFFIXES = (".csv", ".data", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
_GLOB = set("*?[")


def is_url(location: str) -> bool:
    return "://" in location


@dataclass(frozen=True)
class Listing:
    fs: object  # an fsspec filesystem
    kind: str  # "csv" | "parquet"
    #: The files, each as the filesystem names it (no protocol), in name order.
    paths: tuple[str, ...]
    #: Each file's identity: its content hash on this machine, else size and ETag (or mtime).
    ids: tuple[str, ...]

    def url(self, path: str) -> str:
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        return path if protocol in ("file", "local") else f"{protocol}://{path}"


def listing(location: str) -> Listing:
    """The data files at ``location``; :class:`DataError` naming it when there are none, or when CSV
    and Parquet files are mixed."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as e:
        raise DataError(f"{location}: cannot open ({type(e).__name__}: {e})") from None
    try:
        if _GLOB & set(root):
            found = fs.glob(root, detail=True)
        elif fs.isdir(root):
            found = fs.find(root, detail=True)
        elif fs.exists(root):
            found = {root: fs.info(root)}
        else:
            raise DataError(f"{location}: not found")
    except (OSError, PermissionError) as e:
        raise DataError(f"{location}: cannot list ({type(e).__name__}: {e})") from None
    files = {p: i for p, i in found.items() if i.get("type") != "directory"
             and not p.rsplit("/", 1)[-1].startswith((".", "_"))}
    csv = sorted(p for p in files if p.lower().endswith(CSV_SUFFIXES))
    parquet = sorted(p for p in files if p.lower().endswith(PARQUET_SUFFIXES))
    if csv and parquet:
        raise DataError(f"{location}: holds both CSV ({len(csv)}) and Parquet ({len(parquet)}) files; "
                        "point at one kind")
    paths = csv or parquet
    if not paths:
        raise DataError(f"{location}: no CSV (.csv, .data) or Parquet (.parquet) files there")
    local = "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))
    ids = []
    for p in paths:
        if local:
            from pathlib import Path

            from mlci.fileio import file_hash

            ids.append(file_hash(Path(p)))
        else:
            info = files[p]
            tag = info.get("ETag") or info.get("etag") or info.get("md5") or info.get("LastModified") or info.get("mtime")
            ids.append(f"size={info.get('size')} tag={tag}")
    return Listing(fs, "csv" if csv else "parquet", tuple(paths), tuple(ids))


def fingerprint(location: str) -> str | None:
    """What the lock records for a data source: one hash over its files' names and identities
    (content hashes here; size and ETag on object storage, as DVC records them); None when the
    source has no data files (the lock then says it is missing)."""
    try:
        found = listing(location)
    except DataError:
        return None
    text = "\n".join(f"{p} {i}" for p, i in zip(found.paths, found.ids))
    return "sha256-src:" + hashlib.sha256(text.encode()).hexdigest()
