"""What every stage is handed: where things are, its own parameter sections, and its collaborators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from mlci.config.settings import Settings
from mlci.progress import NONE, Progress

Echo = Callable[[str], None]


class Champion(Protocol):
    """The model the champion-dependent stages compare with (``mlci.tracking.champion`` has the real one)."""

    version: str | None

    def model(self) -> tuple[Any, dict]: ...  # the fitted model and ``{"sha256": ...}``
    def metrics(self) -> dict: ...  # its validation figures (what the gate compares with)
    def caveat(self) -> str | None: ...  # why that comparison may not be on equal terms
    def refitted(self) -> bool: ...  # whether it learnt from its validation rows too
    def proba(self, split: str, frame) -> Any: ...  # its probabilities on a split's rows


class StageParams:
    """The parameters object with only the sections a stage declared: reading another one is a bug
    (the lock would not notice a change to it), so it fails loudly."""

    def __init__(self, resolved, sections: tuple[str, ...]):
        # ``resolved`` is a ``mlci.config.resolve.Resolved``: its pydantic model is built on first use only
        # (a replayed gate verdict needs none).
        self._resolved, self._sections = resolved, sections

    def __getattr__(self, name: str):
        from mlci.config.resolve import SECTIONS

        # ``dask`` is operational (timeouts, partition size): any stage may read it, the lock never records it.
        if name in SECTIONS and name not in self._sections and name != "dask":
            raise AttributeError(f"this stage did not declare the parameter section {name!r}")
        return getattr(self._resolved.model, name)

    def section(self, name: str) -> Any:
        getattr(self, name)  # the same check
        return self._resolved.model.section(name)


@dataclass
class StageContext:
    settings: Settings
    params: StageParams
    echo: Echo = lambda _: None
    #: What the gate and the report compare with; None when tracking is off or the stage does not compare.
    champion: Champion | None = None
    #: The report's figure process (``mlci.reporting.painter``), started early by the runner.
    painter: Any = None
    #: Whether the run is tracked (without tracking there is no champion to compare with).
    tracking: bool = False
    #: Where long inner loops (trees, folds, trials, resamples) say how far they got (``mlci.progress``).
    progress: Progress = NONE
