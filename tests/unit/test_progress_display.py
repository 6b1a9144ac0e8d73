"""mlci.progress: what each display prints, and that a task's arithmetic is right."""

from __future__ import annotations

import io
import time

from mlci.progress import NONE, Lines, Task, describe, for_console


def test_time_left_follows_the_pace_so_far():
    task = Task(NONE, "train: trees", total=400, unit="")
    assert task.left() is None  # nothing done yet: no estimate
    task.started -= 10.0
    task.advance(100)
    assert 29.0 <= task.left() <= 31.0  # 100 in 10 s: 300 more take 30 s
    line = describe(task)
    assert line.startswith("train: trees 100/400, 10s, about 3") and line.endswith("s left")
    assert describe(Task(NONE, "report", None, "")).startswith("report, 0s")  # no total: no estimate


def test_lines_print_the_innermost_task_periodically_and_nothing_after_stop():
    out = io.StringIO()
    progress = Lines(out, interval=0.05)
    progress.start()
    with progress.task("train"):
        with progress.task("train: trees", total=4) as trees:
            trees.advance()
            time.sleep(0.3)
        time.sleep(0.15)
    progress.stop()
    lines = out.getvalue().splitlines()
    assert any(line.startswith("train: trees 1/4") and "left" in line for line in lines)
    assert lines[-1].startswith("train, ")  # the stage again once its loop ended
    printed = out.getvalue()
    time.sleep(0.15)
    assert out.getvalue() == printed


def test_quiet_prints_nothing_and_a_pipe_gets_lines():
    from rich.console import Console

    assert for_console(Console(file=io.StringIO()), quiet=True) is NONE
    assert isinstance(for_console(Console(file=io.StringIO())), Lines)  # not a terminal
    with NONE.task("x", total=3) as t:  # the silent display still counts
        t.advance(2)
    assert t.completed == 2 and t.closed
