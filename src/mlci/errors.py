"""Exit codes and the one exception type the CLI turns into a clean one-line error.

Every failure a user can cause (bad input, bad parameters, a failing gate)
is raised as a subclass of :class:`MlciError`; the CLI prints ``error: <msg>``
and exits with the class's code. Anything else is a bug and exits 1.
"""

from __future__ import annotations

#: Documented exit codes (README, "Exit codes"). Keep in sync.
OK = 0
INTERNAL = 1  # a bug: unexpected exception
USAGE = 2  # bad command line, params.yaml or -S override
GATE_FAILED = 3  # the model was trained but did not pass the gate
DATA = 4  # structural problem with an input file (missing, empty, wrong columns, ...)
REJECTS = 5  # too many rows rejected by validation
PREREQUISITE = 6  # a stage's input is missing or stale (e.g. test before a passing gate)
BUSY = 7  # another mlci process holds the workspace lock
TRACKING = 8  # the tracking server or registry is unreachable or inconsistent
SERVE = 9  # `mlci serve` cannot listen on the address (in use, not permitted)
STATE = 10  # a file mlci wrote earlier is damaged (not JSON, truncated, does not unpickle, wrong shape)
IO = 11  # a file or directory cannot be read or written (permissions, a full disk, a file for a directory)
MONITOR_FAILED = 12  # `mlci monitor`: the batch drifted or the model's performance dropped (a rule failed)
CLUSTER = 13  # engine dask: the scheduler is unreachable, a worker was lost or out of memory, or a step overran
TIME_BUDGET = 14  # the best profile's search overran best.time_budget (it is counted, so it stops instead)
PIPE_CLOSED = 141  # the reader of stdout went away (128 + SIGPIPE, as a shell reports a killed pipeline)

EXIT_CODES = {
    OK: "success",
    INTERNAL: "unexpected internal error (a bug: please report it)",
    USAGE: "bad command line, params.yaml or -S override",
    GATE_FAILED: "the gate failed: the model is not good enough",
    DATA: "an input file is structurally invalid (missing, empty, wrong columns, undecodable, ...)",
    REJECTS: "too many rows rejected: more than preprocess.max_reject_share, or any in `mlci predict` "
             "without --allow-rejects",
    PREREQUISITE: "a stage's inputs are missing (run the earlier stages first)",
    BUSY: "another mlci process is using this workspace",
    TRACKING: "the tracking server or model registry is unreachable, or a model artifact there is missing or corrupt",
    SERVE: "`mlci serve` cannot listen on the requested address (in use or not permitted)",
    STATE: "a file mlci wrote earlier is damaged; the message names it and how to recover",
    IO: "a file or directory cannot be read or written (permissions, a full disk, a file where a directory should be)",
    MONITOR_FAILED: "`mlci monitor`: a monitoring rule failed (a feature or the predictions drifted, or "
                    "performance dropped); the report was written",
    CLUSTER: "engine dask: the Dask scheduler is unreachable, a worker was lost mid-step or ran out of memory, or "
             "a step overran its timeout (dask.*_timeout); nothing half-written was kept",
    TIME_BUDGET: "the best profile's search overran best.time_budget and stopped (its trials, folds and rounds "
                 "are counted, never cut short by the clock); nothing was written",
    PIPE_CLOSED: "the reader of mlci's output closed the pipe (e.g. `| head`); the work itself was done",
}


class MlciError(Exception):
    """An error the user can fix; printed as one line, never as a traceback."""

    exit_code = INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(MlciError):
    exit_code = USAGE


class DataError(MlciError):
    exit_code = DATA


class RejectLimitError(MlciError):
    exit_code = REJECTS


class GateFailed(MlciError):
    exit_code = GATE_FAILED


class MonitorFailed(MlciError):
    """A monitoring rule failed; ``summary`` is what ``mlci monitor --json`` prints (the report was written)."""

    exit_code = MONITOR_FAILED

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


class ClusterError(MlciError):
    exit_code = CLUSTER


class BudgetError(MlciError):
    exit_code = TIME_BUDGET


class PrerequisiteError(MlciError):
    exit_code = PREREQUISITE


class BusyError(MlciError):
    exit_code = BUSY


class StateError(MlciError):
    """A file mlci wrote (metadata, model card, model, processed data, the tracking store) is damaged."""

    exit_code = STATE


class IOFailure(MlciError):
    exit_code = IO


def io_failure(e: OSError, doing: str = "writing") -> IOFailure:
    """An OSError as one line naming the path and what to do about it."""
    import errno

    where = e.filename or "a file"
    if e.errno == errno.ENOSPC:
        hint = "no space left on the device: free some and rerun (nothing half-written was kept)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "permission denied: make it writable for this user (in a container: --user or the volume's owner)"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        hint = "a file is where a directory should be: move it or point the variable elsewhere"
    else:
        hint = e.strerror or (str(e.args[0]) if e.args else "") or type(e).__name__
    return IOFailure(f"{where}: {doing} failed: {hint}")
