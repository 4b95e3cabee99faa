"""Turn plain YAML data into typed dataclasses, once, at the edge.

Every field's type comes from its annotation (a `Literal` lists the choices); ranges from
`rule(default, min=..., max=...)`. Errors name the key path (`prune.fraction`) and suggest the
closest valid key for a misspelt one, so a typo fails at load time, not an hour later.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from .errors import BadInput


def rule(default: Any = dataclasses.MISSING, *, min=None, max=None):
    """A dataclass field with an inclusive range (`min`/`max`), checked on every item of a list."""
    meta = {"min": min, "max": max}
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (ints to floats...)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(tp, value, path)
    if origin is Literal:
        return _coerce_literal(tp, value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        return _coerce_list(tp, value, path)
    if origin is dict:
        return _coerce_dict(tp, value, path)
    if tp in _SCALARS:
        return _SCALARS[tp](value, path)
    raise TypeError(f"schema: unsupported annotation {tp!r} at {path}")


def _coerce_union(tp: Any, value: Any, path: str) -> Any:
    """The first member type that accepts `value`; null only where the union allows it."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, path)
        except BadInput as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]  # `int | None`: the int's own message says more than "expected int or null"
    raise BadInput(f"{path}: expected {_type_name(tp)}, got {value!r}")


def _coerce_literal(tp: Any, value: Any, path: str) -> Any:
    choices = typing.get_args(tp)
    if value not in choices:
        hint = _suggest(str(value), [str(c) for c in choices])
        raise BadInput(f"{path}: {value!r} is not one of {', '.join(map(repr, choices))}{hint}")
    return value


def _coerce_list(tp: Any, value: Any, path: str) -> list:
    (item_tp,) = typing.get_args(tp)
    if not isinstance(value, list):
        raise BadInput(f"{path}: expected a list, got {type(value).__name__} {value!r}")
    return [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]


def _coerce_dict(tp: Any, value: Any, path: str) -> dict:
    key_tp, val_tp = typing.get_args(tp)
    if not isinstance(value, dict):
        raise BadInput(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
    return {_coerce(key_tp, k, f"{path}"): _coerce(val_tp, v, f"{path}.{k}") for k, v in value.items()}


def _coerce_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise BadInput(f"{path}: expected true or false, got {value!r}")
    return value


def _coerce_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # YAML's true is an int to Python
        raise BadInput(f"{path}: expected an integer, got {value!r}")
    return value


def _coerce_float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{path}: expected a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise BadInput(f"{path}: expected a finite number, got {value!r}")
    return float(value)


def _coerce_str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"{path}: expected a non-empty string, got {value!r}")
    return value


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _check_range(meta: dict, value: Any, path: str) -> None:
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, int | float) or isinstance(item, bool):
            continue
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and item < lo:
            raise BadInput(f"{path}: {item!r} is below the minimum {lo}")
        if hi is not None and item > hi:
            raise BadInput(f"{path}: {item!r} is above the maximum {hi}")


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = sorted(fields)
            raise BadInput(
                f"{path + '.' if path else ''}{key}: unknown key{_suggest(str(key), known)}; "
                f"valid keys here: {', '.join(known)}"
            )
    values = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadInput(f"{key_path}: required key is missing")
            continue
        value = _coerce(hints[name], data[name], key_path)
        _check_range(dict(f.metadata), value, key_path)
        values[name] = value
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (for YAML/JSON next to a run's outputs)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
