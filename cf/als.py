"""Implicit-feedback ALS (Spark ML), globally or one model per value segment.

``ALSRecommender`` wraps ``pyspark.ml.recommendation.ALS(implicitPrefs=True)``
with string ids mapped to integers through persisted ``IdMapping``s.
Recommendations use ``recommendForUserSubset`` (no customer x item cross join
of the caller's making), and "also bought" lists come from cosine similarity
of the item factors, computed on the executors in blocks against a broadcast
factor matrix.

``SegmentedALS`` trains one ALS per segment on that segment's customers and
serves each customer from their segment's model; customers of a segment too
small to train on, or without a segment, fall back to a global ALS trained on
everyone. The global model is fitted only when someone needs it (as a fallback,
or for "also bought" lists): when every customer has a trainable segment, it
would cost as much as all the segment models together and serve no one.
"""

from __future__ import annotations

import functools

from cf.base import Recommender, in_parallel, read_small_json, top_n, write_small_json
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
        self._shared_items = None  # broadcast item factors, see _item_matrix

    def settings(self) -> dict:
        return {"rank": self.rank, "reg_param": self.reg_param, "alpha": self.alpha, "max_iter": self.max_iter,
                "seed": self.seed, "num_blocks": self.num_blocks}

    def fit(self, interactions, customers=None):
        return self.fit_numbered(interactions)

    def fit_numbered(self, interactions, *, customer_ids: IdMapping | None = None, item_ids: IdMapping | None = None):
        """``fit`` with given numberings, covering exactly the customers (and at least the items) of ``interactions``,
        for several models trained on the same pairs; by default they are built here.
        """
        from pyspark.ml.recommendation import ALS

        self._remember(interactions)
        spark = interactions.sparkSession
        self._customers = customer_ids or IdMapping.build(interactions, C.CUSTOMER_ID, C.CUSTOMER_INDEX).cache_frame()
        self._items = item_ids or IdMapping.build(interactions, C.ITEM_ID, C.ITEM_INDEX).cache_frame()
        encoded = self._items.encode(self._customers.encode(interactions)).select(C.CUSTOMER_INDEX, C.ITEM_INDEX, C.STRENGTH)
        # Blocks sized to the machine: more blocks than cores only adds shuffle overhead on small data.
        blocks = self.num_blocks or max(1, spark.sparkContext.defaultParallelism)
        als = ALS(
            rank=self.rank, regParam=self.reg_param, alpha=self.alpha, maxIter=self.max_iter, seed=self.seed,
            implicitPrefs=True, userCol=C.CUSTOMER_INDEX, itemCol=C.ITEM_INDEX, ratingCol=C.STRENGTH,
            numUserBlocks=blocks, numItemBlocks=blocks, coldStartStrategy="drop",
        )
        self._model = als.fit(encoded)
        self._shared_items = None
        return self

    def known_customers(self):
        self._check_fitted()
        return self._customers.frame.select(C.CUSTOMER_ID)

    def _item_matrix(self):
        """A broadcast of (item indexes, item factor matrix): the catalogue, never the customers; made once per model."""
        import numpy as np
        from pyspark.sql import functions as F

        def make():
            factors = self._model.itemFactors.select(F.col("id").alias(C.ITEM_INDEX), "features").orderBy(C.ITEM_INDEX).toPandas()
            vectors = np.vstack(factors["features"].to_numpy()).astype(np.float32) if len(factors) else np.zeros((0, self.rank), np.float32)
            return self._model.itemFactors.sparkSession.sparkContext.broadcast((factors[C.ITEM_INDEX].to_numpy(), vectors))

        return self._made_once("_shared_items", make)

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        """Each customer's factors against the broadcast item matrix, on the executors, bought items masked out.

        Scoring every item per customer and masking what they bought before taking
        the top n replaces recommendForUserSubset's over-fetch (n + the seen
        allowance), its explode and the join that drops bought items: one pass, n
        rows per customer out.
        """
        import numpy as np
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

        self._ready(n)
        shared = self._item_matrix()
        wanted = self._customers.encode(customers.select(C.CUSTOMER_ID).distinct())
        users = wanted.join(self._model.userFactors.select(F.col("id").alias(C.CUSTOMER_INDEX), "features"), C.CUSTOMER_INDEX)
        if exclude_seen:
            seen = self._items.encode(self._seen).groupBy(C.CUSTOMER_ID).agg(F.collect_list(C.ITEM_INDEX).alias("_seen"))
            users = users.join(seen, C.CUSTOMER_ID, "left")
        else:
            users = users.withColumn("_seen", F.lit(None).cast("array<int>"))

        def score_blocks(batches):
            import pandas as pd

            indexes, vectors = shared.value
            position = {index: i for i, index in enumerate(indexes)}
            depth = min(n, len(indexes))
            rows_per_chunk = max(1, 4_000_000 // max(len(indexes), 1))  # about 16 MB of scores at a time
            for batch in batches:
                for start in range(0, len(batch), rows_per_chunk):
                    chunk = batch.iloc[start:start + rows_per_chunk]
                    if depth == 0 or chunk.empty:
                        continue
                    scores = np.vstack(chunk["features"].to_numpy()).astype(np.float32) @ vectors.T
                    for row, bought in enumerate(chunk["_seen"]):
                        if bought is not None and len(bought):
                            scores[row, [position[i] for i in bought if i in position]] = -np.inf
                    best = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
                    top = np.take_along_axis(scores, best, axis=1)
                    keep = np.isfinite(top).ravel()
                    yield pd.DataFrame({
                        C.CUSTOMER_ID: np.repeat(chunk[C.CUSTOMER_ID].to_numpy(), depth)[keep],
                        C.ITEM_INDEX: indexes[best].ravel()[keep],
                        C.SCORE: top.ravel()[keep].astype(np.float64),
                    })

        schema = StructType([StructField(C.CUSTOMER_ID, StringType()), StructField(C.ITEM_INDEX, IntegerType()),
                             StructField(C.SCORE, DoubleType())])
        scored = users.select(C.CUSTOMER_ID, "features", "_seen").mapInPandas(score_blocks, schema=schema)
        return top_n(self._items.decode(scored), n)

    def similar_items(self, items, n: int = 10):
        """Cosine similarity of item factors; each executor block scores its items against all of them."""
        import numpy as np
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

        self._ready(n)
        shared = self._item_matrix()
        depth = min(n, max(len(shared.value[0]) - 1, 0))

        def score_blocks(batches):
            import pandas as pd

            all_indexes, vectors = shared.value
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            all_unit = vectors / np.where(norms == 0, 1, norms)
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
                    C.SCORE: np.take_along_axis(similarity, best, axis=1).ravel().astype(np.float64),
                })

        schema = StructType([StructField(C.ITEM_INDEX, IntegerType()), StructField("_similar_index", IntegerType()),
                             StructField(C.SCORE, DoubleType())])
        wanted = self._items.encode(items.select(C.ITEM_ID).distinct()).select(C.ITEM_INDEX)
        scored = wanted.mapInPandas(score_blocks, schema=schema)
        named = self._items.decode(scored)
        similar_names = self._items.frame.select(F.col(C.ITEM_ID).alias(C.SIMILAR_ITEM_ID), F.col(C.ITEM_INDEX).alias("_similar_index"))
        return top_n(named.join(similar_names, "_similar_index"), n, key=C.ITEM_ID, item=C.SIMILAR_ITEM_ID)

    def likely_buyers(self, targets, n: int):
        """kind, key, rank, customer_id, score: for each target, the ``n`` customers the model finds most likely to buy it.

        ``targets``: kind, key, item_id; a target is one item (kind "item") or a group's items (kind "group").
        A customer's score is their factors against the mean of the target's item factors: their
        predicted preference averaged over its items. The targets' vectors are broadcast (a few
        thousand at most); each executor keeps the best ``n`` per target of its customers, so at most
        partitions x targets x n rows meet in the final ranking.
        """
        import numpy as np
        from pyspark.sql import Window
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

        self._ready(n)
        factors = self._items.encode(targets).join(self._model.itemFactors.select(F.col("id").alias(C.ITEM_INDEX), "features"), C.ITEM_INDEX)
        means = factors.groupBy("kind", "key").agg(F.array(*(F.avg(F.col("features")[i]) for i in range(self.rank))).alias("vector"))
        wanted = means.toPandas()  # one row per target
        if wanted.empty:
            return targets.sparkSession.createDataFrame([], "kind string, key string, rank int, customer_id string, score double")
        shared = self._model.itemFactors.sparkSession.sparkContext.broadcast(
            (wanted["kind"].to_numpy(), wanted["key"].to_numpy(), np.vstack(wanted["vector"].to_numpy()).astype(np.float32)))

        def best_per_target(batches):
            import pandas as pd

            kinds, keys, vectors = shared.value
            kept_scores = np.empty((0, len(keys)), np.float32)
            kept_customers = np.empty((0, len(keys)), np.int64)
            rows_per_chunk = max(1, 4_000_000 // len(keys))
            for batch in batches:
                for start in range(0, len(batch), rows_per_chunk):
                    chunk = batch.iloc[start:start + rows_per_chunk]
                    scores = np.vstack(chunk["features"].to_numpy()).astype(np.float32) @ vectors.T
                    customers = np.broadcast_to(chunk["id"].to_numpy()[:, None], scores.shape)
                    kept_scores, kept_customers = np.vstack([kept_scores, scores]), np.vstack([kept_customers, customers])
                    if len(kept_scores) > n:
                        best = np.argpartition(-kept_scores, n - 1, axis=0)[:n]
                        kept_scores = np.take_along_axis(kept_scores, best, axis=0)
                        kept_customers = np.take_along_axis(kept_customers, best, axis=0)
            if len(kept_scores):
                yield pd.DataFrame({"kind": np.tile(kinds, len(kept_scores)), "key": np.tile(keys, len(kept_scores)),
                                    C.CUSTOMER_INDEX: kept_customers.ravel(), C.SCORE: kept_scores.ravel().astype(np.float64)})

        schema = StructType([StructField("kind", StringType()), StructField("key", StringType()), StructField(C.CUSTOMER_INDEX, IntegerType()),
                             StructField(C.SCORE, DoubleType())])
        scored = self._model.userFactors.select("id", "features").mapInPandas(best_per_target, schema=schema)
        order = Window.partitionBy("kind", "key").orderBy(F.desc(C.SCORE), F.col(C.CUSTOMER_ID))
        return (self._customers.decode(scored).withColumn(C.RANK, F.row_number().over(order)).where(F.col(C.RANK) <= n)
                .select("kind", "key", C.RANK, C.CUSTOMER_ID, C.SCORE))

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
        self._interactions = None  # what the global model is fitted on, when it is needed
        self._global: ALSRecommender | None = None  # the fallback, fitted when some customer needs it
        self._items_model: ALSRecommender | None = None  # the same model fitted for "also bought" when there is no fallback
        self._by_segment: dict[str, ALSRecommender] = {}
        self._segments = None  # customer_id, segment

    def settings(self) -> dict:
        return {"min_customers": self.min_customers, "per_segment": self.per_segment, **self.als_settings}

    @property
    def has_fallback(self) -> bool:
        return self._global is not None

    def fit(self, interactions, customers=None):
        """``customers``: customer_id and segment."""
        from pyspark.sql import functions as F

        if customers is None or C.SEGMENT not in customers.columns:
            raise RecommendationError("per-segment ALS needs a table of customer_id and segment")
        self._remember(interactions)
        self._interactions = interactions.select(C.CUSTOMER_ID, C.ITEM_ID, C.STRENGTH)
        self._segments = customers.select(C.CUSTOMER_ID, C.SEGMENT).cache()
        trainable = self._trainable_segments()
        # One item numbering for all the models: numbering the catalogue costs a few Spark jobs per model.
        item_ids = IdMapping.build(self._interactions, C.ITEM_ID, C.ITEM_INDEX).cache_frame()

        def fit_segment(segment: str):
            members = self._segments.where(F.col(C.SEGMENT) == segment).select(C.CUSTOMER_ID)
            return lambda: ALSRecommender(**self._settings_of(segment)).fit_numbered(interactions.join(members, C.CUSTOMER_ID), item_ids=item_ids)

        self._by_segment = in_parallel({segment: fit_segment(segment) for segment in trainable})
        # Every customer in a trained segment is known to its model, so only the others need the fallback.
        covered = self._segments.where(F.col(C.SEGMENT).isin(trainable)).select(C.CUSTOMER_ID)
        uncovered = self._interactions.select(C.CUSTOMER_ID).join(covered, C.CUSTOMER_ID, "left_anti")
        self._global = None if uncovered.isEmpty() else self._fit_global(item_ids)
        self._items_model = None
        return self

    def _fit_global(self, item_ids: IdMapping | None = None) -> ALSRecommender:
        return ALSRecommender(**self.als_settings).fit_numbered(self._interactions, item_ids=item_ids)

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        from functools import reduce

        from pyspark.sql import functions as F

        self._ready(n)
        wanted = customers.select(C.CUSTOMER_ID).distinct().join(self._segments, C.CUSTOMER_ID, "left")
        lists = []
        for segment, model in self._by_segment.items():
            members = wanted.where(F.col(C.SEGMENT) == segment).select(C.CUSTOMER_ID)
            lists.append(model.recommend(members, n, exclude_seen=exclude_seen))
        if self._global is not None:
            # The global model serves everyone no segment model knows. (Deciding that from the
            # segment models' id mappings, not from their lists, keeps the query plan small.)
            rest = wanted.select(C.CUSTOMER_ID)
            for segment, model in self._by_segment.items():
                members = wanted.where(F.col(C.SEGMENT) == segment).select(C.CUSTOMER_ID)
                rest = rest.join(members.join(model.known_customers(), C.CUSTOMER_ID), C.CUSTOMER_ID, "left_anti")
            lists.append(self._global.recommend(rest, n, exclude_seen=exclude_seen))
        return reduce(lambda a, b: a.unionByName(b), lists)

    def similar_items(self, items, n: int = 10):
        """From the global model's item factors (fitted on first use if no customer needed it as a fallback)."""
        self._check_fitted()
        return (self._global or self._made_once("_items_model", self._fit_global)).similar_items(items, n)

    def _save_state(self, path: str) -> None:
        write_small_json(self._segments.sparkSession, f"{path}/state", {"global": self._global is not None})
        parts = {"segments": lambda: self._segments.write.mode("overwrite").parquet(f"{path}/segments")}
        if self._global is not None:
            parts["global"] = lambda: self._global.save(f"{path}/global")
        else:  # what "also bought" would fit the global model on
            parts["interactions"] = lambda: self._interactions.write.mode("overwrite").parquet(f"{path}/interactions")
        for segment, model in self._by_segment.items():
            parts[f"by_segment/{segment}"] = functools.partial(model.save, f"{path}/by_segment/{segment}")
        in_parallel(parts)  # independent writes, side by side

    def _load_state(self, spark, path: str) -> None:
        self._segments = spark.read.parquet(f"{path}/segments")
        if read_small_json(spark, f"{path}/state")["global"]:
            self._global, self._interactions = ALSRecommender.load(f"{path}/global"), None
        else:
            self._global, self._interactions = None, spark.read.parquet(f"{path}/interactions")
        self._by_segment = {segment: ALSRecommender.load(f"{path}/by_segment/{segment}") for segment in self._trainable_segments()}

    def _settings_of(self, segment: str) -> dict:
        return {**self.als_settings, **self.per_segment.get(segment, {})}

    def _trainable_segments(self) -> list[str]:
        """Segments with enough customers for a model of their own; the rest are served by the global ALS."""
        sizes = self._segments.groupBy(C.SEGMENT).count().collect()
        return sorted(row[C.SEGMENT] for row in sizes if row["count"] >= self.min_customers)
