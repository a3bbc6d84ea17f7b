"""What every job's command line shares: common flags, the flag groups of the stages, and turning failures into one clear line."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import traceback
from typing import Callable

from jobs.config import ConfigError, build, parse_date
from jobs.spark import JavaNotFoundError
from jobs.storage import StorageError
from cf.interactions import RecommendationError
from routing.routes import RoutingConfig
from cf.tuning import TuningConfig
from segmentation.backtest import BacktestConfig
from segmentation.clv import TRANSACTION_MODELS, CLVConfig
from segmentation.rfm import SegmentationError
from segmentation.segments import SegmentConfig
from segmentation.windows import WindowError
from transactions.ingest import IngestError


class JobError(RuntimeError):
    """A problem with the user's input or settings, reported as one line with exit status 2."""


USER_ERRORS = (JobError, ConfigError, StorageError, JavaNotFoundError, SegmentationError, RecommendationError, WindowError, IngestError)
# A Java exception line that names only Spark's error class ("SparkException: [INTERNAL_ERROR]"); its message is on the next line.
ERROR_CLASS_ALONE = re.compile(r"\[[A-Z][A-Z0-9_.]*\]$")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML or JSON file with settings per stage")
    parser.add_argument(
        "--as-of",
        type=as_of_date,
        help="treat this date (YYYY-MM-DD) as now: transactions on or after it are ignored",
    )
    parser.add_argument("--master", help="Spark master when not run through spark-submit (default local[*])")


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--horizon-months", type=int, help="CLV horizon in months (default 12)")
    parser.add_argument("--discount-rate", type=float, help="monthly discount rate for CLV (default 0.01)")
    parser.add_argument("--clv-model", choices=TRANSACTION_MODELS, help="purchase model (default bgnbd)")
    parser.add_argument("--k", type=int, help="number of segments (default 3: high, mid, low)")
    parser.add_argument("--seed", type=int, help="K-means seed (default 42)")
    parser.add_argument("--calibration-end", type=as_of_date, help="backtest: last day of the calibration period")
    parser.add_argument("--holdout-days", type=int, help="backtest: hold-out length when --calibration-end is not given "
                        "(default: a quarter of the history before the as-of date, at most 92; skipped below 14)")


def segment_configs(args: argparse.Namespace, settings: dict) -> tuple[CLVConfig, SegmentConfig, BacktestConfig]:
    """Configs from the file and the segment flags (a job without those flags just gets the file's settings)."""
    flag = vars(args).get
    clv_config = build(CLVConfig, settings.get("clv"), {
        "horizon_months": flag("horizon_months"), "discount_rate": flag("discount_rate"), "model": flag("clv_model"),
    })
    segment_config = build(SegmentConfig, settings.get("segments"), {"k": flag("k"), "seed": flag("seed")})
    backtest_config = build(BacktestConfig, settings.get("backtest"), {
        "calibration_end": flag("calibration_end"), "holdout_days": flag("holdout_days"),
    })
    return clv_config, segment_config, backtest_config


def add_recommendation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validation-days", type=int, help="validation window for tuning and routing (default: a quarter of "
                        "the history before it, at most 90; below 14 the routes are not validated)")
    parser.add_argument("--tune-budget", type=float, help="seconds for the ALS search over all segments (default 240; 0: defaults)")


def recommendation_configs(args: argparse.Namespace, settings: dict) -> tuple[RoutingConfig, TuningConfig]:
    flag = vars(args).get
    routing_config = build(RoutingConfig, settings.get("routing"), {"validation_days": flag("validation_days")})
    tuning_config = build(TuningConfig, settings.get("tuning"), {"budget_seconds": flag("tune_budget")})
    return routing_config, tuning_config


def as_of_date(text: str):
    try:
        return parse_date(text, "--as-of")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_mapping(text: str | None) -> dict[str, str]:
    """Parse ``canonical=source,canonical=source`` (source names may contain spaces)."""
    if not text:
        return {}
    mapping = {}
    for pair in text.split(","):
        canonical, sep, source = pair.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise JobError(f"--columns takes canonical=source pairs separated by commas, got '{pair}'")
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
