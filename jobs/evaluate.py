"""Evaluate every recommender on a temporal hold-out, and choose routes on a validation window.

    python -m jobs.evaluate --output output          # reads output/ingest, writes output/evaluation

Test window: the last ``--test-days`` (92) days before the as-of date; training
is everything before it. Routes are chosen on a validation window carved from
the end of the training period (``--validation-days``, 90), with models fitted
on what came before it, so nothing from the test window is seen when choosing.
Warm customers (bought before the cutoff) are scored on ``discover`` (new items
only) and ``for_you`` (all purchases); cold customers (first purchase after the
cutoff) on ``cold``. Every source and the routed system are reported, overall
and per value segment.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time

from jobs import cli, segment, storage
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session
from cf import evaluation, routing
from cf.interactions import RecommendationError
from cf.routing import ALL_SEGMENTS, RoutingConfig
from segmentation import columns as C
from segmentation import rfm
from segmentation.customers import segment_customers

STAGE = "evaluation"
RELEVANCE = {"discover": "new", "for_you": "all", "cold": "all"}


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    test_days: int = 92
    cutoff: dt.date | None = None  # first day of the test window; default: test_days before the as-of date


def evaluate_window(purchases, returns, *, cutoff: dt.date, end: dt.date, config: RoutingConfig, clv_config, segment_config,
                    routes: dict | None = None) -> dict:
    """Fit on purchases before ``cutoff``, score [cutoff, end): every source, and the routed system when ``routes`` is given."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    train, test = evaluation.split_by_time(purchases, cutoff=cutoff, end=end)
    segments = segment_customers(train, returns, as_of=cutoff, clv_config=clv_config, segment_config=segment_config).customers.select(
        C.CUSTOMER_ID, C.SEGMENT).cache()
    sources = routing.fit_sources(train, as_of=cutoff, segments=segments, config=config)
    known = train.select(C.CUSTOMER_ID).distinct()
    test_customers = test.groupBy(C.CUSTOMER_ID).agg(F.mode(C.COUNTRY, deterministic=True).alias(C.COUNTRY))
    groups = {
        "warm": test_customers.join(known, C.CUSTOMER_ID).cache(),
        "cold": test_customers.join(known, C.CUSTOMER_ID, "left_anti").cache(),
    }
    catalogue = train.select(C.ITEM_ID).distinct().count()
    results = {"cutoff": cutoff.isoformat(), "end": (end - dt.timedelta(days=1)).isoformat(),
               "warm_customers": groups["warm"].count(), "cold_customers": groups["cold"].count(),
               "catalogue": catalogue, "lists": {}}
    for list_name, mode in RELEVANCE.items():
        customers = groups["cold" if list_name == "cold" else "warm"]
        relevant = evaluation.relevant_items(test.join(customers.select(C.CUSTOMER_ID), C.CUSTOMER_ID), train, mode=mode).cache()
        by_segment = None if list_name == "cold" else segments
        lists = routing.candidate_lists(sources, customers, list_name, config)
        if routes is not None:
            lists["routed"] = routing.serve(lists, routes[list_name], customers, by_segment)
        results["lists"][list_name] = routing.score_lists(lists, relevant, k=config.k, catalogue_size=catalogue, segments=by_segment)
        routing.release({**lists, "relevant": relevant})
    # Models, segments and customer groups of this window are not needed any more.
    purchases.sparkSession.catalog.clearCache()
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def run_evaluation(spark, output_uri: str, *, as_of: dt.date | None, config: EvaluationConfig, routing_config: RoutingConfig,
                   clv_config, segment_config, echo=print) -> dict:
    purchases, returns = segment.read_transactions(spark, output_uri)
    end = as_of or rfm.default_as_of(purchases)
    cutoff = config.cutoff or end - dt.timedelta(days=config.test_days)
    if cutoff >= end:
        raise RecommendationError(f"the test window {cutoff}..{end - dt.timedelta(days=1)} is empty: the data ends before the cutoff")
    validation_cutoff = cutoff - dt.timedelta(days=routing_config.validation_days)
    common = {"config": routing_config, "clv_config": clv_config, "segment_config": segment_config}

    echo(f"validation: fit before {validation_cutoff}, score {validation_cutoff}..{cutoff - dt.timedelta(days=1)}")
    validation = evaluate_window(purchases, returns, cutoff=validation_cutoff, end=cutoff, **common)
    routes = {list_name: routing.choose_routes(rows) for list_name, rows in validation["lists"].items()}
    echo(f"test: fit before {cutoff}, score {cutoff}..{end - dt.timedelta(days=1)}")
    test = evaluate_window(purchases, returns, cutoff=cutoff, end=end, routes=routes, **common)
    result = {"k": routing_config.k, "validation": validation, "routes": routes, "test": test,
              "settings": dataclasses.asdict(routing_config)}
    with storage.atomic_output(spark, storage.join(output_uri, STAGE)) as staging:
        storage.write_json(spark, storage.join(staging, "evaluation.json"), result)
    return result


def format_results(result: dict) -> str:
    k = result["k"]
    test = result["test"]
    lines = [f"test window {test['cutoff']}..{test['end']}: {test['warm_customers']:,} warm and {test['cold_customers']:,} cold customers"]
    for list_name, rows in test["lists"].items():
        overall = sorted((row for row in rows if row[C.SEGMENT] == ALL_SEGMENTS), key=lambda row: -row["ndcg"])
        lines.append(f"\n{list_name} ({RELEVANCE[list_name]} items), NDCG@{k} on the test window:")
        lines.append(f"  {'source':<34} {'ndcg':>6} {'prec':>6} {'recall':>6} {'map':>6} {'mrr':>6} {'hit':>6} {'cover':>6}")
        for row in overall:
            lines.append(f"  {row['source']:<34} {row['ndcg']:>6.3f} {row['precision']:>6.3f} {row['recall']:>6.3f} "
                         f"{row['map']:>6.3f} {row['mrr']:>6.3f} {row['hit_rate']:>6.3f} {row['coverage']:>6.3f}")
        routes = result["routes"][list_name]
        lines.append("  routes chosen on validation: " + ", ".join(f"{segment} -> {route['source']}" for segment, route in routes.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    parser.add_argument("--cutoff", type=cli.as_of_date, help="first day of the test window (default: --test-days before the as-of date)")
    parser.add_argument("--test-days", type=int, help="test window length (default 92)")
    parser.add_argument("--validation-days", type=int, help="validation window length, before the cutoff (default 90)")
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    config = build(EvaluationConfig, settings.get("evaluation"), {"cutoff": args.cutoff, "test_days": args.test_days})
    routing_config = build(RoutingConfig, settings.get("routing"), {"validation_days": args.validation_days})
    spark = build_session(build(SparkSettings, {"app_name": "segrec-evaluate"}, settings.get("spark"), {"master": args.master}))
    clv_config, segment_config, _ = segment.segment_configs(args, settings)
    result = run_evaluation(spark, args.output, as_of=args.as_of, config=config, routing_config=routing_config,
                            clv_config=clv_config, segment_config=segment_config)
    print(format_results(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
