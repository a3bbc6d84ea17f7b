"""Fit the final models and write the lists that are served.

    python -m jobs.train --output output      # reads output/ingest and output/segments

First the last ``--validation-days`` (90) before the as-of date serve as a
validation window: ALS settings are tuned per segment within ``--tune-budget``
seconds, every candidate source is scored, and the routes (which source serves
each segment's list) and the item-to-item source are chosen. Then the models
those routes need are refitted on everything before the as-of date and the
lists are written, atomically, to ``<output>/recommendations``:

    recommendations/  customer_id, list, rank, item_id, score, source
                      (lists discover, for_you and buy_again for every known customer)
    trending/         country (null: everyone), rank, item_id, score, source: what
                      customers unknown to the models are served
    similar_items/    item_id, rank, similar_item_id, score: "also bought", every item
    models/           the fitted models the routes use, one directory each
    manifest.json     routes, tuned ALS settings with every trial, validation scores
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import sys
import time
from functools import reduce

from jobs import cli, segment, storage
from jobs.config import build, load_config_file
from jobs.evaluate import add_recommendation_arguments, recommendation_configs, validate
from jobs.spark import SparkSettings, build_session
from cf import routing
from cf.base import in_parallel
from cf.interactions import RecommendationError
from cf.routing import RoutingConfig
from cf.tuning import TuningConfig
from segmentation import columns as C
from segmentation import rfm

STAGE = "recommendations"
SERVED_LISTS = ("discover", "for_you")  # routed; buy_again has one source, cold is the trending table
EVERYONE = "everyone"  # the pseudo-customer that stands for visitors without a country


def _segments_as_of(spark, output_uri: str, as_of: dt.date):
    stage = storage.open_stage(spark, storage.join(output_uri, segment.STAGE), produced_by="the segments stage (jobs.segment)")
    summary = storage.read_json(spark, storage.join(stage, "summary.json"))
    if summary["as_of"] != as_of.isoformat():
        raise RecommendationError(f"the segments were computed as of {summary['as_of']}, not {as_of}: run the segments stage with the same --as-of")
    return spark.read.parquet(storage.join(stage, "customers")).select(C.CUSTOMER_ID, C.SEGMENT)


def known_customers(purchases, as_of: dt.date):
    """customer_id and their usual country, for everyone who bought before ``as_of``."""
    from pyspark.sql import functions as F

    before = purchases.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp"))
    return before.groupBy(C.CUSTOMER_ID).agg(F.mode(C.COUNTRY, deterministic=True).alias(C.COUNTRY))


def country_visitors(purchases):
    """One pseudo-customer per country plus one for visitors whose country is unknown (country null)."""
    from pyspark.sql import functions as F

    countries = purchases.select(C.COUNTRY).distinct().where(F.col(C.COUNTRY).isNotNull())
    per_country = countries.select(F.concat(F.lit("country:"), F.col(C.COUNTRY)).alias(C.CUSTOMER_ID), C.COUNTRY)
    return per_country.unionByName(purchases.sparkSession.createDataFrame([(EVERYONE, None)], f"{C.CUSTOMER_ID} string, {C.COUNTRY} string"))


def served_lists(sources, customers, segments, routes: dict, config: RoutingConfig):
    """customer_id, list, rank, item_id, score, source for every customer: the routed lists and buy-again."""
    from pyspark.sql import functions as F

    routed = in_parallel({list_name: functools.partial(routing.serve_routed, sources, customers, list_name, routes[list_name], segments, config)
                          for list_name in SERVED_LISTS})
    parts = [routed[list_name].withColumn(C.LIST, F.lit(list_name)) for list_name in SERVED_LISTS]
    buy_again = sources.models["buy_again"].recommend(customers, config.n)
    parts.append(buy_again.withColumns({"source": F.lit("buy_again"), C.LIST: F.lit("buy_again")}))
    columns = [C.CUSTOMER_ID, C.LIST, C.RANK, C.ITEM_ID, C.SCORE, "source"]
    return reduce(lambda a, b: a.unionByName(b), (part.select(*columns) for part in parts))


def cold_lists(sources, purchases, route: str, config: RoutingConfig):
    """The cold route's list per country and overall (country null), as served to unknown customers."""
    from pyspark.sql import functions as F

    visitors = country_visitors(purchases)
    lists = routing.candidate_lists(sources, visitors, "cold", config, names=[route])
    return lists[route].join(visitors, C.CUSTOMER_ID).select(C.COUNTRY, C.RANK, C.ITEM_ID, C.SCORE, F.lit(route).alias("source"))


def run_train(spark, output_uri: str, *, as_of: dt.date | None, routing_config: RoutingConfig, tuning_config: TuningConfig,
              clv_config, segment_config, echo=print) -> dict:
    started = time.monotonic()
    purchases, returns = segment.read_transactions(spark, output_uri)
    as_of = as_of or rfm.default_as_of(purchases)
    segments = _segments_as_of(spark, output_uri, as_of)  # checked before the long validation, cached after it
    echo(f"  validation: tune ALS and choose routes on the {routing_config.validation_days} days before {as_of}")
    chosen = validate(purchases, returns, cutoff=as_of, config=routing_config, tuning=tuning_config,
                      clv_config=clv_config, segment_config=segment_config)
    validated = time.monotonic()
    echo(f"  final: fit on everything before {as_of} and write the lists")
    segments = segments.cache()
    similar_source = chosen["similar_items_source"]
    cold_route = chosen["routes"]["cold"][routing.ALL_SEGMENTS]["source"]
    used = sorted({part for routes in chosen["routes"].values() for route in routes.values() for part in route["source"].split("+")}
                  | {"buy_again", similar_source})
    final_config = dataclasses.replace(routing_config, models=tuple(name for name in routing_config.models if name in used))
    # A segment model no route serves costs as much to fit as one that does (README, "Scale").
    sources = routing.fit_sources(purchases, as_of=as_of, segments=segments, config=final_config, als_settings=chosen["als_settings"],
                                  segment_als_serves=routing.segments_served_by(chosen["routes"], "segment_als"))
    customers = known_customers(purchases, as_of).cache()
    serving = dataclasses.replace(routing_config, n=routing_config.served_n)
    with storage.atomic_output(spark, storage.join(output_uri, STAGE)) as staging:
        items = purchases.where(purchases[C.TIMESTAMP] < dt.datetime.combine(as_of, dt.time())).select(C.ITEM_ID).distinct()
        # The three tables are independent: written side by side (see in_parallel).
        in_parallel({
            "recommendations": lambda: served_lists(sources, customers, segments, chosen["routes"], serving).write.parquet(
                storage.join(staging, "recommendations")),
            "trending": lambda: cold_lists(sources, purchases, cold_route, serving).write.parquet(storage.join(staging, "trending")),
            "similar_items": lambda: sources.models[similar_source].similar_items(items, routing_config.similar_items).write.parquet(
                storage.join(staging, "similar_items")),
        })
        routing.save_models(sources, used, storage.join(staging, "models"))
        written = spark.read.parquet(storage.join(staging, "recommendations"))
        counts = {row[C.LIST]: row["count"] for row in written.groupBy(C.LIST).count().collect()}
        manifest = {
            "as_of": as_of.isoformat(),
            "customers": customers.count(),
            "rows": counts,
            "routes": chosen["routes"],
            "similar_items_source": similar_source,
            "trending_source": cold_route,
            "models": used,
            "tuning": chosen["window"]["tuning"],
            "validation": {key: value for key, value in chosen["window"].items() if key != "tuning"},
            "settings": {"routing": dataclasses.asdict(routing_config), "tuning": dataclasses.asdict(tuning_config)},
            "seconds": {"validation": round(validated - started, 1), "final": round(time.monotonic() - validated, 1)},
        }
        storage.write_json(spark, storage.join(staging, "manifest.json"), manifest)
    spark.catalog.clearCache()
    return manifest


def format_manifest(manifest: dict) -> str:
    lines = [f"{manifest['customers']:,} customers as of {manifest['as_of']}: "
             + ", ".join(f"{name} {count:,} rows" for name, count in sorted(manifest["rows"].items()))]
    for list_name, routes in manifest["routes"].items():
        lines.append(f"  {list_name}: " + routing.describe_routes(routes))
    lines.append(f"  also bought from {manifest['similar_items_source']}; unknown customers get {manifest['trending_source']}")
    lines.append(f"  {manifest['seconds']['validation']:.0f}s validation and tuning, {manifest['seconds']['final']:.0f}s final fit and write")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest and <output>/segments)")
    add_recommendation_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    routing_config, tuning_config = recommendation_configs(args, settings)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-train"}, settings.get("spark"), {"master": args.master}))
    clv_config, segment_config, _ = segment.segment_configs(args, settings)
    manifest = run_train(spark, args.output, as_of=args.as_of, routing_config=routing_config, tuning_config=tuning_config,
                         clv_config=clv_config, segment_config=segment_config)
    print(format_manifest(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
