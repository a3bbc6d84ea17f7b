"""Where Spark ALS spends its time on this data: a benchmark, not a test.

    python -m devtools.bench_als --output output      # reads output/ingest, writes output/bench/als.json

On the interactions before the as-of date it times, each after a warm-up run:
the same ALS fit with Spark's default 10 blocks and with blocks sized to the
cores (what segrec uses); a fit on a 1% sample (the fixed cost any fit pays);
top-10 lists for every customer through ``recommendForAllUsers``; top-10 lists
of items each customer never bought, the usual way (``recommendForUserSubset``
over-fetching, then dropping bought items) and segrec's way (``ALSRecommender.
recommend``: every item scored against a broadcast item matrix, bought items
masked); and "also bought" lists for every item from the factors.
"""

from __future__ import annotations

import argparse
import sys
import time

from runtime import cli, layout, storage
from runtime.config import build, load_config_file
from runtime.spark import SparkSettings, build_session
from cf.als import ALSRecommender
from cf.base import SEEN_ALLOWANCE, drop_seen, top_n
from cf.interactions import interactions
from segmentation import columns as C
from segmentation import rfm

STAGE = "bench"


def timed(action) -> tuple[float, object]:
    started = time.monotonic()
    result = action()
    return round(time.monotonic() - started, 2), result


def over_fetched(model: ALSRecommender, customers, n: int):
    """The usual Spark way to get n unseen items: ask for n + an allowance, explode, drop what was bought, re-rank."""
    from pyspark.sql import functions as F

    wanted = model._customers.encode(customers).select(C.CUSTOMER_INDEX)
    raw = model._model.recommendForUserSubset(wanted, n + SEEN_ALLOWANCE)
    exploded = raw.select(C.CUSTOMER_INDEX, F.explode("recommendations").alias("_r")).select(
        C.CUSTOMER_INDEX, F.col(f"_r.{C.ITEM_INDEX}").alias(C.ITEM_INDEX), F.col("_r.rating").cast("double").alias(C.SCORE))
    candidates = model._items.decode(model._customers.decode(exploded))
    return top_n(drop_seen(candidates, model._seen), n)


def run_bench(spark, output_uri: str, *, as_of=None, rank: int = 32, max_iter: int = 10, echo=print) -> dict:
    purchases, _ = layout.read_transactions(spark, output_uri)
    as_of = as_of or rfm.default_as_of(purchases)
    pairs = interactions(purchases, as_of=as_of).cache()
    seconds, count = timed(pairs.count)
    customers = pairs.select(C.CUSTOMER_ID).distinct()
    items = pairs.select(C.ITEM_ID).distinct()
    rows = [{"step": "interactions (cached)", "seconds": seconds, "rows": count}]
    cores = spark.sparkContext.defaultParallelism

    def fit(frame, blocks):
        model = ALSRecommender(rank=rank, max_iter=max_iter, num_blocks=blocks).fit(frame)
        model.known_customers().count()  # forces the id mapping and the factors
        return model

    fit(pairs.sample(fraction=0.01, seed=1), cores)  # warm-up: JIT, Python workers
    for label, frame, blocks in (("ALS fit, 1% sample (fixed cost)", pairs.sample(fraction=0.01, seed=1), cores),
                                 ("ALS fit, 10 blocks (Spark default)", pairs, 10),
                                 (f"ALS fit, {cores} blocks (segrec: one per core)", pairs, cores)):
        seconds, model = timed(lambda: fit(frame, blocks))
        rows.append({"step": label, "seconds": seconds, "rows": frame.count()})
        echo(f"  {label}: {seconds:.1f}s")
    all_users = model._model.recommendForAllUsers(10)
    seconds, count = timed(lambda: all_users.selectExpr("explode(recommendations)").count())
    rows.append({"step": "top-10 for all customers, recommendForAllUsers (bought items not removed)", "seconds": seconds, "rows": count})
    seconds, count = timed(lambda: over_fetched(model, customers, 10).count())
    rows.append({"step": f"top-10 new items per customer, recommendForUserSubset over-fetching {SEEN_ALLOWANCE} then dropping bought items",
                 "seconds": seconds, "rows": count})
    seconds, count = timed(lambda: model.recommend(customers, 10, exclude_seen=True).count())
    rows.append({"step": "top-10 new items per customer, segrec: factors against the broadcast item matrix, bought items masked",
                 "seconds": seconds, "rows": count})
    seconds, count = timed(lambda: model.similar_items(items, 20).count())
    rows.append({"step": "20 also-bought items for every item (factor cosine)", "seconds": seconds, "rows": count})
    for row in rows[-4:]:
        echo(f"  {row['step']}: {row['seconds']:.1f}s")
    result = {"as_of": as_of.isoformat(), "rank": rank, "max_iter": max_iter, "cores": cores,
              "customers": customers.count(), "items": items.count(), "steps": rows}
    with storage.atomic_output(spark, storage.join(output_uri, STAGE)) as staging:
        storage.write_json(spark, storage.join(staging, "als.json"), result)
    pairs.unpersist()
    return result


def format_bench(result: dict) -> str:
    lines = [f"{result['customers']:,} customers x {result['items']:,} items, rank {result['rank']}, "
             f"{result['max_iter']} iterations, {result['cores']} cores", "", "| step | seconds | rows |", "|---|---:|---:|"]
    lines += [f"| {row['step']} | {row['seconds']:.1f} | {row['rows']:,} |" for row in result["steps"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--max-iter", type=int, default=10)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-bench-als"}, settings.get("spark"), {"master": args.master}))
    print(format_bench(run_bench(spark, args.output, as_of=args.as_of, rank=args.rank, max_iter=args.max_iter)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
