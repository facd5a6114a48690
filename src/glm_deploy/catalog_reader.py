"""Typed reading of the catalog's YAML: `Reader` over one mapping, and `read_fields`, which reads a catalog
dataclass from an entry by its fields' names and types, so a field is declared once (in `catalog_types`).

Every error names the entry's path in the catalog (`models.glm-5-fp8.hardware.h100.gpus`), the key and what it
must be.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from glm_deploy.catalog_types import Flags
from glm_deploy.errors import CatalogError

_T = TypeVar("_T")


class Reader:
    """Typed access to one YAML mapping that reports the path of a bad entry."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise CatalogError(f"catalog entry {where} must be a mapping, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.where = where

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data:
            if required:
                raise CatalogError(f"catalog entry {self.where} lacks the key {key!r}")
            return None
        return self.data[key]

    def text(self, key: str) -> str:
        value = self._get(key, True)
        if not isinstance(value, str) or not value:
            raise CatalogError(f"catalog entry {self.where}.{key} must be a non-empty string, got {value!r}")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, str):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a string or null, got {value!r}")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key, True)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be an integer, got {value!r}")
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be an integer or null, got {value!r}")
        return value

    def opt_float(self, key: str) -> float | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a number or null, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default is None)
        if value is None:
            return bool(default)
        if not isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be true or false, got {value!r}")
        return value

    def str_list(self, key: str, required: bool = False) -> tuple[str, ...]:
        value = self._get(key, required)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a list of strings, got {value!r}")
        return tuple(value)

    def sub(self, key: str) -> Reader:
        return Reader(self._get(key, True), f"{self.where}.{key}")

    def opt_sub(self, key: str) -> Reader | None:
        value = self._get(key, False)
        return None if value is None else Reader(value, f"{self.where}.{key}")

    def str_map(self, key: str) -> dict[str, str]:
        value = self._get(key, False)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise CatalogError(f"catalog entry {self.where}.{key} must map strings to strings, got {value!r}")
        return dict(value)

    def flags(self, key: str) -> Flags:
        value = self._get(key, False)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise CatalogError(f"catalog entry {self.where}.{key} must map flags to values, got {value!r}")
        flags: Flags = {}
        for flag, flag_value in value.items():
            if not isinstance(flag, str) or not flag.startswith("--"):
                raise CatalogError(f"catalog entry {self.where}.{key}: {flag!r} is not a --flag")
            if not isinstance(flag_value, str | bool):
                # Numbers must be quoted so that `0.80` is not rendered as `0.8` by accident.
                raise CatalogError(
                    f"catalog entry {self.where}.{key}.{flag} must be a quoted string or true, "
                    f"got {flag_value!r}"
                )
            flags[flag] = flag_value
        return flags

    def items(self, key: str) -> list[tuple[str, Reader]]:
        value = self._get(key, True)
        if not isinstance(value, Mapping):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a mapping, got {value!r}")
        return [(name, Reader(entry, f"{self.where}.{key}.{name}")) for name, entry in value.items()]

    def entries(self, key: str) -> list[Reader]:
        value = self._get(key, False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a list, got {value!r}")
        return [Reader(entry, f"{self.where}.{key}[{index}]") for index, entry in enumerate(value)]


# How a field of each type is read; `required` is the field's metadata (catalog_types.REQUIRED, OFF_UNLESS_SET).
_READ_BY_TYPE: dict[Any, Callable[[Reader, str, Mapping[str, Any]], Any]] = {
    str: lambda reader, key, _: reader.text(key),
    str | None: lambda reader, key, _: reader.opt_text(key),
    int: lambda reader, key, _: reader.integer(key),
    int | None: lambda reader, key, _: reader.opt_integer(key),
    float | None: lambda reader, key, _: reader.opt_float(key),
    bool: lambda reader, key, metadata: reader.boolean(key, default=metadata.get("default")),
    tuple[str, ...]: lambda reader, key, metadata: reader.str_list(key, required=metadata.get("required", False)),
    dict[str, str]: lambda reader, key, _: reader.str_map(key),
    Flags: lambda reader, key, _: reader.flags(key),
}


# Each dataclass's resolved field types (its annotations are strings under `from __future__ import annotations`).
_FIELD_TYPES: dict[type[Any], dict[str, Any]] = {}


def read_fields(cls: type[_T], reader: Reader, **given: Any) -> _T:
    """The catalog dataclass `cls` read from `reader`'s entry: each field not in `given` from the key of its name,
    by its type (`_READ_BY_TYPE`). A field of another type (a nested entry, a checked value) comes in `given`."""
    types = _FIELD_TYPES.get(cls)
    if types is None:
        types = _FIELD_TYPES[cls] = typing.get_type_hints(cls)
    values = dict(given)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in values:
            continue
        read = _READ_BY_TYPE.get(types[field.name])
        if read is None:
            raise TypeError(f"{cls.__name__}.{field.name} ({types[field.name]}) has no reading rule: pass it in given")
        values[field.name] = read(reader, field.name, field.metadata)
    return cls(**values)
