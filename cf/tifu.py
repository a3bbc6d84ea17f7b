"""TIFU-KNN (Hu, He, Gao & Zhang, SIGIR 2020) in Spark: time-decayed personal item frequency, blended with neighbours'.

A customer's baskets (purchase days) are split in order into ``groups`` groups of near-equal size.
Within a group a basket counts ``within_decay ** (baskets after it)`` and the group is the mean of
its baskets; groups add up weighted ``group_decay ** (groups after it)``. That vector (customer x
item) is blended with the mean vector of the customer's ``neighbours`` nearest customers (Euclidean,
as the paper's code): ``alpha * own + (1 - alpha) * neighbours``.

Neighbours are searched within blocks of about ``block_size`` customers, so the search grows with
customers x block size, not customers squared. Blocks come from random-hyperplane hashing of the
vectors (signs of sparse projections, computed in Spark): customers whose vectors point the same
way share a block. Up to ``block_size`` customers there is one block and the search is exact.
``devtools/tifuknn.py`` is the single-machine reference the tests compare with.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math

from cf.base import Recommender
from cf.interactions import RecommendationError
from cf.neighbours import CooccurrenceRecommender, best_per_row
from segmentation import columns as C

DAY = "_day"
WEIGHT = "_weight"
BLOCK = "_block"
NEIGHBOURS = "_neighbours"
OWN_SCORE = "own_score"  # the customer's own decayed frequency of the item
NEIGHBOUR_SCORE = "neighbour_score"  # the mean of their neighbours'


@dataclasses.dataclass(frozen=True)
class TifuSettings:
    """What validation tunes (see ``cf.tuning.tune_tifu``); the defaults are the paper's usual ones."""

    groups: int = 3
    within_decay: float = 0.9
    group_decay: float = 0.7
    neighbours: int = 100
    alpha: float = 0.7

    def model_settings(self) -> dict:
        return dataclasses.asdict(self)

    def needs_refit(self, other: "TifuSettings") -> bool:
        """Whether ``other`` changes the vectors or the neighbours; only ``alpha`` is applied at recommend time."""
        return dataclasses.replace(self, alpha=other.alpha) != other


class TifuRecommender(Recommender):
    """Next-basket lists from the customer's own decayed item frequency and their nearest customers'."""

    name = "tifu"

    def __init__(self, *, groups: int = TifuSettings.groups, within_decay: float = TifuSettings.within_decay,
                 group_decay: float = TifuSettings.group_decay, neighbours: int = TifuSettings.neighbours,
                 alpha: float = TifuSettings.alpha, block_size: int = 20_000, as_of: str | None = None, seed: int = 0):
        super().__init__()
        if groups < 1 or neighbours < 1 or block_size < 2:
            raise RecommendationError(f"tifu needs groups and neighbours of 1 or more and a block_size of 2 or more, "
                                      f"got {groups}, {neighbours} and {block_size}")
        for name, value in (("within_decay", within_decay), ("group_decay", group_decay), ("alpha", alpha)):
            if not 0 < value <= 1:
                raise RecommendationError(f"tifu {name} must be in (0, 1], got {value}")
        self.groups, self.within_decay, self.group_decay = groups, within_decay, group_decay
        self.neighbours, self.alpha, self.block_size = neighbours, alpha, block_size
        self.as_of, self.seed = as_of, seed
        self._vectors = None  # customer_id, item_id, _weight, _block
        self._nearest = None  # customer_id, _neighbours (array of customer ids, nearest first)

    def settings(self) -> dict:
        return {"groups": self.groups, "within_decay": self.within_decay, "group_decay": self.group_decay,
                "neighbours": self.neighbours, "alpha": self.alpha, "block_size": self.block_size, "as_of": self.as_of,
                "seed": self.seed}

    def with_alpha(self, alpha: float) -> "TifuRecommender":
        """The same fitted vectors and neighbours, blended with another ``alpha`` (tuning tries it without refitting)."""
        blended = copy.copy(self)
        blended.alpha = alpha
        return blended

    # ------------------------------------------------------------------ fitting

    def fit(self, interactions, customers=None):
        """``interactions``: purchase rows (customer_id, item_id, timestamp); those from ``as_of`` on are left out."""
        from pyspark.sql import functions as F

        missing = [c for c in (C.CUSTOMER_ID, C.ITEM_ID, C.TIMESTAMP) if c not in interactions.columns]
        if missing:
            raise RecommendationError(f"tifu learns from purchase rows; they lack column(s) {', '.join(missing)}")
        rows = interactions
        if self.as_of:
            rows = rows.where(F.col(C.TIMESTAMP) < F.lit(dt.date.fromisoformat(self.as_of)).cast("timestamp"))
        lines = rows.select(C.CUSTOMER_ID, C.ITEM_ID, F.to_date(C.TIMESTAMP).alias(DAY)).distinct()
        vectors = decayed_frequencies(lines, groups=self.groups, within_decay=self.within_decay, group_decay=self.group_decay)
        self._vectors = with_blocks(vectors, block_size=self.block_size, seed=self.seed).cache()
        self._seen = self._vectors.select(C.CUSTOMER_ID, C.ITEM_ID)
        self._nearest = self._search_neighbours().cache()
        self._nearest.count()
        return self

    def _search_neighbours(self):
        from pyspark.sql.types import ArrayType, StringType, StructField, StructType

        neighbours = self.neighbours

        def search(block):
            import numpy as np
            import pandas as pd
            from sklearn.neighbors import NearestNeighbors

            members, matrix, _ = block_matrix(block)
            found = min(neighbours + 1, len(members))
            _, nearest = NearestNeighbors(n_neighbors=found, algorithm="brute").fit(matrix).kneighbors(matrix)
            own = np.arange(len(members))[:, None]
            # A customer is their own nearest, unless another has the same vector: drop them wherever they are.
            kept = [row[row != me][:neighbours] for row, me in zip(nearest, own[:, 0])]
            return pd.DataFrame({C.CUSTOMER_ID: members, NEIGHBOURS: [list(members[row]) for row in kept]})

        schema = StructType([StructField(C.CUSTOMER_ID, StringType()), StructField(NEIGHBOURS, ArrayType(StringType()))])
        return self._vectors.select(C.CUSTOMER_ID, C.ITEM_ID, WEIGHT, BLOCK).groupBy(BLOCK).applyInPandas(search, schema)

    def release(self) -> None:
        """Drop the cached vectors and neighbours (tuning fits several models)."""
        self._vectors.unpersist()
        self._nearest.unpersist()

    # ------------------------------------------------------------------ lists

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        """Blended scores for the wanted customers, one block at a time; customers it never saw get nothing."""
        self._ready(n)
        return self.scored(customers, n, exclude_seen=exclude_seen).drop(OWN_SCORE, NEIGHBOUR_SCORE)

    def scored(self, customers, n: int, *, exclude_seen: bool = False):
        """``recommend``'s lists with the two parts of each score: ``own_score`` and ``neighbour_score``."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

        self._ready(n)
        alpha = self.alpha
        wanted = customers.select(C.CUSTOMER_ID).distinct().join(self._nearest, C.CUSTOMER_ID)
        # The rows each block needs: its wanted customers' vectors and their neighbours'.
        needed = wanted.select(F.explode(F.array_union(F.array(C.CUSTOMER_ID), NEIGHBOURS)).alias(C.CUSTOMER_ID)).distinct()
        rows = self._vectors.join(needed, C.CUSTOMER_ID).select(C.CUSTOMER_ID, C.ITEM_ID, WEIGHT, F.lit(None).cast("array<string>").alias(NEIGHBOURS))
        asked = wanted.select(C.CUSTOMER_ID, F.lit(None).cast("string").alias(C.ITEM_ID), F.lit(None).cast("double").alias(WEIGHT), NEIGHBOURS)
        # Every row of a query goes where its customer's block is, so one group holds a query's neighbours too.
        blocks = self._vectors.select(C.CUSTOMER_ID, BLOCK).distinct()
        by_block = rows.unionByName(asked).join(blocks.hint("shuffle_hash"), C.CUSTOMER_ID)

        def blend(block):
            import numpy as np
            import pandas as pd
            from scipy import sparse

            vectors = block[block[C.ITEM_ID].notna()]
            queries = block[block[NEIGHBOURS].notna()]
            members, matrix, items = block_matrix(vectors)
            position = pd.Index(members)
            asked_rows = position.get_indexer(queries[C.CUSTOMER_ID])
            pointers = np.concatenate([[0], np.cumsum(queries[NEIGHBOURS].map(len).to_numpy())])
            others = position.get_indexer(np.concatenate([list(names) for names in queries[NEIGHBOURS]] or [[]]))
            counts = np.maximum(np.diff(pointers), 1)
            averaging = sparse.csr_matrix((np.repeat(1.0 / counts, np.diff(pointers)), others, pointers),
                                          shape=(len(queries), len(members)))
            own, theirs = matrix[asked_rows], (averaging @ matrix).tocsr()
            scores = (alpha * own + (1 - alpha) * theirs).tocsr()
            if exclude_seen:
                scores = (scores - scores.multiply(own > 0)).tocsr()
            scores.eliminate_zeros()
            picked, ranks, positions = best_per_row(scores, n)
            columns = scores.indices[positions]
            return pd.DataFrame({C.CUSTOMER_ID: queries[C.CUSTOMER_ID].to_numpy()[picked], C.RANK: ranks.astype(np.int32),
                                 C.ITEM_ID: items[columns], C.SCORE: scores.data[positions],
                                 OWN_SCORE: np.asarray(own[picked, columns]).ravel(), NEIGHBOUR_SCORE: np.asarray(theirs[picked, columns]).ravel()})

        schema = StructType([StructField(C.CUSTOMER_ID, StringType()), StructField(C.RANK, IntegerType()),
                             StructField(C.ITEM_ID, StringType()), StructField(C.SCORE, DoubleType()),
                             StructField(OWN_SCORE, DoubleType()), StructField(NEIGHBOUR_SCORE, DoubleType())])
        return by_block.groupBy(BLOCK).applyInPandas(blend, schema)

    def similar_items(self, items, n: int = 10):
        """Co-occurrence over the same purchase days, computed only when asked for."""
        from pyspark.sql import functions as F

        self._check_fitted()
        counts = self._vectors.select(C.CUSTOMER_ID, C.ITEM_ID, F.col(WEIGHT).alias(C.STRENGTH), F.lit(None).cast("timestamp").alias(C.LAST_PURCHASE))
        return CooccurrenceRecommender().fit(counts).similar_items(items, n)

    # ------------------------------------------------------------------ persistence

    def _write_seen(self, path: str, seen_in: str | None) -> None:
        """Nothing: the seen pairs are the vectors' own."""

    def _read_seen(self, spark, path: str, seen_in: str | None):
        return None  # set by _load_state

    def _save_state(self, path: str) -> None:
        self._vectors.write.mode("overwrite").parquet(f"{path}/vectors")
        self._nearest.write.mode("overwrite").parquet(f"{path}/neighbours")

    def _load_state(self, spark, path: str) -> None:
        self._vectors = spark.read.parquet(f"{path}/vectors")
        self._nearest = spark.read.parquet(f"{path}/neighbours")
        self._seen = self._vectors.select(C.CUSTOMER_ID, C.ITEM_ID)


def decayed_frequencies(lines, *, groups: int, within_decay: float, group_decay: float):
    """customer_id, item_id, _weight: each customer's TIFU vector from their distinct (customer_id, item_id, _day) lines.

    Basket i of c (0-based, by day) falls in group g = floor(i * u / c) of u = min(groups, c); group g
    holds baskets ceil(g c / u) .. ceil((g + 1) c / u) - 1. Weights are those of ``devtools/tifuknn.py``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_customer = Window.partitionBy(C.CUSTOMER_ID)
    days = lines.select(C.CUSTOMER_ID, DAY).distinct()
    position = F.row_number().over(by_customer.orderBy(DAY)) - 1
    days = days.withColumns({"_i": position, "_c": F.count(F.lit(1)).over(by_customer)})
    used = F.least(F.lit(groups), F.col("_c"))
    group = F.floor(F.col("_i") * used / F.col("_c"))
    starts = lambda g: F.ceil(g * F.col("_c") / used)  # noqa: E731
    weight = (F.pow(F.lit(within_decay), starts(group + 1) - 1 - F.col("_i")) / (starts(group + 1) - starts(group))
              * F.pow(F.lit(group_decay), used - 1 - group) / used)
    weighted = days.select(C.CUSTOMER_ID, DAY, weight.alias(WEIGHT))
    return lines.join(weighted, [C.CUSTOMER_ID, DAY]).groupBy(C.CUSTOMER_ID, C.ITEM_ID).agg(F.sum(WEIGHT).alias(WEIGHT))


def with_blocks(vectors, *, block_size: int, seed: int):
    """``vectors`` with each customer's block: the signs of ``bits`` random ±1 projections, enough for blocks of about ``block_size``."""
    from pyspark.sql import functions as F

    customers = vectors.select(C.CUSTOMER_ID).distinct().count()
    bits = max(0, math.ceil(math.log2(customers / block_size))) if customers > block_size else 0
    if bits == 0:
        return vectors.withColumn(BLOCK, F.lit(0))
    sign = lambda plane: F.when(F.xxhash64(C.ITEM_ID, F.lit(plane), F.lit(seed)) % 2 == 0, 1.0).otherwise(-1.0)  # noqa: E731
    projections = vectors.groupBy(C.CUSTOMER_ID).agg(*(F.sum(F.col(WEIGHT) * sign(plane)).alias(f"_p{plane}") for plane in range(bits)))
    block = sum((F.when(F.col(f"_p{plane}") > 0, 1 << plane).otherwise(0) for plane in range(bits)), F.lit(0))
    return vectors.join(projections.select(C.CUSTOMER_ID, block.alias(BLOCK)), C.CUSTOMER_ID)


def block_matrix(rows):
    """(customer ids, sparse customer x item matrix of _weight, item ids) of one block's vector rows; both id arrays sorted."""
    import numpy as np
    from scipy import sparse

    members, row = np.unique(rows[C.CUSTOMER_ID].to_numpy(dtype=object), return_inverse=True)
    items, column = np.unique(rows[C.ITEM_ID].to_numpy(dtype=object), return_inverse=True)
    matrix = sparse.csr_matrix((rows[WEIGHT].to_numpy(np.float64), (row, column)), shape=(len(members), len(items)))
    return members, matrix, items
