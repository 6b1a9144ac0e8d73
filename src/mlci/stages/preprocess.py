"""preprocess: the raw CSV -> validated, typed train/validation/test Parquet splits and a rejects file."""

from __future__ import annotations

from mlci.config import settings as S
from mlci.data.load import describe_rejects, load_table
from mlci.data.split import SCHEME, split_frame
from mlci.errors import RejectLimitError, UsageError
from mlci.fileio import write_json
from mlci.stages.context import StageContext
from mlci.stages.io import write_csv, write_parquet


def preprocess(ctx: StageContext) -> dict:
    s, params = ctx.settings, ctx.params
    if params.engine == "dask":
        from mlci.stages.cluster.preprocess import preprocess as on_cluster

        return on_cluster(ctx)
    if isinstance(s.raw_source, str):
        raise UsageError(f"{s.raw_source}: a directory, a glob or a URL of files is read by the Dask engine "
                         "(-S engine=dask, README \"At scale\"); the local engine reads one file")
    ds = params.dataset_def(s.params_file.parent)
    loaded = load_table(s.raw_path, ds)
    loaded.raw = None  # every field as read, kept for scoring output: here only memory
    share = loaded.rows_rejected / loaded.rows_read
    limit = params.preprocess.max_reject_share
    if share > limit:
        raise RejectLimitError(
            f"{s.raw_path}: {loaded.rows_rejected} of {loaded.rows_read} rows rejected "
            f"({share:.1%} > preprocess.max_reject_share {limit:.1%}): {describe_rejects(loaded.rejects)}"
        )
    if loaded.rows_rejected:
        ctx.echo(f"{loaded.rows_rejected} rows rejected ({share:.2%}), see {s.rejects_path}")

    frame = loaded.frame
    missing = {k: int(v) for k, v in frame.isna().sum().items() if v}
    rows_valid = len(frame)
    sp = params.split
    splits = split_frame(frame, ds.target, sp.validation, sp.test, sp.seed, str(s.raw_path))
    del frame
    loaded.frame = None  # the splits hold the rows now
    for name, part in splits.items():
        write_parquet(part.reset_index(drop=True), s.split_path(name))
    write_csv(loaded.rejects, s.rejects_path)
    meta = {
        "source": str(s.raw_path),
        "data_sha256": loaded.sha256,
        "format": "header" if loaded.has_header else "no header (UCI)",
        "header_names": loaded.spelling,
        "rows_read": loaded.rows_read,
        "rows_valid": rows_valid,
        "rows_rejected": loaded.rows_rejected,
        "reject_share": round(share, 6),
        "reject_reasons": loaded.reject_reasons,
        "split": {"scheme": SCHEME, "seed": sp.seed, "validation": sp.validation, "test": sp.test},
        "rows": {name: len(part) for name, part in splits.items()},
        "positive_share": {
            name: round(float((part[ds.target] == ds.positive_label).mean()), 6) for name, part in splits.items()
        },
        "missing_values": missing,
    }
    write_json(s.result(S.PREPROCESS_METADATA), meta)
    return meta
