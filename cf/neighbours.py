"""Recommenders built from who bought what: buy-again and item co-occurrence.

``BuyAgainRecommender`` ranks each customer's own past items by their
(time-decayed) strength: in retail most of next quarter's purchases are
repeats, so this list matters. ``CooccurrenceRecommender`` is item-kNN: items
are similar when the same customers buy them (cosine over customer sets), and a
customer's score for an item sums its similarity to what they bought.
"""

from __future__ import annotations

import functools
import math

from cf.base import Recommender, top_n
from cf.ids import IdMapping
from segmentation import columns as C

COUNTS_PER_BLOCK = 20_000_000  # co-purchase counts a Python worker holds for its block of items (about 8 bytes each)


class BuyAgainRecommender(Recommender):
    """Each customer's staples; with ``exclude_seen`` there is nothing left to recommend, by design."""

    name = "buy_again"

    def __init__(self):
        super().__init__()
        self._interactions = None  # customer_id, item_id, strength, last_purchase

    def fit(self, interactions, customers=None):
        """Keeps the interactions as they are: like every model's seen items, they are read at each call (pass them cached)."""
        self._remember(interactions)
        self._interactions = interactions.select(C.CUSTOMER_ID, C.ITEM_ID, C.STRENGTH, C.LAST_PURCHASE)
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
        self._shared_similarity = None  # broadcast of the similarities as a sparse matrix, made on first use

    def settings(self) -> dict:
        return {"neighbours": self.neighbours, "min_common": self.min_common, "max_items_per_customer": self.max_items_per_customer}

    def fit(self, interactions, customers=None):
        """Cosine of co-purchase counts, one block of items per task.

        A block (every ``blocks``-th item) is counted by one task that reads every
        basket, as a sparse product in C: it holds whole rows of XᵀX, so the cosine,
        ``min_common`` and the top ``neighbours`` are taken there too, and only the
        kept neighbours leave it. Counted per partition of baskets instead, the partial
        counts must be shuffled and summed by Spark (15M rows at 10M purchases, for 250k
        neighbours kept); a self-join of the histories would make a row per pair of
        items in every basket.
        """
        from pyspark.sql import Window
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

        self._remember(interactions)
        spark = interactions.sparkSession
        recent_first = Window.partitionBy(C.CUSTOMER_ID).orderBy(F.desc(C.STRENGTH), F.desc(C.LAST_PURCHASE), C.ITEM_ID)
        self._history = (
            interactions.withColumn("_position", F.row_number().over(recent_first))
            .where(F.col("_position") <= self.max_items_per_customer).select(C.CUSTOMER_ID, C.ITEM_ID).cache()
        )
        items = IdMapping.build(self._history, C.ITEM_ID, C.ITEM_INDEX).cache_frame()
        catalogue = items.frame.count()
        # Cached: every block reads all of them.
        baskets = items.encode(self._history).groupBy(C.CUSTOMER_ID).agg(F.collect_list(C.ITEM_INDEX).alias("_basket")).select(
            "_basket").cache()
        # Each basket of b items adds at most b² counts; a block holds its share of them.
        counts_bound = min(catalogue ** 2, baskets.agg(F.sum(F.size("_basket") ** 2)).first()[0] or 0)
        blocks = max(spark.sparkContext.defaultParallelism, math.ceil(counts_bound / COUNTS_PER_BLOCK))
        schema = StructType([StructField(C.ITEM_INDEX, IntegerType()), StructField("_similar_index", IntegerType()),
                             StructField(C.SCORE, DoubleType())])
        # coalesce(1): a block's one task reads every cached basket; the union runs the blocks side by side.
        nearest = functools.reduce(lambda a, b: a.union(b), (
            baskets.coalesce(1).mapInPandas(functools.partial(
                block_neighbours, block=block, blocks=blocks, catalogue=catalogue, neighbours=self.neighbours,
                min_common=self.min_common), schema=schema)
            for block in range(blocks)))
        similar_names = items.frame.select(F.col(C.ITEM_ID).alias(C.SIMILAR_ITEM_ID), F.col(C.ITEM_INDEX).alias("_similar_index"))
        self._similar = items.decode(nearest).join(similar_names, "_similar_index").select(C.ITEM_ID, C.SIMILAR_ITEM_ID, C.SCORE).cache()
        self._similar.count()
        baskets.unpersist()
        self._shared_similarity = None
        return self

    def similar_items(self, items, n: int = 10):
        self._ready(n)
        chosen = self._similar.join(items.select(C.ITEM_ID).distinct(), C.ITEM_ID)
        return top_n(chosen, n, key=C.ITEM_ID, item=C.SIMILAR_ITEM_ID)

    def _similarity_matrix(self):
        """A broadcast of (item ids, sparse item x item similarity): catalogue-sized (neighbours per item), made once per model."""
        import numpy as np
        import pandas as pd
        from scipy import sparse

        def make():
            pairs = self._similar.toPandas()
            items = np.array(sorted(set(pairs[C.ITEM_ID]) | set(pairs[C.SIMILAR_ITEM_ID])), dtype=object)
            index = pd.Index(items)
            matrix = sparse.csr_matrix((pairs[C.SCORE].to_numpy(np.float64),
                                        (index.get_indexer(pairs[C.ITEM_ID]), index.get_indexer(pairs[C.SIMILAR_ITEM_ID]))),
                                       shape=(len(items), len(items)))
            return self._similar.sparkSession.sparkContext.broadcast((items, matrix))

        return self._made_once("_shared_similarity", make)

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        """A customer's score for an item sums its similarity to the customer's strongest items.

        Computed on the executors as one sparse product per block of customers (their
        histories times the broadcast similarity matrix), instead of a join that makes
        history x neighbours rows and shuffles them; ties go to the smaller item id.
        """
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

        self._ready(n)
        shared = self._similarity_matrix()
        wanted = customers.select(C.CUSTOMER_ID).distinct()
        history = self._history.join(wanted, C.CUSTOMER_ID).groupBy(C.CUSTOMER_ID).agg(F.collect_list(C.ITEM_ID).alias("_history"))
        if exclude_seen:
            seen = self._seen.join(wanted, C.CUSTOMER_ID).groupBy(C.CUSTOMER_ID).agg(F.collect_list(C.ITEM_ID).alias("_seen"))
            history = history.join(seen, C.CUSTOMER_ID, "left")

        def score_blocks(batches):
            import numpy as np
            import pandas as pd

            items, similarity = shared.value
            index = pd.Index(items)
            for batch in batches:
                scores = (membership(batch["_history"], index) @ similarity).tocsr()
                if exclude_seen:
                    # Scores are sums of positive similarities: only the bought items become zero.
                    scores = (scores - scores.multiply(membership(batch["_seen"], index))).tocsr()
                    scores.eliminate_zeros()
                rows, ranks, positions = best_per_row(scores, n)
                yield pd.DataFrame({C.CUSTOMER_ID: batch[C.CUSTOMER_ID].to_numpy()[rows], C.RANK: ranks.astype(np.int32),
                                    C.ITEM_ID: items[scores.indices[positions]], C.SCORE: scores.data[positions]})

        schema = StructType([StructField(C.CUSTOMER_ID, StringType()), StructField(C.RANK, IntegerType()),
                             StructField(C.ITEM_ID, StringType()), StructField(C.SCORE, DoubleType())])
        return history.mapInPandas(score_blocks, schema=schema)

    def _save_state(self, path: str) -> None:
        self._similar.write.mode("overwrite").parquet(f"{path}/similar")
        self._history.write.mode("overwrite").parquet(f"{path}/history")

    def _load_state(self, spark, path: str) -> None:
        self._similar = spark.read.parquet(f"{path}/similar")
        self._shared_similarity = None
        self._history = spark.read.parquet(f"{path}/history")


def membership(lists, index):
    """A 0/1 sparse matrix, one row per list of item ids, one column per entry of ``index``; ids not in it are left out."""
    import numpy as np
    from scipy import sparse

    lengths = np.fromiter((0 if ids is None else len(ids) for ids in lists), np.int64, len(lists))
    flat = np.concatenate([ids for ids in lists if ids is not None and len(ids)]) if lengths.any() else np.zeros(0, object)
    positions = index.get_indexer(flat)
    owners = np.repeat(np.arange(len(lists)), lengths)
    known = positions >= 0
    matrix = sparse.csr_matrix((np.ones(known.sum()), (owners[known], positions[known])), shape=(len(lists), len(index)))
    matrix.data[:] = 1.0  # an id listed twice is still one item
    return matrix


def best_per_row(scores, n: int):
    """(rows, ranks, positions) of the ``n`` largest entries of each row of a CSR matrix, best first, ties to the smaller column.

    ``positions`` index ``scores.data`` and ``scores.indices``; ranks start at 1. A
    row's ``n``-th largest value, found by partitioning, bounds what needs sorting.
    """
    import numpy as np

    picks = []
    for row in range(scores.shape[0]):
        start, end = scores.indptr[row], scores.indptr[row + 1]
        values, columns = scores.data[start:end], scores.indices[start:end]
        candidates = np.arange(end - start)
        if end - start > n:
            candidates = np.flatnonzero(values >= np.partition(values, end - start - n)[end - start - n])
        picks.append(start + candidates[np.lexsort((columns[candidates], -values[candidates]))[:n]])
    lengths = np.fromiter(map(len, picks), np.int64, len(picks))
    positions = np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    ranks = np.arange(len(positions)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    return rows, ranks, positions


def block_neighbours(batches, *, block: int, blocks: int, catalogue: int, neighbours: int, min_common: int):
    """item_index, _similar_index, score: the ``neighbours`` most similar items of each item whose index % blocks == block.

    ``batches`` must hold every basket (``_basket``: item indexes): the block's
    co-purchase counts are then whole rows of XᵀX, and each item's buyers are a
    column sum of X. Cosine = common buyers / sqrt(buyers × other buyers), kept
    from ``min_common`` common buyers; ties go to the smaller index.
    """
    import numpy as np
    import pandas as pd
    from scipy import sparse

    owned = np.arange(block, catalogue, blocks)  # row r of the block's counts is item owned[r]
    counts = sparse.csr_matrix((len(owned), catalogue), dtype=np.int32)
    buyers = np.zeros(catalogue, np.int64)
    for batch in batches:
        baskets = batch["_basket"]
        if baskets.empty:
            continue
        entries = np.concatenate(baskets.to_numpy()).astype(np.int64)
        pointers = np.concatenate([[0], np.cumsum(baskets.map(len).to_numpy())])
        bought = sparse.csr_matrix((np.ones(len(entries), np.int32), entries, pointers), shape=(len(baskets), catalogue))
        counts = counts + (bought[:, block::blocks].T @ bought).tocsr()
        buyers += np.bincount(entries, minlength=catalogue)
    pairs = counts.tocoo()
    keep = (pairs.data >= min_common) & (pairs.col != owned[pairs.row])
    rows, columns, common = pairs.row[keep], pairs.col[keep], pairs.data[keep]
    scores = sparse.csr_matrix((common / np.sqrt(buyers[owned[rows]].astype(np.float64) * buyers[columns]), (rows, columns)),
                               shape=counts.shape)
    picked, _, positions = best_per_row(scores, neighbours)
    if len(positions):
        yield pd.DataFrame({C.ITEM_INDEX: owned[picked].astype(np.int32), "_similar_index": scores.indices[positions].astype(np.int32),
                            C.SCORE: scores.data[positions]})
