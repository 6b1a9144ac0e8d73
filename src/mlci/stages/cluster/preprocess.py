"""preprocess on a Dask cluster: each partition read, validated, split and written by a worker.

A partition is a byte range of a CSV file (``dask.blocksize``; each range after the first gets the
file's header line in front) or one Parquet file. Its task runs the local engine's own validation
(:func:`mlci.data.load.load_bytes` / :func:`~mlci.data.load.load_arrow`) and the row-hash split
(:func:`mlci.data.split.row_positions`: a row's split depends on its values only, never on its
partition), then writes its rows of each split as one Parquet part file. The client receives only
counts and rejected rows. The outputs appear only once every partition succeeded: parts go to a
temporary directory, renamed into place at the end.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlci.stages.cluster.client import client, gather, translated
from mlci.stages.cluster.files import remove_dir, replace_dir
from mlci.config import settings as S
from mlci.data.dataset import DatasetDef
from mlci.data.sources import fingerprint, listing
from mlci.data.split import SCHEME, row_positions
from mlci.errors import DataError, RejectLimitError
from mlci.fileio import TMP_PREFIX, write_json
from mlci.stages.context import StageContext
from mlci.stages.io import write_csv

SAMPLE_BYTES = 1 << 16  # enough of a file's start to hold its header line


@dataclass(frozen=True)
class Part:
    url: str
    kind: str  # csv | parquet
    offset: int = 0
    length: int | None = None
    header: bytes | None = None  # put in front of a CSV range that is not the file's start

    @property
    def where(self) -> str:
        if self.kind == "parquet" or (self.offset == 0 and self.length is None):
            return self.url
        return f"{self.url} (bytes {self.offset}-{self.offset + (self.length or 0)}; lines counted from there)"


def plan(location: str, blocksize: int, ds: DatasetDef) -> list[Part]:
    """The partitions of the data at ``location``."""
    import fsspec

    found = listing(location)
    parts: list[Part] = []
    for path in found.paths:
        url = found.url(path)
        if found.kind == "parquet":
            parts.append(Part(url, "parquet"))
            continue
        size = found.fs.size(path)
        with fsspec.open(url, "rb") as fh:
            sample = fh.read(SAMPLE_BYTES)
        if not sample.strip():
            raise DataError(f"{url}: file is empty")
        from mlci.data.load import header_line

        header = header_line(sample, ds, url)
        for offset in range(0, max(size, 1), blocksize):
            parts.append(Part(url, "csv", offset, min(blocksize, size - offset), header))
    return parts


def load_part(part: Part, ds: DatasetDef, seed: int, validation: float, test: float, out: str, index: int) -> dict:
    """One partition's task: validate, split, write ``out/<split>.parquet/part-<index>.parquet``;
    return its counts and its rejected rows."""
    import fsspec

    from mlci.data.load import load_arrow, load_bytes

    if part.kind == "parquet":
        import pyarrow.parquet as pq

        with fsspec.open(part.url, "rb") as fh:
            try:
                table = pq.read_table(fh)
            except (OSError, ValueError) as e:
                raise DataError(f"{part.url}: not a readable Parquet file ({type(e).__name__}: {str(e)[:120]})") from None
        loaded = load_arrow(table, part.url, ds)
    else:
        from fsspec.utils import read_block

        with fsspec.open(part.url, "rb") as fh:
            block = read_block(fh, part.offset, part.length, delimiter=b"\n")
        if not block.strip():
            return _empty()
        if part.offset > 0 and part.header is not None:
            block = part.header + b"\n" + block
        loaded = load_bytes(block, part.where, ds)
    frame = loaded.frame
    u = row_positions(frame, seed) if len(frame) else np.empty(0)
    which = np.where(u < test, 0, np.where(u < test + validation, 1, 2))
    stats = {"rows_read": loaded.rows_read, "rows_valid": len(frame), "reasons": loaded.reject_reasons,
             "missing": {k: int(v) for k, v in frame.isna().sum().items() if v}, "rows": {}, "labels": {},
             "categories": {}, "spelling": loaded.spelling}
    for code, name in enumerate(("test", "validation", "train")):
        rows = frame.loc[which == code]
        rows = rows.take(np.argsort(u[which == code], kind="stable"))  # the split's own order: by hash
        stats["rows"][name] = len(rows)
        stats["labels"][name] = {str(k): int(v) for k, v in rows[ds.target].value_counts().items() if v}
        if name == "train":
            stats["categories"] = {c.name: sorted(map(str, rows[c.name].dropna().unique()))
                                   for c in ds.features if c.type == "categorical" and c.categories is None}
        if len(rows):
            # The client made these directories; after a failure it removes them, and a task still
            # running then must not make them again (its write fails instead).
            target = Path(out) / f"{name}.parquet" / f"part-{index:05d}.parquet"
            # Text, not pandas categoricals: each part's categories would differ, and so its schema.
            plain = rows.reset_index(drop=True).astype({c: "string" for c in rows.columns
                                                        if isinstance(rows[c].dtype, pd.CategoricalDtype)})
            plain.to_parquet(target, index=False, compression="zstd")
    rejects = loaded.rejects
    if len(rejects):
        rejects.insert(0, "part", part.where)
    stats["rejects"] = rejects
    return stats


def _empty() -> dict:
    return {"rows_read": 0, "rows_valid": 0, "reasons": {}, "missing": {}, "rows": {}, "labels": {},
            "categories": {}, "spelling": {}, "rejects": pd.DataFrame()}


@translated("preprocess on the Dask cluster")
def preprocess(ctx: StageContext) -> dict:
    s, params = ctx.settings, ctx.params
    ds = params.dataset_def(s.params_file.parent)
    source = str(s.raw_source)
    parts = plan(source, params.dask.blocksize, ds)
    c = client(params.dask)
    ctx.echo(f"preprocess: {len(parts)} partitions of {source} on {len(c.scheduler_info()['workers'])} Dask workers")
    sp = params.split
    tmp = s.processed_data_dir / f"{TMP_PREFIX}dask-{uuid.uuid4().hex[:12]}"
    for name in S.SPLITS:
        (tmp / f"{name}.parquet").mkdir(parents=True)
    try:
        futures = [c.submit(load_part, p, ds, sp.seed, sp.validation, sp.test, str(tmp.resolve()), i,
                            pure=False, key=f"mlci-preprocess-{i}-{uuid.uuid4().hex[:8]}")
                   for i, p in enumerate(parts)]
        results = gather(c, futures, params.dask.step_timeout, f"preprocess of {source}")
        meta = _summary(results, ds, source, params)
        rejects = [r["rejects"] for r in results if len(r["rejects"])]
        for name in S.SPLITS:
            replace_dir(tmp / f"{name}.parquet", s.split_path(name))
        write_csv(pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(columns=["part", "line", "column", "reason"]),
                  s.rejects_path)
    finally:
        remove_dir(tmp)
    write_json(s.result(S.PREPROCESS_METADATA), meta)
    return meta


def _summary(results: list[dict], ds: DatasetDef, source: str, params) -> dict:
    """preprocess_metadata.json from the partitions' counts; the local engine's checks on them."""
    read = sum(r["rows_read"] for r in results)
    valid = sum(r["rows_valid"] for r in results)
    rejected = read - valid
    if read == 0:
        raise DataError(f"{source}: no data rows")
    share, limit = rejected / read, params.preprocess.max_reject_share
    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    if share > limit:
        top = ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        raise RejectLimitError(f"{source}: {rejected} of {read} rows rejected ({share:.1%} > "
                               f"preprocess.max_reject_share {limit:.1%}): {top}")
    rows = {n: sum(r["rows"].get(n, 0) for r in results) for n in S.SPLITS}
    labels = {n: {} for n in S.SPLITS}
    for r in results:
        for n, counts in r["labels"].items():
            for k, v in counts.items():
                labels[n][k] = labels[n].get(k, 0) + v
    total = {}
    for n in S.SPLITS:
        for k, v in labels[n].items():
            total[k] = total.get(k, 0) + v
    if min(total.values(), default=0) < 5 or len(total) < 2 or valid < 20:
        raise DataError(f"{source}: too few rows to split: {total} valid rows per class (need at least 5 of each)")
    for n in S.SPLITS:
        lacking = [k for k in total if not labels[n].get(k)]
        if not rows[n] or lacking:
            raise DataError(f"{source}: cannot split the data: the {n} split has "
                            + (f"no rows labelled {', '.join(lacking)}" if rows[n] else "no rows")
                            + f" ({rows[n]} rows); more rows or a larger split.{n} fraction")
    missing: dict[str, int] = {}
    categories: dict[str, set] = {}
    for r in results:
        for k, v in r["missing"].items():
            missing[k] = missing.get(k, 0) + v
        for k, v in r["categories"].items():
            categories.setdefault(k, set()).update(v)
    spelling = next((r["spelling"] for r in results if r["spelling"]), {})
    sp = params.split
    return {
        "source": source,
        "data_sha256": fingerprint(source),
        "format": "header" if spelling else "no header (UCI)",
        "header_names": spelling,
        "rows_read": read,
        "rows_valid": valid,
        "rows_rejected": rejected,
        "reject_share": round(share, 6),
        "reject_reasons": reasons,
        "split": {"scheme": SCHEME, "seed": sp.seed, "validation": sp.validation, "test": sp.test},
        "rows": rows,
        "positive_share": {n: round(labels[n].get(ds.positive_label, 0) / rows[n], 6) for n in S.SPLITS},
        "missing_values": missing,
        "engine": "dask",
        "partitions": len(results),
        # The train split's values of each categorical without declared categories: the encoder's.
        "categories": {k: sorted(v) for k, v in categories.items()},
    }
