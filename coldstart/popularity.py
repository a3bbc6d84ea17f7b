"""Popularity and trending: what to show customers the personal models do not know.

``PopularityRecommender`` ranks items by how many distinct customers bought
them; ``TrendingRecommender`` by recent buyers (time-decayed) against the
item's longer-term level, so items on the rise come first. Both can rank
within a group (``by="country"`` or ``by="segment"``): a customer then gets
their group's list, or the overall list when their group is unknown. Their
``similar_items`` is the same list without the item itself, the baseline any
real "also bought" list must beat.
"""

from __future__ import annotations

import datetime as dt

from cf.base import Recommender, candidate_depth, top_n
from cf.interactions import RecommendationError
from segmentation import columns as C

ALL = "__all__"


class PopularityRecommender(Recommender):
    name = "popularity"

    def __init__(self, *, by: str | None = None):
        super().__init__()
        self.by = by
        self._scores = None  # group, item_id, score

    def settings(self) -> dict:
        return {"by": self.by}

    def _item_scores(self, interactions):
        from pyspark.sql import functions as F

        return interactions.groupBy(C.ITEM_ID).agg(F.count_distinct(C.CUSTOMER_ID).cast("double").alias(C.SCORE))

    def fit(self, interactions, customers=None):
        """``customers``: customer_id and the ``by`` column, when ranking within groups."""
        from pyspark.sql import functions as F

        self._remember(interactions)
        overall = self._item_scores(interactions).withColumn("group", F.lit(ALL))
        if self.by:
            if customers is None or self.by not in customers.columns:
                raise RecommendationError(f"{self.name} by {self.by} needs a table of customer_id and {self.by}")
            grouped = interactions.join(customers.select(C.CUSTOMER_ID, F.col(self.by).alias("group")), C.CUSTOMER_ID)
            per_group = self._grouped_scores(grouped)
            overall = overall.unionByName(per_group)
        self._scores = overall.cache()
        return self

    def _grouped_scores(self, grouped):
        from pyspark.sql import functions as F

        return grouped.groupBy("group", C.ITEM_ID).agg(F.count_distinct(C.CUSTOMER_ID).cast("double").alias(C.SCORE))

    def ranked(self, n: int, group: str = ALL):
        """The top ``n`` items of one group (or overall): rank, item_id, score."""
        from pyspark.sql import functions as F

        self._check_fitted()
        rows = self._scores.where(F.col("group") == group).withColumn("_key", F.lit(0))
        return top_n(rows, n, key="_key").drop("_key")

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        """Each customer gets their group's list (the overall one when their group has none).

        Without bought items, a customer's first ``n`` unseen items lie within the first
        ``n`` + (items of the list they bought) of it: only those candidates are made, where
        the whole list for everyone was ``candidate_depth`` rows per customer (25 million at
        the 10M-row validation) to join against every bought pair.
        """
        from pyspark.sql import functions as F

        self._ready(n)
        lists = top_n(self._scores, candidate_depth(n, exclude_seen), key="group")
        if self.by and self.by in customers.columns:
            known = lists.select(F.col("group").alias(self.by)).distinct().withColumn("_known", F.lit(True))
            chosen = customers.select(C.CUSTOMER_ID, self.by).distinct().join(known, self.by, "left").select(
                C.CUSTOMER_ID, F.when(F.col("_known"), F.col(self.by)).otherwise(F.lit(ALL)).alias("group")
            )
        else:
            chosen = customers.select(C.CUSTOMER_ID).distinct().withColumn("group", F.lit(ALL))
        if not exclude_seen:
            return chosen.join(lists, "group").select(C.CUSTOMER_ID, C.RANK, C.ITEM_ID, C.SCORE)
        listed = lists.select("group", C.ITEM_ID)
        bought = (
            self._seen.join(F.broadcast(listed.select(C.ITEM_ID).distinct()), C.ITEM_ID, "left_semi")
            .join(chosen, C.CUSTOMER_ID).join(F.broadcast(listed), ["group", C.ITEM_ID]).select(C.CUSTOMER_ID, C.ITEM_ID)
        )
        depth = chosen.join(bought.groupBy(C.CUSTOMER_ID).agg(F.count(F.lit(1)).alias("_bought")), C.CUSTOMER_ID, "left").select(
            C.CUSTOMER_ID, "group", (F.coalesce(F.col("_bought"), F.lit(0)) + n).alias("_depth"))
        candidates = depth.join(lists, "group").where(F.col(C.RANK) <= F.col("_depth")).join(bought, [C.CUSTOMER_ID, C.ITEM_ID], "left_anti")
        return top_n(candidates.select(C.CUSTOMER_ID, C.ITEM_ID, C.SCORE), n)

    def similar_items(self, items, n: int = 10):
        from pyspark.sql import functions as F

        self._ready(n)
        overall = top_n(self._scores.where(F.col("group") == ALL).withColumn("_key", F.lit(0)), n + 1, key="_key")
        pairs = items.select(C.ITEM_ID).distinct().crossJoin(
            overall.select(F.col(C.ITEM_ID).alias(C.SIMILAR_ITEM_ID), C.SCORE)
        ).where(F.col(C.ITEM_ID) != F.col(C.SIMILAR_ITEM_ID))
        return top_n(pairs, n, key=C.ITEM_ID, item=C.SIMILAR_ITEM_ID)

    def _save_state(self, path: str) -> None:
        self._scores.write.mode("overwrite").parquet(f"{path}/scores")

    def _load_state(self, spark, path: str) -> None:
        self._scores = spark.read.parquet(f"{path}/scores")


class TrendingRecommender(PopularityRecommender):
    """Items on the rise: time-decayed recent buyers against the item's long-run level.

    score = decayed buyers / (buyers per half-life over the baseline window + prior)

    The prior keeps an item with two buyers in a quiet year from outranking a
    best-seller that is also growing.
    """

    name = "trending"

    def __init__(self, *, by: str | None = None, as_of: str | None = None, half_life_days: float = 14.0,
                 baseline_days: int = 365, prior: float = 2.0):
        super().__init__(by=by)
        self.as_of = as_of
        self.half_life_days = half_life_days
        self.baseline_days = baseline_days
        self.prior = prior

    def settings(self) -> dict:
        return {"by": self.by, "as_of": self.as_of, "half_life_days": self.half_life_days,
                "baseline_days": self.baseline_days, "prior": self.prior}

    def fit(self, interactions, customers=None):
        if not self.as_of:
            raise RecommendationError("trending needs the as-of date its recency is measured from")
        if C.LAST_PURCHASE not in interactions.columns:
            raise RecommendationError("trending needs interactions with last_purchase")
        return super().fit(interactions, customers)

    def _trend(self, frame, keys):
        from pyspark.sql import functions as F

        as_of = F.lit(dt.date.fromisoformat(self.as_of)).cast("timestamp")
        age_days = (as_of.cast("long") - F.col(C.LAST_PURCHASE).cast("long")) / 86400.0
        recent = F.pow(F.lit(0.5), age_days / self.half_life_days)
        in_baseline = (age_days < self.baseline_days).cast("double")
        per_half_life = self.half_life_days / self.baseline_days
        return frame.groupBy(*keys).agg(
            (F.sum(recent) / (F.sum(in_baseline) * per_half_life + self.prior)).alias(C.SCORE)
        )

    def _item_scores(self, interactions):
        return self._trend(interactions, [C.ITEM_ID])

    def _grouped_scores(self, grouped):
        return self._trend(grouped, ["group", C.ITEM_ID])


class FirstBasketRecommender(PopularityRecommender):
    """What newcomers buy first: popularity among the first purchase days of the customers who first bought within
    ``days`` before ``as_of``. Customers the models do not know are newcomers, and a first basket is not an average one.

    It learns from purchase rows (customer_id, item_id, timestamp), not interactions.
    """

    name = "first_basket"

    def __init__(self, *, as_of: str | None = None, days: int = 90):
        super().__init__()
        self.as_of = as_of
        self.days = days

    def settings(self) -> dict:
        return {"as_of": self.as_of, "days": self.days}

    def fit(self, interactions, customers=None):
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        if not self.as_of:
            raise RecommendationError("first_basket needs the as-of date its newcomers are counted back from")
        if C.TIMESTAMP not in interactions.columns:
            raise RecommendationError("first_basket learns from purchase rows with a timestamp")
        as_of = dt.date.fromisoformat(self.as_of)
        days = interactions.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp")).select(
            C.CUSTOMER_ID, C.ITEM_ID, F.to_date(C.TIMESTAMP).alias("_day"))
        first = days.withColumn("_first", F.min("_day").over(Window.partitionBy(C.CUSTOMER_ID)))
        baskets = first.where((F.col("_day") == F.col("_first")) & (F.col("_first") >= F.lit(as_of - dt.timedelta(days=self.days))))
        super().fit(baskets.select(C.CUSTOMER_ID, C.ITEM_ID).distinct().withColumn(C.STRENGTH, F.lit(1.0)), customers)
        self._remember(days.select(C.CUSTOMER_ID, C.ITEM_ID).distinct().withColumn(C.STRENGTH, F.lit(1.0)))  # seen: every pair bought
        return self
