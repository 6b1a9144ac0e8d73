"""Parameters as the pipeline sees them, validated once and remembered.

Validating ``params.yaml`` with pydantic costs about half a second of
imports and schema building here, more than the whole budget of a no-op
rerun. So the validated, JSON-able sections are cached in
``.mlci/params-cache.json`` under a key made of the parameters file's bytes,
the ``-S`` overrides and the code's hash (plus the hash of a dataset YAML
file, if one is named). On a hit the pipeline compares sections without
importing pydantic; the full :class:`~mlci.params.Params` object is built
only when a stage actually has to run.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from mlci.fileio import file_hash, write_json

SECTIONS = ("dataset", "split", "preprocess", "train", "best", "gate", "fairness", "report", "tracking", "monitor", "engine",
            "dask")


def code_hash() -> str:
    """Hash of the code that validates parameters: a change to it may change what they resolve to."""
    from mlci.codehash import code_hash as modules_hash

    return modules_hash(("mlci.config.params", "mlci.config.resolve"))


class Resolved:
    """Validated parameter sections; ``.model`` is the full pydantic object, built on demand."""

    def __init__(self, sections: dict[str, Any], load: Callable[[], Any]):
        self.sections = sections
        self._load = load

    def section(self, name: str) -> Any:
        return self.sections[name]

    @functools.cached_property
    def model(self):
        return self._load()


def resolve(params_file: Path, overrides: list[str], cache_dir: Path, code: str | None = None) -> Resolved:
    """Validated sections of ``params_file`` with ``overrides`` applied; cached across runs."""
    overrides = list(overrides)
    code = code or code_hash()
    key = _key(params_file, overrides, code)
    cache = cache_dir / "params-cache.json"

    def load():
        from mlci.config import params as P

        return P.load(params_file, overrides)

    try:
        entry = json.loads(cache.read_text())
        if entry["key"] == key and all(
            Path(f).is_file() and file_hash(Path(f)) == h for f, h in entry["files"].items()
        ):
            return Resolved(entry["sections"], load)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache, or a damaged one: validate

    from mlci.data.dataset import BUILTIN_DATASETS, dataset_path

    model = load()
    sections = {name: model.section(name) for name in SECTIONS}
    ds = model.dataset_def(params_file.parent)
    sections["dataset"] = ds.model_dump(mode="json")
    # The groups in force (the dataset's unless overridden), checked against the dataset now.
    sections["fairness"]["groups"] = model.groups(ds)
    tracking = sections["tracking"]
    tracking["experiment"] = tracking["experiment"] or ds.name
    tracking["model_name"] = tracking["model_name"] or ds.model_name or ds.name
    files = {}
    if isinstance(model.dataset, str) and model.dataset not in BUILTIN_DATASETS:
        path = dataset_path(model.dataset, params_file.parent)
        files[str(path)] = file_hash(path)
    try:
        write_json(cache, {"key": key, "files": files, "sections": sections})
    except OSError:
        pass  # a read-only workspace only loses the cache
    return Resolved(sections, lambda: model)


def _key(params_file: Path, overrides: list[str], code: str) -> str:
    raw = params_file.read_bytes() if params_file.is_file() else b"<absent>"
    h = hashlib.sha256()
    h.update(json.dumps([str(params_file), overrides, code]).encode() + b"\0" + raw)
    return h.hexdigest()
