"""Finding the event dataclasses of a package tree, for the code generator.

The input is a Python package (a directory with ``__init__.py``; sub-packages need one
too). Every module in it is imported, and its public dataclasses, defined in that module,
are collected:

- the **event type** is the class name;
- the **version** is N when the module path has a package or module named ``v<N>`` below
  the input package's parent (the nearest one wins), else 1;
- a dataclass that is the type of another collected dataclass's field (``Address`` in
  ``customer: Address``) is a **value type**, not an event: it is encoded inside the events
  that use it and gets no mapping functions of its own. A dataclass that another one
  inherits from (a common base of several events) is not an event either.

The package is imported by the name given as ``module`` (its import path, such as
``app.domain.events``) or, by default, by the dotted path of the directories above it
that are packages too; the directory above the topmost of those is put on ``sys.path``
while importing. The generated code imports the event classes by the same paths.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import codec

__all__ = ["DiscoveredEvent", "Discovery", "discover", "module_path_for"]

_VERSION = re.compile(r"v([1-9][0-9]*)\Z")


@dataclass(frozen=True, slots=True)
class DiscoveredEvent:
    """An event dataclass found in the input package.

    Attributes:
        event_type: The class name.
        event_version: From the nearest ``v<N>`` in the module path, else 1.
        module: The import path of the module that defines the class.
        cls: The class itself.
    """

    event_type: str
    event_version: int
    module: str
    cls: type[Any]

    @property
    def class_name(self) -> str:
        """The name the class is imported by."""
        return self.cls.__name__


@dataclass(frozen=True, slots=True)
class Discovery:
    """What :func:`discover` found.

    Attributes:
        package: The input package's import path.
        events: The event classes, sorted by event type and version.
        value_types: Dataclasses used as field types or as base classes, not mapped as
            events (``module.Class``), sorted.
    """

    package: str
    events: tuple[DiscoveredEvent, ...]
    value_types: tuple[str, ...]


def module_path_for(directory: Path) -> tuple[str, Path]:
    """The import path of package ``directory`` and the directory it is importable from.

    Walks up while the parent directory is a package too (has ``__init__.py``).
    """
    directory = directory.resolve()
    parts = [directory.name]
    root = directory.parent
    while (root / "__init__.py").is_file() and root.parent != root:
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def _root_for(directory: Path, module: str) -> Path | None:
    """The ``sys.path`` entry that makes ``directory`` importable as ``module``, if any."""
    parts = module.split(".")
    resolved = directory.resolve()
    if tuple(resolved.parts[-len(parts) :]) != tuple(parts):
        return None
    return resolved.parents[len(parts) - 1]


def _module_names(directory: Path, package: str) -> Iterator[str]:
    yield package
    for entry in sorted(directory.iterdir(), key=lambda path: path.name):
        if entry.is_dir():
            if entry.name.isidentifier() and (entry / "__init__.py").is_file():
                yield from _module_names(entry, f"{package}.{entry.name}")
        elif entry.suffix == ".py" and entry.stem != "__init__" and entry.stem.isidentifier():
            yield f"{package}.{entry.stem}"


def _version_of(module: str, package: str) -> int:
    # Only the input package's own name and what is below it count: a `v2` higher up in
    # the project's layout says nothing about these events.
    below = module.split(".")[package.count(".") :]
    for part in reversed(below):
        match = _VERSION.match(part)
        if match:
            return int(match.group(1))
    return 1


def _dataclasses_in(module: ModuleType) -> list[type[Any]]:
    found = []
    for name, value in sorted(vars(module).items()):
        if (
            isinstance(value, type)
            and dataclasses.is_dataclass(value)
            and value.__module__ == module.__name__
            and value.__qualname__ == name
            and not name.startswith("_")
        ):
            found.append(value)
    return found


def _referenced_classes(declared: object, into: set[type[Any]]) -> None:
    if isinstance(declared, type):
        if dataclasses.is_dataclass(declared):
            into.add(declared)
        return
    if isinstance(declared, typing.NewType):
        _referenced_classes(declared.__supertype__, into)
        return
    for arg in typing.get_args(declared):
        _referenced_classes(arg, into)


def _field_classes(cls: type[Any]) -> set[type[Any]]:
    hints = codec._type_hints(cls)
    found: set[type[Any]] = set()
    for field in dataclasses.fields(cls):
        _referenced_classes(hints[field.name], found)
    return found


def _import_all(names: list[str]) -> list[ModuleType]:
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as err:
            raise ImportError(f"cannot import {name}: {type(err).__name__}: {err}") from err
    return modules


def discover(directory: Path, *, module: str | None = None) -> Discovery:
    """Import the package at ``directory`` and collect its event dataclasses.

    Args:
        directory: The input package's directory.
        module: Its import path; by default derived from the enclosing packages.

    Raises:
        NotADirectoryError: ``directory`` is not a directory.
        ImportError: a module of the package failed to import (the cause is chained).
        ValueError: no event classes were found, ``module`` names another directory, or
            two classes share an event type and version.
        TypeError: an event has a field type that cannot be stored as JSON.
    """
    if not directory.is_dir():
        raise NotADirectoryError(f"input {directory} is not a directory")
    root: Path | None
    if module is None:
        package, root = module_path_for(directory)
    else:
        # Without a matching directory layout the package must be importable as it is
        # (an installed src/ layout); the check below makes sure it is this directory.
        package, root = module, _root_for(directory, module)
    names = list(_module_names(directory, package))

    # Import afresh: modules imported earlier in this process (an earlier run, maybe on
    # another directory of the same name) may no longer match the files. Objects that
    # hold on to the old classes keep them; the generator only reads the new ones.
    loaded = sys.modules.get(package)
    if root is not None or (loaded is not None and _imported_from(loaded, directory)):
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]
    if root is not None:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        modules = _import_all(names)
    finally:
        if root is not None:
            sys.path.remove(str(root))
    if not _imported_from(modules[0], directory):
        located = ", ".join(getattr(modules[0], "__path__", [])) or "?"
        raise ValueError(
            f"--module {package} is imported from {located}, not from the input "
            f"directory {directory}"
        )
    return _collect(package, modules)


def _imported_from(package: ModuleType, directory: Path) -> bool:
    located = getattr(package, "__path__", [])
    return directory.resolve() in [Path(entry).resolve() for entry in located]


def _collect(package: str, modules: list[ModuleType]) -> Discovery:
    candidates = [cls for loaded in modules for cls in _dataclasses_in(loaded)]
    referenced: set[type[Any]] = set()
    for cls in candidates:
        referenced |= _field_classes(cls)
        referenced |= {base for base in cls.__mro__[1:] if base in candidates}
    events: dict[tuple[str, int], DiscoveredEvent] = {}
    values = []
    for cls in candidates:
        if cls in referenced:
            values.append(f"{cls.__module__}.{cls.__qualname__}")
            continue
        codec.check_event_class(cls)
        found = DiscoveredEvent(
            cls.__name__, _version_of(cls.__module__, package), cls.__module__, cls
        )
        key = (found.event_type, found.event_version)
        if key in events:
            raise ValueError(
                f"{found.event_type} v{found.event_version} is defined twice: in "
                f"{events[key].module} and in {found.module}"
            )
        events[key] = found
    if not events:
        raise ValueError(f"no event dataclasses found in package {package}")
    return Discovery(package, tuple(events[key] for key in sorted(events)), tuple(sorted(values)))
