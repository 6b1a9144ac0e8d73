"""What every stage is handed: where things are, its own parameter sections, and its collaborators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from mlci.config.settings import Settings

Echo = Callable[[str], None]


class Champion(Protocol):
    """The model the champion-dependent stages compare with (``mlci.tracking.champion`` has the real one)."""

    version: str | None

    def model(self) -> tuple[Any, dict]: ...  # the fitted model and ``{"sha256": ...}``
    def metrics(self) -> dict: ...  # its metrics on this workspace's validation rows
    def proba(self, split: str, frame) -> Any: ...  # its probabilities on a split's rows


class StageParams:
    """The parameters object with only the sections a stage declared: reading another one is a bug
    (the lock would not notice a change to it), so it fails loudly."""

    def __init__(self, params, sections: tuple[str, ...]):
        self._params, self._sections = params, sections

    def __getattr__(self, name: str):
        from mlci.config.resolve import SECTIONS

        if name in SECTIONS and name not in self._sections:
            raise AttributeError(f"this stage did not declare the parameter section {name!r}")
        return getattr(self._params, name)

    def section(self, name: str) -> Any:
        getattr(self, name)  # the same check
        return self._params.section(name)


@dataclass
class StageContext:
    settings: Settings
    params: StageParams
    echo: Echo = lambda _: None
    #: What the gate and the report compare with; None when tracking is off.
    champion: Champion | None = None
    #: The report's figure process (``mlci.reporting.painter``), started early by the runner.
    painter: Any = None
