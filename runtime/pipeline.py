"""The whole pipeline, stage by stage, on one SparkSession: each stage reads what earlier ones published and publishes its own."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from runtime import history, layout, storage
from runtime.cli import JobError
from runtime.config import Settings
from runtime.stages.ingest import run_ingest
from runtime.stages.recommendations import routes_reused, run_train
from runtime.stages.report import run_report
from runtime.stages.segments import run_backtest, run_segment
from segmentation.windows import describe_window
from transactions.ingest import CLEAN, ERASED, PLACES


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
    settings: Settings = field(default_factory=Settings)
    echo: Callable[[str], None] = print
    events_uri: str | None = None  # purchases the web app recorded, taken in with the log


def ingest_stage(context: RunContext) -> StageResult:
    summary = run_ingest(context.spark, context.input_uri, context.output_uri, context.settings.ingest, context.as_of,
                         context.events_uri)
    places = summary["places"]
    note = ", ".join(f"{place} {places[place]:,}" for place in PLACES) + (f", {ERASED} {summary[ERASED]:,}" if summary[ERASED] else "")
    return StageResult(rows_in=summary["rows_in"], rows_out=places[CLEAN], note=note)


def _clean_rows(context: RunContext) -> int:
    return context.spark.read.parquet(storage.join(layout.stage(context.output_uri, layout.INGEST), CLEAN)).count()


def segment_stage(context: RunContext) -> StageResult:
    summary = run_segment(context.spark, context.output_uri, as_of=context.as_of, settings=context.settings)
    sizes = ", ".join(f"{label} {count:,}" for label, count in sorted(summary["segments"].items()))
    return StageResult(rows_in=_clean_rows(context), rows_out=summary["customers"], note=f"{sizes}; silhouette {summary['silhouette']:.2f}",
                       as_of=summary["as_of"])


def backtest_stage(context: RunContext) -> StageResult:
    result = run_backtest(context.spark, context.output_uri, as_of=context.as_of, settings=context.settings)
    window = result["window"]
    if result["skipped"]:
        return StageResult(rows_in=_clean_rows(context), rows_out=0, note="skipped", window=window)
    chosen = next(row for row in result["variants"] if row["variant"] == result["chosen_variant"])
    note = f"{result['chosen_variant']}: repeat purchases {chosen['aggregate_error']:+.1%}, Spearman {chosen['spearman']:.3f}"
    return StageResult(rows_in=_clean_rows(context), rows_out=result["customers"], note=note, window=window)


def recommendations_stage(context: RunContext) -> StageResult:
    manifest = run_train(context.spark, context.output_uri, as_of=context.as_of, settings=context.settings, echo=context.echo)
    routes = "; ".join(f"{name}: " + ", ".join(f"{segment_name} {route['source']}" for segment_name, route in routes.items())
                       for name, routes in manifest["routes"].items())
    window = manifest["validation"].get("window")
    if routes_reused(manifest):
        routes = f"routes reused, chosen as of {manifest['routes_chosen_as_of']}: {routes}"
    return StageResult(rows_in=_clean_rows(context), rows_out=sum(manifest["rows"].values()), note=routes, window=window,
                       as_of=manifest["as_of"])


def report_stage(context: RunContext) -> StageResult:
    charts = run_report(context.spark, context.output_uri, context.settings.report)
    target = storage.join(layout.stage(context.output_uri, layout.REPORT), "index.html")
    return StageResult(rows_in=len(charts), rows_out=1, note=f"{len(charts)} charts in {target}")


STAGES: dict[str, Callable[[RunContext], StageResult]] = {
    layout.INGEST: ingest_stage,
    layout.SEGMENTS: segment_stage,
    layout.BACKTEST: backtest_stage,
    layout.RECOMMENDATIONS: recommendations_stage,
    layout.REPORT: report_stage,
}


def selected_stages(text: str | None) -> list[str]:
    if not text:
        return list(STAGES)
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in STAGES]
    if unknown:
        raise JobError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
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
    if layout.SEGMENTS in stages:  # a run with new segments joins the history and becomes the current run
        pruned = history.archive_run(context.spark, context.output_uri, run, context.settings.history)
        echo(f"history: run {run['run_id']} kept as the current run" + (f"; pruned {', '.join(pruned)}" if pruned else ""))
    for window in run["windows"].values():
        echo(describe_window(window))
    echo(f"done: {len(stages)} stage(s) in {run['seconds']:.1f}s; outputs under {context.output_uri}")
    return run
