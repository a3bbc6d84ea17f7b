"""Temporal split and ranking metrics, computed in Spark.

A customer's relevant items are the distinct items they bought in the test
window ("all"), or only those they had not bought before the cutoff ("new").
Metrics are averaged over every customer with at least one relevant item; a
customer the recommender gave nothing scores zero. Ranks start at 1.

    precision@k  hits in the top k / k
    recall@k     hits in the top k / relevant items
    ndcg@k       sum of 1/log2(rank+1) over hits / the same for a perfect list
    map@k        mean over hits of precision at the hit's rank, / min(relevant, k)
    mrr          1 / rank of the first hit in the top k (0 without one)
    hit_rate     share of customers with at least one hit
    coverage     distinct items recommended in any top k / items in the catalogue

Beside the means, ``compare_lists`` can give each list's paired difference from a
baseline list on the same customers (mean and standard error: what routing decides
with), and 95% percentile-bootstrap intervals of every per-customer metric. The
bootstrap is a Poisson one (Chamandy et al. 2012): each replicate weighs every
customer by a Poisson(1) count drawn from a hash of their id, so it runs as one
Spark aggregation at any size and is the same on every run.

``tests/test_evaluation.py`` checks every metric against a plain pandas version.
"""

from __future__ import annotations

import datetime as dt

from cf.interactions import RecommendationError
from segmentation import columns as C

RELEVANCE_MODES = ("all", "new")
METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate", "coverage")
PER_CUSTOMER = tuple(name for name in METRICS if name != "coverage")  # coverage is the catalogue's: it has no interval
BOOTSTRAP_REPLICATES = 200
# Poisson(1)'s cumulative distribution at 0..6: a uniform draw above k of them is a weight of k.
POISSON_CDF = (0.3678794, 0.7357589, 0.9196986, 0.9810118, 0.9963402, 0.9994058, 0.9999168)


def split_by_time(purchases, *, cutoff: dt.date, end: dt.date | None = None):
    """(train, test): purchases before ``cutoff``, and from ``cutoff`` until ``end`` (exclusive)."""
    from pyspark.sql import functions as F

    at_cutoff = F.lit(cutoff).cast("timestamp")
    train = purchases.where(F.col(C.TIMESTAMP) < at_cutoff)
    test = purchases.where(F.col(C.TIMESTAMP) >= at_cutoff)
    if end is not None:
        if end <= cutoff:
            raise RecommendationError(f"the test window {cutoff}..{end} is empty")
        test = test.where(F.col(C.TIMESTAMP) < F.lit(end).cast("timestamp"))
    return train, test


def relevant_items(test, train, *, mode: str = "all"):
    """customer_id, item_id: what each test customer bought in the test window (only new items with mode="new")."""
    if mode not in RELEVANCE_MODES:
        raise RecommendationError(f"relevance mode must be one of {', '.join(RELEVANCE_MODES)}, got '{mode}'")
    bought = test.select(C.CUSTOMER_ID, C.ITEM_ID).distinct()
    if mode == "new":
        bought = bought.join(train.select(C.CUSTOMER_ID, C.ITEM_ID).distinct(), [C.CUSTOMER_ID, C.ITEM_ID], "left_anti")
    return bought


def _check_columns(frame, required: tuple[str, ...], what: str) -> None:
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise RecommendationError(f"{what} lack column(s) {', '.join(missing)} (have: {', '.join(frame.columns)})")


def _check_arguments(recommendation_lists, relevant, k: int) -> None:
    if k < 1:
        raise RecommendationError(f"k must be at least 1, got {k}")
    for recommendations in recommendation_lists:
        _check_columns(recommendations, (C.CUSTOMER_ID, C.ITEM_ID, C.RANK), "recommendations")
    _check_columns(relevant, (C.CUSTOMER_ID, C.ITEM_ID), "relevant items")


def per_customer_metrics(recommendations, relevant, *, k: int = 10):
    """One row per customer with relevant items: hits and each per-customer metric at ``k``."""
    _check_arguments([recommendations], relevant, k)
    return _per_customer_and_list(_tagged({"": recommendations}, k), relevant, [""], k=k).drop(C.SOURCE)


def ranking_metrics(recommendations, relevant, *, k: int = 10, catalogue_size: int, by=None) -> list[dict]:
    """Averages of the per-customer metrics: one row overall, plus one per group when ``by`` is given.

    ``by``: customer_id and one group column (a segment, say). The overall row has
    the group column set to None; all rows come from a single aggregation (rollup).
    """
    rows = compare_lists({"": recommendations}, relevant, k=k, catalogue_size=catalogue_size, by=by)
    return [{name: value for name, value in row.items() if name != C.SOURCE} for row in rows]


def compare_lists(lists: dict, relevant, *, k: int = 10, catalogue_size: int, by=None, baseline: str | None = None,
                  intervals: bool = False) -> list[dict]:
    """``ranking_metrics`` of every list in ``lists`` (name -> recommendations for the same customers), each row with its
    ``source`` name: one Spark job for all of them, where scoring them one by one costs a job (and its fixed overhead) each.

    ``baseline``: the name of a list in ``lists``; each row then has ``ndcg_vs_baseline`` and ``ndcg_vs_baseline_se``,
    the mean and standard error of its customers' NDCG minus the baseline's. ``intervals``: each per-customer metric
    gets ``{metric}_low`` and ``{metric}_high``, its 95% bootstrap interval (see the module).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    _check_arguments(lists.values(), relevant, k)
    top = _tagged(lists, k)
    per_customer = _per_customer_and_list(top, relevant, list(lists), k=k)
    groups = []
    if by is not None:
        groups = [name for name in by.columns if name != C.CUSTOMER_ID]
        if len(groups) != 1:
            raise RecommendationError(f"group customers by exactly one column besides customer_id, got {groups}")
        # A customer missing from ``by`` is counted in a group of their own, never in the overall row's None.
        per_customer = per_customer.join(by, C.CUSTOMER_ID, "left").withColumn(groups[0], F.coalesce(F.col(groups[0]).cast("string"), F.lit("none")))
    paired = []
    if baseline is not None:
        if baseline not in lists:
            raise RecommendationError(f"the baseline '{baseline}' is not one of the lists compared ({', '.join(lists)})")
        base = per_customer.where(F.col(C.SOURCE) == baseline).select(C.CUSTOMER_ID, F.col("ndcg").alias("_base"))
        per_customer = per_customer.join(base, C.CUSTOMER_ID, "left").withColumn("_difference", F.col("ndcg") - F.col("_base"))
        paired = [F.avg(only_first_of("_difference")).alias("ndcg_vs_baseline"),
                  (F.stddev_samp(only_first_of("_difference")) / F.sqrt(F.sum(F.col("_first").cast("int")))).alias("ndcg_vs_baseline_se")]
    # Each row carries its customer's metrics and one recommended item (or none), so coverage
    # and the averages come out of one aggregation; metrics are averaged over customers only once.
    first_of_customer = F.row_number().over(Window.partitionBy(C.SOURCE, C.CUSTOMER_ID).orderBy(F.col(C.ITEM_ID).asc_nulls_last()))
    with_items = per_customer.join(top.drop(C.RANK), [C.SOURCE, C.CUSTOMER_ID], "left").withColumn("_first", first_of_customer == 1)
    aggregated = with_items.rollup(C.SOURCE, *groups).agg(
        F.sum(F.col("_first").cast("int")).alias("customers"),
        *(F.avg(only_first_of(name)).alias(name) for name in PER_CUSTOMER),
        (F.count_distinct(C.ITEM_ID) / float(catalogue_size)).alias("coverage"),
        *paired,
    ).where(F.col(C.SOURCE).isNotNull())  # the rollup's grand total mixes the lists
    # In the order of ``lists``, each list's overall row first: route choices break ties by this order.
    position = {name: i for i, name in enumerate(lists)}
    group = groups[0] if groups else None
    rows = [row.asDict() for row in aggregated.collect()]
    if intervals:
        bounds = bootstrap_intervals(per_customer, [C.SOURCE, *groups])
        rows = [{**row, **bounds.get((row[C.SOURCE], row.get(group)) if group else (row[C.SOURCE],), {})} for row in rows]
    return sorted(rows, key=lambda row: (position[row[C.SOURCE]], row.get(group) is not None, row.get(group) or ""))


def only_first_of(name: str):
    """``name`` on a customer's first row only (``_first``): the rows of a customer repeat their metrics once per item."""
    from pyspark.sql import functions as F

    return F.when(F.col("_first"), F.col(name))


def poisson_weight(key: str, replicate: str, seed: int = 0):
    """A Poisson(1) count per (``key``, ``replicate``) row, drawn from a hash of both: the same on every run."""
    from pyspark.sql import functions as F

    uniform = F.xxhash64(F.col(key), F.col(replicate), F.lit(seed)).bitwiseAND(F.lit(0xFFFFFFFF)) / float(2 ** 32)
    return sum((F.when(uniform > threshold, 1).otherwise(0) for threshold in POISSON_CDF), F.lit(0))


def bootstrap_intervals(per_customer, groups: list[str], *, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> dict:
    """(group values...) -> {metric_low, metric_high}: 95% Poisson-bootstrap intervals of the mean of each per-customer
    metric, per group and, when there is a second group column, over all its values too (None, as the rollup's rows)."""
    from pyspark.sql import functions as F

    spark = per_customer.sparkSession
    customers = per_customer.select(C.CUSTOMER_ID, *groups, *PER_CUSTOMER).distinct()
    if len(groups) > 1:  # every customer once more in the overall row of their list
        customers = customers.unionByName(customers.withColumn(groups[1], F.lit(None).cast("string")))
    draws = spark.range(replicates).select(F.col("id").alias("_replicate"))
    weighted = customers.crossJoin(F.broadcast(draws)).withColumn("_weight", poisson_weight(C.CUSTOMER_ID, "_replicate", seed)).where(
        F.col("_weight") > 0)
    means = weighted.groupBy(*groups, "_replicate").agg(
        *((F.sum(F.col(name) * F.col("_weight")) / F.sum("_weight")).alias(name) for name in PER_CUSTOMER))
    bounds = means.groupBy(*groups).agg(
        *(F.percentile(name, F.array(F.lit(0.025), F.lit(0.975))).alias(name) for name in PER_CUSTOMER)).collect()
    return {tuple(row[group] for group in groups): {f"{name}_{end}": row[name][position]
                                                     for name in PER_CUSTOMER for position, end in enumerate(("low", "high"))}
            for row in bounds}


def _tagged(lists: dict, k: int):
    """The top ``k`` of every list, in one frame with the list's name as ``source``."""
    from functools import reduce

    from pyspark.sql import functions as F

    return reduce(lambda a, b: a.unionByName(b), (
        recommendations.where(F.col(C.RANK) <= k).select(F.lit(name).alias(C.SOURCE), C.CUSTOMER_ID, C.ITEM_ID, C.RANK)
        for name, recommendations in lists.items()
    ))


def _per_customer_and_list(top, relevant, names: list[str], *, k: int):
    """One row per list and customer with relevant items (``top``: source, customer_id, item_id, rank)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sizes = relevant.groupBy(C.CUSTOMER_ID).agg(F.count(F.lit(1)).alias("_relevant"))
    # Every list is scored on every customer with relevant items, including those it recommended nothing.
    names_frame = relevant.sparkSession.createDataFrame([(name,) for name in names], f"{C.SOURCE} string")
    sizes = sizes.crossJoin(F.broadcast(names_frame))
    hits = top.join(relevant.select(C.CUSTOMER_ID, C.ITEM_ID).withColumn("_hit", F.lit(1)), [C.CUSTOMER_ID, C.ITEM_ID])
    # Precision at each hit's rank = hits so far / rank (ranks are unique per customer and list).
    hits_so_far = F.count(F.lit(1)).over(Window.partitionBy(C.SOURCE, C.CUSTOMER_ID).orderBy(C.RANK))
    per_hit = hits.withColumn("_precision_here", hits_so_far / F.col(C.RANK)).groupBy(C.SOURCE, C.CUSTOMER_ID).agg(
        F.count(F.lit(1)).alias("hits"),
        F.sum(1.0 / F.log2(F.col(C.RANK) + 1)).alias("_dcg"),
        F.sum("_precision_here").alias("_precision_sum"),
        F.min(C.RANK).alias("_first_hit"),
    )
    ideal = F.aggregate(
        F.sequence(F.lit(1), F.least(F.col("_relevant"), F.lit(k))), F.lit(0.0),
        lambda total, position: total + 1.0 / F.log2(position + 1),
    )
    joined = sizes.join(per_hit, [C.SOURCE, C.CUSTOMER_ID], "left").fillna({"hits": 0, "_dcg": 0.0, "_precision_sum": 0.0})
    return joined.select(
        C.SOURCE,
        C.CUSTOMER_ID,
        F.col("_relevant").alias("relevant"),
        "hits",
        (F.col("hits") / k).alias("precision"),
        (F.col("hits") / F.col("_relevant")).alias("recall"),
        (F.col("_dcg") / ideal).alias("ndcg"),
        (F.col("_precision_sum") / F.least(F.col("_relevant"), F.lit(k))).alias("map"),
        F.coalesce(1.0 / F.col("_first_hit"), F.lit(0.0)).alias("mrr"),
        (F.col("hits") > 0).cast("double").alias("hit_rate"),
    )
