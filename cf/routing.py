"""Candidate sources for each list, and routing: serve what won on validation.

Lists (what a customer is shown):

    discover   items the customer never bought
    for_you    the best list, repeats allowed
    buy_again  the customer's own staples
    cold       for customers the models do not know

Each list has candidate sources: single models, or two models fused by
weighted reciprocal rank (``a+b``: score = 1/(offset + rank in a) + w/(offset + rank in b)).
``choose_routes`` picks, per list and segment, the source with the best
NDCG@k on a validation window; popularity is always a candidate, and a route
that would lose to it falls back to it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import reduce

from cf.als import ALSRecommender, SegmentedALS
from cf.base import top_n
from cf.interactions import InteractionConfig, RecommendationError, interactions
from cf.neighbours import BuyAgainRecommender, CooccurrenceRecommender
from coldstart.popularity import PopularityRecommender, TrendingRecommender
from segmentation import columns as C

BASELINE = "popularity"
ALL_SEGMENTS = "all"
CANDIDATES = {
    "discover": (BASELINE, "trending", "cooccurrence", "als", "segment_als", "trending+segment_als", "trending+als"),
    "for_you": (BASELINE, "buy_again", "buy_again+trending", "als", "segment_als", "buy_again+segment_als"),
    "buy_again": ("buy_again",),
    "cold": (BASELINE, "popularity_by_country", "trending", "popularity_by_country+trending"),
}
EXCLUDES_SEEN = {"discover": True, "for_you": False, "buy_again": False, "cold": False}


@dataclass(frozen=True)
class RoutingConfig:
    n: int = 10
    k: int = 10
    validation_days: int = 90
    buy_again_half_life_days: float = 180.0
    trending_half_life_days: float = 14.0
    fusion_weight: float = 0.5  # weight of the second source in a fused list
    fusion_offset: float = 10.0
    fusion_depth: int = 50  # how deep each source's list is read when fusing
    als_rank: int = 32
    als_reg_param: float = 0.1
    als_alpha: float = 10.0
    als_max_iter: int = 10
    min_segment_customers: int = 50


@dataclass
class Sources:
    models: dict
    as_of: dt.date


def fit_sources(purchases, *, as_of: dt.date, segments, config: RoutingConfig = RoutingConfig()) -> Sources:
    """Fit every model on purchases before ``as_of`` (segments: customer_id, segment as of the same date)."""
    counts = interactions(purchases, as_of=as_of).cache()
    staples = interactions(purchases, as_of=as_of, config=InteractionConfig(half_life_days=config.buy_again_half_life_days))
    countries = counts.select(C.CUSTOMER_ID).distinct().join(purchases.select(C.CUSTOMER_ID, C.COUNTRY).distinct(), C.CUSTOMER_ID)
    als = {"rank": config.als_rank, "reg_param": config.als_reg_param, "alpha": config.als_alpha, "max_iter": config.als_max_iter}
    models = {
        BASELINE: PopularityRecommender().fit(counts),
        "popularity_by_country": PopularityRecommender(by=C.COUNTRY).fit(counts, countries),
        "trending": TrendingRecommender(as_of=as_of.isoformat(), half_life_days=config.trending_half_life_days).fit(counts),
        "buy_again": BuyAgainRecommender().fit(staples.cache()),
        "cooccurrence": CooccurrenceRecommender().fit(counts),
        "als": ALSRecommender(**als).fit(counts),
        "segment_als": SegmentedALS(min_customers=config.min_segment_customers, **als).fit(counts, segments),
    }
    return Sources(models=models, as_of=as_of)


def release(lists: dict) -> None:
    for frame in lists.values():
        frame.unpersist()


def fuse(first, second, *, weight: float, offset: float, n: int):
    """Weighted reciprocal-rank fusion of two ranked lists."""
    from pyspark.sql import functions as F

    def contribution(recs, w):
        return recs.select(C.CUSTOMER_ID, C.ITEM_ID, (F.lit(w) / (F.col(C.RANK) + offset)).alias(C.SCORE))

    summed = contribution(first, 1.0).unionByName(contribution(second, weight)).groupBy(C.CUSTOMER_ID, C.ITEM_ID).agg(
        F.sum(C.SCORE).alias(C.SCORE)
    )
    return top_n(summed, n)


def candidate_lists(sources: Sources, customers, list_name: str, config: RoutingConfig = RoutingConfig(), names=None) -> dict:
    """Each candidate source's top-n list for ``customers`` (with a country column for by-country sources)."""
    if list_name not in CANDIDATES:
        raise RecommendationError(f"unknown list '{list_name}': lists are {', '.join(CANDIDATES)}")
    exclude = EXCLUDES_SEEN[list_name]

    def single(name: str, n: int):
        return sources.models[name].recommend(customers, n, exclude_seen=exclude)

    lists = {}
    for name in names or CANDIDATES[list_name]:
        if "+" in name:
            first, second = name.split("+")
            depth = max(config.fusion_depth, config.n)
            recs = fuse(single(first, depth), single(second, depth), weight=config.fusion_weight,
                        offset=config.fusion_offset, n=config.n)
        else:
            recs = single(name, config.n)
        # Cached because each list is scored several times (overall, per segment, routed); see release().
        lists[name] = recs.cache()
    return lists


def score_lists(lists: dict, relevant, *, k: int, catalogue_size: int, segments=None) -> list[dict]:
    """NDCG and friends for every source: overall (segment "all"), and per segment when ``segments`` is given."""
    from cf.evaluation import ranking_metrics

    rows = []
    for name, recs in lists.items():
        for row in ranking_metrics(recs, relevant, k=k, catalogue_size=catalogue_size, by=segments):
            rows.append({**row, "source": name, C.SEGMENT: row.get(C.SEGMENT) or ALL_SEGMENTS})
    return rows


def choose_routes(rows: list[dict], metric: str = "ndcg") -> dict[str, dict]:
    """Per segment: the best source on ``metric``; never one that loses to popularity."""
    routes = {}
    for segment in sorted({row[C.SEGMENT] for row in rows if row[C.SEGMENT] is not None}):
        here = [row for row in rows if row[C.SEGMENT] == segment]
        best = max(here, key=lambda row: (row[metric], row["source"] == BASELINE))
        baseline = next((row for row in here if row["source"] == BASELINE), None)
        if baseline is not None and best[metric] < baseline[metric]:
            best = baseline
        routes[segment] = {
            "source": best["source"], metric: best[metric],
            f"baseline_{metric}": baseline[metric] if baseline else None, "customers": best["customers"],
        }
    return routes


def serve(lists: dict, routes: dict[str, dict], customers, segments=None):
    """The routed list: each customer gets their segment's winning source (or the overall winner), with a source column."""
    from pyspark.sql import functions as F

    overall = routes[ALL_SEGMENTS]["source"]
    if segments is None:
        chosen = customers.select(C.CUSTOMER_ID).distinct().withColumn("source", F.lit(overall))
    else:
        pick = F.lit(overall)  # customers without a segment route get the overall winner
        for segment, route in routes.items():
            if segment != ALL_SEGMENTS:
                pick = F.when(F.col(C.SEGMENT) == segment, F.lit(route["source"])).otherwise(pick)
        chosen = customers.select(C.CUSTOMER_ID).distinct().join(segments, C.CUSTOMER_ID, "left").select(C.CUSTOMER_ID, pick.alias("source"))
    served = [lists[name].join(chosen.where(F.col("source") == name), C.CUSTOMER_ID) for name in sorted(set(lists))]
    return reduce(lambda a, b: a.unionByName(b), served)
