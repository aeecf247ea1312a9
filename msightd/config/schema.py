"""Building a typed options dataclass from untrusted key/values: the one validator behind the TOML file, the
launch commands' flags and a child's re-check of its payload.

Every problem is reported (not just the first) as one line naming where (file, node) and the key, and what is
allowed: types come from the dataclass's annotations (``Literal`` gives the choices), ``choices`` field metadata
restricts a string, and the class's own ``validate()`` checks values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal


class ConfigFileError(ValueError):
    """One or more problems in a config file; ``problems`` holds one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation) if a is not type(None))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        annotation, str(annotation)
    )


def accepts(annotation: Any, value: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def option_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def build_options(cls: type[Any], raw: Mapping[str, Any], where: str) -> Any:
    """Build ``cls`` from ``raw``, checking names, types and the class's own ``validate()``.

    Raises :class:`ConfigFileError` listing every problem, each prefixed with ``where``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    for key in raw:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            problems.append(f"{where}: unknown key {key!r}; allowed keys: {allowed}")
    for name, spec in fields.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                problems.append(f"{where}: missing key {name!r} ({_describe(hints[name])})")
            continue
        choices = spec.metadata.get("choices")
        if not accepts(hints[name], raw[name]):
            problems.append(f"{where}: key {name!r} must be {_describe(hints[name])}, got {raw[name]!r}")
        elif choices is not None and raw[name] not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            problems.append(f"{where}: key {name!r} must be one of {allowed}, got {raw[name]!r}")
    if problems:
        raise ConfigFileError(problems)
    values = {k: (float(v) if hints[k] is float else v) for k, v in raw.items()}
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:  # ConfigError and the like: one sentence naming the option
            raise ConfigFileError([f"{where}: {exc}"]) from exc
    return instance
