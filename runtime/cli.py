"""What every job's command line shares: the flag groups of the stages, the settings they make, and turning failures into one clear line."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import traceback
from typing import Callable

from cf.interactions import RecommendationError
from runtime.config import ConfigError, Settings, load_config_file, parse_date
from runtime.java import JavaNotFoundError
from runtime.storage import StorageError
from segmentation.clv import TRANSACTION_MODELS
from segmentation.rfm import SegmentationError
from segmentation.windows import WindowError
from transactions.ingest import IngestError


class JobError(RuntimeError):
    """A problem with the user's input or settings, reported as one line with exit status 2."""


USER_ERRORS = (JobError, ConfigError, StorageError, JavaNotFoundError, SegmentationError, RecommendationError, WindowError, IngestError)
# A Java exception line that names only Spark's error class ("SparkException: [INTERNAL_ERROR]"); its message is on the next line.
ERROR_CLASS_ALONE = re.compile(r"\[[A-Z][A-Z0-9_.]*\]$")


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --master: what every job that builds a session takes."""
    parser.add_argument("--config", help="TOML or JSON file with settings per stage")
    parser.add_argument("--master", help="Spark master when not run through spark-submit (default local[*])")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    add_session_arguments(parser)
    parser.add_argument(
        "--as-of",
        type=as_of_date,
        help="treat this date (YYYY-MM-DD) as now: transactions on or after it are ignored",
    )


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", help="CSV of purchases the web app recorded (python -m webapp.events export), taken in with the log")
    parser.add_argument("--columns", type=column_mapping, help="column mapping canonical=source,... (default: Online Retail II names)")
    parser.add_argument("--format", dest="input_format", choices=("csv", "parquet", "excel"), help="input format (default: from the extension)")
    parser.add_argument("--strict", action="store_true", default=None, help="fail when too many rows are quarantined")
    parser.add_argument("--max-quarantine-share", type=float, help="with --strict, the allowed share (default 0.05)")


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--horizon-months", type=int, help="CLV horizon in months (default 12)")
    parser.add_argument("--discount-rate", type=float, help="monthly discount rate for CLV (default 0.01)")
    parser.add_argument("--clv-model", choices=TRANSACTION_MODELS, help="purchase model (default bgnbd)")
    parser.add_argument("--k", type=int, help="number of segments (default 3: high, mid, low)")
    parser.add_argument("--seed", type=int, help="K-means seed (default 42)")
    parser.add_argument("--calibration-end", type=as_of_date, help="backtest: last day of the calibration period")
    parser.add_argument("--holdout-days", type=int, help="backtest: hold-out length when --calibration-end is not given "
                        "(default: a quarter of the history before the as-of date, at most 92; skipped below 14)")


def add_recommendation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validation-days", type=int, help="validation window for tuning and routing (default: a quarter of "
                        "the history before it, at most 90; below 14 the routes are not validated)")
    parser.add_argument("--tune-budget", type=float, help="seconds for the ALS search over all segments (default 240; 0: defaults)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reuse-routes", type=int, metavar="DAYS",
                        help="skip validation when the last run under --output chose its routes at most DAYS before this as-of date")


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cutoff", type=as_of_date, help="first day of the test window (default: --test-days before the as-of date)")
    parser.add_argument("--test-days", type=int, help="test window length (default: a quarter of the history before the "
                        "as-of date, at most 92)")


# The setting each flag sets: argparse destination -> (section, key). Flags win over the config file.
FLAG_SETTINGS = {
    "master": ("spark", "master"),
    "columns": ("ingest", "columns"), "input_format": ("ingest", "input_format"), "strict": ("ingest", "strict"),
    "max_quarantine_share": ("ingest", "max_quarantine_share"),
    "horizon_months": ("clv", "horizon_months"), "discount_rate": ("clv", "discount_rate"), "clv_model": ("clv", "model"),
    "k": ("segments", "k"), "seed": ("segments", "seed"),
    "calibration_end": ("backtest", "calibration_end"), "holdout_days": ("backtest", "holdout_days"),
    "validation_days": ("routing", "validation_days"), "tune_budget": ("tuning", "budget_seconds"),
    "reuse_routes": ("train", "reuse_routes_days"),
    "cutoff": ("evaluation", "cutoff"), "test_days": ("evaluation", "test_days"),
}


def resolve_settings(args: argparse.Namespace, *, app_name: str) -> Settings:
    """The run's settings, once: defaults, the job's Spark app name, the ``--config`` file, then the flags given."""
    flags: dict[str, dict] = {}
    for destination, value in vars(args).items():
        if destination in FLAG_SETTINGS and value is not None:
            section, key = FLAG_SETTINGS[destination]
            flags.setdefault(section, {})[key] = value
    return Settings.resolve({"spark": {"app_name": app_name}}, load_config_file(args.config), flags)


def as_of_date(text: str):
    try:
        return parse_date(text, "--as-of")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def column_mapping(text: str) -> dict[str, str]:
    """Parse ``canonical=source,canonical=source`` (source names may contain spaces)."""
    mapping = {}
    for pair in text.split(","):
        canonical, sep, source = pair.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise argparse.ArgumentTypeError(f"--columns takes canonical=source pairs separated by commas, got '{pair}'")
        mapping[canonical.strip()] = source.strip()
    return mapping


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a job's main, so that failures end in one readable line instead of a JVM stack trace.

    A failure inside Spark may be Spark's own bug, which only the whole trace lets anyone
    report or work around: it is kept in a file, named on a second line.
    """
    started = time.monotonic()
    try:
        return main(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # Spark's JVM errors arrive as many Python types
        if type(error).__module__.startswith(("pyspark", "py4j")):
            print(f"error: Spark failed after {time.monotonic() - started:.0f}s: {spark_failure(error)}", file=sys.stderr)
            kept = keep_trace(error)
            if kept:
                print(f"full trace: {kept}", file=sys.stderr)
            return 1
        raise


def spark_failure(error: Exception) -> str:
    """The line of a Spark failure that says what went wrong.

    PySpark turns the common Java exceptions into Python ones whose message lacks the type; the
    rest (JVM errors such as running out of memory) arrive as py4j errors whose first line only
    names the call ("An error occurred while calling o6283.agg."), the Java exception on the next.
    """
    lines = [line.strip().removeprefix(":").strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("An error occurred while calling") and len(lines) > 1:
        what = lines[1]
        if ERROR_CLASS_ALONE.search(what) and len(lines) > 2:
            what = f"{what} {lines[2]}"
        return f"{what} (in {lines[0].removeprefix('An error occurred while calling ').rstrip('.')})"
    return f"{type(error).__name__}: {lines[0]}"


def keep_trace(error: Exception) -> str | None:
    """Write ``error``'s Python and Java traces to a new file in the temporary directory; its path (None when it cannot be written)."""
    report = "".join(traceback.format_exception(error))
    # PySpark keeps the Java trace of the exceptions it converts here, and prints it only when
    # spark.sql.pyspark.jvmStacktrace.enabled is set.
    java_trace = getattr(error, "_stackTrace", None)
    if java_trace and java_trace not in report:
        report += f"\nJVM stacktrace:\n{java_trace}"
    try:
        handle, path = tempfile.mkstemp(prefix="segrec-failure-", suffix=".txt")
        with os.fdopen(handle, "w") as trace:
            trace.write(report)
    except OSError:
        return None
    return path
