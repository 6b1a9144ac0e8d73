"""One Dask client per process, from Dask's own configuration, and waiting on it with a deadline.

The scheduler's address is Dask's ``scheduler-address`` setting (``DASK_SCHEDULER_ADDRESS``, or
``distributed.scheduler-address`` in a Dask YAML file); without one, a LocalCluster of this
machine's cores on loopback. Every wait has a deadline (``dask.step_timeout``): a lost worker
whose task cannot move elsewhere, or a scheduler gone away, ends in :class:`ClusterError`
(exit 13), never a hang.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time

from mlci.errors import ClusterError

_CLIENT = None
_CLUSTER = None


def scheduler_address() -> str | None:
    import dask

    return dask.config.get("scheduler-address", None) or dask.config.get("distributed.scheduler-address", None)


def client(dp):
    """The process's client (``dp``: the ``dask`` parameter section), connected on first use."""
    global _CLIENT, _CLUSTER
    if _CLIENT is not None and _CLIENT.status == "running":
        return _CLIENT
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "65536")  # workers give memory back (Dask's advice)
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.logging.distributed": "error", "distributed.admin.tick.limit": "10s"})
    address = scheduler_address()
    try:
        if address:
            _CLIENT = Client(address, timeout=dp.connect_timeout)
        else:
            _CLUSTER = LocalCluster(n_workers=dp.local_workers or os.cpu_count() or 1, threads_per_worker=1,
                                    memory_limit=dp.local_memory_limit, host="127.0.0.1",
                                    dashboard_address=None, processes=True, silence_logs=50)
            _CLIENT = Client(_CLUSTER, timeout=dp.connect_timeout)
    except (OSError, TimeoutError) as e:
        where = f"at {address}" if address else "(a LocalCluster)"
        raise ClusterError(f"the Dask scheduler {where} is unreachable within dask.connect_timeout "
                           f"{dp.connect_timeout:g} s ({type(e).__name__}: {str(e)[:160]})") from None
    atexit.register(close)
    _check_code(_CLIENT)
    return _CLIENT


#: The modules whose functions the workers run (and the scheduler unpickles).
TASK_MODULES = ("mlci.stages.cluster.preprocess", "mlci.stages.cluster.evaluate", "mlci.stages.cluster.train")


def code() -> str:
    from mlci.codehash import code_hash

    return code_hash(TASK_MODULES)


def _check_code(c) -> None:
    """Workers started before mlci changed run the old code (a task would fail deep inside, or do
    the old thing): say so at once."""
    ours = code()
    try:
        theirs = {**c.run(code), "scheduler": c.run_on_scheduler(code)}
    except Exception as e:  # noqa: BLE001 - mlci missing there: the unpickling fails
        raise ClusterError(f"the Dask cluster cannot run mlci's tasks ({type(e).__name__}: {str(e)[:160]}): "
                           "install this mlci on the scheduler and every worker") from None
    other = sorted(k for k, v in theirs.items() if v != ours)
    if other:
        raise ClusterError(f"{other[0]} runs other mlci code than this client ({len(other)} of {len(theirs)} "
                           "processes): restart the scheduler and workers with this mlci installed")


def close() -> None:
    global _CLIENT, _CLUSTER
    for thing in (_CLIENT, _CLUSTER):
        if thing is not None:
            try:
                thing.close()
            except Exception:  # noqa: BLE001 - at exit, a cluster already gone is no news
                pass
    _CLIENT = _CLUSTER = None


def gather(c, futures: list, timeout: float, doing: str) -> list:
    """The futures' results, in order, within ``timeout`` seconds; a task's own
    :class:`~mlci.errors.MlciError` (a bad partition) is raised as it is, the first one to fail
    cancelling the rest; anything the cluster did is a :class:`ClusterError`."""
    from distributed import as_completed

    from mlci.errors import MlciError

    finished = 0
    try:
        for future in as_completed(futures, timeout=timeout):
            if future.status == "error":
                err = future.exception()
                c.cancel(futures)
                if isinstance(err, MlciError):
                    raise err
                if type(err).__name__ == "KilledWorker":  # the scheduler gave up after allowed-failures
                    raise ClusterError(f"{doing}: every worker that ran one of its tasks died (out of memory, "
                                       "usually: the workers' logs say; a smaller dask.blocksize or a larger "
                                       "worker --memory-limit)")
                raise ClusterError(f"{doing}: a task failed ({type(err).__name__}: {str(err)[:200]})")
            if future.status == "cancelled":
                raise ClusterError(f"{doing}: the cluster cancelled the work (was the scheduler restarted?)")
            finished += 1
    except TimeoutError:
        c.cancel(futures)
        raise ClusterError(f"{doing}: not done within dask.step_timeout {timeout:g} s "
                           f"({finished} of {len(futures)} tasks finished)") from None
    try:
        return c.gather(futures)
    except Exception as e:  # noqa: BLE001 - a connection lost while gathering
        raise ClusterError(f"{doing}: cannot collect the results ({type(e).__name__}: {str(e)[:200]})") from None


@contextlib.contextmanager
def translated(doing: str):
    """The cluster's own failures (a lost scheduler cancels every future; a closed connection) as
    :class:`ClusterError`: one line, exit 13."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError

    try:
        yield
    except (CancelledError, CommClosedError) as e:
        raise ClusterError(f"{doing}: the cluster went away mid-step ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'})") from None


def watch(c, run, timeout: float, doing: str, workers: set[str] | None = None):
    """``run()`` (a call that blocks on the cluster, e.g. a LightGBM fit) in a thread, watched:
    the workers it started with must all stay, and it must end within ``timeout``; else
    :class:`ClusterError` (a fit whose worker died would otherwise wait on its sockets)."""
    import threading

    workers = set(c.scheduler_info()["workers"]) if workers is None else workers
    box: dict = {}

    def target():
        try:
            box["value"] = run()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    thread = threading.Thread(target=target, name="mlci-cluster-step", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        thread.join(1.0)
        if not thread.is_alive():
            break
        try:
            now = set(c.scheduler_info()["workers"])
        except Exception:  # noqa: BLE001
            now = set()
        lost = workers - now
        if lost:
            raise ClusterError(f"{doing}: worker {sorted(lost)[0]} left the cluster mid-step "
                               f"({len(now)} of {len(workers)} remain); rerun when the cluster is whole")
        if time.monotonic() > deadline:
            raise ClusterError(f"{doing}: not done within dask.step_timeout {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
