"""Prediction logs (``mlci serve --log-predictions DIR``): served records and answers, as Parquet files.

What is written, per record of a sampled request: every feature as received (validated, under the
data's normalised names) and ``LOG_COLUMNS`` of ``mlci.stages.monitor`` (probability, prediction,
served_at, request_id, model_sha256): what ``mlci monitor DIR`` reads.

How, without touching a response's latency:

* The request path, after one check of the queue's bound, encodes the request (id, model, time,
  records, answers) with msgspec's MessagePack encoder -- one C call, a quarter of a microsecond for
  one record -- and appends the bytes to a deque; when the queue is full, the records are dropped and
  counted, never waited for. A value MessagePack cannot hold loses that request only, counted.
* A feeder thread wakes every 50 ms and takes the queue a hundred requests at a time (pops and one
  join, a few µs holding the GIL) and writes each frame to the pipe of a writer process, letting the
  GIL go while it writes.
* The writer process (``logwriter.py``, at a lower priority: ``WRITER_NICE``) builds the columns and
  writes the files, rotated and within ``max_bytes``. Building a table from Python objects holds an
  interpreter's GIL throughout; in the server's own thread it made the event loop wait, and p99 at
  50 connections went to 2.2 x (README, "What it costs"). In its own process it holds its own.
* A full pipe (the writer busy) blocks only the feeder: the deque fills and new records are dropped,
  counted. A failed write loses that file's records, counted by kind on ``/metrics`` and logged once
  per kind. A writer that exits loses the records it held (counted, kind ``WriterExited``); a new one
  is started 1 s later (then 2, 4 ... up to a minute while they keep exiting without writing a file),
  the records meanwhile waiting in the queue. The server goes on.

Sampling is per request and deterministic: a request is logged when a hash of its request id (and
``seed``) falls under ``sample``, so the same id is always logged or always not.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time
import zlib
from operator import itemgetter
from pathlib import Path

from mlci.serving.logwriter import PREFIX
from mlci.stages.monitor import LOG_COLUMNS

log = logging.getLogger("mlci.serve")

ROWS_PER_FILE = 10_000
FLUSH_SECONDS = 10.0
MAX_PENDING = 100_000  # records waiting for the feeder at most; beyond, new ones are dropped (counted)
#: Requests per frame at most: the feeder holds the GIL briefly (p99 at one connection showed frames of
#: 1,000), and a frame the writer cannot take loses no more than a hundred requests.
SLICE = 100
#: The writer process's niceness, added to the server's: on a busy machine its CPU goes to the server
#: and its clients first (its bursts, a file built every 10,000 records, otherwise took turns with
#: them: p99 at 50 connections 1.58 x off with the writer at the server's priority, 1.26 x at +10).
#: Under full contention it still gets about a tenth of a core (CFS weights 1024 : 110), more than it
#: needs at 10,000 requests/s; short of that the queue fills and records are dropped, counted.
WRITER_NICE = 10
FEED_SECONDS = 0.05  # how often the feeder looks at the queue
RESPAWN_SECONDS = (1.0, 60.0)  # the wait before a new writer process: doubled per exit without a file


def sampled(request_id: str, rate: float, seed: int = 0) -> bool:
    """Whether the request ``request_id`` is logged at ``rate`` (the same answer for the same id)."""
    if rate >= 1.0:
        return True
    return zlib.crc32(request_id.encode(), seed) < rate * 4294967296.0


class PredictionLog:
    """The prediction log of one directory: the request path's queue, the feeder, the writer process."""

    def __init__(self, directory: Path, columns: list[tuple[str, str]], sample: float = 1.0,
                 max_bytes: int = 256 << 20, rows_per_file: int = ROWS_PER_FILE,
                 flush_seconds: float = FLUSH_SECONDS, max_pending: int = MAX_PENDING, seed: int = 0):
        self.dir = Path(directory).resolve()
        self.columns = columns  # (feature, declared type) in the served model's order
        self.sample, self.seed = sample, seed
        self.max_bytes = max_bytes
        self.rows_per_file = rows_per_file
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        import msgspec

        self._encode = msgspec.msgpack.Encoder().encode
        #: (records, the request encoded): appended by ``add``, taken by the feeder (``_take_frame``);
        #: append and popleft are thread-safe in CPython.
        self._queue: collections.deque = collections.deque()
        self._added = self._taken = 0  # records queued and taken off the queue, ever
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self._writer: _Writer | None = None
        self._respawn_at, self._respawn_wait = 0.0, RESPAWN_SECONDS[0]
        self._lock = threading.Lock()  # the counters the feeder and the writers' reports add to
        self.written = self.dropped = self.failed = self.sampled_out = 0
        self.errors: dict[str, int] = {}
        self._logged: set[str] = set()
        self.bytes = 0

    # -- the request path -------------------------------------------------------------------------

    def add(self, request_id: str, model_sha256: str, records: list, probabilities: list[float],
            labels: list[str]) -> None:
        n = len(records)
        if self.sample < 1.0 and not sampled(request_id, self.sample, self.seed):
            self.sampled_out += n
            return
        # No lock: ``_added`` is written by this thread only, ``_taken`` by the feeder only.
        if self._added - self._taken + n > self.max_pending:
            self.dropped += n
            return
        # Encoded now, to bytes: nothing of the request outlives it here, and a value that cannot be
        # encoded loses this request only. One bytes object per request, not msgspec's encode_into one
        # growing frame of hundreds of kilobytes: that took 4.7 % of the server's samples under load
        # (py-spy), this 2.9 %.
        try:
            payload = self._encode((request_id, model_sha256, time.time(), records, probabilities, labels))
        except (TypeError, ValueError, OverflowError) as e:  # a value MessagePack cannot hold
            self._lost(n, type(e).__name__, f"cannot encode a request's records: {e}")
            return
        self._added += n
        self._queue.append((n, payload))

    def _take_frame(self) -> tuple[bytes, int]:
        """A frame of the requests queued (at most ``SLICE``: its length, a MessagePack array header,
        the requests) and how many records it holds. Only the feeder takes from the queue."""
        pop = self._queue.popleft
        items = [pop() for _ in range(min(len(self._queue), SLICE))]  # what len says is there stays there
        n = sum(map(itemgetter(0), items))
        self._taken += n
        payloads = list(map(itemgetter(1), items))
        header = (sum(map(len, payloads)) + 5).to_bytes(4, "little") + b"\xdd" + len(items).to_bytes(4, "big")
        return b"".join([header, *payloads]), n  # 0xdd: a MessagePack array of 2**32 items at most

    # -- the feeder -------------------------------------------------------------------------------

    def start(self) -> None:
        with os.scandir(self.dir) as it:  # the server checked the directory at start-up
            self.bytes = sum(e.stat().st_size for e in it if e.name.startswith(PREFIX) and e.name.endswith(".parquet"))
        self._writer = self._spawn()
        self._feeder = threading.Thread(target=self._feed, name="mlci-prediction-log", daemon=True)
        self._feeder.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop (at shutdown)."""
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(timeout)

    def stats(self) -> dict:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                "sampled_out": self.sampled_out, "errors": dict(self.errors), "bytes": self.bytes}

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (None before ``start`` or while none runs)."""
        w = self._writer
        return None if w is None or w.exited else w.proc.pid

    def _feed(self) -> None:
        while True:
            stopping = self._stop.is_set()
            # While no writer runs (waiting to start a new one), records wait in the queue.
            w = self._live_writer(now=stopping)
            while w is not None and self._queue:
                frame, n = self._take_frame()
                w = self._send(w, frame, n)
            if stopping:
                break
            self._stop.wait(FEED_SECONDS)
        w = self._writer
        if w is not None and not w.exited:
            w.finish(timeout=30.0)
            self._account(w)
        if self._queue:  # no writer would start at shutdown
            self._lost(sum(map(itemgetter(0), self._queue)), "WriterExited", "no writer process at shutdown")

    def _live_writer(self, now: bool = False) -> "_Writer | None":
        """The running writer; after one exited, what it held is counted and a new one started when due."""
        w = self._writer
        if w is not None and w.exited:
            self._account(w)
            w = self._writer = None
        if w is None and (now or time.monotonic() >= self._respawn_at):
            w = self._writer = self._spawn()
        return w

    def _send(self, w: "_Writer", frame: bytes, n: int) -> "_Writer | None":
        try:
            w.send(frame)
            w.sent += n
            return w
        except OSError:  # the writer has gone (a broken pipe): this frame is lost with what it held
            w.proc.wait()
            self._lost(n, "WriterExited", "the writer process exited")
            self._account(w)
            self._writer = None
            return None

    def _spawn(self) -> "_Writer":
        config = {"dir": str(self.dir), "columns": [list(c) for c in self.columns], "log_columns": list(LOG_COLUMNS),
                  "max_bytes": self.max_bytes, "rows_per_file": self.rows_per_file,
                  "flush_seconds": self.flush_seconds, "nice": WRITER_NICE}
        w = _Writer(config)
        w.reporter = threading.Thread(target=self._reports, args=(w,), name="mlci-prediction-log-reports",
                                      daemon=True)
        w.reporter.start()
        return w

    def _reports(self, w: "_Writer") -> None:
        """What the writer ``w`` tells, line by line, until it exits."""
        for line in w.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.bytes = event.get("bytes", self.bytes)
                if "wrote" in event:
                    self.written += event["wrote"]
                    w.done += event["wrote"]
                    self._respawn_wait = RESPAWN_SECONDS[0]  # it works: the next exit waits the least again
            if "failed" in event:
                w.done += event["failed"]
                self._lost(event["failed"], event["kind"], f"cannot write to {self.dir} ({event['kind']}: "
                           f"{event['message']})")
            if "fatal" in event:
                self._log_once("WriterFatal", f"the writer process failed: {event['fatal']}")
        w.proc.wait()
        w.exited = True

    def _account(self, w: "_Writer") -> None:
        """Once a writer has exited: what it was sent and never wrote nor reported is lost."""
        if w.reporter is not None:
            w.reporter.join(timeout=10.0)
        held, w.sent = w.sent - w.done, w.done
        if held > 0:
            self._lost(held, "WriterExited", f"the writer process exited (code {w.proc.returncode}) holding "
                       f"{held} records")
        if not self._stop.is_set():
            self._respawn_at = time.monotonic() + self._respawn_wait
            self._respawn_wait = min(RESPAWN_SECONDS[1], self._respawn_wait * 2)

    def _lost(self, rows: int, kind: str, message: str) -> None:
        with self._lock:
            self.failed += rows
            self.errors[kind] = self.errors.get(kind, 0) + 1
        self._log_once(kind, f"{message}; its records are dropped and counted (mlci_prediction_log_write_errors_total)")

    def _log_once(self, kind: str, message: str) -> None:
        """Once per kind: a full disk would otherwise log a line per file."""
        with self._lock:
            first = kind not in self._logged
            self._logged.add(kind)
        if first:
            log.error("prediction log: %s", message)


class _Writer:
    """One writer process (``python -m mlci.serving.logwriter``) and what it was sent."""

    def __init__(self, config: dict):
        self.proc = subprocess.Popen([sys.executable, "-m", "mlci.serving.logwriter", json.dumps(config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=False, close_fds=True)
        self.fd = self.proc.stdin.fileno()
        self.sent = self.done = 0  # records sent to it; records it wrote or failed to write
        self.exited = False
        self.reporter: threading.Thread | None = None

    def send(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:  # os.write lets the GIL go; a full pipe blocks here, in the feeder only
            view = view[os.write(self.fd, view):]

    def finish(self, timeout: float) -> None:
        """End of input: the writer writes what it holds and exits."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
