"""Next-basket lists: TIFU-KNN's candidates re-ranked by what the shop's own history says about buying again.

TIFU-KNN knows how often and how recently a customer bought an item, blended with their
neighbours, but not the item's rhythm: a consumable bought every month is due again a month
after the last purchase, a one-off purchase never is. For each of TIFU-KNN's top ``depth``
candidates, ``FEATURES`` describe

- the candidate: TIFU-KNN's score, its own and neighbour parts, its rank;
- the pair: days the customer bought the item, days since the last, and repurchase timing:
  days since the last over the customer's usual interval for the item (log, and its square,
  so due items rise and long-overdue ones fall);
- the customer: baskets, days since their last, share of their purchases that were repeats;
- the item: buyers, share of its buyers who bought it again, buyers in the last 30 days
  against the 90 before;
- the season a year earlier: how often the customer bought the item in the days a year before
  those to predict, and how the item's buyers then rose or fell against the days before them
  (so last Christmas's items come back for this one; zero with less than a year of history);

with "bought before" crossed with the repeat shares, so repeats and new items weigh differently.

A small gradient-boosted tree model (scikit-learn) learns from the history itself: features as
of ``label_days`` before the as-of date, labels = bought in those days. Nothing after the as-of
date is used, so it is fitted like any model, on a validation window's history too. The trees
are few and shallow (``RANKER``): the quarter they learn from is not the one served, and a
deeper fit learns that quarter's peculiarities. The training rows are a hash sample of customers
of at most ``max_training_rows``; the model scores candidates in batches on the executors. With
too little history to hold out ``label_days`` the lists are TIFU-KNN's own.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import pickle

from cf.base import Recommender, read_small_json, top_n, write_small_json
from cf.interactions import RecommendationError
from cf.tifu import NEIGHBOUR_SCORE, OWN_SCORE, TifuRecommender, TifuSettings
from segmentation import columns as C

DAY = "_day"
LABEL = "_label"
MIN_LABEL_DAYS = 14  # a shorter hold-out has too few repeat purchases to learn from
YEAR = 365
RANKER = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "l2_regularization": 1.0, "min_samples_leaf": 50,
          "random_state": 0}


def _features():
    """name -> Spark column over a candidate with its pair, customer and item statistics (see the module)."""
    from pyspark.sql import functions as F

    bought = (F.col("_times") > 0).cast("double")
    cycle = F.col("_gap").isNotNull().cast("double")
    log_ratio = F.coalesce(F.log(F.least(F.greatest(F.col("_age") / F.col("_gap"), F.lit(0.05)), F.lit(50.0))), F.lit(0.0))
    return {
        "score": F.col(C.SCORE), "own": F.col(OWN_SCORE), "neighbours": F.col(NEIGHBOUR_SCORE), "log_rank": F.log(F.col(C.RANK)),
        "bought": bought, "log_times": F.log1p("_times"), "log_age": F.log1p(F.least(F.col("_age"), F.lit(1000))) * bought,
        "cycle": cycle, "log_due": log_ratio * cycle, "log_due_squared": log_ratio * log_ratio * cycle,
        "log_baskets": F.log1p("_baskets"), "log_idle": F.log1p("_idle"), "customer_repeats": F.col("_customer_repeats"),
        "item_repeats": F.col("_item_repeats"), "log_buyers": F.log1p("_buyers"), "log_recent": F.log1p("_recent"),
        "trend": F.log1p("_recent") - F.log1p(F.col("_earlier") / 3.0),
        "bought_x_customer_repeats": bought * F.col("_customer_repeats"), "bought_x_item_repeats": bought * F.col("_item_repeats"),
        "new_x_customer_repeats": (1.0 - bought) * F.col("_customer_repeats"),
        "log_season_times": F.log1p("_season_times"), "season_trend": F.log1p("_season_ahead") - F.log1p("_season_before"),
    }


FEATURES = ("score", "own", "neighbours", "log_rank", "bought", "log_times", "log_age", "cycle", "log_due", "log_due_squared",
            "log_baskets", "log_idle", "customer_repeats", "item_repeats", "log_buyers", "log_recent", "trend",
            "bought_x_customer_repeats", "bought_x_item_repeats", "new_x_customer_repeats", "log_season_times", "season_trend")


class NextBasketRecommender(Recommender):
    """TIFU-KNN's top ``depth`` re-ranked by a repurchase model learnt on the last ``label_days`` of the history."""

    name = "next_basket"

    def __init__(self, *, tifu: dict | None = None, depth: int = 50, label_days: int = 90, max_training_rows: int = 200_000,
                 as_of: str | None = None):
        super().__init__()
        if depth < 1 or label_days < 1 or max_training_rows < 1:
            raise RecommendationError(f"next_basket needs depth, label_days and max_training_rows of 1 or more, "
                                      f"got {depth}, {label_days} and {max_training_rows}")
        self.tifu = dict(tifu or TifuSettings().model_settings())
        self.depth, self.label_days, self.max_training_rows, self.as_of = depth, label_days, max_training_rows, as_of
        self.ranker = None  # the fitted scikit-learn model; None: TIFU-KNN's order
        self.training: dict = {}  # what the ranker learnt from
        self._model: TifuRecommender | None = None
        self._statistics = None  # (pairs, customers, items) as of the as-of date

    def settings(self) -> dict:
        return {"tifu": self.tifu, "depth": self.depth, "label_days": self.label_days, "max_training_rows": self.max_training_rows,
                "as_of": self.as_of}

    # ------------------------------------------------------------------ fitting

    def fit(self, interactions, customers=None, *, fitted_tifu: TifuRecommender | None = None):
        """``interactions``: purchase rows (customer_id, item_id, timestamp), as TIFU-KNN learns from; ``fitted_tifu``:
        a TIFU-KNN with this model's settings fitted on the same rows up to the same as-of date, used instead of fitting one."""
        from pyspark.sql import functions as F

        if C.TIMESTAMP not in interactions.columns:
            raise RecommendationError("next_basket learns from purchase rows with a timestamp")
        as_of = (dt.date.fromisoformat(self.as_of) if self.as_of
                 else interactions.agg(F.max(C.TIMESTAMP)).first()[0].date() + dt.timedelta(days=1))
        lines = interactions.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp")).select(
            C.CUSTOMER_ID, C.ITEM_ID, F.to_date(C.TIMESTAMP).alias(DAY)).distinct().cache()
        self.as_of = as_of.isoformat()
        self._learn_ranker(interactions, lines, as_of)
        given = fitted_tifu.settings() if fitted_tifu is not None else {}
        if fitted_tifu is not None and any(given[name] != value for name, value in {**self.tifu, "as_of": self.as_of}.items()):
            raise RecommendationError("the fitted TIFU-KNN given to next_basket has other settings or another as-of date")
        self._model = fitted_tifu or TifuRecommender(**self.tifu, as_of=self.as_of).fit(interactions)
        self._seen = self._model._seen
        season_days = self.training.get("label_days", self.label_days)
        self._statistics = tuple(frame.cache() for frame in statistics(lines, as_of, season_days=season_days))
        lines.unpersist()
        return self

    def _learn_ranker(self, interactions, lines, as_of: dt.date) -> None:
        """The ranker from features as of ``label_days`` (at most a quarter of the history) before ``as_of``; none with too little."""
        from pyspark.sql import functions as F

        first = lines.agg(F.min(DAY)).first()[0]
        days = min(self.label_days, (as_of - first).days // 4) if first else 0
        if days < MIN_LABEL_DAYS:
            self.ranker, self.training = None, {"reason": f"{(as_of - first).days if first else 0} days of history hold out too few "
                                                          f"to learn repurchase weights: TIFU-KNN's order"}
            return
        start = as_of - dt.timedelta(days=days)
        earlier = lines.where(F.col(DAY) < F.lit(start))
        bought = lines.where(F.col(DAY) >= F.lit(start)).select(C.CUSTOMER_ID, C.ITEM_ID).distinct()
        warm = bought.select(C.CUSTOMER_ID).distinct().join(earlier.select(C.CUSTOMER_ID).distinct(), C.CUSTOMER_ID)
        customers = warm.count()
        share = min(1.0, self.max_training_rows / max(1, customers * self.depth))
        if share < 1.0:
            buckets = 100_000
            warm = warm.where(F.pmod(F.xxhash64(C.CUSTOMER_ID), F.lit(buckets)) < math.ceil(buckets * share))
        model = TifuRecommender(**self.tifu, as_of=start.isoformat()).fit(interactions)
        candidates = model.scored(warm, self.depth)
        rows = with_features(candidates, statistics(earlier, start, season_days=days)).join(
            bought.withColumn(LABEL, F.lit(1.0)), [C.CUSTOMER_ID, C.ITEM_ID], "left").fillna({LABEL: 0.0})
        training = rows.select(*FEATURES, LABEL).toPandas()
        model.release()
        self.training = {"label_days": days, "from": start.isoformat(), "customers": customers, "customer_share": round(share, 4),
                         "rows": len(training), "positives": int(training[LABEL].sum())}
        if training[LABEL].nunique() < 2:
            self.ranker = None
            self.training["reason"] = "every candidate had the same label: TIFU-KNN's order"
            return
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.ranker = HistGradientBoostingClassifier(**RANKER).fit(training[list(FEATURES)], training[LABEL])

    # ------------------------------------------------------------------ lists

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False):
        self._ready(n)
        candidates = self._model.scored(customers, max(n, self.depth), exclude_seen=exclude_seen)
        if self.ranker is None:
            return top_n(candidates, n)
        return top_n(ranked(with_features(candidates, self._statistics), self.ranker), n)

    def similar_items(self, items, n: int = 10):
        self._check_fitted()
        return self._model.similar_items(items, n)

    # ------------------------------------------------------------------ persistence

    def _write_seen(self, path: str, seen_in: str | None) -> None:
        """Nothing: the seen pairs are TIFU-KNN's, saved with it."""

    def _read_seen(self, spark, path: str, seen_in: str | None):
        return None  # set by _load_state

    def _save_state(self, path: str) -> None:
        from pyspark.sql import SparkSession

        self._model.save(f"{path}/tifu")
        ranker = None if self.ranker is None else base64.b64encode(pickle.dumps(self.ranker)).decode("ascii")
        write_small_json(SparkSession.active(), f"{path}/ranker", {"ranker": ranker, "training": self.training})
        for name, frame in zip(("pairs", "customers", "items"), self._statistics):
            frame.write.mode("overwrite").parquet(f"{path}/{name}")

    def _load_state(self, spark, path: str) -> None:
        self._model = TifuRecommender.load(f"{path}/tifu")
        self._seen = self._model._seen
        learnt = read_small_json(spark, f"{path}/ranker")  # written by _save_state: segrec's own model directory
        self.ranker = None if learnt["ranker"] is None else pickle.loads(base64.b64decode(learnt["ranker"]))
        self.training = learnt["training"]
        self._statistics = tuple(spark.read.parquet(f"{path}/{name}") for name in ("pairs", "customers", "items"))


def statistics(lines, as_of: dt.date, *, season_days: int):
    """(pairs, customers, items) as of ``as_of`` from distinct (customer_id, item_id, _day) purchase lines before it; the
    season a year earlier is the ``season_days`` from a year before ``as_of``, and as many days before those."""
    from pyspark.sql import functions as F

    at = F.lit(as_of)
    season_start = as_of - dt.timedelta(days=YEAR)
    season = (F.col(DAY) >= F.lit(season_start)) & (F.col(DAY) < F.lit(season_start + dt.timedelta(days=season_days)))
    before_season = (F.col(DAY) >= F.lit(season_start - dt.timedelta(days=season_days))) & (F.col(DAY) < F.lit(season_start))
    pairs = lines.groupBy(C.CUSTOMER_ID, C.ITEM_ID).agg(
        F.count(F.lit(1)).alias("_times"), F.min(DAY).alias("_first"), F.max(DAY).alias("_last"),
        F.count(F.when(season, F.lit(1))).alias("_season_times"))
    pairs = pairs.select(C.CUSTOMER_ID, C.ITEM_ID, "_times", "_season_times", F.datediff(at, "_last").alias("_age"),
                         F.when(F.col("_times") > 1, F.datediff("_last", "_first") / (F.col("_times") - 1)).alias("_gap"))
    customers = lines.groupBy(C.CUSTOMER_ID).agg(F.count_distinct(DAY).alias("_baskets"), F.datediff(at, F.max(DAY)).alias("_idle")).join(
        pairs.groupBy(C.CUSTOMER_ID).agg((1.0 - F.count(F.lit(1)) / F.sum("_times")).alias("_customer_repeats")), C.CUSTOMER_ID)
    recent = F.col(DAY) >= F.date_sub(at, 30)
    earlier = (F.col(DAY) < F.date_sub(at, 30)) & (F.col(DAY) >= F.date_sub(at, 120))
    items = pairs.groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("_buyers"), F.avg((F.col("_times") > 1).cast("double")).alias("_item_repeats")).join(
        lines.groupBy(C.ITEM_ID).agg(F.count_distinct(F.when(recent, F.col(C.CUSTOMER_ID))).alias("_recent"),
                                     F.count_distinct(F.when(earlier, F.col(C.CUSTOMER_ID))).alias("_earlier"),
                                     F.count_distinct(F.when(season, F.col(C.CUSTOMER_ID))).alias("_season_ahead"),
                                     F.count_distinct(F.when(before_season, F.col(C.CUSTOMER_ID))).alias("_season_before")), C.ITEM_ID)
    return pairs, customers, items


def with_features(candidates, statistics):
    """``candidates`` (customer_id, rank, item_id, score, own_score, neighbour_score) with every feature of ``FEATURES``."""
    pairs, customers, items = statistics
    features = _features()
    joined = (candidates.join(pairs, [C.CUSTOMER_ID, C.ITEM_ID], "left").join(customers, C.CUSTOMER_ID, "left")
              .join(items, C.ITEM_ID, "left").fillna({"_times": 0, "_age": 0, "_recent": 0, "_earlier": 0, "_buyers": 0, "_item_repeats": 0.0,
                                                      "_customer_repeats": 0.0, "_baskets": 0, "_idle": 0,
                                                      "_season_times": 0, "_season_ahead": 0, "_season_before": 0}))
    return joined.select(C.CUSTOMER_ID, C.ITEM_ID, *(features[name].alias(name) for name in FEATURES))


def ranked(features, ranker):
    """customer_id, item_id, score: ``ranker``'s probability of a purchase for each row of ``features`` (``with_features``),
    computed in batches on the executors."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([features.schema[C.CUSTOMER_ID], features.schema[C.ITEM_ID], StructField(C.SCORE, DoubleType())])

    def score(batches):
        for batch in batches:
            yield batch[[C.CUSTOMER_ID, C.ITEM_ID]].assign(**{C.SCORE: ranker.predict_proba(batch[list(FEATURES)])[:, 1]})

    return features.mapInPandas(score, schema)
