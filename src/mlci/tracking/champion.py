"""The champion: the one object that knows which model the gate and the report compare with.

Its version comes from a cheap look at the registry (``peek``); its model is fetched (and its
sha256 checked) only when a comparison is actually made, in this process, which by then has
scikit-learn loaded anyway. The pipeline sees it through ``mlci.stages.context.Champion``.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from mlci.config import settings as S
from mlci.errors import MlciError, PrerequisiteError
from mlci.fileio import read_json
from mlci.tracking import peek
from mlci.tracking.store import store_lock, tracking_failed


class Champion:
    def __init__(self, uri: str, tracking: dict, s: S.Settings):
        self.uri, self.tracking, self.s = uri, tracking, s
        self._models: dict[str, tuple] = {}
        self._registry_lock = threading.Lock()
        self._registry = None
        self._validation: dict[str, tuple[dict, np.ndarray]] = {}

    @property
    def registry(self):
        """The registry, opened once (the tracking thread and a comparing stage may both ask)."""
        from mlci.tracking.registry import Registry

        with self._registry_lock:
            if self._registry is None:
                try:
                    with store_lock(self.uri):  # opening a new store migrates it: one process at a time
                        self._registry = Registry(self.uri, self.tracking)
                except MlciError:
                    raise
                except Exception as e:  # noqa: BLE001 - the store said no: one line
                    raise tracking_failed(self.uri, e) from None
            return self._registry

    @functools.cached_property
    def version(self) -> str | None:
        """The champion's version when first asked (what the gate compares with), None when there is none."""
        v = peek.champion_version(self.uri, self.tracking["model_name"], self.tracking["alias"])
        if v is peek.UNKNOWN:
            try:
                mv = self.registry.champion()
            except Exception as e:  # noqa: BLE001
                raise tracking_failed(self.uri, e) from None
            v = str(mv.version) if mv else None
        return v

    def model(self, version: str | None = None) -> tuple[object, dict]:
        """A version's model (the champion's by default) and its card (``model.json``, with the registry's
        sha256), the pickle verified before it is unpickled."""
        version = version or self.version
        if version not in self._models:
            try:
                self._models[version] = self.registry.load_with_card(version)
            except MlciError:
                raise
            except Exception as e:  # noqa: BLE001
                raise tracking_failed(self.uri, e) from None
        return self._models[version]

    def refitted(self, version: str | None = None) -> bool:
        """Whether a version learnt from its validation rows too (``train.refit_max_rows``): then its
        figures there are the ones measured before that fit, as recorded on its card."""
        card = self.model(version)[1]
        return card.get("fitted_on", "train") != "train" and bool(card.get("validation_metrics"))

    def metrics(self, version: str | None = None) -> dict:
        """A version's validation figures (what the gate compares with): measured on this workspace's
        validation rows when it was fitted on the train split alone; when it learnt from its validation
        rows too, the figures its recipe had there before (re-scoring it would measure it on rows it
        learnt: on the same data and split they are these very rows, ``caveat`` says when not)."""
        version = version or self.version
        if version not in self._validation:
            model, card = self.model(version)
            if self.refitted(version):
                self._validation[version] = ({f"validation_{k}": v for k, v in card["validation_metrics"].items()},
                                             None)
            else:
                self._validation[version] = validation_metrics(self.s, model)
        return self._validation[version][0]

    def caveat(self) -> str | None:
        """Why the comparison with the champion may not be on equal terms (None: it is)."""
        pre = self.s.result(S.PREPROCESS_METADATA)
        ours = read_json(pre) if pre.exists() else {}
        card = self.model()[1]
        if self.refitted():
            if card.get("split") == ours.get("split") and card.get("data_sha256") == ours.get("data_sha256"):
                return None
            return ("the champion's validation figures are those recorded when it was trained, on its own data and "
                    "split (it then learnt from those rows, so it is not re-scored on these)")
        return _split_caveat(card.get("split"), ours.get("split"))

    def proba(self, split: str, frame) -> np.ndarray:
        """The champion's probabilities on a split's rows (the validation ones the gate computed are reused)."""
        from mlci.modeling.estimator import predict_proba

        got = self._validation.get(self.version)
        if split == "validation" and got is not None and got[1] is not None and len(got[1]) == len(frame):
            return got[1]
        model = self.model()[0]
        positive_label, features, _ = _inputs(self.s, model)
        return predict_proba(model, frame[features], positive_label)


def _split_caveat(champion_split: dict | None, ours: dict | None) -> str | None:
    """Why a comparison with a champion re-scored on these rows may flatter it: its training rows were
    chosen another way, so some of these validation rows may be rows it was trained on."""
    if champion_split == ours:
        return None

    def name(sp):
        return "an unrecorded split (before mlci recorded its split)" if not sp else \
            f"split {sp.get('scheme')} seed {sp.get('seed')} ({sp.get('validation')}/{sp.get('test')})"
    return (f"the champion was trained under {name(champion_split)}, this model under {name(ours)}: some of these "
            "validation rows may be the champion's training rows, so its figures may be optimistic")


def _inputs(s: S.Settings, model) -> tuple[str, list[str], str]:
    """(positive label, the model's input columns, target) for scoring any model on our rows."""
    card = read_json(s.model_card_path)  # the candidate's card: target and label names
    features = list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else card["features"]
    return card["positive_label"], features, card["dataset"]["target"]


def validation_metrics(s: S.Settings, model) -> tuple[dict, np.ndarray]:
    """Metrics of any model on this workspace's validation rows, at its own decision threshold, named like
    train_metadata.json's, and the probabilities they came from."""
    from mlci.evaluation.metrics import binary_metrics
    from mlci.modeling.estimator import decision_threshold, predict_proba
    from mlci.stages.io import read_split

    positive_label, features, target = _inputs(s, model)
    va = read_split(s, "validation")
    missing = [c for c in features if c not in va.columns]
    if missing:
        raise PrerequisiteError(f"the champion needs columns this data lacks: {', '.join(missing)}")
    y, proba = np.asarray(va[target] == positive_label), predict_proba(model, va[features], positive_label)
    return {f"validation_{k}": v for k, v in binary_metrics(y, proba, decision_threshold(model)).items()}, proba
