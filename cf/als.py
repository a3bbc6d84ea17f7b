"""Implicit-feedback ALS (Spark ML), globally or one model per value segment.

``ALSRecommender`` wraps ``pyspark.ml.recommendation.ALS(implicitPrefs=True)``
with string ids mapped to integers through persisted ``IdMapping``s.
Recommendations use ``recommendForUserSubset`` (no customer x item cross join
of the caller's making), and "also bought" lists come from cosine similarity
of the item factors, computed on the executors in blocks against a broadcast
factor matrix.

``SegmentedALS`` trains one ALS per segment on that segment's customers and
serves each customer from their segment's model; customers of a segment too
small to train on, or unknown to their segment's model, fall back to a global
ALS trained on everyone.
"""

from __future__ import annotations

from cf.base import Recommender, candidate_depth, top_n
from cf.ids import IdMapping
from cf.interactions import RecommendationError
from segmentation import columns as C


class ALSRecommender(Recommender):
    name = "als"

    def __init__(self, *, rank: int = 32, reg_param: float = 0.1, alpha: float = 10.0, max_iter: int = 10,
                 seed: int = 42, num_blocks: int | None = None):
        super().__init__()
        self.rank, self.reg_param, self.alpha, self.max_iter, self.seed = rank, reg_param, alpha, max_iter, seed
        self.num_blocks = num_blocks
        self._model = None
        self._customers: IdMapping | None = None
        self._items: IdMapping | None = None

    def settings(self) -> dict:
        return {"rank": self.rank, "reg_param": self.reg_param, "alpha": self.alpha, "max_iter": self.max_iter,
                "seed": self.seed, "num_blocks": self.num_blocks}

    def fit(self, interactions):
        from pyspark.ml.recommendation import ALS

        self._remember(interactions)
        spark = interactions.sparkSession
        self._customers = IdMapping.build(interactions, C.CUSTOMER_ID, C.CUSTOMER_INDEX).cache_frame()
        self._items = IdMapping.build(interactions, C.ITEM_ID, C.ITEM_INDEX).cache_frame()
        encoded = self._items.encode(self._customers.encode(interactions)).select(C.CUSTOMER_INDEX, C.ITEM_INDEX, C.STRENGTH)
        # Blocks sized to the machine: more blocks than cores only adds shuffle overhead on small data.
        blocks = self.num_blocks or max(1, spark.sparkContext.defaultParallelism)
        als = ALS(
            rank=self.rank, regParam=self.reg_param, alpha=self.alpha, maxIter=self.max_iter, seed=self.seed,
            implicitPrefs=True, userCol=C.CUSTOMER_INDEX, itemCol=C.ITEM_INDEX, ratingCol=C.STRENGTH,
            numUserBlocks=blocks, numItemBlocks=blocks, coldStartStrategy="drop",
        )
        self._model = als.fit(encoded)
        return self

    def known_customers(self):
        self._check_fitted()
        return self._customers.frame.select(C.CUSTOMER_ID)

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        from pyspark.sql import functions as F

        self._ready(n)
        wanted = self._customers.encode(customers.select(C.CUSTOMER_ID).distinct()).select(C.CUSTOMER_INDEX)
        depth = candidate_depth(n, exclude_seen)
        raw = self._model.recommendForUserSubset(wanted, depth)
        exploded = raw.select(C.CUSTOMER_INDEX, F.explode("recommendations").alias("_rec")).select(
            C.CUSTOMER_INDEX, F.col(f"_rec.{C.ITEM_INDEX}").alias(C.ITEM_INDEX), F.col("_rec.rating").cast("double").alias(C.SCORE)
        )
        candidates = self._items.decode(self._customers.decode(exploded))
        return self._ranked(candidates, n, exclude_seen)

    def similar_items(self, items, n: int = 10):
        """Cosine similarity of item factors; each executor block scores its items against all of them."""
        import numpy as np
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

        self._ready(n)
        factors = self._model.itemFactors.select(F.col("id").alias(C.ITEM_INDEX), "features")
        matrix = factors.orderBy(C.ITEM_INDEX).toPandas()  # one row of `rank` floats per item: the catalogue, not the customers
        indexes = matrix[C.ITEM_INDEX].to_numpy()
        vectors = np.vstack(matrix["features"].to_numpy()) if len(matrix) else np.zeros((0, self.rank))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.where(norms == 0, 1, norms)
        shared = items.sparkSession.sparkContext.broadcast((indexes, unit))
        depth = min(n, max(len(indexes) - 1, 0))

        def score_blocks(batches):
            import pandas as pd

            all_indexes, all_unit = shared.value
            position = {index: i for i, index in enumerate(all_indexes)}
            for batch in batches:
                rows = [position[i] for i in batch[C.ITEM_INDEX] if i in position]
                if not rows or depth == 0:
                    continue
                similarity = all_unit[rows] @ all_unit.T
                similarity[np.arange(len(rows)), rows] = -np.inf  # never an item's own neighbour
                best = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth]
                yield pd.DataFrame({
                    C.ITEM_INDEX: np.repeat(all_indexes[rows], depth),
                    "_similar_index": all_indexes[best].ravel(),
                    C.SCORE: np.take_along_axis(similarity, best, axis=1).ravel(),
                })

        schema = StructType([StructField(C.ITEM_INDEX, IntegerType()), StructField("_similar_index", IntegerType()),
                             StructField(C.SCORE, DoubleType())])
        wanted = self._items.encode(items.select(C.ITEM_ID).distinct()).select(C.ITEM_INDEX)
        scored = wanted.mapInPandas(score_blocks, schema=schema)
        named = self._items.decode(scored)
        similar_names = self._items.frame.select(F.col(C.ITEM_ID).alias(C.SIMILAR_ITEM_ID), F.col(C.ITEM_INDEX).alias("_similar_index"))
        return top_n(named.join(similar_names, "_similar_index"), n, key=C.ITEM_ID, item=C.SIMILAR_ITEM_ID)

    def _save_state(self, path: str) -> None:
        self._model.write().overwrite().save(f"{path}/als")
        self._customers.save(f"{path}/customer_ids")
        self._items.save(f"{path}/item_ids")

    def _load_state(self, spark, path: str) -> None:
        from pyspark.ml.recommendation import ALSModel

        self._model = ALSModel.load(f"{path}/als")
        self._customers = IdMapping.load(spark, f"{path}/customer_ids", C.CUSTOMER_ID, C.CUSTOMER_INDEX)
        self._items = IdMapping.load(spark, f"{path}/item_ids", C.ITEM_ID, C.ITEM_INDEX)


class SegmentedALS(Recommender):
    """One ALS per value segment, with a global ALS for everyone else."""

    name = "segment_als"

    def __init__(self, *, min_customers: int = 50, per_segment: dict[str, dict] | None = None, **als_settings):
        super().__init__()
        self.min_customers = min_customers
        self.als_settings = als_settings  # the global model's, and any segment's not in ``per_segment``
        self.per_segment = per_segment or {}  # settings tuned for one segment's model
        self._global: ALSRecommender | None = None
        self._by_segment: dict[str, ALSRecommender] = {}
        self._segments = None  # customer_id, segment

    def settings(self) -> dict:
        return {"min_customers": self.min_customers, "per_segment": self.per_segment, **self.als_settings}

    def fit(self, interactions, segments=None):
        from pyspark.sql import functions as F

        if segments is None or C.SEGMENT not in segments.columns:
            raise RecommendationError("per-segment ALS needs a table of customer_id and segment")
        self._remember(interactions)
        self._segments = segments.select(C.CUSTOMER_ID, C.SEGMENT).cache()
        self._global = ALSRecommender(**self.als_settings).fit(interactions)
        self._by_segment = {}
        for segment in self._trainable_segments():
            members = self._segments.where(F.col(C.SEGMENT) == segment).select(C.CUSTOMER_ID)
            self._by_segment[segment] = ALSRecommender(**self._settings_of(segment)).fit(interactions.join(members, C.CUSTOMER_ID))
        return self

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        from functools import reduce

        from pyspark.sql import functions as F

        self._ready(n)
        wanted = customers.select(C.CUSTOMER_ID).distinct().join(self._segments, C.CUSTOMER_ID, "left")
        lists = []
        for segment, model in self._by_segment.items():
            members = wanted.where(F.col(C.SEGMENT) == segment).select(C.CUSTOMER_ID)
            lists.append(model.recommend(members, n, exclude_seen=exclude_seen))
        # The global model serves everyone no segment model knows. (Deciding that from the
        # segment models' id mappings, not from their lists, keeps the query plan small.)
        rest = wanted.select(C.CUSTOMER_ID)
        for segment, model in self._by_segment.items():
            members = wanted.where(F.col(C.SEGMENT) == segment).select(C.CUSTOMER_ID)
            rest = rest.join(members.join(model.known_customers(), C.CUSTOMER_ID), C.CUSTOMER_ID, "left_anti")
        fallback = self._global.recommend(rest, n, exclude_seen=exclude_seen)
        return reduce(lambda a, b: a.unionByName(b), lists, fallback)

    def similar_items(self, items, n: int = 10):
        self._check_fitted()
        return self._global.similar_items(items, n)

    def _save_state(self, path: str) -> None:
        self._segments.write.mode("overwrite").parquet(f"{path}/segments")
        self._global.save(f"{path}/global")
        for segment, model in self._by_segment.items():
            model.save(f"{path}/by_segment/{segment}")

    def _load_state(self, spark, path: str) -> None:
        self._segments = spark.read.parquet(f"{path}/segments")
        self._global = ALSRecommender.load(spark, f"{path}/global")
        self._by_segment = {segment: ALSRecommender.load(spark, f"{path}/by_segment/{segment}") for segment in self._trainable_segments()}

    def _settings_of(self, segment: str) -> dict:
        return {**self.als_settings, **self.per_segment.get(segment, {})}

    def _trainable_segments(self) -> list[str]:
        """Segments with enough customers for a model of their own; the rest are served by the global ALS."""
        sizes = self._segments.groupBy(C.SEGMENT).count().collect()
        return sorted(row[C.SEGMENT] for row in sizes if row["count"] >= self.min_customers)
