"""The recommendations stage: validate (or reuse the last routes), fit the routed recommender and write what is served."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from cf.base import in_parallel
from cf.interactions import RecommendationError
from cf.tuning import ALL_SEGMENTS
from routing import serving
from routing.model import RoutedRecommender
from routing.reuse import choice_settings, reusable_choice
from routing.routes import describe_routes
from routing.validation import describe_windows, validate, validation_windows
from runtime import layout, storage
from runtime.config import Settings
from segmentation import columns as C
from segmentation.windows import read_history

STAGE = layout.RECOMMENDATIONS
AFFINITY_SCHEMA = "kind string, key string, rank int, customer_id string, score double"  # empty when ALS is not fitted


def last_manifest(spark, output_uri: str) -> dict | None:
    """The manifest of the recommendations last written under ``output_uri``, if any."""
    files = storage.FileSystem(spark)
    stage = layout.stage(output_uri, STAGE)
    storage.recover(files, stage)
    path = storage.join(stage, "manifest.json")
    return storage.read_json(spark, path) if files.exists(path) else None


def _segments_as_of(spark, output_uri: str, as_of: dt.date):
    stage = layout.open_stage(spark, output_uri, layout.SEGMENTS)
    summary = storage.read_json(spark, storage.join(stage, "summary.json"))
    if summary["as_of"] != as_of.isoformat():
        raise RecommendationError(f"the segments were computed as of {summary['as_of']}, not {as_of}: run the segments stage with the same --as-of")
    return spark.read.parquet(storage.join(stage, "customers")).select(C.CUSTOMER_ID, C.SEGMENT)


def run_train(spark, output_uri: str, *, as_of: dt.date | None, settings: Settings, echo=print) -> dict:
    started = time.monotonic()
    routing_config, config = settings.routing, settings.train
    purchases, returns = layout.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    as_of = history.as_of
    segments = _segments_as_of(spark, output_uri, as_of)  # checked before the long validation, cached after it
    choice = choice_settings(settings)
    chosen, reuse = None, None
    if config.reuse_routes_days is not None:
        chosen, reason = reusable_choice(last_manifest(spark, output_uri), as_of=as_of, max_age_days=config.reuse_routes_days,
                                         settings=choice)
        reuse = {"max_age_days": config.reuse_routes_days, "reused": chosen is not None, "reason": reason}
        echo(f"  validation: skipped, the last run's {reason}" if chosen else f"  validation: not reusing routes: {reason}")
    if chosen is None:
        windows = validation_windows(history, routing_config, end=as_of)
        echo(f"  validation: {windows[0].describe()}" if windows[0].skipped
             else f"  validation: tune and choose routes on the {describe_windows(windows)}")
        chosen = validate(purchases, returns, windows=windows, config=routing_config, tuning=settings.tuning,
                          clv_config=settings.clv, segment_config=settings.segments, echo=echo)
    validated = time.monotonic()
    echo(f"  final: fit on everything before {as_of} and write the lists")
    routed = RoutedRecommender.from_choice(chosen, as_of=as_of.isoformat(), config=routing_config, echo=echo).fit(purchases, segments.cache())
    customers = serving.known_customers(purchases, as_of).cache()
    n = routing_config.served_n
    echo("  writing the lists, trending, \"also bought\" and the model")
    with storage.atomic_output(spark, layout.stage(output_uri, STAGE)) as staging:
        items = purchases.where(purchases[C.TIMESTAMP] < dt.datetime.combine(as_of, dt.time())).select(C.ITEM_ID).distinct()
        # The three tables and the model are independent: written side by side (see in_parallel).
        in_parallel({
            "recommendations": lambda: serving.served_lists(routed, customers, n).write.parquet(storage.join(staging, "recommendations")),
            "trending": lambda: serving.cold_lists(routed, purchases, n).write.parquet(storage.join(staging, "trending")),
            "similar_items": lambda: routed.similar_items(items, routing_config.similar_items).write.parquet(
                storage.join(staging, "similar_items")),
            "model": lambda: routed.save(storage.join(staging, "model")),
            "affinity": lambda: (routed.likely_buyers(purchases) or spark.createDataFrame([], AFFINITY_SCHEMA)).write.parquet(
                storage.join(staging, "affinity")),
        })
        written = spark.read.parquet(storage.join(staging, "recommendations"))
        counts = {row[C.LIST]: row["count"] for row in written.groupBy(C.LIST).count().collect()}
        manifest = {
            "as_of": as_of.isoformat(),
            "customers": customers.count(),
            "rows": counts,
            "routes": chosen["routes"],
            "routes_chosen_as_of": chosen.get("chosen_as_of", as_of).isoformat(),
            "reuse": reuse,
            "similar_items_source": routed.similar_items_source,
            "trending_source": routed.routes["cold"][ALL_SEGMENTS]["source"],
            "models": routed.models_used(),
            "affinity": {"items": routing_config.affinity_items, "customers": routing_config.affinity_customers}
            if routed.lists_likely_buyers else None,
            "als_settings": {name: dataclasses.asdict(values) for name, values in chosen["als_settings"].items()},
            "tifu_settings": dataclasses.asdict(chosen["tifu_settings"]),
            "tuning": chosen["window"]["tuning"],
            "validation": {key: value for key, value in chosen["window"].items() if key != "tuning"},
            "settings": choice,
            "seconds": {"validation": round(validated - started, 1), "final": round(time.monotonic() - validated, 1)},
        }
        storage.write_json(spark, storage.join(staging, "manifest.json"), manifest)
    spark.catalog.clearCache()
    return manifest


def routes_reused(manifest: dict) -> bool:
    return bool((manifest["reuse"] or {}).get("reused"))


def format_manifest(manifest: dict) -> str:
    lines = [f"{manifest['customers']:,} customers as of {manifest['as_of']}: "
             + ", ".join(f"{name} {count:,} rows" for name, count in sorted(manifest["rows"].items()))]
    for list_name, routes in manifest["routes"].items():
        lines.append(f"  {list_name}: " + describe_routes(routes))
    lines.append(f"  also bought from {manifest['similar_items_source']}; unknown customers get {manifest['trending_source']}")
    seconds = manifest["seconds"]
    validation = (f"routes reused (chosen as of {manifest['routes_chosen_as_of']})" if routes_reused(manifest)
                  else f"{seconds['validation']:.0f}s validation and tuning")
    lines.append(f"  {validation}, {seconds['final']:.0f}s final fit and write")
    return "\n".join(lines)
