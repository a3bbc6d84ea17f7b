"""The ingest stage: read the log, sort every row into exactly one place and publish the places atomically."""

from __future__ import annotations

import datetime as dt
import functools

from cf.base import in_parallel
from runtime import layout, storage
from runtime.stages.erasure import read_suppression
from transactions.ingest import (ERASED, PLACES, IngestConfig, IngestError, check_strict, classify, count_places, events_as_source,
                                 resolve_columns, split_places, summarize)
from transactions.sources import read_source

STAGE = layout.INGEST


def run_ingest(spark, input_uri: str, output_uri: str, config: IngestConfig, as_of: dt.date | None = None,
               events_uri: str | None = None) -> dict:
    """Read, classify, and atomically publish ``<output>/ingest``. Returns the summary.

    ``events_uri``: a CSV of purchases the web app recorded (``python -m webapp.events export``), taken in with the log.
    """
    from pyspark import StorageLevel

    raw, fmt = read_source(spark, input_uri, config)
    resolved = resolve_columns(raw.columns, config)
    rows_in = raw.count()
    if rows_in == 0:
        raise IngestError(f"input {input_uri} has a header but no rows")
    events_in = 0
    if events_uri is not None:
        events = events_as_source(spark.read.csv(events_uri, header=True), raw, resolved)
        events_in = events.count()
        raw, rows_in = raw.unionByName(events), rows_in + events_in

    # On disk, not in memory: building in-memory cache blocks next to the duplicate sort ran a
    # 4 GB heap out of memory at 50M rows, and at 10M rows the disk cache is as fast.
    # Customers erased from this output stay out: their rows are counted, never kept.
    classified = classify(raw, resolved, config, as_of, read_suppression(spark, output_uri)).persist(StorageLevel.DISK_ONLY)
    try:
        summary = summarize(count_places(classified), rows_in)
        check_strict(summary, config)
        summary.update({
            "input": input_uri, "format": fmt, "columns": resolved, "events": events_uri, "events_in": events_in,
            "as_of": as_of.isoformat() if as_of else None,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        })
        with storage.atomic_output(spark, layout.stage(output_uri, STAGE)) as staging:
            # Each place is a filter of the persisted rows: written side by side (see in_parallel).
            in_parallel({place: functools.partial(frame.write.parquet, storage.join(staging, place))
                         for place, frame in split_places(classified, raw.columns).items()})
            storage.write_json(spark, storage.join(staging, "summary.json"), summary)
    finally:
        classified.unpersist()
    return summary


def format_summary(summary: dict) -> str:
    places = summary["places"]
    lines = [f"{summary['rows_in']:,} rows read" + (f" ({summary['events_in']:,} of them events)" if summary.get("events") else "")]
    lines += [f"  {place:<10} {places[place]:>10,}" for place in PLACES]
    if summary[ERASED]:
        lines.append(f"  {ERASED:<10} {summary[ERASED]:>10,}  (customers erased on request: counted, not kept)")
    lines += [f"    {reason:<18} {count:>8,}" for reason, count in summary["quarantine_reasons"].items() if count]
    return "\n".join(lines)
