"""Two pipeline outputs compared table by table and summary by summary: what a refactor or a cluster must not change.

    python -m devtools.compare output-before output-after

Tables hold the same rows in any order (floats to a relative 1e-6); JSON summaries agree but for
run-specific keys (times, paths, ids). Exit status 0 when every table is equal; summaries that only
differ are listed (a new key in a manifest, say) and do not fail the comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

# Model scores are sums of floating-point products; a cluster adds them up in another order.
RELATIVE_TOLERANCE = 1e-6
# Summary fields that differ between any two runs: when and where they ran, how long they took.
RUN_SPECIFIC_KEYS = frozenset({"created_at", "started_at", "run_id", "input", "output", "seconds"})
# Saved Spark ML stages are named <index>_<Class>_<random uid>: compare them by index and class.
STAGE_UID = re.compile(r"(\d+_[A-Za-z]+)_[0-9a-f]{12}")
# The run history keeps each run under its id (runtime/history.py): a run's tables are compared whatever its id.
RUN_ID = re.compile(r"^runs/[0-9a-f]{12}/")
NAMES = ("first", "second")


def _published(root: Path, pattern: str) -> dict[str, Path]:
    """Published files matching ``pattern`` under ``root`` (no staging or hidden ones), by their uid-free relative path."""
    return {RUN_ID.sub("runs/<run>/", STAGE_UID.sub(r"\1", found.relative_to(root).as_posix())): found for found in sorted(root.rglob(pattern))
            if not any(piece.startswith(".") for piece in found.relative_to(root).parts)}


def parquet_tables(root: Path) -> dict[str, Path]:
    """Every directory under ``root`` that holds Parquet part files."""
    return {Path(name).parent.as_posix(): part.parent for name, part in _published(root, "part-*.parquet").items()}


def compare_json(expected, actual, where: str = "", names: tuple[str, str] = NAMES) -> str | None:
    """None when two JSON documents agree (floats to a relative tolerance, run-specific keys ignored), else the first difference."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = (set(expected) | set(actual)) - RUN_SPECIFIC_KEYS
        for key in sorted(keys, key=str):
            if key not in expected or key not in actual:
                return f"{where}/{key} is only in the {names[0] if key in expected else names[1]} run"
            problem = compare_json(expected[key], actual[key], f"{where}/{key}", names)
            if problem:
                return problem
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{where}: {len(expected)} entries vs {len(actual)}"
        return next(filter(None, (compare_json(e, a, f"{where}[{i}]", names) for i, (e, a) in enumerate(zip(expected, actual)))), None)
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and math.isclose(expected, actual, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-9):
            return None
    elif expected == actual:
        return None
    return f"{where or '/'}: {expected!r} vs {actual!r}"


def _canonical(value):
    """Nested values (Spark ML vectors and matrices) as text, floats to 6 significant digits, so they sort and compare."""
    import numpy as np

    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_canonical(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(item) for item in value) + "]"
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def compare_tables(expected, actual) -> str | None:
    """None when two frames hold the same rows in any order (floats to a relative tolerance), else why not."""
    import numpy as np
    import pandas as pd

    nested = [c for c in expected.columns if expected[c].map(lambda v: isinstance(v, (dict, list, np.ndarray))).any()]
    expected = expected.assign(**{c: expected[c].map(_canonical) for c in nested})
    actual = actual.assign(**{c: actual[c].map(_canonical) for c in nested if c in actual})
    if sorted(expected.columns) != sorted(actual.columns):
        return f"columns differ: {sorted(expected.columns)} vs {sorted(actual.columns)}"
    if len(expected) != len(actual):
        return f"{len(expected):,} rows vs {len(actual):,}"
    floats = [c for c in expected.columns if pd.api.types.is_float_dtype(expected[c])]
    keys = [c for c in expected.columns if c not in floats]
    order = keys + floats
    expected = expected[order].sort_values(order, ignore_index=True, na_position="last")
    actual = actual[order].sort_values(order, ignore_index=True, na_position="last")
    for column in keys:
        unequal = ~((expected[column] == actual[column]) | (expected[column].isna() & actual[column].isna()))
        if unequal.any():
            first = int(np.flatnonzero(unequal.to_numpy())[0])
            return f"column {column} differs in {int(unequal.sum()):,} rows, first: {expected[column][first]!r} vs {actual[column][first]!r}"
    for column in floats:
        close = np.isclose(expected[column].to_numpy(), actual[column].to_numpy(), rtol=RELATIVE_TOLERANCE, atol=1e-9, equal_nan=True)
        if not close.all():
            return f"column {column} differs beyond {RELATIVE_TOLERANCE:g} in {int((~close).sum()):,} rows"
    return None


def _summaries(root: Path) -> dict[str, Path]:
    # run.json (and its copy in the history) is the log of the run itself (timings, where it wrote), not an output to compare.
    return {name: path for name, path in _published(root, "*.json").items() if not name.endswith("run.json")}


def _compare_each(first: dict[str, Path], second: dict[str, Path], compare, names: tuple[str, str]) -> dict[str, str | None]:
    results: dict[str, str | None] = {}
    for name in sorted(set(first) | set(second)):
        if name not in second or name not in first:
            results[name] = f"only in the {names[0] if name in first else names[1]} run"
        else:
            results[name] = compare(first[name], second[name])
    return results


def compare_outputs(first: Path, second: Path, names: tuple[str, str] = NAMES) -> dict[str, str | None]:
    """Each table and JSON summary either run wrote, mapped to None (equal) or what differs."""
    import pandas as pd

    tables = _compare_each(parquet_tables(first), parquet_tables(second),
                           lambda expected, actual: compare_tables(pd.read_parquet(expected), pd.read_parquet(actual)), names)
    summaries = _compare_each(
        _summaries(first), _summaries(second),
        lambda expected, actual: compare_json(json.loads(expected.read_text()), json.loads(actual.read_text()), names=names), names)
    return {**tables, **summaries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="one pipeline output directory")
    parser.add_argument("second", type=Path, help="the other")
    args = parser.parse_args(argv)
    results = compare_outputs(args.first, args.second)
    for name, problem in results.items():
        print(f"{name}: {problem or 'equal'}")
    tables = set(parquet_tables(args.first)) | set(parquet_tables(args.second))
    unequal = sorted(name for name in tables if results[name] is not None)
    print(f"{len(tables) - len(unequal)} of {len(tables)} tables equal" + (f"; different: {', '.join(unequal)}" if unequal else ""))
    return 1 if unequal else 0


if __name__ == "__main__":
    sys.exit(main())
