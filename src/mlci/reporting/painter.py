"""A separate process that draws the report's figures (light to import: no numpy here).

matplotlib's import and drawing hold the GIL (README, "Figures": measured
costs), so in a thread they would not overlap the report's numeric work. In a child
process they run on the other core; started early (``mlci run`` starts one
with the first stage that has work to do, before any heavy import), the
import overlaps training instead of adding to the report.

Where ``fork`` is missing, or the child dies, the figures are drawn in the
calling process: the same functions, only slower.
"""

from __future__ import annotations


class Painter:
    def __init__(self):
        import multiprocessing as mp

        self.jobs: list[tuple[str, str, tuple]] = []
        self.conn = self.proc = None
        if "fork" in mp.get_all_start_methods():
            ctx = mp.get_context("fork")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_paint, args=(child,), daemon=True)
            self.proc.start()
            child.close()

    def draw(self, name: str, fn: str, *args, **kwargs) -> None:
        """Queue ``mlci.reporting.<fn>(*args, **kwargs)`` (``fn`` is ``plots.roc``, ``plots.pr``,
        ...); its result comes back from ``results()`` under ``name``."""
        job = (name, fn, args, kwargs)
        self.jobs.append(job)
        if self.conn is not None:
            try:
                self.conn.send(job)
            except OSError:
                self.close()

    def results(self) -> dict[str, bytes]:
        if self.conn is not None:
            try:
                self.conn.send(None)
                ok, out = self.conn.recv()
            except (EOFError, OSError):
                ok, out = None, None  # the child is gone: draw here
            self.close()
            if ok is False:
                raise RuntimeError(f"drawing the report's figures failed: {out}")
            if ok:
                return out
        return {name: _call(fn, args, kwargs) for name, fn, args, kwargs in self.jobs}

    def close(self) -> None:
        """Let the child go (also when the run stopped before the report)."""
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None
            self.proc.join(timeout=10)


def _paint(conn) -> None:
    """The child: import matplotlib, then draw what arrives until None (or the parent goes)."""
    import os

    # Hold nothing of the parent's but this pipe: not the workspace lock (a killed run must
    # release it), not the tracking worker's pipes (it marks the run FAILED on EOF), not the
    # parent's end of this pipe (so that the parent's death is an EOF here, and the end of us).
    keep = conn.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    out: dict = {}
    try:
        from mlci.reporting import plots

        plots.warm_up()
        while (job := conn.recv()) is not None:
            name, fn, args, kwargs = job
            out[name] = _call(fn, args, kwargs)
        conn.send((True, out))
    except EOFError:
        pass  # closed without a report
    except Exception as e:  # noqa: BLE001 - reported by the parent, as one line
        try:
            conn.send((False, f"{type(e).__name__}: {e}"))
        except OSError:
            pass


def _call(fn: str, args: tuple, kwargs: dict):
    import importlib

    module, name = fn.split(".")
    if module not in ("plots", "bootstrap"):  # what the child may run: nothing else
        raise ValueError(f"not a painter job: {fn}")
    return getattr(importlib.import_module(f"mlci.reporting.{module}"), name)(*args, **kwargs)
