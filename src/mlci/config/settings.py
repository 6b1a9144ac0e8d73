"""Where things live: the tutorial's environment variables, resolved once.

Every path defaults to a directory relative to the working directory, so a
fresh clone works with no configuration; each can be overridden with the
tutorial's environment variable of the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULTS = {
    "RAW_DATA_DIR": "data/raw",
    "RAW_DATA_FILE": "adult.data",
    "PROCESSED_DATA_DIR": "data/processed",
    "MODEL_DIR": "models",
    "RESULTS_DIR": "results",
}

#: The UCI Adult training file, shipped with the package (the default when data/raw/ has no file).
BUNDLED_DATA = Path(__file__).resolve().parents[1] / "data" / "datasets" / "adult.data"

#: Every variable that changes where mlci reads and writes (a test, a benchmark or a webhook run that
#: must not inherit its caller's workspace clears these).
WORKSPACE_VARS = (*DEFAULTS, "MLCI_PARAMS", "MLCI_STATE_DIR", "MLCI_LOCK_FILE")

# File names inside those directories (the tutorial's where it had one).
TRAIN_METADATA = "train_metadata.json"
TEST_METADATA = "test_metadata.json"
PREPROCESS_METADATA = "preprocess_metadata.json"
GATE_FILE = "gate.json"
JUNIT_FILE = "junit.xml"  # the gate's rules as test cases
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
PLOTS_DIR = "plots"
REPORT_PLOTS = ("roc", "pr", "calibration", "confusion", "importance")  # plots/<name>.png
REJECTS_FILE = "rejects.csv"
MODEL_FILE = "model.pkl"  # the fitted sklearn Pipeline, pickled (MLflow's sklearn flavour reads it as is)
MODEL_CARD = "model.json"
REFERENCE_PROFILE = "reference.json"  # what the training data looked like (mlci.monitoring.profile)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Settings:
    raw_data_dir: Path
    raw_data_file: str
    processed_data_dir: Path
    model_dir: Path
    results_dir: Path
    params_file: Path
    workdir: Path
    #: Where mlci keeps its own state (workspace lock, caches); MLCI_STATE_DIR.
    state_dir: Path
    #: The lock file of hashes; MLCI_LOCK_FILE, default next to params.yaml like dvc.lock.
    lock_path: Path
    #: The raw data on object storage (RAW_DATA_DIR or RAW_DATA_FILE a URL: ``s3://bucket/raw``).
    raw_url: str | None = None

    @property
    def raw_path(self) -> Path:
        return self.raw_data_dir / self.raw_data_file

    @property
    def raw_source(self) -> Path | str:
        """The raw data: a file (a Path), or for the Dask engine a directory, a glob or a URL of
        files (a str: ``mlci.data.sources`` lists them, the lock records their fingerprint)."""
        if self.raw_url:
            return self.raw_url
        p = self.raw_path
        return str(p) if set("*?[") & set(str(p)) or p.is_dir() else p

    def split_path(self, split: str) -> Path:
        return self.processed_data_dir / f"{split}.parquet"

    @property
    def rejects_path(self) -> Path:
        return self.processed_data_dir / REJECTS_FILE

    @property
    def model_path(self) -> Path:
        return self.model_dir / MODEL_FILE

    @property
    def model_card_path(self) -> Path:
        return self.model_dir / MODEL_CARD

    @property
    def reference_path(self) -> Path:
        return self.model_dir / REFERENCE_PROFILE

    def result(self, name: str) -> Path:
        return self.results_dir / name

    def scores_path(self, split: str) -> Path:
        """The model's scores on a split (written by train and test, read by the report)."""
        return self.results_dir / f"{split}_scores.parquet"



def from_env(params_file: str | os.PathLike | None = None, environ=None) -> Settings:
    env = os.environ if environ is None else environ

    def get(name: str) -> str:
        value = env.get(name, "")
        return value if value.strip() else DEFAULTS[name]

    workdir = Path.cwd()
    explicit = params_file is not None or bool(env.get("MLCI_PARAMS"))
    if params_file is None:
        params_file = env.get("MLCI_PARAMS") or "params.yaml"
    params_file = Path(params_file)
    if explicit and not params_file.is_file():
        from mlci.errors import UsageError

        # Only ./params.yaml may be absent (then the built-in defaults apply): a named file must exist.
        raise UsageError(f"{params_file}: no such parameters file (--params / MLCI_PARAMS)")
    raw_dir = Path(get("RAW_DATA_DIR"))
    raw_file = get("RAW_DATA_FILE")
    raw_url = None
    given_file = (env.get("RAW_DATA_FILE") or "").strip()
    if "://" in get("RAW_DATA_DIR") or "://" in given_file:
        # Object storage (the Dask engine): RAW_DATA_FILE, if set, names files under the directory.
        raw_url = given_file if "://" in given_file else \
            get("RAW_DATA_DIR").rstrip("/") + (f"/{given_file}" if given_file else "")
    elif not given_file and not (raw_dir / raw_file).exists():
        # A project of one data file (`mlci init` makes one): that file, whatever its name.
        only = _only_data_file(raw_dir)
        if only is not None:
            raw_file = only
        elif not (env.get("RAW_DATA_DIR") or "").strip() and BUNDLED_DATA.exists():
            # Installed from a wheel, run anywhere: the bundled Adult data (the tutorial's variables win).
            raw_dir = BUNDLED_DATA.parent
    return Settings(
        raw_data_dir=raw_dir,
        raw_data_file=raw_file,
        processed_data_dir=Path(get("PROCESSED_DATA_DIR")),
        model_dir=Path(get("MODEL_DIR")),
        results_dir=Path(get("RESULTS_DIR")),
        params_file=params_file,
        workdir=workdir,
        state_dir=Path(env.get("MLCI_STATE_DIR") or ".mlci"),
        lock_path=Path(env.get("MLCI_LOCK_FILE") or params_file.with_name("mlci.lock")),
        raw_url=raw_url,
    )


def _only_data_file(raw_dir: Path) -> str | None:
    """The name of the one ``*.csv`` or ``*.data`` file in ``raw_dir``; None when there is none; an
    error naming them when there are several (which one is meant is the user's to say)."""
    try:
        found = sorted(p.name for p in raw_dir.iterdir() if p.suffix.lower() in (".csv", ".data") and p.is_file())
    except OSError:
        return None
    if len(found) > 1:
        from mlci.errors import UsageError

        raise UsageError(f"{raw_dir} holds {len(found)} data files ({', '.join(found[:5])}"
                         f"{', ...' if len(found) > 5 else ''}) and no adult.data: set RAW_DATA_FILE to the one to use")
    return found[0] if found else None
