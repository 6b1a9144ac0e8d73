"""The ``mlci`` command: a thin layer over the library (parse, call one library function, print).

``app`` holds the group and what commands share; each other module adds a family of commands.
Importing this package loads click and rich's names only: no pandas, scikit-learn or MLflow.
"""

from mlci.cli.app import main
from mlci.cli import exitcodes, monitor, pipeline, registry, serve  # noqa: F401  (they add their commands to main)

__all__ = ["main"]
