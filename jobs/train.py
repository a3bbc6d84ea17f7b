"""Fit the final models and write the lists that are served.

    python -m jobs.train --output output      # reads output/ingest and output/segments

First the last ``--validation-days`` before the as-of date (default: a quarter
of the history, at most 90 days) serve as a validation window: ALS settings are
tuned per segment within ``--tune-budget`` seconds, every candidate source is
scored, and the routes (which source serves each segment's list) and the
item-to-item source are chosen; with too little history for a window, each list
gets a fixed route that needs no tuning (``routing.routes.UNVALIDATED``). Then the models
those routes need are refitted on everything before the as-of date and the
lists are written, atomically, to ``<output>/recommendations``:

    recommendations/  customer_id, list, rank, item_id, score, source
                      (lists discover, for_you and buy_again for every known customer)
    trending/         country (null: everyone), rank, item_id, score, source: what
                      customers unknown to the models are served
    similar_items/    item_id, rank, similar_item_id, score: "also bought", every item
    model/            the routed recommender that made them (routing.model; load with RoutedRecommender.load)
    manifest.json     routes, tuned ALS settings with every trial, validation scores

Routes change slowly while validation is most of this stage's time on small
inputs. ``--reuse-routes DAYS`` skips it when the last run written under
``--output`` chose its routes at most DAYS before this as-of date, under the same
settings; otherwise it validates as usual and says why. A daily refit can then
validate once a week: ``--reuse-routes 6``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time

from jobs import cli, layout, storage
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session
from cf.base import in_parallel
from cf.interactions import RecommendationError
from cf.tuning import ALL_SEGMENTS, ALSSettings, TuningConfig
from routing import serving
from routing.model import RoutedRecommender
from routing.routes import RoutingConfig, describe_routes
from routing.validation import validate, validation_window
from segmentation import columns as C
from segmentation.windows import read_history

STAGE = layout.RECOMMENDATIONS


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    reuse_routes_days: int | None = None  # reuse the last run's routes chosen at most this many days before; None: always validate

    def __post_init__(self):
        if self.reuse_routes_days is not None and self.reuse_routes_days < 0:
            raise RecommendationError(f"--reuse-routes (train.reuse_routes_days) must be 0 or more days, got {self.reuse_routes_days}")


def choice_settings(routing_config: RoutingConfig, tuning_config: TuningConfig, clv_config, segment_config) -> dict:
    """Every setting that decides which routes win, as a manifest records them (tuples as lists)."""
    return json.loads(json.dumps({"routing": dataclasses.asdict(routing_config), "tuning": dataclasses.asdict(tuning_config),
                                  "clv": dataclasses.asdict(clv_config), "segments": dataclasses.asdict(segment_config)}))


def last_manifest(spark, output_uri: str) -> dict | None:
    """The manifest of the recommendations last written under ``output_uri``, if any."""
    files = storage.FileSystem(spark)
    stage = layout.stage(output_uri, STAGE)
    storage.recover(files, stage)
    path = storage.join(stage, "manifest.json")
    return storage.read_json(spark, path) if files.exists(path) else None


def reusable_choice(earlier: dict | None, *, as_of: dt.date, max_age_days: int, settings: dict) -> tuple[dict | None, str]:
    """What validation chose for the run whose manifest is ``earlier``, in ``validate``'s shape, if it may serve
    a run as of ``as_of`` under ``settings`` (see ``choice_settings``); None if not. The reason, either way.
    """
    if earlier is None:
        return None, "no earlier run in this output"
    if "routes_chosen_as_of" not in earlier:
        return None, "the last run's manifest does not say when its routes were chosen (written before --reuse-routes existed)"
    chosen_as_of = dt.date.fromisoformat(earlier["routes_chosen_as_of"])
    age = (as_of - chosen_as_of).days
    if age < 0:
        return None, f"the last run's routes were chosen as of {chosen_as_of}, after {as_of}"
    if age > max_age_days:
        return None, f"the last run's routes were chosen {age} days before {as_of}, more than {max_age_days}"
    missing = object()
    changed = [f"{section}.{key}" for section, values in settings.items() for key, value in values.items()
               if earlier["settings"].get(section, {}).get(key, missing) != value]
    if changed:
        return None, f"settings changed since the last run's routes were chosen: {', '.join(changed)}"
    chosen = {
        "routes": earlier["routes"],
        "als_settings": {name: ALSSettings(**values) for name, values in earlier["als_settings"].items()},
        "similar_items_source": earlier["similar_items_source"],
        "window": {**earlier["validation"], "tuning": earlier["tuning"]},
        "chosen_as_of": chosen_as_of,
    }
    return chosen, f"routes chosen as of {chosen_as_of}, {age} days before"


def _segments_as_of(spark, output_uri: str, as_of: dt.date):
    stage = layout.open_stage(spark, output_uri, layout.SEGMENTS)
    summary = storage.read_json(spark, storage.join(stage, "summary.json"))
    if summary["as_of"] != as_of.isoformat():
        raise RecommendationError(f"the segments were computed as of {summary['as_of']}, not {as_of}: run the segments stage with the same --as-of")
    return spark.read.parquet(storage.join(stage, "customers")).select(C.CUSTOMER_ID, C.SEGMENT)


def run_train(spark, output_uri: str, *, as_of: dt.date | None, routing_config: RoutingConfig, tuning_config: TuningConfig,
              clv_config, segment_config, config: TrainConfig = TrainConfig(), echo=print) -> dict:
    started = time.monotonic()
    purchases, returns = layout.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    as_of = history.as_of
    segments = _segments_as_of(spark, output_uri, as_of)  # checked before the long validation, cached after it
    settings = choice_settings(routing_config, tuning_config, clv_config, segment_config)
    chosen, reuse = None, None
    if config.reuse_routes_days is not None:
        chosen, reason = reusable_choice(last_manifest(spark, output_uri), as_of=as_of, max_age_days=config.reuse_routes_days,
                                         settings=settings)
        reuse = {"max_age_days": config.reuse_routes_days, "reused": chosen is not None, "reason": reason}
        echo(f"  validation: skipped, the last run's {reason}" if chosen else f"  validation: not reusing routes: {reason}")
    if chosen is None:
        window = validation_window(history, routing_config, end=as_of)
        echo(f"  validation: {window.describe()}" if window.skipped else f"  validation: tune ALS and choose routes on the {window.describe()}")
        chosen = validate(purchases, returns, window=window, config=routing_config, tuning=tuning_config,
                          clv_config=clv_config, segment_config=segment_config, echo=echo)
    validated = time.monotonic()
    echo(f"  final: fit on everything before {as_of} and write the lists")
    routed = RoutedRecommender(routes=chosen["routes"], als_settings=chosen["als_settings"], similar_items_source=chosen["similar_items_source"],
                               as_of=as_of.isoformat(), config=routing_config, echo=echo).fit(purchases, segments.cache())
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
            "als_settings": {name: dataclasses.asdict(values) for name, values in chosen["als_settings"].items()},
            "tuning": chosen["window"]["tuning"],
            "validation": {key: value for key, value in chosen["window"].items() if key != "tuning"},
            "settings": settings,
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


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reuse-routes", type=int, metavar="DAYS",
                        help="skip validation when the last run under --output chose its routes at most DAYS before this as-of date")


def train_config(args: argparse.Namespace, settings: dict) -> TrainConfig:
    return build(TrainConfig, settings.get("train"), {"reuse_routes_days": vars(args).get("reuse_routes")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest and <output>/segments)")
    cli.add_recommendation_arguments(parser)
    add_train_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    routing_config, tuning_config = cli.recommendation_configs(args, settings)
    config = train_config(args, settings)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-train"}, settings.get("spark"), {"master": args.master}))
    layout.fit_to_transactions(spark, args.output)
    clv_config, segment_config, _ = cli.segment_configs(args, settings)
    manifest = run_train(spark, args.output, as_of=args.as_of, routing_config=routing_config, tuning_config=tuning_config,
                         clv_config=clv_config, segment_config=segment_config, config=config)
    print(format_manifest(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
