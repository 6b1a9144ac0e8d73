"""The prediction log's writer process: frames of served records in, Parquet files out.

Started by ``predlog.PredictionLog`` as ``python -m mlci.serving.logwriter CONFIG`` (CONFIG: one JSON
object, ``PredictionLog._config``). It reads frames from standard input, each a 4-byte little-endian
length and a MessagePack list of requests ``[request_id, model_sha256, served_at, records,
probabilities, labels]`` (records as maps of feature to value), and writes them to DIR:

* a file every ``rows_per_file`` records or ``flush_seconds`` after the oldest record of the file
  was served: to a dotted temporary name in the directory, then renamed, so that a reader
  (``mlci monitor``, which reads ``*.parquet``) never sees half a file;
* after each file the oldest files are deleted until the directory's ``predictions-*.parquet`` take
  at most ``max_bytes``: the byte bound is the retention. A file is kept to about a tenth of it;
* a failed write (a full disk, the directory removed or made read-only) loses that file's records;
  the directory is not re-created: whoever removed it meant something.

What happened is told on standard output, one JSON object per line (``{"wrote": records, "bytes":
n}``, ``{"failed": records, "kind": errno name or exception type, "message": ..., "bytes": n}``):
the server counts them on ``/metrics`` and logs in its own format. At the end of its input it writes
what it holds and exits. It imports neither the server nor pandas: this is the whole process.
"""

from __future__ import annotations

import errno as errno_names
import gc
import itertools
import json
import os
import select
import sys
import time
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path

PREFIX = "predictions-"
FIRST_ROW_BYTES = 200  # a guess of a record's compressed size until the first file says better
HEADER = 4  # bytes of a frame's length


class Writer:
    """The files of one directory."""

    def __init__(self, directory: Path, columns: list[tuple[str, str]], log_columns: list[str],
                 max_bytes: int, rows_per_file: int, flush_seconds: float, out=None):
        self.dir = Path(directory)
        self.columns = [tuple(c) for c in columns]  # (feature, declared type) in the served model's order
        self.log_columns = list(log_columns)  # the answer's columns, in monitor's order (stages/monitor.py)
        self.max_bytes = max_bytes
        self.max_rows = rows_per_file
        self.rows_per_file = max(1, min(rows_per_file, max_bytes // (10 * FIRST_ROW_BYTES)))
        self.flush_seconds = flush_seconds
        self.out = out if out is not None else sys.stdout
        self.bytes = sum(size for _, size in self._files())
        self._seq = 0

    def tell(self, **event) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def run(self, fd: int) -> None:
        """Read frames from ``fd`` until its end; write files as they fill or age."""
        import msgspec

        decode = decoder([name for name, _ in self.columns]).decode
        buf = bytearray()
        batch: list = []
        rows, first, ended = 0, 0.0, False
        while not ended:
            timeout = max(0.0, first + self.flush_seconds - time.time()) if batch else None
            ready, _, _ = select.select([fd], [], [], timeout)
            if ready:
                chunk = os.read(fd, 1 << 20)
                ended = not chunk
                buf += chunk
                while len(buf) >= HEADER:
                    size = int.from_bytes(buf[:HEADER], "little")
                    if len(buf) < HEADER + size:
                        break
                    frame = bytes(buf[HEADER:HEADER + size])
                    del buf[:HEADER + size]
                    try:
                        items = decode(frame)
                    except msgspec.ValidationError as e:  # a value of a type the server never sends
                        lost = sum(len(item[3]) for item in msgspec.msgpack.decode(frame))
                        self.tell(failed=lost, kind="ValidationError", message=str(e), bytes=self.bytes)
                        continue
                    for item in items:
                        if not batch:
                            first = item[2]  # when it was served: a file is at most flush_seconds behind
                        batch.append(item)
                        rows += len(item[3])
                        if rows >= self.rows_per_file:
                            self.write(batch, rows)
                            batch, rows = [], 0
                            collect()
            if batch and (ended or time.time() - first >= self.flush_seconds):
                self.write(batch, rows)
                batch, rows = [], 0
                collect()

    def write(self, batch: list, rows: int) -> None:
        tmp = None
        try:
            table = build_table(batch, self.columns, self.log_columns)
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
            self.bytes += size
            # Files of about a tenth of the bound: the oldest tenth goes at a time, never the whole log.
            per_row = max(size / rows, 1.0)
            self.rows_per_file = int(max(1, min(self.max_rows, self.max_bytes / 10 / per_row)))
            self.tell(wrote=rows, bytes=self.bytes)
        except Exception as e:  # noqa: BLE001 - whatever fails here, the next file is tried
            kind = errno_names.errorcode.get(e.errno, "OSError") if isinstance(e, OSError) and e.errno else type(e).__name__
            if tmp is not None:
                try:
                    tmp.unlink()
                except OSError:
                    pass
            self.tell(failed=rows, kind=kind, message=str(e), bytes=self.bytes)

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


def collect() -> None:
    """A collection once a file is written and its records let go (``main`` turns the automatic
    collector off), then whatever survives (the libraries) frozen: the next one visits only what came
    since. At a file's end little is alive; in the middle of one, every record is."""
    gc.collect()
    gc.freeze()


def decoder(features: list[str]):
    """The MessagePack decoder of a frame: each record a Struct of ``features`` (values as sent; other
    fields, the data's dropped columns, skipped). Structs rather than dicts: a third less time to
    decode and to transpose (measured, 10,000 records)."""
    from typing import Any

    import msgspec

    record = msgspec.defstruct("LoggedRecord", [(name, Any, None) for name in features], gc=False)
    return msgspec.msgpack.Decoder(list[tuple[str, str, float, list[record], list[float], list[str]]])


def build_table(batch: list, columns: list[tuple[str, str]], log_columns: list[str]):
    """The requests of ``batch`` as one table: the features in ``columns``' order, then ``log_columns``;
    a request's id, model and time repeated over its records."""
    import numpy as np
    import pyarrow as pa

    from mlci.serving.records import columns as as_columns

    names = [name for name, _ in columns]
    chain = itertools.chain.from_iterable
    records = list(chain(map(itemgetter(3), batch)))
    arrays = [_array(pa, list(values), kind) for values, (_, kind) in zip(as_columns(records, names), columns)]
    probability = pa.array(list(chain(map(itemgetter(4), batch))), pa.float64())
    prediction = pa.array(list(chain(map(itemgetter(5), batch))), pa.string())
    request_id = pa.array(list(map(itemgetter(0), batch)), pa.string())
    model = pa.array(list(map(itemgetter(1), batch)), pa.string())
    served_at = (np.array(list(map(itemgetter(2), batch)), dtype=np.float64) * 1000).astype(np.int64)
    if len(records) != len(batch):
        at = np.repeat(np.arange(len(batch)), list(map(len, map(itemgetter(3), batch))))
        request_id, model, served_at = request_id.take(at), model.take(at), served_at[at]
    extra = {"probability": probability, "prediction": prediction,
             "served_at": pa.array(served_at, pa.timestamp("ms", tz="UTC")),
             "request_id": request_id, "model_sha256": model}
    # In monitor's order: what it reads has one definition (a column added there fails here).
    return pa.table(arrays + [extra[c] for c in log_columns], names=names + list(log_columns))


def _array(pa, values: list, kind: str):
    if kind == "categorical":
        return pa.array(values, pa.string())
    try:  # a JSON number may come as an int for a float column: Arrow converts it
        return pa.array(values, pa.int64() if kind == "integer" else pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())


def main(argv: list[str]) -> int:
    import signal

    # Ctrl-C reaches the whole process group: the server stops, closes this one's input, and this
    # writes what it holds and ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # No automatic collections: nothing here makes reference cycles, and the collector's passes over the
    # records of a file being built took more than half of the writer's CPU (measured: 97 against 40 ms
    # per 10,000 records). ``collect`` runs once per file.
    gc.disable()
    config = json.loads(argv[0])
    if config.get("nice"):  # below the server's priority (predlog.WRITER_NICE says why)
        os.nice(config["nice"])
    writer = Writer(config["dir"], config["columns"], config["log_columns"], config["max_bytes"],
                    config["rows_per_file"], config["flush_seconds"])
    writer.tell(bytes=writer.bytes)
    try:
        writer.run(sys.stdin.fileno())
    except Exception as e:  # noqa: BLE001 - told, not a traceback on the server's log
        writer.tell(fatal=f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
