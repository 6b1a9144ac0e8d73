"""Where ``mlci serve``'s models come from, and what is checked before one is served.

* A source is the registry's champion alias (``RegistrySource``, the default) or a model
  directory (``DirSource``, ``--model-dir``). ``current()`` names the model the source points at
  now (a version, or the model file's sha256); ``load()`` fetches it. Either way the pickle's
  bytes are checked against the sha256 recorded at training time before they are unpickled (a
  pickle is code).
* ``prepare`` does everything else that can fail before a model is installed: the fast scorer,
  the request schema, the smoke prediction against the Pipeline.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlci.config.settings import REFERENCE_PROFILE
from mlci.data.dataset import BUILTIN_DATASETS, Column, DatasetDef, load_dataset_def
from mlci.errors import PrerequisiteError
from mlci.serving.schema import schema_key
from mlci.serving.scoring import FastScorer, UnsupportedModel, smoke_records
from mlci.timestamps import iso_from_ms, utc_now


@dataclass(frozen=True)
class Loaded:
    """One loaded model and everything ``GET /model`` says about it. Never mutated once installed."""

    ident: str  # what the source calls it: a version, or the model file's sha256
    scorer: FastScorer
    dataset: DatasetDef
    key: tuple
    info: dict
    #: The model's reference profile (``reference.json``, ``mlci.monitoring.profile``), None when it has
    #: none (trained before mlci made one) or it describes another model: no live drift then.
    reference: dict | None = None


@dataclass
class Candidate:
    ident: str
    pipeline: Any
    card: dict
    info: dict = field(default_factory=dict)
    reference: dict | None = None


class RegistrySource:
    """The registered model's alias (``champion``) in the MLflow registry."""

    def __init__(self, uri: str, tracking: dict):
        from mlci.tracking.registry import Registry

        self.registry = Registry(uri, tracking)
        self.name, self.alias = self.registry.name, self.registry.alias
        self.describe = f"{self.name}@{self.alias} ({uri})"
        self.nothing_hint = "no champion yet: run `mlci run` or `mlci promote`, or pass --model-dir"

    def current(self) -> str | None:
        mv = self.registry.champion()
        return str(mv.version) if mv else None

    def load(self, version: str) -> Candidate:
        from mlci.modeling.artifact import unpickle_verified
        from mlci.tracking.store import T, TrackingError

        reg = self.registry
        mv = reg.version(version)
        expected = mv.tags.get(T + "model_sha256")
        # A directory of our own, removed once loaded: a long-running server swaps many times.
        with tempfile.TemporaryDirectory(prefix="mlci-serve-") as tmp:
            path = reg.fetch(version, Path(tmp))  # raises unless the downloaded bytes match the registry's sha256
            pipeline = unpickle_verified(path.read_bytes(), expected, lambda actual: TrackingError(
                f"{self.name} v{version}: model artifact sha256 {actual} does not match the registry's {expected}"))
            card_path = path.with_name("model.json")
            card = json.loads(card_path.read_text()) if card_path.is_file() else {}
            # The version's artifacts are downloaded whole: its reference profile lies beside the pickle.
            reference = read_reference(path.with_name(REFERENCE_PROFILE), expected)
        run = reg.client.get_run(mv.run_id) if mv.run_id else None
        if not card.get("dataset") and run is not None and run.data.params.get("dataset") in BUILTIN_DATASETS:
            # Registered before versions carried their card: the run names its (built-in) dataset.
            ds = load_dataset_def(run.data.params["dataset"])
            card = {"dataset": ds.model_dump(mode="json"), "positive_label": ds.positive_label}
        return Candidate(str(version), pipeline, card, self._info(str(version), mv, run, card, expected), reference)

    def _info(self, version: str, mv, run, card: dict, model_sha256: str | None) -> dict:
        from mlci.tracking.store import T, commit_of

        metrics = {k: v for k, v in (run.data.metrics.items() if run else ())
                   if k.startswith(("validation_", "test_"))}
        tags = run.data.tags if run else {}
        return {
            "name": self.name,
            "version": version,
            "alias": self.alias,
            "source": "registry",
            "metrics": dict(sorted(metrics.items())),
            "trained_at": card.get("trained_at") or iso_from_ms(mv.creation_timestamp),
            "git_commit": commit_of(tags),
            "data_sha256": mv.tags.get(T + "data_sha256") or card.get("data_sha256"),
            "model_sha256": model_sha256,
            "run_id": mv.run_id,
        }


class DirSource:
    """A model directory (``model.pkl`` + ``model.json``), as ``mlci train`` writes it."""

    def __init__(self, model_dir: Path, results_dir: Path | None = None):
        self.model_dir = model_dir
        self.results_dir = results_dir
        self.name, self.alias = str(model_dir), None
        self.describe = str(model_dir)
        self.nothing_hint = "no model.json there: run `mlci train` first"

    def current(self) -> str | None:
        from mlci.config.settings import MODEL_CARD
        from mlci.errors import StateError
        from mlci.fileio import read_json

        try:
            return read_json(self.model_dir / MODEL_CARD).get("sha256")
        except (OSError, StateError):  # missing or half-written: nothing new to load yet
            return None

    def load(self, ident: str) -> Candidate:
        from mlci.modeling.artifact import load_model

        pipeline, card = load_model(self.model_dir)  # checks model.pkl against model.json's sha256
        info = {
            "name": str(self.model_dir),
            "version": str(card.get("sha256", "")).removeprefix("sha256:")[:12],
            "alias": None,
            "source": "directory",
            "metrics": dict(sorted(self._metrics(card).items())),
            "trained_at": card.get("trained_at"),
            "git_commit": card.get("git_commit"),
            "data_sha256": card.get("data_sha256"),
            "model_sha256": card.get("sha256"),
            "run_id": None,
        }
        reference = read_reference(self.model_dir / REFERENCE_PROFILE, card.get("sha256"))
        return Candidate(card.get("sha256", ident), pipeline, card, info, reference)

    def _metrics(self, card: dict) -> dict:
        """The validation metrics of ``results/train_metadata.json``, if they are this very model's."""
        from mlci.config.settings import TRAIN_METADATA

        meta = self.results_dir / TRAIN_METADATA if self.results_dir else None
        if not (meta and meta.is_file()):
            return {}
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            return {}
        if data.get("model_sha256") != card.get("sha256"):
            return {}
        return {k: v for k, v in data.items() if k.startswith("validation_") and isinstance(v, (int, float))}


def open_source(model_dir: Path | None, tracking: dict, results_dir: Path | None):
    """``--model-dir`` when given, else the registry (which must answer now)."""
    if model_dir is not None:
        if not model_dir.is_dir():
            raise PrerequisiteError(f"{model_dir}: not a directory (--model-dir)")
        return DirSource(model_dir, results_dir)
    from mlci.tracking.store import TrackingError, check_reachable, tracking_uri

    uri = tracking_uri()
    check_reachable(uri)
    try:
        return RegistrySource(uri, tracking)
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingError(f"model registry at {uri}: {one_line(e)}") from None


def prepare(c: Candidate) -> Loaded:
    """Everything that can fail, done before the model is installed: fast path, schema, smoke test."""
    ds = _dataset_of(c)
    positive = c.card.get("positive_label") or ds.positive_label
    try:
        scorer = FastScorer(c.pipeline, positive)
    except UnsupportedModel as e:
        raise ValueError(f"cannot serve this model: {e}") from None
    if set(scorer.features) != {f.name for f in ds.features}:
        raise ValueError(f"the model's inputs {scorer.features} are not the dataset's features")
    ranges = {f.name: (f.min, f.max) for f in ds.features}
    scorer.verify(c.pipeline, smoke_records(scorer.features, scorer.categories, ranges))
    info = dict(c.info, loaded_at=utc_now('milliseconds'))
    return Loaded(c.ident, scorer, ds, schema_key(ds, scorer.categories), info, c.reference)


def read_reference(path: Path, model_sha256: str | None) -> dict | None:
    """The reference profile at ``path`` if it is this model's; None otherwise (the server then shows no
    drift, and says why once in its log: a missing profile must not stop a model being served)."""
    import logging

    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        logging.getLogger("mlci.serve").warning("%s: no reference profile; no live drift on /metrics", path.name)
        return None
    except (OSError, ValueError) as e:
        logging.getLogger("mlci.serve").warning("%s unreadable (%s); no live drift on /metrics", path.name, one_line(e))
        return None
    if not isinstance(profile, dict) or profile.get("model_sha256") != model_sha256:
        logging.getLogger("mlci.serve").warning("%s describes another model; no live drift on /metrics", path.name)
        return None
    return profile


def _dataset_of(c: Candidate) -> DatasetDef:
    """The declared schema from the model card; for a version registered without one, what the model knows."""
    if c.card.get("dataset"):
        return DatasetDef.model_validate(c.card["dataset"])
    names = list(getattr(c.pipeline, "feature_names_in_", []))
    classes = [str(x) for x in c.pipeline.classes_]
    if not names or len(classes) != 2:
        raise ValueError("no model card and the model does not name its inputs; cannot build a request schema")
    scorer = FastScorer(c.pipeline, classes[1])
    cols = [Column(name=n, type="categorical" if n in scorer.categories else "numeric") for n in names]
    return DatasetDef(name="model", columns=[*cols, Column(name="__label__", type="label")], target="__label__",
                      positive_label=classes[1], negative_label=classes[0])


def one_line(e: BaseException) -> str:
    """An exception as one log line: its type and the first line of its message."""
    text = str(getattr(e, "message", None) or e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:400] if text else ''}"
