"""How far long work has got, told to whoever displays it.

The library only says what it is doing: ``with progress.task("train: trees", total=400) as t:
t.advance()``. The command line picks the display (``mlci.cli.pipeline``):

* ``Live``: a Rich progress display on a terminal, a bar with the time left for work whose size is
  known, a spinner with the time so far for the rest;
* ``Lines``: a plain line per running task every ``interval`` seconds, for logs that are not a
  terminal (CI keeps them, and a job that prints nothing for long may be taken for hung);
* ``Progress`` itself: nothing, for ``--quiet``, ``--json`` and every caller that does not ask.

A task is cheap to advance (no output until a display decides to draw), so inner loops may call
``advance`` per iteration.
"""

from __future__ import annotations

import threading
import time
from typing import IO


class Task:
    """One piece of work: ``total`` steps (None: unknown), ``completed`` so far."""

    def __init__(self, owner: "Progress", description: str, total: float | None, unit: str):
        self.owner, self.description, self.total, self.unit = owner, description, total, unit
        self.completed, self.started, self.closed = 0.0, time.monotonic(), False

    def advance(self, n: float = 1) -> None:
        self.completed += n
        self.owner._advanced(self)

    def close(self) -> None:
        """The work is over (done or not): a display stops showing it. Closing twice is harmless."""
        if not self.closed:
            self.closed = True
            self.owner._finished(self)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def left(self, now: float | None = None) -> float | None:
        """Seconds still to go at the pace so far (None until a step is done or without a total)."""
        if not self.total or self.completed <= 0:
            return None
        spent = (now or time.monotonic()) - self.started
        return spent / self.completed * max(self.total - self.completed, 0)


class Progress:
    """Shows nothing: the display of ``--quiet``, ``--json`` and library callers."""

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        task = Task(self, description, total, unit)
        self._started(task)
        return task

    def start(self) -> None:
        """Before the work: a display may start drawing."""

    def stop(self) -> None:
        """After the work, failed or not: a display stops drawing."""

    def _started(self, task: Task) -> None: ...
    def _advanced(self, task: Task) -> None: ...
    def _finished(self, task: Task) -> None: ...


NONE = Progress()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def describe(task: Task, now: float | None = None) -> str:
    """``train: trees 120/400, 12s, about 28s left``: one task, as a plain line says it."""
    now = now or time.monotonic()
    unit = f" {task.unit}" if task.unit else ""
    done = f"{task.completed:g}/{task.total:g}{unit}" if task.total else (f"{task.completed:g}{unit}" if task.completed else "")
    parts = [task.description + (f" {done}" if done else ""), _duration(now - task.started)]
    left = task.left(now)
    if left is not None:
        parts.append(f"about {_duration(left)} left")
    return ", ".join(parts)


class Lines(Progress):
    """Every ``interval`` seconds, a line for the innermost task still running (a stage's loop rather
    than the stage; nothing for work shorter than that)."""

    def __init__(self, stream: IO[str], interval: float = 10.0):
        self.stream, self.interval = stream, interval
        self.tasks: list[Task] = []
        self._lock, self._stopped = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._tick, name="mlci-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _tick(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                line = describe(self.tasks[-1]) if self.tasks else None
            if line is None:
                continue
            try:
                print(line, file=self.stream, flush=True)
            except (OSError, ValueError):  # the reader went away: the work goes on
                return

    def _started(self, task: Task) -> None:
        with self._lock:
            self.tasks.append(task)

    def _finished(self, task: Task) -> None:
        with self._lock:
            if task in self.tasks:
                self.tasks.remove(task)


class Live(Progress):
    """A Rich progress display on ``console`` (a terminal): a row per running task."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress as RichProgress, ProgressColumn, SpinnerColumn, TextColumn
        from rich.text import Text

        class Counts(ProgressColumn):  # "120/400 trees, 12s, about 28s left", as the plain lines say it
            def render(self, rich_task) -> Text:
                task = rich_task.fields.get("task")
                return Text(describe(task).removeprefix(task.description).lstrip(" ,") if task else "",
                            style="progress.remaining")

        self.rich = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                                 Counts(), console=console, transient=True, redirect_stdout=True,
                                 redirect_stderr=True)
        self.ids: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def console(self):
        return self.rich.console

    def start(self) -> None:
        self.rich.start()

    def stop(self) -> None:
        self.rich.stop()

    def _started(self, task: Task) -> None:
        with self._lock:
            self.ids[id(task)] = self.rich.add_task(task.description, total=task.total, task=task)

    def _advanced(self, task: Task) -> None:
        with self._lock:
            tid = self.ids.get(id(task))
            if tid is not None:
                self.rich.update(tid, completed=task.completed)

    def _finished(self, task: Task) -> None:
        with self._lock:
            tid = self.ids.pop(id(task), None)
            if tid is not None:
                self.rich.remove_task(tid)


def for_console(console, quiet: bool = False, interval: float = 10.0) -> Progress:
    """The display for a command printing on ``console``: live on a terminal, lines elsewhere,
    nothing when asked to be quiet."""
    if quiet:
        return NONE
    if console.is_terminal and not console.is_dumb_terminal:
        return Live(console)
    return Lines(console.file, interval)
