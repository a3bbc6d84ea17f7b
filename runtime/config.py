"""Configuration: embedded defaults, overridden by a config file, overridden by flags.

A config file is TOML or JSON with one table per stage, for example::

    [ingest]
    columns = { customer_id = "cust", item_id = "sku" }
    max_quarantine_share = 0.02

    [spark]
    shuffle_partitions = 64

``Settings.resolve`` turns the file and the flags into one ``Settings`` per run: a
typed dataclass per table, built once and handed to every stage. An unknown table or
key is an error naming it, so a typo never silently falls back to a default.
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

from cf.tuning import TuningConfig
from coldstart.content import ContentConfig
from routing.reuse import TrainConfig
from routing.routes import RoutingConfig
from routing.validation import EvaluationConfig
from runtime.spark import SparkSettings
from segmentation.backtest import BacktestConfig
from segmentation.clv import CLVConfig
from runtime.history import HistoryConfig
from segmentation.lifecycle import LifecycleConfig
from segmentation.report import ReportConfig
from segmentation.segments import SegmentConfig
from transactions.ingest import IngestConfig

T = TypeVar("T")


class ConfigError(ValueError):
    pass


# Read by jobs.synth, so a profile can describe the data it was made for; a run skips them.
GENERATOR_SECTIONS = ("synth",)


@dataclasses.dataclass(frozen=True)
class Settings:
    """One run's settings: a table per stage (see docs/configuration.md), each a dataclass of the package it configures."""

    spark: SparkSettings = dataclasses.field(default_factory=SparkSettings)
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)
    clv: CLVConfig = dataclasses.field(default_factory=CLVConfig)
    segments: SegmentConfig = dataclasses.field(default_factory=SegmentConfig)
    lifecycle: LifecycleConfig = dataclasses.field(default_factory=LifecycleConfig)
    backtest: BacktestConfig = dataclasses.field(default_factory=BacktestConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    routing: RoutingConfig = dataclasses.field(default_factory=RoutingConfig)
    tuning: TuningConfig = dataclasses.field(default_factory=TuningConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    content: ContentConfig = dataclasses.field(default_factory=ContentConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    history: HistoryConfig = dataclasses.field(default_factory=HistoryConfig)

    @classmethod
    def resolve(cls, *layers: Mapping[str, Mapping[str, Any]] | None) -> "Settings":
        """Defaults overlaid with each layer in turn (a config file's tables, then the flags'): ``{section: {key: value}}``."""
        tables = {field.name: field.type for field in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for layer in layers:
            unknown = sorted(set(layer or {}) - set(tables) - set(GENERATOR_SECTIONS))
            if unknown:
                raise ConfigError(f"unknown section [{unknown[0]}] (sections: {', '.join(tables)})")
        return cls(**{name: build(hints[name], *((layer or {}).get(name) for layer in layers), section=name) for name in tables})


# The tables a config file may hold: a run's, and the synthetic data generator's (jobs.synth).
SECTIONS = (*(field.name for field in dataclasses.fields(Settings)), *GENERATOR_SECTIONS)


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


def build(cls: type[T], *layers: Mapping[str, Any] | None, section: str | None = None) -> T:
    """Instantiate dataclass ``cls`` from its defaults overlaid with each layer in turn (None values skipped; tables merge key by key)."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                where = f"[{section}] setting" if section else f"{cls.__name__} setting"
                raise ConfigError(f"unknown {where} '{key}' (known: {known})")
            if value is None:
                continue
            value = _coerce(value, hints[key], key)
            values[key] = {**values[key], **value} if isinstance(value, dict) and isinstance(values.get(key), dict) else value
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
