"""Generic mapping -> frozen dataclass conversion with validation (type coercion of plan values).

Hand-written because neither the standard library nor our chosen
dependencies validate nested frozen dataclasses with Literal types and
name the offending key; pydantic would be one more heavy dependency.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from biomark.config.strategy import StrategySpec
from biomark.exceptions import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys.

    Parameters
    ----------
    cls : dataclass type
        The frozen dataclass to build.
    mapping : mapping or None
        Keys are field names; missing keys take the field's default.
    where : str, default ""
        Prefix naming the location in the file (``"training."``), used in
        error messages.

    Returns
    -------
    instance of cls

    Raises
    ------
    ConfigError
        On unknown keys, wrong types or values outside a ``Literal`` set.
    """
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"{where.rstrip('.') or 'plan'}: expected a mapping of settings, got {mapping!r}"
        )
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(where + str(u) for u in unknown)}; "
            f"valid keys under {where.rstrip('.') or 'the top level'} are: {', '.join(names)}"
        )
    values = {
        name: _coerce(hints[name], mapping[name], f"{where}{name}")
        for name in names
        if name in mapping
    }
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where.rstrip('.') or 'plan'}: {err}") from err


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        non_none = [o for o in options if o is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"setting {key}={value!r} is not allowed: use one of "
                + ", ".join(repr(a) for a in allowed)
            )
        return value
    if origin is tuple:
        item_type = get_args(hint)[0]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is StrategySpec:
        if isinstance(value, StrategySpec):
            return value
        return StrategySpec.parse(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(
        hint
    ):  # a hint is a class, never an instance
        if isinstance(value, hint):
            return value
        return from_mapping(hint, value, where=f"{key}.")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"setting {key}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"setting {key}={value!r} must be a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"setting {key}={value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"setting {key}={value!r} must be text")
        return str(value)
    return value
