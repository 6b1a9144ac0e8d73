"""Prediction logs (``mlci serve --log-predictions DIR``): served records and answers, as Parquet files.

What is written, per record of a sampled request: every feature as received (validated, under the
data's normalised names) and ``LOG_COLUMNS`` of ``mlci.stages.monitor`` (probability, prediction,
served_at, request_id, model_sha256): what ``mlci monitor DIR`` reads.

How, without touching a response's latency:

* The request path appends one tuple (references to the records it already holds) to a deque, after
  one check of the queue's bound; when full, the records are dropped and counted, never waited for.
* A background thread takes them, builds the columns and writes a file every ``rows_per_file`` records
  or ``flush_seconds`` seconds: to a dotted temporary name in the directory, then renamed, so that a
  reader (``mlci monitor``, which reads ``*.parquet``) never sees half a file.
* After each file the oldest files are deleted until the directory's ``predictions-*.parquet`` take at
  most ``max_bytes``: the byte bound is the retention. A file is kept to about a tenth of it.
* A failed write (a full disk, the directory removed or made read-only) loses that file's records,
  counted by kind on ``/metrics`` and logged once per kind; the server goes on. The directory is
  not re-created: whoever removed it meant something.

Sampling is per request and deterministic: a request is logged when a hash of its request id (and
``seed``) falls under ``sample``, so the same id is always logged or always not.
"""

from __future__ import annotations

import collections
import errno as errno_names
import itertools
import logging
import os
import threading
import time
import zlib
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path

from mlci.serving.records import columns, let_go
from mlci.stages.monitor import LOG_COLUMNS

log = logging.getLogger("mlci.serve")

PREFIX = "predictions-"
ROWS_PER_FILE = 10_000
FLUSH_SECONDS = 10.0
MAX_PENDING = 100_000  # records waiting for the writer at most; beyond, new ones are dropped (counted)
FIRST_ROW_BYTES = 200  # a guess of a record's compressed size until the first file says better
SLICE = 1000  # records the writer turns into columns between two yields of the GIL


def sampled(request_id: str, rate: float, seed: int = 0) -> bool:
    """Whether the request ``request_id`` is logged at ``rate`` (the same answer for the same id)."""
    if rate >= 1.0:
        return True
    return zlib.crc32(request_id.encode(), seed) < rate * 4294967296.0


class PredictionLog:
    """The background writer of one directory."""

    def __init__(self, directory: Path, columns: list[tuple[str, str]], sample: float = 1.0,
                 max_bytes: int = 256 << 20, rows_per_file: int = ROWS_PER_FILE,
                 flush_seconds: float = FLUSH_SECONDS, max_pending: int = MAX_PENDING, seed: int = 0):
        self.dir = Path(directory)
        self.columns = columns  # (feature, declared type) in the served model's order
        self.sample, self.seed = sample, seed
        self.max_bytes = max_bytes
        self.max_rows = rows_per_file
        self.rows_per_file = max(1, min(rows_per_file, max_bytes // (10 * FIRST_ROW_BYTES)))
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self._queue: collections.deque = collections.deque()  # append and popleft: thread-safe in CPython
        self._added = self._taken = 0  # records queued and taken off the queue, ever
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written = self.dropped = self.failed = self.sampled_out = 0
        self.errors: dict[str, int] = {}
        self.bytes = 0
        # Imported at start-up, not in the writer's first file: an import holds the GIL (and the import
        # lock) for a tenth of a second, which requests would wait out.
        import pyarrow.parquet  # noqa: F401

    # -- the request path -------------------------------------------------------------------------

    def add(self, request_id: str, model_sha256: str, records: list, probabilities: list[float],
            labels: list[str]) -> None:
        n = len(records)
        if self.sample < 1.0 and not sampled(request_id, self.sample, self.seed):
            self.sampled_out += n
            return
        # No lock: ``_added`` is written by this thread only, ``_taken`` by the writer only.
        pending = self._added - self._taken
        if pending + n > self.max_pending:
            self.dropped += n
            return
        self._added += n
        # Tuples, not the request's lists: a tuple of untracked objects (strings, floats, msgspec's gc=False
        # Structs) leaves the cyclic collector's view at its first pass, a list never does. Thousands of
        # queued lists surviving into the old generation made full collections frequent and long: 40 µs
        # more per request on the event loop's thread (measured), for a copy of three references here.
        self._queue.append((request_id, model_sha256, time.time(), tuple(records), tuple(probabilities),
                            tuple(labels)))
        if pending + n >= self.rows_per_file and not self._wake.is_set():
            self._wake.set()

    # -- the writer -------------------------------------------------------------------------------

    def start(self) -> None:
        self.bytes = sum(size for _, size in self._files())
        self._thread = threading.Thread(target=self._run, name="mlci-prediction-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop (at shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                "sampled_out": self.sampled_out, "errors": dict(self.errors), "bytes": self.bytes}

    def _run(self) -> None:
        batch: list = []
        rows, first = 0, 0.0
        while True:
            stopping = self._stop.is_set()
            taken = 0
            while self._queue:
                item = self._queue.popleft()
                n = len(item[3])
                self._taken += n
                if not batch:
                    first = item[2]  # when it was served: a file is at most flush_seconds behind
                batch.append(item)
                rows += n
                if rows >= self.rows_per_file:
                    self._write(batch)
                    batch, rows = [], 0
                taken += 1
                if taken % SLICE == 0:
                    let_go()
            if batch and (stopping or time.time() - first >= self.flush_seconds):
                self._write(batch)
                batch, rows = [], 0
            if stopping:
                return
            self._wake.wait(min(0.2, self.flush_seconds) if batch else min(1.0, self.flush_seconds))
            self._wake.clear()

    def _write(self, batch: list) -> None:
        rows = sum(len(item[3]) for item in batch)
        tmp = None
        try:
            table = self._table(batch)
            self._seq += 1
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            name = f"{PREFIX}{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
            tmp = self.dir / f".{name}.tmp"
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
            size = tmp.stat().st_size
            self._make_room(size)
            os.replace(tmp, self.dir / name)
            tmp = None
            self.written += rows
            self.bytes += size
            # Files of about a tenth of the bound: the oldest tenth goes at a time, never the whole log.
            per_row = max(size / rows, 1.0)
            self.rows_per_file = int(max(1, min(self.max_rows, self.max_bytes / 10 / per_row)))
        except Exception as e:  # noqa: BLE001 - whatever fails here, the server keeps answering
            self.failed += rows
            kind = errno_names.errorcode.get(e.errno, "OSError") if isinstance(e, OSError) and e.errno else type(e).__name__
            first = kind not in self.errors
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if first:  # once per kind: a full disk would otherwise log a line per file
                log.error("prediction log: cannot write to %s (%s: %s); its records are dropped and counted "
                          "(mlci_prediction_log_write_errors_total)", self.dir, kind, e)
            if tmp is not None:
                try:
                    tmp.unlink()
                except OSError:
                    pass

    def _files(self) -> list[tuple[Path, int]]:
        found = []
        try:
            with os.scandir(self.dir) as it:
                for entry in it:
                    if entry.name.startswith(PREFIX) and entry.name.endswith(".parquet"):
                        try:
                            found.append((Path(entry.path), entry.stat().st_size))
                        except OSError:
                            pass
        except OSError:
            return []
        return sorted(found)  # names start with the UTC time: oldest first

    def _make_room(self, incoming: int) -> None:
        """Delete the oldest files until those left and the incoming one fit under ``max_bytes``."""
        files = self._files()
        total = sum(size for _, size in files)
        for path, size in files:
            if total + incoming <= self.max_bytes:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            total -= size
        self.bytes = total

    def _table(self, batch: list):
        """The batch as one table, built in steps of about a millisecond with the GIL let go between them
        (``records.let_go``), and with no Python loop per request or record (C calls: ``itemgetter``,
        ``chain``, numpy's ``repeat``)."""
        import numpy as np
        import pyarrow as pa

        names = [name for name, _ in self.columns]
        chain = itertools.chain.from_iterable
        records = list(chain(map(itemgetter(3), batch)))
        arrays = []
        for values, (_, kind) in zip(columns(records, names, SLICE), self.columns):
            arrays.append(_array(pa, list(values), kind))
            let_go()
        probability = pa.array(list(chain(map(itemgetter(4), batch))), pa.float64())
        prediction = pa.array(list(chain(map(itemgetter(5), batch))), pa.string())
        let_go()
        # One value per request, repeated over its records (numpy's repeat, not a Python loop per request).
        request_id = pa.array(list(map(itemgetter(0), batch)), pa.string())
        model = pa.array(list(map(itemgetter(1), batch)), pa.string())
        served_at = (np.array(list(map(itemgetter(2), batch)), dtype=np.float64) * 1000).astype(np.int64)
        if len(records) != len(batch):
            at = np.repeat(np.arange(len(batch)), list(map(len, map(itemgetter(3), batch))))
            request_id, model, served_at = request_id.take(at), model.take(at), served_at[at]
        extra = {"probability": probability, "prediction": prediction,
                 "served_at": pa.array(served_at, pa.timestamp("ms", tz="UTC")),
                 "request_id": request_id, "model_sha256": model}
        # In LOG_COLUMNS' order: what monitor reads has one definition (a column added there fails here).
        return pa.table(arrays + [extra[c] for c in LOG_COLUMNS], names=names + list(LOG_COLUMNS))


def _array(pa, values: list, kind: str):
    if kind == "categorical":
        return pa.array(values, pa.string())
    try:  # a JSON number may come as an int for a float column: Arrow converts it
        return pa.array(values, pa.int64() if kind == "integer" else pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
