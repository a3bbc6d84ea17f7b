"""Configuration: embedded defaults, overridden by a config file, overridden by flags.

A config file is TOML or JSON with one table per stage, for example::

    [ingest]
    columns = { customer_id = "cust", item_id = "sku" }
    max_quarantine_share = 0.02

    [spark]
    shuffle_partitions = 64

Each table is turned into that stage's plain dataclass; unknown keys are an error
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


# The tables a config file may hold: one per stage's settings dataclass (see docs/configuration.md).
SECTIONS = ("spark", "ingest", "clv", "segments", "backtest", "evaluation", "routing", "tuning", "train", "synth")


def load_config_file(path: str | None) -> dict[str, dict[str, Any]]:
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid {'JSON' if file.suffix == '.json' else 'TOML'}: {error}")
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"config file {path}: unknown section [{section}] (sections: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: [{section}] must be a table of settings")
    return data


def build(cls: type[T], *layers: Mapping[str, Any] | None) -> T:
    """Instantiate dataclass ``cls`` from its defaults overlaid with each layer in turn (None values skipped)."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"unknown {cls.__name__} setting '{key}' (known: {known})")
            if value is not None:
                values[key] = _coerce(value, hints[key], key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn config-file values (lists, strings) into the dataclass's field types."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        hint = next(arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, str):
            raise ConfigError(f"setting '{key}' must be a list")
        return tuple(value)
    if hint is dt.date and isinstance(value, str):
        return parse_date(value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_date(text: str, what: str = "date") -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what} must be a date as YYYY-MM-DD, got '{text}'") from None
