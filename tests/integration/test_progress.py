"""Progress as users see it: a live display on a terminal, periodic lines in a log, nothing when
quiet or --json; and no other library's bars or warnings in mlci's output."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys

from conftest import PATH_VARS, run_mlci

NOISE = ("[LightGBM]", "Warning", "UserWarning", "%|", "it/s]", "Traceback")


def in_a_terminal(args: list[str], cwd, timeout: float = 240) -> str:
    """What ``python -m mlci ARGS`` shows on a (pseudo-)terminal, escape codes and all."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS}
    env.update(MLCI_NO_TRACK="1", TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen([sys.executable, "-m", "mlci", *args], cwd=cwd, env=env, stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                raise AssertionError(f"no output for {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        assert proc.wait(timeout=30) == 0, b"".join(chunks)[-2000:]
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_sees_each_loop_with_the_time_left(small):
    assert run_mlci("preprocess", cwd=small).returncode == 0
    shown = in_a_terminal(["train"], small)
    assert "train: trees" in shown and "/400" in shown and " left" in shown
    assert '"validation_acc"' in shown  # the result still printed, after the display went away
    assert not any(noise in shown for noise in NOISE)


def test_a_log_gets_periodic_lines_quiet_and_json_get_none(small):
    workspace = small
    env = {"MLCI_PROGRESS_INTERVAL": "0.1"}
    logged = run_mlci("run", cwd=workspace, env=env)
    assert logged.returncode == 0, logged.stderr
    lines = logged.stderr.splitlines()
    trees = [line for line in lines if line.startswith("train: trees ")]
    assert trees and all("/400" in line for line in trees), lines
    assert any(line.startswith("report, ") for line in lines)  # a stage with no loop: its time so far
    assert "\x1b[" not in logged.stderr  # plain: no escape codes in a log
    assert not any(noise in logged.stdout + logged.stderr for noise in NOISE)

    quiet = run_mlci("run", "--force", "--until", "train", "--quiet", cwd=workspace, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert "train_metadata.json:" in quiet.stdout  # results still printed

    as_json = run_mlci("run", "--force", "--until", "train", "--json", cwd=workspace, env=env)
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["exit_code"] == 0
    assert "trees" not in as_json.stderr and not any(noise in as_json.stderr for noise in NOISE)
