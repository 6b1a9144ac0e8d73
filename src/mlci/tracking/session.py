"""Tracking as an observer of the runner: nothing before the work but a reachability check,
one MLflow run recorded after it, in this process.

Once the first stage has finished its work, a background thread opens the store and creates the
run (RUNNING, tagged with this process): MLflow's import then overlaps the later stages instead of
following them, and a process killed from then on leaves a RUNNING run of a dead process, which
the next run on this host marks FAILED. A run that never got that far leaves nothing behind.

A rerun with nothing to do records nothing and imports no MLflow: the workspace remembers the
run that recorded its current state (``<state dir>/last-run.json``, keyed by the lock file's
hash and the tracking URI) and says which run and model version it matches.
"""

from __future__ import annotations

import threading
from pathlib import Path

from mlci.config import settings as S
from mlci.config.resolve import Resolved
from mlci.fileio import file_hash, read_json_or_none, write_json
from mlci.tracking.champion import Champion
from mlci.errors import MlciError
from mlci.tracking.store import (check_reachable, git_info, mlflow_environment, store_lock, tracking_failed,
                                 tracking_uri)

LAST_RUN = "last-run.json"


class TrackedRun:
    """One command, recorded in MLflow when it has finished (``finished`` is the runner's callback)."""

    def __init__(self, command: str, s: S.Settings, params: Resolved):
        self.command, self.s, self.params = command, s, params
        self.uri = tracking_uri()
        check_reachable(self.uri)  # fail fast, before any work
        # Here, in the main thread, not in the one that opens the store: while a stage starts a
        # process (the best profile's search), no other thread may change the environment or fork.
        mlflow_environment()
        self.git = git_info(s.workdir)
        # Every tracked command gets the champion; only the stages that compare with it ever load it.
        self.champion = Champion(self.uri, params.section("tracking"), s)
        self.summary: dict | None = None
        self._opening: threading.Thread | None = None
        self._opened: dict = {}

    def event(self, kind: str, name: str, info: dict) -> None:
        if kind == "done" and self._opening is None:
            self._opening = threading.Thread(target=self._open, name="mlci-tracking", daemon=True)
            self._opening.start()

    def _open(self) -> None:
        """Open the store and create the RUNNING run (in the background; ``finished`` joins it)."""
        from mlci.tracking.record import start

        try:
            registry = self.champion.registry
            with store_lock(self.uri):
                self._opened["run_id"] = start(registry, self.command, self.s, self.git)
        except BaseException as e:  # noqa: BLE001 - raised where the run is recorded
            self._opened["error"] = e

    def _run_id(self) -> str | None:
        if self._opening is None:
            return None
        self._opening.join()
        if "error" in self._opened:
            raise self._opened["error"]
        return self._opened["run_id"]

    def finished(self, result) -> None:
        statuses = result.statuses
        if self._opening is None and result.stages and result.stages[0].status == "failed" and \
                not any(st in ("ran", "cached", "restored") for st in statuses.values()):
            # The first stage failed on its input (a missing file, say): nothing was made, so nothing is
            # recorded, and no store is created for it.
            return
        if statuses and all(st == "cached" for st in statuses.values()):
            matched = self._matching_run()
            if matched is not None:
                result.tracking = self.summary = {**matched, "cached": True}
                return
        from mlci.tracking.record import record_run

        try:
            run_id = self._run_id()
            registry = self.champion.registry
            with store_lock(self.uri):  # two workspaces on one SQLite file: one writer at a time
                summary = record_run(registry, self.command, self.s, self.params, statuses, self.champion,
                                     result.error, run_id=run_id, git=self.git,
                                     stages=[{"name": r.name, "status": r.status, "seconds": r.seconds,
                                              "started_at": r.started_at, "error": r.error} for r in result.stages])
        except MlciError:
            raise
        except Exception as e:  # noqa: BLE001 - the store said no: one clear line
            raise tracking_failed(self.uri, e) from None
        result.tracking = self.summary = summary
        self._remember(summary, promoted=bool(summary.get("promoted")))

    def _last_run_path(self) -> Path:
        return self.s.state_dir / LAST_RUN

    def _matching_run(self) -> dict | None:
        """The recorded run this workspace's state matches, if nothing moved since (no MLflow import)."""
        try:
            last = read_json_or_none(self._last_run_path())
        except (OSError, MlciError):  # damaged: this run is simply recorded
            return None
        if not isinstance(last, dict) or last.get("tracking_uri") != self.uri or not self.s.lock_path.is_file():
            return None
        if last.get("lock_sha256") != file_hash(self.s.lock_path):
            return None
        if last.get("champion") != self.champion.version:
            return None
        return {k: last[k] for k in ("run_id", "tracking_uri", "model", "version") if k in last}

    def _remember(self, summary: dict, promoted: bool) -> None:
        """After promotion the candidate *is* the champion: the lock says so (its gate and report stay
        valid), and the workspace remembers this run as the one its state matches."""
        if promoted and summary.get("champion"):
            from mlci.pipeline.lock import note_promoted

            note_promoted(self.s, summary["champion"])
        if self.command != "run" or not self.s.lock_path.is_file():
            return
        champion = summary.get("champion") if promoted else self.champion.version
        try:
            write_json(self._last_run_path(), {
                **{k: summary[k] for k in ("run_id", "tracking_uri", "model", "version") if k in summary},
                "champion": champion,
                "lock_sha256": file_hash(self.s.lock_path),
            })
        except OSError:
            pass  # a read-only state directory only costs a recorded rerun
