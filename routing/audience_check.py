"""Checking an affinity audience on the weeks after its as-of date: do its members buy the item more than their buckets do?

The audience is the top ``top`` customers the pipeline listed as likeliest to buy an item
(``RoutedRecommender.likely_buyers``). It is compared with the same number of random customers
of the same buckets: their expected rate is each bucket's rate weighted by how many members it
holds (the mean over every possible draw, so no sampling noise). The members' rate has a
Wilson interval and an exact binomial test against that expected rate (scipy).
"""

from __future__ import annotations

import datetime as dt

from segmentation import columns as C


def check_affinity(affinity, customers, purchases, *, as_of: dt.date, days: int, top: int, item: str | None = None) -> dict:
    """``affinity``: kind, key, rank, customer_id; ``customers``: customer_id, segment (as of ``as_of``); ``purchases``: clean
    purchase rows, those in [as_of, as_of + days) are the test. ``item``: default, the listed item most bought before ``as_of``."""
    from pyspark.sql import functions as F
    from scipy import stats
    from statsmodels.stats.proportion import proportion_confint

    listed = affinity.where((F.col("kind") == "item") & (F.col(C.RANK) <= top))
    before = purchases.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp"))
    if item is None:
        popular = (before.join(listed.select(F.col("key").alias(C.ITEM_ID)).distinct(), C.ITEM_ID).groupBy(C.ITEM_ID)
                   .agg(F.count_distinct(C.CUSTOMER_ID).alias("buyers")).orderBy(F.desc("buyers"), C.ITEM_ID).first())
        if popular is None:
            raise ValueError("the output lists no likely buyers: its recommendations stage ran without ALS (routing.models)")
        item = popular[C.ITEM_ID]
    end = as_of + dt.timedelta(days=days)
    window = purchases.where((F.col(C.TIMESTAMP) >= F.lit(as_of).cast("timestamp")) & (F.col(C.TIMESTAMP) < F.lit(end).cast("timestamp")))
    buyers = window.where(F.col(C.ITEM_ID) == item).select(C.CUSTOMER_ID).distinct().withColumn("bought", F.lit(1))
    members = listed.where(F.col("key") == item).select(C.CUSTOMER_ID).withColumn("member", F.lit(1))
    per_segment = (customers.select(C.CUSTOMER_ID, C.SEGMENT).join(buyers, C.CUSTOMER_ID, "left").join(members, C.CUSTOMER_ID, "left")
                   .groupBy(C.SEGMENT).agg(F.count(F.lit(1)).alias("customers"), F.sum(F.coalesce("bought", F.lit(0))).alias("buyers"),
                                           F.sum(F.coalesce("member", F.lit(0))).alias("members"),
                                           F.sum(F.coalesce(F.col("member") * F.col("bought"), F.lit(0))).alias("member_buyers"))
                   .orderBy(C.SEGMENT).collect())  # one row per bucket
    size = sum(row["members"] for row in per_segment)
    if size == 0:
        raise ValueError(f"no customer is listed as a likely buyer of item {item}")
    hits = sum(row["member_buyers"] for row in per_segment)
    random_rate = sum(row["members"] * row["buyers"] / row["customers"] for row in per_segment) / size
    low, high = proportion_confint(hits, size, alpha=0.05, method="wilson")
    return {
        "item": item, "as_of": as_of.isoformat(), "end": (end - dt.timedelta(days=1)).isoformat(), "members": size,
        "members_buying": hits, "members_rate": hits / size, "members_rate_ci95": [float(low), float(high)],
        "random_same_buckets_rate": random_rate, "lift": (hits / size) / random_rate if random_rate > 0 else None,
        "p_value": float(stats.binomtest(hits, size, random_rate, alternative="greater").pvalue) if 0 < random_rate < 1 else None,
        "by_segment": {row[C.SEGMENT]: {"members": row["members"], "members_buying": row["member_buyers"], "customers": row["customers"],
                                        "buyers": row["buyers"]} for row in per_segment},
    }
