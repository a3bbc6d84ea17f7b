"""Publishing: the pipeline's outputs as the one SQLite file the web app serves, renamed into place only when whole and checked."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import tempfile
from contextlib import closing

from coldstart import content
from runtime import cli, layout, storage
from segmentation import columns as C
from webapp import schema

BATCH_ROWS = 5000


def _insert(connection: sqlite3.Connection, table: str, frame, columns: list[str]) -> int:
    placeholders = ", ".join("?" for _ in columns)
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
    batch, count = [], 0
    for row in frame.select(*columns).toLocalIterator(prefetchPartitions=True):
        batch.append(tuple(row))
        if len(batch) >= BATCH_ROWS:
            connection.executemany(statement, batch)
            count += len(batch)
            batch = []
    connection.executemany(statement, batch)
    return count + len(batch)


PRICE_DAYS = 90  # an item's price: the median of its last this many days of sales, so old prices fade


def item_catalogue(spark, purchases):
    """item_id, description (the most used), price, buyers, first_sold, item_group: what merchandising rules filter on.

    The group is the data's own (``item_group``, a category) when it has any, else one learnt from the descriptions.
    """
    from pyspark.sql import functions as F

    last_sold = purchases.groupBy(C.ITEM_ID).agg(F.max(C.TIMESTAMP).alias("_last"))
    prices = (purchases.join(last_sold, C.ITEM_ID)
              .where(F.col(C.TIMESTAMP) >= F.col("_last") - F.expr(f"INTERVAL {PRICE_DAYS} DAYS"))
              .groupBy(C.ITEM_ID).agg(F.round(F.percentile_approx(C.UNIT_PRICE, 0.5), 2).alias(C.PRICE)))
    given = C.ITEM_GROUP in purchases.columns and purchases.where(F.col(C.ITEM_GROUP).isNotNull()).limit(1).count() > 0
    catalogue = purchases.groupBy(C.ITEM_ID).agg(
        F.mode(F.trim(C.DESCRIPTION), deterministic=True).alias(C.DESCRIPTION),
        F.count_distinct(C.CUSTOMER_ID).alias(C.BUYERS),
        F.date_format(F.min(C.TIMESTAMP), "yyyy-MM-dd").alias(C.FIRST_SOLD),
        (F.mode(F.trim(C.ITEM_GROUP), deterministic=True) if given else F.lit(None).cast("string")).alias(C.ITEM_GROUP),
    ).join(prices, C.ITEM_ID, "left").cache()
    if given:  # content.group_name in SQL: lower case, words joined by '-'
        words = F.regexp_replace(F.regexp_replace(F.lower(C.ITEM_GROUP), "[^a-z0-9]+", "-"), "^-+|-+$", "")
        named = F.regexp_replace(F.substring(words, 1, 64), "-+$", "")
        return catalogue.withColumn(C.ITEM_GROUP, F.when(named != "", named).otherwise(F.lit(content.UNGROUPED)))
    # one row per item: the catalogue, not the log, comes to the driver to learn groups from its words
    descriptions = catalogue.select(C.ITEM_ID, C.DESCRIPTION).toPandas().set_index(C.ITEM_ID)[C.DESCRIPTION]
    groups = content.description_groups(descriptions).rename(C.ITEM_GROUP).reset_index()
    return catalogue.drop(C.ITEM_GROUP).join(spark.createDataFrame(groups, f"{C.ITEM_ID} string, {C.ITEM_GROUP} string"), C.ITEM_ID, "left")


def customer_days(purchases):
    """customer_id, day, revenue: what campaign results are measured against when no CSV is uploaded."""
    from pyspark.sql import functions as F

    return purchases.groupBy(C.CUSTOMER_ID, F.date_format(C.TIMESTAMP, "yyyy-MM-dd").alias("day")).agg(
        F.round(F.sum(C.AMOUNT), 2).alias("revenue"))


def build_store(spark, output_uri: str, recs_stage: str, path: str, *, run: dict) -> dict:
    """Write every table of ``webapp.schema`` into a new SQLite file at ``path``; return the row counts."""
    from pyspark.sql import functions as F

    segments_stage = layout.open_stage(spark, output_uri, layout.SEGMENTS)
    purchases, _ = layout.read_transactions(spark, output_uri)
    customers = spark.read.parquet(storage.join(segments_stage, "customers"))
    frames = {
        "customers": customers.withColumns({
            "first_purchase": F.date_format("first_purchase", "yyyy-MM-dd"), "last_purchase": F.date_format("last_purchase", "yyyy-MM-dd")}),
        "segments": spark.read.parquet(storage.join(segments_stage, "segments")),
        "recommendations": spark.read.parquet(storage.join(recs_stage, "recommendations")),
        "trending": spark.read.parquet(storage.join(recs_stage, "trending")).fillna({C.COUNTRY: schema.EVERY_COUNTRY}),
        "similar_items": spark.read.parquet(storage.join(recs_stage, "similar_items")),
        "items": item_catalogue(spark, purchases),
        "bought": purchases.select(C.CUSTOMER_ID, C.ITEM_ID).distinct(),
        "customer_days": customer_days(purchases),
    }
    counts = {}
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(schema.DDL)
        for table, frame in frames.items():
            counts[table] = _insert(connection, table, frame, schema.columns(table))
        fs = storage.FileSystem(spark)
        charts_dir = layout.stage(output_uri, layout.REPORT)
        charts = [name for name in fs.list_names(charts_dir) if name.endswith(".png")] if fs.exists(charts_dir) else []
        connection.executemany("INSERT INTO charts (name, png) VALUES (?, ?)",
                               [(name[:-len(".png")], fs.read_bytes(storage.join(charts_dir, name))) for name in charts])
        counts["charts"] = len(charts)
        connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("run_id", run.get("run_id") or "manual"), ("as_of", run["as_of"]),
            ("created_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
            ("schema_version", str(schema.VERSION)),
        ])
        connection.commit()
        problems = schema.problems(connection)
    if problems:
        raise cli.JobError(f"the new store failed its sanity check ({'; '.join(problems)}); the previous one is kept")
    return counts


def publish(spark, output_uri: str, db_path: str) -> dict:
    """Build the store under a temporary name next to ``db_path`` and rename it into place."""
    fs = storage.FileSystem(spark)
    recs_stage = layout.open_stage(spark, output_uri, layout.RECOMMENDATIONS)
    manifest = storage.read_json(spark, storage.join(recs_stage, "manifest.json"))
    run_file = storage.join(output_uri, layout.RUN_SUMMARY)
    run = storage.read_json(spark, run_file) if fs.exists(run_file) else {}
    directory = os.path.dirname(os.path.abspath(db_path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".segrec-", suffix=".sqlite.tmp", dir=directory)
    os.close(handle)
    try:
        counts = build_store(spark, output_uri, recs_stage, temporary, run={**run, "as_of": manifest["as_of"]})
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the web server may run as another user
        os.replace(temporary, db_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return {"db": db_path, "as_of": manifest["as_of"], "rows": counts}
