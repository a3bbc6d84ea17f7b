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

``tests/test_evaluation.py`` checks every metric against a plain pandas version.
"""

from __future__ import annotations

import datetime as dt

from cf.interactions import RecommendationError
from segmentation import columns as C

RELEVANCE_MODES = ("all", "new")
METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate", "coverage")


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


def compare_lists(lists: dict, relevant, *, k: int = 10, catalogue_size: int, by=None) -> list[dict]:
    """``ranking_metrics`` of every list in ``lists`` (name -> recommendations for the same customers), each row with its
    ``source`` name: one Spark job for all of them, where scoring them one by one costs a job (and its fixed overhead) each.
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
    # Each row carries its customer's metrics and one recommended item (or none), so coverage
    # and the averages come out of one aggregation; metrics are averaged over customers only once.
    first_of_customer = F.row_number().over(Window.partitionBy(C.SOURCE, C.CUSTOMER_ID).orderBy(F.col(C.ITEM_ID).asc_nulls_last()))
    with_items = per_customer.join(top.drop(C.RANK), [C.SOURCE, C.CUSTOMER_ID], "left").withColumn("_first", first_of_customer == 1)
    only_first = lambda name: F.when(F.col("_first"), F.col(name))  # noqa: E731
    aggregated = with_items.rollup(C.SOURCE, *groups).agg(
        F.sum(F.col("_first").cast("int")).alias("customers"),
        *(F.avg(only_first(name)).alias(name) for name in METRICS if name != "coverage"),
        (F.count_distinct(C.ITEM_ID) / float(catalogue_size)).alias("coverage"),
    ).where(F.col(C.SOURCE).isNotNull())  # the rollup's grand total mixes the lists
    # In the order of ``lists``, each list's overall row first: route choices break ties by this order.
    position = {name: i for i, name in enumerate(lists)}
    group = groups[0] if groups else None
    rows = [row.asDict() for row in aggregated.collect()]
    return sorted(rows, key=lambda row: (position[row[C.SOURCE]], row.get(group) is not None, row.get(group) or ""))


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
