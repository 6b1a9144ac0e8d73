"""A trained model as an MLflow model: MLflow's own ``Model.log`` with the pyfunc flavour.

What the logged model holds, so it loads in an environment built from it alone:

* ``artifacts/model.pkl`` (the very bytes mlci trained) and ``artifacts/model.json`` (its card);
* ``python_model.pkl``: :class:`mlci.modeling.pyfunc.MlciModel`, which answers the probability and label;
* ``code/mlci``: mlci's own modules (the pyfunc, and the best profile's ``Ensemble`` the pickle needs);
* a signature naming the inputs as the training file spelt them (see ``signature_types`` for their
  types) and the two outputs; an input example of validation records;
* explicit pip requirements, pinned to the versions the model was trained with, ``mlflow`` included
  (inferring them would load the model in a subprocess: seconds per run).

``Model.log`` copies the run's parameters and step-0 metrics onto the logged model, so they are
logged first (see ``record.record_run``).
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import mlci
from mlci.tracking.store import quiet_mlflow


def requirements(card: dict) -> list[str]:
    """The pip requirements of the logged model: what the pickle and the pyfunc import, pinned."""
    pins = {pkg: ver for pkg, ver in card.get("versions", {}).items() if pkg != "mlci"}
    # The pyfunc's loader (mlci itself may run on mlflow-skinny, the same version), and what
    # pickled the python model.
    pins.setdefault("mlflow", _version("mlflow") or _version("mlflow-skinny"))
    pins.setdefault("cloudpickle", _version("cloudpickle"))
    return [f"{pkg}=={ver}" if ver else pkg for pkg, ver in pins.items()]


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _modules_only(folder: str, names: list[str]) -> list[str]:
    """What ``copytree`` leaves out of the shipped package: all but its modules."""
    return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())]


def log_model(client, run_id: str, model_file: Path, card: dict) -> str:
    """Log ``model_file`` (and ``card``) as ``run_id``'s model; return the logged model's id."""
    quiet_mlflow()
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema

    from mlci.modeling.pyfunc import CARD, MODEL, MlciModel, signature_types

    inputs = Schema([ColSpec(kind, name) for name, kind in signature_types(card)])
    outputs = Schema([ColSpec("double", "probability"), ColSpec("string", "label")])
    with tempfile.TemporaryDirectory(prefix="mlci-model-") as tmp:
        card_file = Path(tmp) / "model.json"
        card_file.write_text(json.dumps(card, indent=2))
        code = Path(tmp) / "code" / "mlci"
        # Only the modules: the package folder also links the bundled data (4 MB) and dataset files.
        shutil.copytree(Path(mlci.__file__).parent, code, ignore=_modules_only)
        example = pd.DataFrame(card["input_example"]) if card.get("input_example") else None
        reference = model_file.with_name("reference.json")
        run = client.get_run(run_id)
        # Created here, in the run's experiment (``Model.log`` would use the fluent API's current one),
        # with the run's parameters; ``Model.log`` links the run's metrics to it.
        logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id,
                                            params=dict(run.data.params), model_type="mlci-binary-classifier")
        info = Model.log(
            model_id=logged.model_id,
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=MlciModel(),
            # The reference profile too (models trained before mlci made one have none).
            artifacts={MODEL: str(model_file), CARD: str(card_file),
                       **({"reference": str(reference)} if reference.is_file() else {})},
            code_paths=[str(code)],
            signature=ModelSignature(inputs=inputs, outputs=outputs),
            input_example=example,
            pip_requirements=requirements(card),
            metadata={
                "mlci": {
                    "output": "probability of positive_label, and the label at the threshold",
                    "positive_label": card["positive_label"],
                    "negative_label": card["negative_label"],
                    "threshold": card["threshold"],
                    "model_sha256": card["sha256"],
                    "profile": card.get("profile"),
                    "python": platform.python_version(),
                }
            },
        )
    return info.model_id
