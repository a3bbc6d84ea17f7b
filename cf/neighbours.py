"""Recommenders built from who bought what: buy-again and item co-occurrence.

``BuyAgainRecommender`` ranks each customer's own past items by their
(time-decayed) strength: in retail most of next quarter's purchases are
repeats, so this list matters. ``CooccurrenceRecommender`` is item-kNN: items
are similar when the same customers buy them (cosine over customer sets), and a
customer's score for an item sums its similarity to what they bought.
"""

from __future__ import annotations

from cf.base import Recommender, top_n
from segmentation import columns as C


class BuyAgainRecommender(Recommender):
    """Each customer's staples; with ``exclude_seen`` there is nothing left to recommend, by design."""

    name = "buy_again"

    def __init__(self):
        super().__init__()
        self._interactions = None  # customer_id, item_id, strength, last_purchase

    def fit(self, interactions):
        self._remember(interactions)
        self._interactions = interactions.select(C.CUSTOMER_ID, C.ITEM_ID, C.STRENGTH, C.LAST_PURCHASE).cache()
        return self

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        from pyspark.sql import functions as F

        self._ready(n)
        candidates = self._interactions.join(customers.select(C.CUSTOMER_ID).distinct(), C.CUSTOMER_ID).select(
            C.CUSTOMER_ID, C.ITEM_ID, F.col(C.STRENGTH).alias(C.SCORE))
        return self._ranked(candidates, n, exclude_seen)

    def similar_items(self, items, n: int = 10):
        """Co-occurrence on the same interactions, computed only when asked for (it costs far more than the lists)."""
        self._check_fitted()
        return CooccurrenceRecommender().fit(self._interactions).similar_items(items, n)

    def _save_state(self, path: str) -> None:
        self._interactions.write.mode("overwrite").parquet(f"{path}/interactions")

    def _load_state(self, spark, path: str) -> None:
        self._interactions = spark.read.parquet(f"{path}/interactions")


class CooccurrenceRecommender(Recommender):
    """Item-kNN on co-purchases: cosine similarity of the sets of customers who bought each item."""

    name = "cooccurrence"

    def __init__(self, *, neighbours: int = 50, min_common: int = 2, max_items_per_customer: int = 50):
        super().__init__()
        self.neighbours = neighbours
        self.min_common = min_common
        # Pairs grow with the square of a basket: a wholesaler with 2,000 items alone makes
        # 4 million. Their strongest, most recent items carry the signal, both for the
        # similarities and for scoring the customer's candidates.
        self.max_items_per_customer = max_items_per_customer
        self._history = None  # customer_id, item_id: each customer's strongest items, at most max_items_per_customer
        self._similar = None  # item_id, similar_item_id, score (top ``neighbours`` per item)

    def settings(self) -> dict:
        return {"neighbours": self.neighbours, "min_common": self.min_common, "max_items_per_customer": self.max_items_per_customer}

    def fit(self, interactions):
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        self._remember(interactions)
        recent_first = Window.partitionBy(C.CUSTOMER_ID).orderBy(F.desc(C.STRENGTH), F.desc(C.LAST_PURCHASE), C.ITEM_ID)
        pairs = self._history = (
            interactions.withColumn("_position", F.row_number().over(recent_first))
            .where(F.col("_position") <= self.max_items_per_customer).select(C.CUSTOMER_ID, C.ITEM_ID).cache()
        )
        buyers = pairs.groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("_buyers"))
        left = pairs.alias("l")
        right = pairs.select(C.CUSTOMER_ID, F.col(C.ITEM_ID).alias(C.SIMILAR_ITEM_ID))
        common = (
            left.join(right, C.CUSTOMER_ID).where(F.col(C.ITEM_ID) != F.col(C.SIMILAR_ITEM_ID))
            .groupBy(C.ITEM_ID, C.SIMILAR_ITEM_ID).agg(F.count(F.lit(1)).alias("_common"))
            .where(F.col("_common") >= self.min_common)
        )
        cosine = (
            common.join(buyers, C.ITEM_ID)
            .join(buyers.select(F.col(C.ITEM_ID).alias(C.SIMILAR_ITEM_ID), F.col("_buyers").alias("_other_buyers")), C.SIMILAR_ITEM_ID)
            .select(C.ITEM_ID, C.SIMILAR_ITEM_ID, (F.col("_common") / F.sqrt(F.col("_buyers") * F.col("_other_buyers"))).alias(C.SCORE))
        )
        self._similar = top_n(cosine, self.neighbours, key=C.ITEM_ID, item=C.SIMILAR_ITEM_ID).drop(C.RANK).cache()
        return self

    def similar_items(self, items, n: int = 10):
        self._ready(n)
        chosen = self._similar.join(items.select(C.ITEM_ID).distinct(), C.ITEM_ID)
        return top_n(chosen, n, key=C.ITEM_ID, item=C.SIMILAR_ITEM_ID)

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        from pyspark.sql import functions as F

        self._ready(n)
        history = self._history.join(customers.select(C.CUSTOMER_ID).distinct(), C.CUSTOMER_ID)
        candidates = (
            history.join(self._similar, C.ITEM_ID)
            .groupBy(C.CUSTOMER_ID, F.col(C.SIMILAR_ITEM_ID).alias(C.ITEM_ID)).agg(F.sum(C.SCORE).alias(C.SCORE))
        )
        return self._ranked(candidates, n, exclude_seen)

    def _save_state(self, path: str) -> None:
        self._similar.write.mode("overwrite").parquet(f"{path}/similar")
        self._history.write.mode("overwrite").parquet(f"{path}/history")

    def _load_state(self, spark, path: str) -> None:
        self._similar = spark.read.parquet(f"{path}/similar")
        self._history = spark.read.parquet(f"{path}/history")
