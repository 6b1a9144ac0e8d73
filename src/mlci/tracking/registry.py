"""The model registry and run store, through MLflow's client: one experiment, one registered model.

* Each new model becomes a version of a registered model. A version that passes the gate gets
  the ``champion`` alias (the tutorial's "deploy"); one that fails is tagged with the failed
  rules and the alias stays put.
* Promotion is a compare-and-set: the champion is re-read right before the alias moves, under a
  lock; if it changed since the gate, the candidate is compared again with the new champion on
  the same validation rows.

MLflow is imported only here (and in ``runs``), and only when tracking is on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mlci.errors import PrerequisiteError
from mlci.fileio import bytes_hash
from mlci.modeling.artifact import unpickle_verified
from mlci.timestamps import utc_now
from mlci.tracking.store import T, TrackingError, one_line, quiet_mlflow, standard_tags, use_uri, who

HISTORY = T + "history."  # registered-model tags, one per promotion or rollback


#: MLflow's error codes for "there is no such thing" (a version, an alias, a registered model), from its
#: SQL store and, through the REST API, a tracking server alike; any other is the store failing.
ABSENT = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


class Registry:
    """A thin, typed layer over MlflowClient for one experiment and one registered model."""

    def __init__(self, uri: str, tracking: dict):
        quiet_mlflow()
        import mlflow
        from mlflow import MlflowClient

        quiet_mlflow()  # again: importing mlflow configures its loggers
        self.mlflow = mlflow
        self.uri = uri
        # Not `use_uri` here: this may run in the thread that opens the store beside the stages, and
        # it changes os.environ (see ``session``). Downloads and Model.log call it, in the main thread.
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.tracking = tracking
        self.experiment = tracking["experiment"]
        self.name = tracking["model_name"]
        self.alias = tracking["alias"]
        self.challenger_alias = tracking.get("challenger_alias", "challenger")
        self.compare_metric = tracking["compare_metric"]
        self.greater_is_better = tracking["greater_is_better"]

    # -- experiment and runs ------------------------------------------------------------------

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            # Next to the database, not wherever the process happens to run.
            location = (Path(self.uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # created concurrently by another run
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def fail_stale_runs(self, experiment_id: str) -> list[str]:
        """Mark FAILED the RUNNING runs of this host whose process is gone (killed, crashed)."""
        host = socket.gethostname()
        stale = []
        for run in self.client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=200):
            tags = run.data.tags
            if tags.get(T + "host") != host or not tags.get(T + "pid", "").isdigit():
                continue
            if not _pid_alive(int(tags[T + "pid"]), tags.get(T + "pid_start")):
                self.client.set_tag(run.info.run_id, T + "failure", "process ended without finishing the run")
                self.client.set_terminated(run.info.run_id, "FAILED")
                stale.append(run.info.run_id)
        return stale

    def start_run(self, command: str, tags: dict[str, str], group: str | None = None, new_group: bool = False) -> str:
        """A RUNNING run of ``command``; ``group``: nest it under that group's parent run (see
        :meth:`group_parent`)."""
        exp = self.experiment_id()
        self.fail_stale_runs(exp)
        parent = self.group_parent(exp, group, tags, new_group) if group else None
        all_tags = {
            T + "command": command,
            T + "host": socket.gethostname(),
            T + "pid": str(os.getpid()),
            T + "pid_start": _pid_start(os.getpid()) or "",
            "mlflow.runName": f"{command}-{time.strftime('%Y%m%d-%H%M%S')}",
            **standard_tags(command, tags),
            # What MLflow has no tag for (commit and branch are in the standard ones above).
            **{T + k: v for k, v in tags.items() if k not in ("git_commit", "git_branch", "git_remote")},
            **({"mlflow.parentRunId": parent} if parent else {}),
        }
        return self.client.create_run(exp, tags=all_tags).info.run_id

    def group_parent(self, exp: str, group: str, git: dict[str, str], new: bool) -> str:
        """The parent run of a group of single-stage commands (the tutorial's ``docker exec`` steps,
        a Jenkins chain): the latest with this key, or a new one when ``new`` (the first stage)."""
        if not new:
            found = self.client.search_runs([exp], f"tags.`{T}group` = '{group}'",
                                            order_by=["attributes.start_time DESC"], max_results=1)
            if found:
                return found[0].info.run_id
        tags = {T + "group": group, "mlflow.runName": f"stages-{time.strftime('%Y%m%d-%H%M%S')}",
                **standard_tags("stages", git)}
        run_id = self.client.create_run(exp, tags=tags).info.run_id
        self.client.set_terminated(run_id, "FINISHED")  # it holds no work of its own
        return run_id

    def log_stage_runs(self, parent: str, stages: list[dict]) -> None:
        """One child run per stage that ran (``{name, status, seconds, started_at, error}``), nested
        under ``parent``: the MLflow UI shows the pipeline's steps and their times."""
        from mlflow.entities import Metric

        exp = self.client.get_run(parent).info.experiment_id
        for st in stages:
            start = int((st.get("started_at") or time.time()) * 1000)
            tags = {"mlflow.parentRunId": parent, "mlflow.runName": st["name"], T + "stage": st["name"],
                    T + "status": st["status"], **({T + "error": st["error"][:5000]} if st.get("error") else {})}
            run_id = self.client.create_run(exp, start_time=start, tags=tags).info.run_id
            self.client.log_batch(run_id, metrics=[Metric("seconds", float(st["seconds"]), start, 0)])
            self.client.set_terminated(run_id, "FAILED" if st["status"] == "failed" else "FINISHED",
                                       end_time=start + int(st["seconds"] * 1000))

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def log(self, run_id: str, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(T + k, str(v)) for k, v in tags.items()],
        )

    def log_datasets(self, run_id: str, datasets: list[dict]) -> None:
        """The run's data as MLflow datasets (the UI's "Datasets used"): each ``{name, digest, source,
        context, schema (MLflow column specs), rows}``."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        self.client.log_inputs(run_id, [
            DatasetInput(Dataset(d["name"], d["digest"], "local", json.dumps({"uri": d["source"]}),
                                 json.dumps({"mlflow_colspec": d["schema"]}), json.dumps({"num_rows": d["rows"]})),
                         tags=[InputTag("mlflow.data.context", d["context"])])
            for d in datasets])

    def log_files(self, run_id: str, files: dict[str, Path]) -> None:
        """Log ``{artifact path: local file}`` in one call: each ``log_artifact`` call looks the
        run up again (a round trip per file); ``log_artifacts`` on a staged tree does it once."""
        import shutil
        import tempfile

        present = {dest: src for dest, src in files.items() if src.is_file()}
        if not present:
            return
        with tempfile.TemporaryDirectory(prefix="mlci-artifacts-") as tmp:
            for dest, src in present.items():
                target = Path(tmp) / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
            self.client.log_artifacts(run_id, tmp)

    # -- registry -----------------------------------------------------------------------------

    def ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            with contextlib.suppress(MlflowException):  # created concurrently
                self.client.create_registered_model(self.name, description="Registered by mlci.")

    def register(self, run_id: str, model_file: Path, card: dict) -> str:
        """Log the model with MLflow's model API (a pyfunc, see ``mlci.modeling.pyfunc``) as ``run_id``'s
        model, with the run's parameters and metrics; register it as a new version."""
        from mlci.tracking.logged_model import log_model

        self.ensure_registered_model()
        use_uri(self.uri)  # Model.log resolves the store with the fluent API's URI
        model_id = log_model(self.client, run_id, model_file, card)
        mv = self.client.create_model_version(
            self.name,
            source=f"models:/{model_id}",
            run_id=run_id,
            tags={
                T + "model_sha256": card["sha256"],  # model.pkl, as trained: checked before every load
                T + "data_sha256": str(card.get("data_sha256")),
            },
            model_id=model_id,
        )
        return str(mv.version)

    def find_version(self, model_sha: str) -> str | None:
        found = self.client.search_model_versions(
            f"name = '{self.name}' and tags.`{T}model_sha256` = '{model_sha}'"
        )
        return str(max(int(v.version) for v in found)) if found else None

    def version(self, version: str):
        return self.client.get_model_version(self.name, str(version))

    def existing_version(self, version: str, doing: str):
        """The ModelVersion ``version``: a missing (or malformed) one is exit 6, any other failure of the
        registry exit 8, naming what could not be done (``doing``)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.version(version)
        except MlflowException as e:
            if e.error_code in ABSENT:
                raise PrerequisiteError(f"{self.name} has no version {version}") from None
            raise TrackingError(f"{self.name} v{version} cannot be read from the registry ({one_line(e)}); "
                                f"{doing}") from None

    def alias_version(self, alias: str, doing: str):
        """The ModelVersion ``alias`` points at, or None when it points nowhere yet. A store that cannot
        say is a tracking error naming what could not be done (``doing``), never "nowhere yet": the gate
        would promote without comparing."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as e:
            if e.error_code in ABSENT:
                return None
            raise TrackingError(f"the registry cannot say which version of {self.name} is the {alias} "
                                f"({one_line(e)}); {doing}") from None

    def champion(self):
        """The champion's ModelVersion, or None when there is none yet (``alias_version``)."""
        return self.alias_version(self.alias, "nothing was compared or promoted")

    def fetch(self, version: str, dst: Path | None = None, mv=None) -> Path:
        """Download a version's model.pkl (into ``dst``, else a new temporary directory); check its sha256
        against the registry's tag; return its path. ``mv``: the version's ModelVersion, when already read."""
        mv = mv or self.version(version)
        expected = mv.tags.get(T + "model_sha256")
        where = f"{self.name} v{mv.version}"
        use_uri(self.uri)  # downloads resolve `models:/` URIs with the fluent API's URIs
        try:
            root = Path(self.mlflow.artifacts.download_artifacts(
                mv.source, dst_path=str(dst) if dst is not None else None))
            # A pyfunc keeps it under artifacts/; versions logged before kept it at the root.
            local = next((p for p in (root / "artifacts" / "model.pkl", root / "model.pkl") if p.is_file()),
                         root / "artifacts" / "model.pkl")
            data = local.read_bytes()
        except Exception as e:  # noqa: BLE001 - any failure to fetch is the same problem for the user
            raise TrackingError(f"{where}: its model artifact cannot be read ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]}); nothing was promoted") from None
        if bytes_hash(data) != expected:
            raise artifact_mismatch(expected, where)(bytes_hash(data))
        return local

    def load_with_card(self, version: str) -> tuple[object, dict]:
        """A version's model (verified, then unpickled) and its card (``{"sha256": ...}`` at least)."""
        import tempfile

        expected = self.version(version).tags.get(T + "model_sha256")
        with tempfile.TemporaryDirectory(prefix="mlci-model-") as tmp:
            path = self.fetch(version, Path(tmp))
            model = unpickle_verified(path.read_bytes(), expected,
                                      artifact_mismatch(expected, f"{self.name} v{version}"))
            card_path = path.with_name("model.json")
            card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        return model, {**card, "sha256": expected}

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, str(version), T + k, str(v))

    def promotion_lock(self):
        return promotion_lock(self.uri, self.name)

    def promote(self, version: str, reason: str) -> str | None:
        """Make ``version`` the champion through MLflow's client (``mlci promote`` wherever
        ``direct.promote`` does not apply), under the promotion lock: refused before anything is written
        when there is no such version or its artifact's bytes do not match the registered sha256 (as
        ``direct.promote`` checks them). Returns the previous champion's version, or None."""
        import tempfile

        with self.promotion_lock():
            mv = self.existing_version(version, "nothing was promoted")
            with tempfile.TemporaryDirectory(prefix="mlci-model-") as tmp:
                self.fetch(version, Path(tmp), mv=mv)
            champion = self.champion()
            previous = str(champion.version) if champion is not None else None
            self.set_champion(str(mv.version), reason, previous)
        return previous

    def set_champion(self, version: str, reason: str, previous: str | None, by: str | None = None,
                     kind: str = "promote") -> None:
        """Point the alias at ``version`` (``previous``: the champion's version read under the promotion
        lock, or None) and keep the event: on the version (its latest promotion, plus one tag per event)
        and in the registered model's append-only history."""
        self.client.set_registered_model_alias(self.name, self.alias, str(version))
        version_tags, model_tags = champion_event(version, previous, reason, by, kind)
        for k, v in version_tags.items():
            self.client.set_model_version_tag(self.name, str(version), k, v)
        for k, v in model_tags.items():
            self.client.set_registered_model_tag(self.name, k, v)

    def history(self) -> list[dict]:
        """Every promotion and rollback of the alias, oldest first; none before the model is registered."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.name).tags
        except MlflowException as e:
            if e.error_code in ABSENT:
                return []
            raise TrackingError(f"the registry cannot list {self.name}'s promotions ({one_line(e)})") from None
        return [json.loads(tags[k]) for k in sorted((k for k in tags if k.startswith(HISTORY)),
                                                     key=lambda k: int(k.removeprefix(HISTORY)))]

    def promote_if_better(
        self,
        version: str,
        gate_champion: str | None,
        value: float,
        champion_value: Callable[[str], float],
        compared: bool = True,
    ) -> dict:
        """Compare-and-set the champion alias to ``version``.

        ``gate_champion`` is the champion the gate compared against. If another run moved the
        alias since, ``version`` must be at least as good as the new champion on
        ``compare_metric`` (measured by ``champion_value`` on the same rows), or it stays put.
        A gate with no relative rule (``compared`` false) compared with no champion: its verdict
        alone decides.
        """
        with self.promotion_lock():
            current = self.champion()
            current_v = str(current.version) if current else None
            if current_v == str(version):
                return {"promoted": True, "champion": current_v, "note": "already the champion"}
            if compared and current_v != gate_champion and current_v is not None:
                theirs = champion_value(current_v)
                better = value >= theirs if self.greater_is_better else value <= theirs
                if not better:
                    note = (f"champion moved to v{current_v} meanwhile and is better "
                            f"({self.compare_metric} {theirs:.4f} vs {value:.4f}); not promoted")
                    self.tag_version(version, {"promotion": note})
                    return {"promoted": False, "champion": current_v, "note": note}
            self.set_champion(version, "gate passed", current_v)
            return {"promoted": True, "champion": str(version), "previous": current_v}

    def rollback(self, reason: str) -> tuple[str, str]:
        """Move the champion back to the version promoted before the current one (under the promotion
        lock, which it takes)."""
        with self.promotion_lock():
            current = self.champion()
            if current is None:
                raise PrerequisiteError(f"{self.name} has no {self.alias} to roll back")
            versions = self.client.search_model_versions(f"name = '{self.name}'")
            target = rollback_target(self.name, str(current.version), current.tags,
                                     [(str(v.version), v.tags) for v in versions])
            self.set_champion(target, f"rollback from v{current.version}: {reason}", str(current.version),
                              kind="rollback")
            for k, v in rolled_back(reason).items():
                self.client.set_model_version_tag(self.name, str(current.version), k, v)
        return str(current.version), target

    # -- history ------------------------------------------------------------------------------

    def runs(self, limit: int = 20, where: str = "", experiment: str | None = None):
        """The latest runs of mlci commands (not the stage runs nested in them, nor group parents);
        ``where``: more of MLflow's search filter, AND-ed; ``experiment``: another one than this model's."""
        exp = self.client.get_experiment_by_name(experiment or self.experiment)
        if exp is None:
            return []
        query = " and ".join(filter(None, (f"tags.`{T}command` != ''", where)))
        return self.client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"],
                                       max_results=limit)


@contextlib.contextmanager
def promotion_lock(uri: str, name: str) -> Iterator[None]:
    """Serialise promotions of model ``name`` in store ``uri`` on this host (all workspaces, all processes)."""
    import fcntl

    key = hashlib.sha256(f"{uri}\0{name}".encode()).hexdigest()[:16]
    lock_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlci" / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"promote-{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# -- what a promotion writes: one definition for MLflow's client and the direct SQLite path ------


def champion_event(version: str, previous: str | None, reason: str, by: str | None = None,
                   kind: str = "promote") -> tuple[dict[str, str], dict[str, str]]:
    """The tags that record a promotion or rollback to ``version``: (the version's, the registered
    model's). The event's key is the time in nanoseconds (tag keys take no ':' or '+')."""
    at, by = utc_now("milliseconds"), by or who()
    entry = json.dumps({"kind": kind, "version": str(version), "from": str(previous) if previous else None,
                        "at": at, "by": by, "reason": reason})
    key = f"{time.time_ns()}"
    return ({T + "promoted_at": at, T + "promoted_by": by, T + "promotion_reason": reason,
             f"{T}promotion.{key}": entry}, {f"{HISTORY}{key}": entry})


def rolled_back(reason: str) -> dict[str, str]:
    """The tags a rollback leaves on the version it moved away from."""
    return {T + "rolled_back_at": utc_now("milliseconds"), T + "rollback_reason": reason}


def rollback_target(name: str, current: str, current_tags: dict[str, str],
                    versions: list[tuple[str, dict[str, str]]]) -> str:
    """The version promoted last before ``current`` was (``versions``: every version with its tags)."""
    at = current_tags.get(T + "promoted_at", "~")
    earlier = [(tags[T + "promoted_at"], int(v)) for v, tags in versions
               if tags.get(T + "promoted_at") and int(v) != int(current) and tags[T + "promoted_at"] <= at]
    if not earlier:
        raise PrerequisiteError(f"{name} v{current} is the only version ever promoted; nothing to roll back to")
    return str(max(earlier)[1])

def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pid_start(pid: int) -> str | None:
    """The process's start time, so a reused pid is not mistaken for the original."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):  # a zombie nobody reaped (no init in a container) is dead
        return False
    return not start or _pid_start(pid) == start


def flatten_params(sections: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("split", "preprocess", "train"):
        for k, v in sections[name].items():
            out[f"{name}.{k}"] = v
    out["gate.rules"] = json.dumps(sections["gate"]["rules"])
    out["dataset"] = sections["dataset"]["name"]
    return out


def artifact_mismatch(expected: str | None, where: str):
    def error(actual: str) -> TrackingError:
        return TrackingError(f"{where}: model artifact sha256 {actual} does not match the registry's "
                             f"{expected}; refusing to load it, nothing was promoted")
    return error
