"""Publishing: the pipeline's outputs as the one SQLite file the web app serves, renamed into place only when whole and checked."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import tempfile
from contextlib import closing

import pandas as pd

from coldstart import content
from runtime import cli, history, layout, storage
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


def item_catalogue(purchases):
    """item_id, description (the most used), price, buyers, first_sold and the data's own group (``item_group``, a
    category, null when the data has none): what merchandising rules filter on. Cached: the content tables read it too."""
    from pyspark.sql import functions as F

    last_sold = purchases.groupBy(C.ITEM_ID).agg(F.max(C.TIMESTAMP).alias("_last"))
    prices = (purchases.join(last_sold, C.ITEM_ID)
              .where(F.col(C.TIMESTAMP) >= F.col("_last") - F.expr(f"INTERVAL {PRICE_DAYS} DAYS"))
              .groupBy(C.ITEM_ID).agg(F.round(F.percentile_approx(C.UNIT_PRICE, 0.5), 2).alias(C.PRICE)))
    given = F.mode(F.trim(C.ITEM_GROUP), deterministic=True) if C.ITEM_GROUP in purchases.columns else F.lit(None).cast("string")
    return purchases.groupBy(C.ITEM_ID).agg(
        F.mode(F.trim(C.DESCRIPTION), deterministic=True).alias(C.DESCRIPTION),
        F.count_distinct(C.CUSTOMER_ID).alias(C.BUYERS),
        F.date_format(F.min(C.TIMESTAMP), "yyyy-MM-dd").alias(C.FIRST_SOLD),
        given.alias(C.ITEM_GROUP),
    ).join(prices, C.ITEM_ID, "left").cache()


def with_groups(spark, catalogue, descriptions):
    """The catalogue with every item in a group: the data's own when it gives any (made safe for the API), else one
    learnt from the descriptions (``descriptions``: item id -> description, on the driver)."""
    from pyspark.sql import functions as F

    if catalogue.where(F.col(C.ITEM_GROUP).isNotNull()).limit(1).count():  # content.group_name in SQL
        words = F.regexp_replace(F.regexp_replace(F.lower(C.ITEM_GROUP), "[^a-z0-9]+", "-"), "^-+|-+$", "")
        named = F.regexp_replace(F.substring(words, 1, 64), "-+$", "")
        return catalogue.withColumn(C.ITEM_GROUP, F.when(named != "", named).otherwise(F.lit(content.UNGROUPED)))
    groups = content.description_groups(descriptions).rename(C.ITEM_GROUP).rename_axis(C.ITEM_ID).reset_index()
    return catalogue.drop(C.ITEM_GROUP).join(spark.createDataFrame(groups, f"{C.ITEM_ID} string, {C.ITEM_GROUP} string"), C.ITEM_ID, "left")


def new_items(catalogue, as_of: str, config: content.ContentConfig):
    """The catalogue's rows of items first sold in the last ``new_item_days`` before ``as_of``."""
    from pyspark.sql import functions as F

    return catalogue.where(F.col(C.FIRST_SOLD) >= F.date_format(F.date_sub(F.lit(as_of).cast("date"), config.new_item_days), "yyyy-MM-dd"))


def new_arrivals(purchases, catalogue, as_of: str, config: content.ContentConfig):
    """country, rank, item_id, score: items first sold lately, most buyers first, per country and overall (country null)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    fresh = purchases.join(new_items(catalogue, as_of, config).select(C.ITEM_ID), C.ITEM_ID)
    counted = (fresh.groupBy(C.COUNTRY, C.ITEM_ID).agg(F.count_distinct(C.CUSTOMER_ID).cast("double").alias(C.SCORE))
               .where(F.col(C.COUNTRY).isNotNull())
               .unionByName(fresh.groupBy(C.ITEM_ID).agg(F.count_distinct(C.CUSTOMER_ID).cast("double").alias(C.SCORE))
                            .withColumn(C.COUNTRY, F.lit(None).cast("string"))))
    ranked = counted.withColumn(C.RANK, F.row_number().over(Window.partitionBy(C.COUNTRY).orderBy(F.desc(C.SCORE), C.ITEM_ID)))
    return ranked.where(F.col(C.RANK) <= config.new_arrivals)


def content_tables(spark, catalogue, descriptions, similar_items, as_of: str, config: content.ContentConfig) -> dict:
    """``similar_items`` with content neighbours after the "also bought" rows of new items with too few buyers (source
    ``content``), and ``new_item_neighbours``: for every item, the new items nearest it in words."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    fresh = [row[C.ITEM_ID] for row in new_items(catalogue, as_of, config).where(F.col(C.BUYERS) < config.new_item_buyers)
             .select(C.ITEM_ID).collect()]
    schema = f"{C.ITEM_ID} string, {C.RANK} int, {C.SIMILAR_ITEM_ID} string, {C.SCORE} double"
    neighbours = content.content_neighbours(descriptions, fresh, descriptions.index, k=config.neighbours).rename(
        columns={"similar_item_id": C.SIMILAR_ITEM_ID})
    for_new = spark.createDataFrame(neighbours, schema).withColumn(C.SOURCE, F.lit("content"))
    also_bought = similar_items.withColumn(C.SOURCE, F.lit("also_bought"))
    offset = also_bought.groupBy(C.ITEM_ID).agg(F.max(C.RANK).alias("_offset"))
    appended = (for_new.join(also_bought.select(C.ITEM_ID, C.SIMILAR_ITEM_ID), [C.ITEM_ID, C.SIMILAR_ITEM_ID], "left_anti")
                .join(offset, C.ITEM_ID, "left")
                .withColumn(C.RANK, F.coalesce("_offset", F.lit(0))
                            + F.row_number().over(Window.partitionBy(C.ITEM_ID).orderBy(C.RANK))).drop("_offset"))
    nearest_new = content.content_neighbours(descriptions, descriptions.index, fresh, k=config.neighbours)
    return {"similar_items": also_bought.unionByName(appended),
            "new_item_neighbours": spark.createDataFrame(nearest_new.rename(columns={"similar_item_id": "new_item_id"}),
                                                         f"{C.ITEM_ID} string, {C.RANK} int, new_item_id string, {C.SCORE} double")}


def customer_days(purchases):
    """customer_id, day, revenue: what campaign results are measured against when no CSV is uploaded."""
    from pyspark.sql import functions as F

    return purchases.groupBy(C.CUSTOMER_ID, F.date_format(C.TIMESTAMP, "yyyy-MM-dd").alias("day")).agg(
        F.round(F.sum(C.AMOUNT), 2).alias("revenue"))


def build_store(spark, output_uri: str, recs_stage: str, path: str, *, run: dict, config: content.ContentConfig) -> dict:
    """Write every table of ``webapp.schema`` into a new SQLite file at ``path``; return the row counts."""
    from pyspark.sql import functions as F

    segments_stage = layout.open_stage(spark, output_uri, layout.SEGMENTS)
    for stage, table in ((layout.SEGMENTS, "lifecycle"), (layout.RECOMMENDATIONS, "affinity")):
        if not storage.FileSystem(spark).exists(storage.join(layout.stage(output_uri, stage), table)):
            raise cli.JobError(f"{layout.stage(output_uri, stage)} was written by an older segrec, without {table}: run "
                               f"{layout.PRODUCED_BY[stage]} again (or jobs.pipeline), then publish")
    purchases, _ = layout.read_transactions(spark, output_uri)
    customers = spark.read.parquet(storage.join(segments_stage, "customers"))
    catalogue = item_catalogue(purchases)
    # one row per item: the catalogue's words, not the log, come to the driver
    descriptions = catalogue.select(C.ITEM_ID, C.DESCRIPTION).toPandas().set_index(C.ITEM_ID)[C.DESCRIPTION]
    frames = {
        "customers": customers.withColumns({
            "first_purchase": F.date_format("first_purchase", "yyyy-MM-dd"), "last_purchase": F.date_format("last_purchase", "yyyy-MM-dd")}),
        "segments": spark.read.parquet(storage.join(segments_stage, "segments")),
        "lifecycle": spark.read.parquet(storage.join(segments_stage, "lifecycle")),
        "recommendations": spark.read.parquet(storage.join(recs_stage, "recommendations")),
        "trending": spark.read.parquet(storage.join(recs_stage, "trending")).fillna({C.COUNTRY: schema.EVERY_COUNTRY}),
        **content_tables(spark, catalogue, descriptions, spark.read.parquet(storage.join(recs_stage, "similar_items")), run["as_of"],
                         config),
        "new_arrivals": new_arrivals(purchases, catalogue, run["as_of"], config).fillna({C.COUNTRY: schema.EVERY_COUNTRY}),
        "items": with_groups(spark, catalogue, descriptions),
        "bought": purchases.select(C.CUSTOMER_ID, C.ITEM_ID).distinct(),
        "customer_days": customer_days(purchases),
        "affinity": spark.read.parquet(storage.join(recs_stage, "affinity")),
        "purchases_by_day": purchases.select(C.ITEM_ID, F.date_format(C.TIMESTAMP, "yyyy-MM-dd").alias("day"), C.CUSTOMER_ID).distinct(),
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
        history_tables = _history_tables(spark, output_uri)
        for table, rows in history_tables["tables"].items():
            connection.executemany(f"INSERT INTO {table} ({', '.join(schema.columns(table))}) VALUES ({', '.join('?' for _ in schema.columns(table))})",
                                   [tuple(row[column] for column in schema.columns(table)) for row in rows])
            counts[table] = len(rows)
        if history_tables["chart"] is not None:
            connection.execute("INSERT INTO charts (name, png) VALUES (?, ?)", (history_tables["chart"].name, history_tables["chart"].png))
        report = storage.join(charts_dir, "report.json")
        currency = storage.read_json(spark, report).get("currency", "") if fs.exists(report) else ""
        connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("run_id", run.get("run_id") or "manual"), ("as_of", run["as_of"]),
            ("created_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
            ("schema_version", str(schema.VERSION)),
            ("currency", currency),
            ("previous_run_id", history_tables["previous"]["run_id"] if history_tables["previous"] else ""),
            ("previous_as_of", history_tables["previous"]["as_of"] if history_tables["previous"] else ""),
            ("lifecycle_explained", json.dumps(storage.read_json(spark, storage.join(segments_stage, "summary.json"))["lifecycle_explained"])),
        ])
        connection.commit()
        problems = schema.problems(connection)
    catalogue.unpersist()
    if problems:
        raise cli.JobError(f"the new store failed its sanity check ({'; '.join(problems)}); the previous one is kept")
    return counts


def _history_tables(spark, output_uri: str) -> dict:
    """The store's runs and migration rows (runtime/history.py), the migration chart, and the previous run; empty without a history."""
    from segmentation import charts as drawing

    current, previous = history.current_and_previous(spark, output_uri)
    current_id = current["run_id"] if current else None
    runs = [{"run_id": run["run_id"], "as_of": run["as_of"], "started_at": run["started_at"], "current": int(run["run_id"] == current_id),
             "customers": next((stage["rows_out"] for stage in run["stages"] if stage["stage"] == layout.SEGMENTS), None)}
            for run in history.runs(spark, output_uri)]
    moved, chart = [], None
    if current is not None and previous is not None:
        moved = [row.asDict() for row in history.migration(spark, output_uri, previous, current).collect()]  # a few cells
        chart = drawing.migration(pd.DataFrame(moved), previous["as_of"], current["as_of"])
    return {"tables": {"runs": runs, "migration": moved}, "chart": chart, "previous": previous}


def publish(spark, output_uri: str, db_path: str, config: content.ContentConfig = content.ContentConfig()) -> dict:
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
        counts = build_store(spark, output_uri, recs_stage, temporary, run={**run, "as_of": manifest["as_of"]}, config=config)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the web server may run as another user
        os.replace(temporary, db_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return {"db": db_path, "as_of": manifest["as_of"], "rows": counts}
