"""One small interface for every recommender, after implicit's RecommenderBase.

The constructor holds settings; ``fit`` sets state, the rest reads it:

    fit(interactions, customers=None)      interactions: customer_id, item_id, strength, last_purchase;
                                           customers: customer_id and what models rank within (country, segment)
    recommend(customers, n, exclude_seen)  -> customer_id, rank, item_id, score
    similar_items(items, n)                -> item_id, rank, similar_item_id, score
    save(path) / load(path)                on the active SparkSession; ``Recommender.load`` reads any model

Ranks start at 1; ties in score are broken by item id so lists are reproducible.
``tests/test_recommenders.py`` runs one contract suite against every model.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod

from cf.interactions import RecommendationError
from segmentation import columns as C

# When unseen items are wanted, this many extra candidates per customer cover what
# they already bought; customers who bought more of the top candidates than this
# can get shorter lists (a bound on work per customer, not a correctness switch).
SEEN_ALLOWANCE = 500


class Recommender(ABC):
    name = "recommender"

    def __init__(self):
        self._seen = None  # customer_id, item_id of the training interactions
        self._making = threading.RLock()  # see _made_once

    def _made_once(self, attribute: str, make):
        """State made on first use (a broadcast, an on-demand fit), made once even when lists are built from several threads."""
        with self._making:
            if getattr(self, attribute) is None:
                setattr(self, attribute, make())
            return getattr(self, attribute)

    @property
    def is_fitted(self) -> bool:
        return self._seen is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RecommendationError(f"{self.name} is not fitted: call fit(interactions) first")

    def _ready(self, n: int) -> None:
        self._check_fitted()
        check_n(n)

    def _ranked(self, candidates, n: int, exclude_seen: bool):
        """customer_id, item_id, score candidates -> the top ``n`` per customer, without bought items if asked."""
        if exclude_seen:
            candidates = drop_seen(candidates, self._seen)
        return top_n(candidates, n)

    def _remember(self, interactions) -> None:
        missing = [c for c in (C.CUSTOMER_ID, C.ITEM_ID, C.STRENGTH) if c not in interactions.columns]
        if missing:
            raise RecommendationError(f"interactions lack column(s) {', '.join(missing)}")
        self._seen = interactions.select(C.CUSTOMER_ID, C.ITEM_ID).distinct()

    @abstractmethod
    def fit(self, interactions, customers=None) -> "Recommender": ...

    @abstractmethod
    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False): ...

    @abstractmethod
    def similar_items(self, items, n: int = 10): ...

    # ------------------------------------------------------------------ persistence

    def settings(self) -> dict:
        return {}

    def _save_state(self, path: str) -> None:
        """Write fitted state besides the seen pairs (subclasses with more state extend this)."""

    def _load_state(self, spark, path: str) -> None:
        """Read what ``_save_state`` wrote."""

    def save(self, path: str, *, seen_in: str | None = None) -> None:
        """``seen_in``: a model saved next to this one (same parent directory) from the same training pairs.

        Its seen pairs are then referenced instead of written again: they are as many rows
        as the interactions, and several models of one fit learn from the same ones.
        """
        from pyspark.sql import SparkSession

        self._check_fitted()
        spark = SparkSession.active()
        write_small_json(spark, f"{path}/meta", {"class": type(self).__name__, "settings": self.settings(), "seen_in": seen_in})
        self._write_seen(path, seen_in)
        self._save_state(path)

    def _write_seen(self, path: str, seen_in: str | None) -> None:
        if seen_in is None:
            self._seen.write.mode("overwrite").parquet(f"{path}/seen")

    def _read_seen(self, spark, path: str, seen_in: str | None):
        return spark.read.parquet(f"{path.rstrip('/').rsplit('/', 1)[0]}/{seen_in}/seen" if seen_in else f"{path}/seen")

    @classmethod
    def from_settings(cls, settings: dict) -> "Recommender":
        """An unfitted model with the settings ``settings()`` gave (a model whose settings are not keyword arguments overrides this)."""
        return cls(**settings)

    @classmethod
    def load(cls, path: str) -> "Recommender":
        """The model saved in ``path``: of this class, or of any model class when called on ``Recommender``."""
        from pyspark.sql import SparkSession

        spark = SparkSession.active()
        meta = read_small_json(spark, f"{path}/meta")
        saved = next((model_class for model_class in _model_classes(cls) if model_class.__name__ == meta["class"]), None)
        if saved is None:
            raise RecommendationError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
        model = saved.from_settings(meta["settings"])
        model._seen = model._read_seen(spark, path, meta.get("seen_in"))
        model._load_state(spark, path)
        return model


def _model_classes(cls) -> list[type]:
    """``cls`` and every class derived from it."""
    return [cls] + [derived for subclass in cls.__subclasses__() for derived in _model_classes(subclass)]


def write_small_json(spark, path: str, payload: dict) -> None:
    """One line of JSON as a text dataset of one file (``read_small_json`` reads it back), written through Hadoop's file
    system, so any URI a model is saved to works, without a Spark job per file."""
    from runtime.storage import FileSystem

    files = FileSystem(spark)
    if files.exists(path):
        files.delete(path)
    files.write_text(f"{path}/part-00000.json", json.dumps(payload) + "\n")


def read_small_json(spark, path: str) -> dict:
    return json.loads(spark.read.text(path).first()[0])


def check_n(n: int) -> None:
    if n < 1:
        raise RecommendationError(f"n must be at least 1, got {n}")


def top_n(scored, n: int, key: str = C.CUSTOMER_ID, item: str = C.ITEM_ID):
    """Keep the ``n`` best-scored rows per ``key`` and number them 1..n."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(key).orderBy(F.desc(C.SCORE), F.col(item))
    return scored.withColumn(C.RANK, F.row_number().over(order)).where(F.col(C.RANK) <= n).select(key, C.RANK, item, C.SCORE)


def drop_seen(candidates, seen):
    return candidates.join(seen, [C.CUSTOMER_ID, C.ITEM_ID], "left_anti")


def in_parallel(tasks: dict, *, workers: int = 4) -> dict:
    """Run independent Spark actions (``name: function``) from a few driver threads; their results by name.

    On small data a job leaves cores idle while the driver plans, serialises and
    schedules the next one (at 1M rows the executor was busy about 60% of the
    recommendations stage). Jobs submitted together fill those gaps. Running tasks
    are still bounded by the cores, so executor memory is not multiplied;
    pyspark.ml's CrossValidator(parallelism=...) fits models the same way.
    """
    from concurrent.futures import ThreadPoolExecutor

    from pyspark.sql import SparkSession
    from pyspark.util import inheritable_thread_target

    if len(tasks) <= 1:
        return {name: task() for name, task in tasks.items()}
    inherit = inheritable_thread_target(SparkSession.active())  # the caller's job properties and tags
    with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        futures = {name: pool.submit(inherit(task)) for name, task in tasks.items()}
        return {name: future.result() for name, future in futures.items()}


def in_background(task):
    """Start ``task`` (Spark actions) on a driver thread of its own and return its ``Future``: work that the caller needs
    later and that fills the cores the caller's own jobs leave idle meanwhile (see in_parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    from pyspark.sql import SparkSession
    from pyspark.util import inheritable_thread_target

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(inheritable_thread_target(SparkSession.active())(task))
    pool.shutdown(wait=False)  # its thread ends with the task
    return future


def candidate_depth(n: int, exclude_seen: bool) -> int:
    return n + SEEN_ALLOWANCE if exclude_seen else n
