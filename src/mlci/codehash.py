"""The code a stage runs, hashed: a stage is stale when *its* code changes, not when any module does.

Like the ``deps`` of a ``dvc.yaml`` stage that list the scripts it runs, but found, not declared:
the closure of ``mlci`` modules a stage's module imports (read from the source text, every
``import`` line, those inside functions too), without importing anything. Editing the server
leaves training up to date; editing the estimator makes train and everything after it stale.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent  # the mlci package
_FROM = re.compile(r"^[ \t]*from[ \t]+(mlci(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[\w \t,]+)", re.M)
_IMPORT = re.compile(r"^\s*import\s+(mlci(?:\.\w+)*)", re.M)


def _path(module: str) -> Path | None:
    if module == "mlci":
        return ROOT / "__init__.py"
    rel = Path(*module.split(".")[1:])
    for p in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


@functools.lru_cache(maxsize=None)
def _source(path: Path) -> bytes:
    return path.read_bytes()


def _imports(module: str, text: str) -> set[str]:
    found = {m for m in _IMPORT.findall(text)}
    for base, names in _FROM.findall(text):
        names = re.sub(r"#[^\n]*", "", names).strip("()")
        for name in re.split(r"[\s,]+", names.strip()):
            if name and name != "as":
                sub = f"{base}.{name}"
                found.add(sub if _path(sub) is not None else base)
    return found


def closure(modules: tuple[str, ...]) -> list[Path]:
    """The source files of ``modules`` and of every mlci module they import, transitively.

    A module named here that does not exist is a bug in the stage table: it raises."""
    missing = [m for m in modules if _path(m) is None]
    if missing:
        raise ValueError(f"no such mlci module: {', '.join(missing)}")
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = _path(mod)
        if path is None:
            continue
        seen[mod] = path
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(_imports(mod, _source(path).decode("utf-8", "replace")))
    return sorted(set(seen.values()))


def code_hash(modules: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for p in closure(modules):
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + _source(p) + b"\0")
    return "sha256:" + h.hexdigest()
