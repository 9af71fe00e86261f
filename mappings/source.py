"""YAML with line numbers, so that every mapping error names its file and line.

``load_yaml`` returns plain dicts/lists/scalars, except that mappings are ``LocatedDict`` (a dict
remembering the line of itself and of each key) and sequences ``LocatedList``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, order=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the mapping data, located."""

    where: Location
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class MappingDataError(Exception):
    """The mapping data is wrong; ``problems`` lists every problem found, each located."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.where, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class LocatedDict(dict[str, Any]):
    location: Location
    key_lines: dict[str, int]

    def at(self, key: str) -> Location:
        return Location(self.location.file, self.key_lines.get(key, self.location.line))


class LocatedList(list[Any]):
    location: Location


def _loader(file: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LocatedDict:
        result = LocatedDict()
        result.location = Location(file, node.start_mark.line + 1)
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LocatedList:
        result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
        result.location = Location(file, node.start_mark.line + 1)
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, sequence)
    # Dates stay strings: formats are ours to check, not YAML's to guess.
    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return Loader


def load_yaml(path: Path, display: str | None = None) -> Any:
    """Parse one YAML file; a syntax error becomes a located MappingDataError."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingDataError(
            [Problem(Location(name, 0), f"cannot read ({exc.strerror})")]
        ) from None
    try:
        return yaml.load(text, Loader=_loader(name))  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise MappingDataError(
            [Problem(Location(name, line), f"YAML: {exc.problem or exc.context}")]
        ) from None


def where(node: Any, key: str | None = None, fallback: Location | None = None) -> Location:
    if isinstance(node, LocatedDict):
        return node.at(key) if key is not None else node.location
    if isinstance(node, LocatedList):
        return node.location
    return fallback or Location("?", 0)
