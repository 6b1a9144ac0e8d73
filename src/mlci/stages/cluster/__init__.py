"""``engine: dask``: the stages on a Dask cluster (README, "At scale").

Dask schedules; mlci only says what each partition's task does (the same validation, split,
encoding and scoring functions the local engine runs) and adds up the small answers. The data is
never collected onto the client: partitions are read, validated, split and written by the
workers, the model is fitted by LightGBM's own Dask estimator, and metrics come from per-partition
counts.
"""
