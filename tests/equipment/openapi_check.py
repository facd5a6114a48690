"""Check a JSON value against a schema of an OpenAPI description: the keywords Lambda's description uses.

`OpenApi(document)` resolves `$ref`s inside the document; `problems(value, schema)` lists what does not conform,
each with the path of the offending part (`data[0].region.name: required`). The Lambda stand-in
(`tests/equipment/lambda_api.py`) checks request bodies with it and its tests check the stand-in's answers, so the
stand-in and the description cannot drift apart silently.

Keywords: type, properties, required, additionalProperties, items, enum, const, minLength, maxLength, pattern,
anyOf, $ref. Others (description, examples, format, default, ...) say nothing about validity and are passed over.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class OpenApi:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def schema(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = self.document["components"]["schemas"][name]
        return schema

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            reference = schema["$ref"]
            if not reference.startswith("#/"):
                raise ValueError(f"only local references are resolved, not {reference!r}")
            node: Any = self.document
            for part in reference[2:].split("/"):
                node = node[part]
            schema = node
        return schema

    def response_schema(self, path: str, method: str, status: int) -> dict[str, Any]:
        operation = self.document["paths"][path][method.lower()]
        schema: dict[str, Any] = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        return schema

    def request_schema(self, path: str, method: str) -> dict[str, Any]:
        operation = self.document["paths"][path][method.lower()]
        schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
        return schema

    def problems(self, value: Any, schema: dict[str, Any], where: str = "body") -> list[str]:
        schema = self.resolve(schema)
        if "anyOf" in schema:
            options = [self.problems(value, option, where) for option in schema["anyOf"]]
            if all(options):
                return [f"{where}: matches none of anyOf ({'; '.join(found[0] for found in options)})"]
            return []
        kind = schema.get("type")
        if kind is not None:
            allowed = _TYPES[kind]
            if not isinstance(value, allowed) or (kind in ("integer", "number") and isinstance(value, bool)):
                return [f"{where}: must be {kind}, got {type(value).__name__}"]
        if "const" in schema and value != schema["const"]:
            return [f"{where}: must be {schema['const']!r}, got {value!r}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{where}: {value!r} is not one of {schema['enum']}"]
        found: list[str] = []
        if isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                found.append(f"{where}: shorter than {schema['minLength']}")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                found.append(f"{where}: longer than {schema['maxLength']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                found.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                found += self.problems(item, schema["items"], f"{where}[{index}]")
        if isinstance(value, dict):
            found += self._object_problems(value, schema, where)
        return found

    def _object_problems(self, value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
        found = [f"{where}.{key}: required" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                found += self.problems(item, properties[key], f"{where}.{key}")
            elif extra is False:
                found.append(f"{where}.{key}: not a property of this object")
            elif isinstance(extra, dict):
                found += self.problems(item, extra, f"{where}.{key}")
        return found
