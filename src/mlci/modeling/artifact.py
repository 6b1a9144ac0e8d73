"""The model artifact: the pickled Pipeline and its card, written reproducibly, loaded only when verified.

A pickle is code, so every load in mlci (the test stage, the report, ``mlci predict``, the server,
a champion from the registry) goes through :func:`unpickle_verified`: the bytes that were hashed
are the bytes that get unpickled, and they must match the sha256 recorded at training time.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Callable

from mlci.config import settings as S
from mlci.errors import MlciError, PrerequisiteError, StateError
from mlci.fileio import bytes_hash, read_json


def unpickle_verified(data: bytes, expected: str | None, mismatch: Callable[[str], MlciError], where: str = "model"):
    """Unpickle ``data`` if its sha256 is ``expected``; else raise ``mismatch(actual_sha256)``."""
    actual = bytes_hash(data)
    if actual != expected:
        raise mismatch(actual)
    try:
        return pickle.loads(data)
    except Exception as e:  # noqa: BLE001 - the bytes are the trained ones, yet do not load here
        raise StateError(f"{where}: its sha256 matches but it does not load ({type(e).__name__}: {str(e)[:150]}); "
                         "retrain it (mlci run --force), or install the versions it was trained with") from None


def load_model(model_dir: Path):
    """The model in ``model_dir`` and its card, after checking the pickle's sha256 against the card."""
    card_path = model_dir / S.MODEL_CARD
    model_path = model_dir / S.MODEL_FILE
    if not card_path.exists() or not model_path.exists():
        raise PrerequisiteError(f"{model_dir}: no trained model; run `mlci train` first")
    card = read_json(card_path)

    def mismatch(actual: str) -> MlciError:
        return PrerequisiteError(
            f"{model_path}: sha256 {actual} does not match {card_path} ({card.get('sha256')}); "
            "refusing to load a model that was changed after training")

    return unpickle_verified(model_path.read_bytes(), card.get("sha256"), mismatch, str(model_path)), card


def to_bytes(model) -> bytes:
    """The pickled model, the same bytes for the same model whatever the process did before.

    ``pickle.dumps`` memoises objects by identity, so two equal strings are written once or
    twice depending on whether they happen to be the same object (interning, caches warmed by
    earlier work in the process): the same fit gave different bytes, hence a different sha256,
    in a fresh process and in one that had loaded a model before. This pickler writes each
    distinct string once. It is the pure-Python pickler, slower than the C one, but the model
    is a few thousand objects.
    """
    buf = io.BytesIO()
    _CanonicalPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(model)
    return buf.getvalue()


class _CanonicalPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._strings: dict[str, str] = {}

    def save_str(self, obj):
        canonical = self._strings.setdefault(obj, obj)  # held here, so its id stays unique
        memoized = self.memo.get(id(canonical))
        if memoized is not None:
            self.write(self.get(memoized[0]))
        else:
            pickle._Pickler.save_str(self, canonical)

    dispatch[str] = save_str
