"""The whole segrec pipeline, stage by stage, on one SparkSession.

    python -m jobs.pipeline --input data/online_retail_ii.parquet --output output
    spark-submit jobs/pipeline.py --input hdfs:///retail/tx.parquet --output hdfs:///segrec

Each stage reads what earlier stages published under ``--output`` and publishes
its own directory there atomically; ``--stages`` runs a subset. Progress is
printed per stage (rows in/out, elapsed) and the run is summarised in
``<output>/run.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from jobs import cli, ingest, layout, report, segment, storage, train
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session, fit_to_input
from segmentation.windows import describe_window
from transactions.ingest import CLEAN, PLACES


@dataclass
class StageResult:
    rows_in: int
    rows_out: int
    note: str = ""
    window: dict | None = None  # the time window the stage held out, as Window.as_dict() gives it
    as_of: str | None = None  # the as-of date the stage used (the day after the last purchase when none was given)


@dataclass
class RunContext:
    spark: Any
    input_uri: str
    output_uri: str
    as_of: dt.date | None
    args: argparse.Namespace
    settings: dict[str, dict] = field(default_factory=dict)
    echo: Callable[[str], None] = print


def ingest_stage(context: RunContext) -> StageResult:
    config = ingest.ingest_config(context.args, context.settings)
    summary = ingest.run_ingest(context.spark, context.input_uri, context.output_uri, config, context.as_of)
    places = summary["places"]
    note = ", ".join(f"{place} {places[place]:,}" for place in PLACES)
    return StageResult(rows_in=summary["rows_in"], rows_out=places[CLEAN], note=note)


def _clean_rows(context: RunContext) -> int:
    return context.spark.read.parquet(storage.join(layout.stage(context.output_uri, layout.INGEST), CLEAN)).count()


def segment_stage(context: RunContext) -> StageResult:
    clv_config, segment_config, _ = cli.segment_configs(context.args, context.settings)
    summary = segment.run_segment(context.spark, context.output_uri, as_of=context.as_of, clv_config=clv_config, segment_config=segment_config)
    sizes = ", ".join(f"{label} {count:,}" for label, count in sorted(summary["segments"].items()))
    return StageResult(rows_in=_clean_rows(context), rows_out=summary["customers"], note=f"{sizes}; silhouette {summary['silhouette']:.2f}",
                       as_of=summary["as_of"])


def backtest_stage(context: RunContext) -> StageResult:
    clv_config, segment_config, backtest_config = cli.segment_configs(context.args, context.settings)
    result = segment.run_backtest(context.spark, context.output_uri, as_of=context.as_of, config=backtest_config,
                                  clv_config=clv_config, segment_config=segment_config)
    window = result["window"]
    if result["skipped"]:
        return StageResult(rows_in=_clean_rows(context), rows_out=0, note="skipped", window=window)
    chosen = next(row for row in result["variants"] if row["variant"] == result["chosen_variant"])
    note = f"{result['chosen_variant']}: repeat purchases {chosen['aggregate_error']:+.1%}, Spearman {chosen['spearman']:.3f}"
    return StageResult(rows_in=_clean_rows(context), rows_out=result["customers"], note=note, window=window)


def recommendations_stage(context: RunContext) -> StageResult:
    clv_config, segment_config, _ = cli.segment_configs(context.args, context.settings)
    routing_config, tuning_config = cli.recommendation_configs(context.args, context.settings)
    manifest = train.run_train(context.spark, context.output_uri, as_of=context.as_of, routing_config=routing_config,
                               tuning_config=tuning_config, clv_config=clv_config, segment_config=segment_config,
                               config=train.train_config(context.args, context.settings), echo=context.echo)
    routes = "; ".join(f"{name}: " + ", ".join(f"{segment_name} {route['source']}" for segment_name, route in routes.items())
                       for name, routes in manifest["routes"].items())
    window = manifest["validation"].get("window")
    if train.routes_reused(manifest):
        routes = f"routes reused, chosen as of {manifest['routes_chosen_as_of']}: {routes}"
    return StageResult(rows_in=_clean_rows(context), rows_out=sum(manifest["rows"].values()), note=routes, window=window,
                       as_of=manifest["as_of"])


def report_stage(context: RunContext) -> StageResult:
    charts = report.run_report(context.spark, context.output_uri)
    target = storage.join(layout.stage(context.output_uri, layout.REPORT), "index.html")
    return StageResult(rows_in=len(charts), rows_out=1, note=f"{len(charts)} charts in {target}")


STAGES: dict[str, Callable[[RunContext], StageResult]] = {
    layout.INGEST: ingest_stage,
    layout.SEGMENTS: segment_stage,
    layout.BACKTEST: backtest_stage,
    layout.RECOMMENDATIONS: recommendations_stage,
    layout.REPORT: report_stage,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="raw transactions: CSV, Parquet or Excel (path or URI)")
    parser.add_argument("--output", required=True, help="output directory (path or URI)")
    parser.add_argument("--stages", help=f"comma-separated subset of: {', '.join(STAGES)} (default: all)")
    ingest.add_ingest_arguments(parser)
    cli.add_segment_arguments(parser)
    cli.add_recommendation_arguments(parser)
    train.add_train_arguments(parser)
    cli.add_common_arguments(parser)
    return parser


def selected_stages(text: str | None) -> list[str]:
    if not text:
        return list(STAGES)
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in STAGES]
    if unknown:
        raise cli.JobError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
    return [name for name in STAGES if name in chosen]


def run_pipeline(context: RunContext, stages: list[str]) -> dict:
    echo = context.echo
    run = {
        "run_id": uuid.uuid4().hex[:12],
        "input": context.input_uri,
        "output": context.output_uri,
        "as_of": context.as_of.isoformat() if context.as_of else None,  # the one used, once a stage has chosen it
        "as_of_given": context.as_of is not None,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "stages": [],
        "windows": {},
    }
    started = time.monotonic()
    for number, name in enumerate(stages, start=1):
        echo(f"[{number}/{len(stages)}] {name} ...")
        stage_started = time.monotonic()
        result = STAGES[name](context)
        # Stages hand over through their published outputs: what one cached is of no use to the next.
        context.spark.catalog.clearCache()
        elapsed = time.monotonic() - stage_started
        echo(f"[{number}/{len(stages)}] {name}: {result.rows_in:,} rows in, {result.rows_out:,} out, "
             f"{elapsed:.1f}s{' (' + result.note + ')' if result.note else ''}")
        run["stages"].append({"stage": name, "rows_in": result.rows_in, "rows_out": result.rows_out,
                              "seconds": round(elapsed, 2), "note": result.note})
        if result.window is not None:
            run["windows"][name] = result.window
        run["as_of"] = run["as_of"] or result.as_of
    run["seconds"] = round(time.monotonic() - started, 2)
    storage.write_json(context.spark, storage.join(context.output_uri, layout.RUN_SUMMARY), run)
    for window in run["windows"].values():
        echo(describe_window(window))
    echo(f"done: {len(stages)} stage(s) in {run['seconds']:.1f}s; outputs under {context.output_uri}")
    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stages = selected_stages(args.stages)
    settings = load_config_file(args.config)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-pipeline"}, settings.get("spark"), {"master": args.master}))
    fit_to_input(spark, args.input)
    context = RunContext(spark=spark, input_uri=args.input, output_uri=args.output, as_of=args.as_of, args=args, settings=settings)
    run_pipeline(context, stages)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
