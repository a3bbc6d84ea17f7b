"""Candidate sources for each list, and routing: serve what won on validation.

Lists (what a customer is shown):

    discover   items the customer never bought
    for_you    the best list, repeats allowed
    buy_again  the customer's own staples
    cold       for customers the models do not know

Each list has candidate sources: single models, or two models fused by
weighted reciprocal rank (``a+b``: score = 1/(offset + rank in a) + w/(offset + rank in b);
``source_parts`` reads the names), listed from the simplest. ``choose_routes`` picks,
per list and segment, on one or more validation windows (rolling origin): popularity
unless a source beats it on every window and significantly over them all (the paired
difference of NDCG@k over the same customers, pooled across windows by a random-effects
meta-analysis: the lower end of its 95% interval above zero), and a more complex source
over a simpler one only when it scores higher on every window. What
is served is ``routing.model.RoutedRecommender``: the chosen routes over the fitted sources.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from functools import reduce

from cf.als import ALSRecommender, SegmentedALS
from cf.base import drop_seen, in_parallel, top_n
from cf.interactions import RecommendationError
from cf.nextbasket import NextBasketRecommender
from cf.tifu import TifuRecommender, TifuSettings
from cf.tuning import ALL_SEGMENTS, ALSSettings, InteractionCache
from cf.neighbours import BuyAgainRecommender, CooccurrenceRecommender
from coldstart.popularity import FirstBasketRecommender, PopularityRecommender, TrendingRecommender
from segmentation import columns as C
from segmentation.windows import WindowRule

BASELINE = "popularity"
CANDIDATES = {
    "discover": (BASELINE, "trending", "cooccurrence", "als", "segment_als", "tifu", "trending+segment_als", "trending+als",
                 "tifu+segment_als"),
    "for_you": (BASELINE, "buy_again", "buy_again+trending", "als", "segment_als", "tifu", "next_basket", "buy_again+segment_als",
                "tifu+segment_als", "tifu+trending", "next_basket+segment_als", "next_basket+trending"),
    "buy_again": ("buy_again",),
    # first_basket+popularity: what newcomers bought first, hedged by what everyone buys when last quarter's newcomers were unusual
    "cold": (BASELINE, "popularity_by_country", "trending", "first_basket", "popularity_by_country+trending", "first_basket+popularity"),
}
EXCLUDES_SEEN = {"discover": True, "for_you": False, "buy_again": False, "cold": False}
MODELS = ("popularity_by_country", "trending", "first_basket", "buy_again", "cooccurrence", "als", "segment_als", "tifu", "next_basket")
# What each list is served when the history leaves no validation window: the first of these that is fitted.
# None needs tuning, and each falls back to popularity where it has nothing to say.
UNVALIDATED = {"discover": (BASELINE,), "for_you": ("buy_again",), "cold": ("popularity_by_country", BASELINE)}
UNVALIDATED_ROUTE = "unvalidated"  # a route's chosen_on when no validation window chose it
SIMILAR_ITEM_SOURCES = ("cooccurrence", "als")


@dataclass(frozen=True)
class RoutingConfig:
    n: int = 10  # list length while evaluating (metrics look at the top k)
    k: int = 10
    served_n: int = 30  # list length written for serving
    validation_days: int | None = None  # None: validation_share of the history before the as-of date, at most max_validation_days
    validation_share: float = 0.25
    max_validation_days: int = 90
    validation_windows: int = 2  # rolling origin: routes must hold on each window, the latest and those as long before it
    min_validation_days: int = 14  # a shorter window validates nothing: the lists get the UNVALIDATED routes
    validation_customers: int = 50_000  # beyond this, validation uses a hash sample of customers
    buy_again_half_life_days: float = 180.0
    trending_half_life_days: float = 14.0
    first_basket_days: int = 90  # first_basket: the first purchases of the customers who first bought this many days back
    fusion_weight: float = 0.5  # weight of the second source in a fused list
    fusion_offset: float = 10.0
    fusion_depth: int = 50  # how deep each source's list is read when fusing
    min_segment_customers: int = 50
    min_route_customers: int = 100  # a segment scored on fewer validation customers takes the overall route
    similar_items: int = 20  # length of each item's "also bought" list
    cooccurrence_max_items: int = 50  # per customer; co-occurrence costs grow with its square
    models: tuple[str, ...] = MODELS  # the models to fit (popularity always is); fewer models, less time
    affinity_items: int = 500  # the most-bought items (and every item group) whose likeliest buyers are listed; 0: none
    affinity_customers: int = 1000  # customers listed per item or group, likeliest first

    def __post_init__(self):
        if min(self.affinity_items, self.affinity_customers - 1) < 0:
            raise RecommendationError("routing.affinity_items must be 0 or more and routing.affinity_customers 1 or more")
        if min(self.validation_customers, self.cooccurrence_max_items, self.min_route_customers, self.validation_windows) < 1:
            raise RecommendationError("routing.validation_customers, routing.cooccurrence_max_items, routing.min_route_customers "
                                      "and routing.validation_windows must be 1 or more")
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise RecommendationError(f"unknown model(s) {', '.join(unknown)} in routing.models; models are {', '.join(MODELS)}")
        if "buy_again" not in self.models:
            raise RecommendationError("routing.models must include buy_again: the buy_again list is always served")
        if not set(self.models) & set(SIMILAR_ITEM_SOURCES):
            raise RecommendationError(f"routing.models needs one of {', '.join(SIMILAR_ITEM_SOURCES)} for the \"also bought\" lists")

    def candidates(self, list_name: str) -> list[str]:
        """The list's candidate sources made only of fitted models."""
        fitted = set(self.models) | {BASELINE}
        return [name for name in CANDIDATES[list_name] if set(source_parts(name)) <= fitted]

    def similar_item_sources(self) -> list[str]:
        return [name for name in SIMILAR_ITEM_SOURCES if name in self.models]

    def validation_rule(self) -> WindowRule:
        return WindowRule(name="validation window", flag="--validation-days", share=self.validation_share,
                          max_days=self.max_validation_days, min_days=self.min_validation_days)


def source_parts(source: str) -> list[str]:
    """The models a source is made of: one, or the two of a fused ``a+b``."""
    return source.split("+")


def is_fused(source: str) -> bool:
    return len(source_parts(source)) > 1


@dataclass
class Sources:
    """The fitted models by name, learnt from purchases before ``as_of``."""

    models: dict
    as_of: dt.date

    @property
    def on_all_pairs(self) -> frozenset[str]:
        """The models that learnt from every training pair and can share their seen pairs (per-segment ALS learns from
        its segments' only; TIFU-KNN's seen pairs are its vectors)."""
        return frozenset(self.models) - {"segment_als", "tifu", "next_basket"}


def fit_sources(purchases, *, as_of: dt.date, segments, config: RoutingConfig = RoutingConfig(),
                als_settings: dict[str, ALSSettings] | None = None, tifu_settings: TifuSettings | None = None,
                segment_als_serves: list[str] | None = None, models: list[str] | None = None, echo=None) -> Sources:
    """Fit ``models`` (default: ``config.models``; popularity always) on purchases before ``as_of`` (segments: customer_id,
    segment as of the same date).

    ``als_settings``: tuned ALS settings per segment, ``ALL_SEGMENTS`` for the global model (defaults otherwise);
    ``tifu_settings``: TIFU-KNN's tuned settings (defaults otherwise), which next-basket re-ranks.
    ``segment_als_serves``: the only segments per-segment ALS will be asked about (see ``segments_served_by``);
    it is fitted for their customers alone. None: for everyone.
    ``echo``, when given, is told of each model as it is fitted.
    """
    from pyspark.sql import functions as F

    tuned = als_settings or {}
    tifu = tifu_settings or TifuSettings()
    overall = tuned.get(ALL_SEGMENTS, ALSSettings())
    tuned_segments = sorted(name for name in tuned if name != ALL_SEGMENTS)
    cache = InteractionCache(purchases, as_of, [0.0, config.buy_again_half_life_days, overall.half_life_days,
                                                *(tuned[name].half_life_days for name in tuned_segments)])
    counts = cache.with_half_life(0.0)
    staples = cache.with_half_life(config.buy_again_half_life_days)
    countries = counts.select(C.CUSTOMER_ID).distinct().join(purchases.select(C.CUSTOMER_ID, C.COUNTRY).distinct(), C.CUSTOMER_ID)
    # Each segment's model learns from interactions decayed with its own tuned half-life.
    tuned_members = segments.where(F.col(C.SEGMENT).isin(tuned_segments)).select(C.CUSTOMER_ID)
    segment_interactions = reduce(
        lambda a, b: a.unionByName(b),
        (cache.get(tuned[name]).join(segments.where(F.col(C.SEGMENT) == name).select(C.CUSTOMER_ID), C.CUSTOMER_ID) for name in tuned_segments),
        cache.get(overall).join(tuned_members, C.CUSTOMER_ID, "left_anti"),
    )
    als_segments = segments
    if segment_als_serves is not None:
        als_segments = segments.where(F.col(C.SEGMENT).isin(list(segment_als_serves)))
        segment_interactions = segment_interactions.join(als_segments.select(C.CUSTOMER_ID), C.CUSTOMER_ID)
    fitted = {}
    build = {
        BASELINE: lambda: PopularityRecommender().fit(counts),
        "popularity_by_country": lambda: PopularityRecommender(by=C.COUNTRY).fit(counts, countries),
        "trending": lambda: TrendingRecommender(as_of=as_of.isoformat(), half_life_days=config.trending_half_life_days).fit(counts),
        "first_basket": lambda: FirstBasketRecommender(as_of=as_of.isoformat(), days=config.first_basket_days).fit(purchases),
        "buy_again": lambda: BuyAgainRecommender().fit(staples),
        "cooccurrence": lambda: CooccurrenceRecommender(max_items_per_customer=config.cooccurrence_max_items).fit(counts),
        "als": lambda: ALSRecommender(**overall.model_settings()).fit(cache.get(overall)),
        "segment_als": lambda: SegmentedALS(
            min_customers=config.min_segment_customers, **overall.model_settings(),
            per_segment={name: tuned[name].model_settings() for name in tuned_segments},
        ).fit(segment_interactions, als_segments),
        "tifu": lambda: TifuRecommender(**tifu.model_settings(), as_of=as_of.isoformat()).fit(purchases),
        "next_basket": lambda: NextBasketRecommender(tifu=tifu.model_settings(), as_of=as_of.isoformat()).fit(
            purchases, fitted_tifu=fitted.get("tifu")),
    }
    names = [BASELINE, *(name for name in (config.models if models is None else models) if name != BASELINE)]

    def fit(name: str) -> None:
        started = time.monotonic()
        fitted[name] = build[name]()
        if echo:
            echo(f"    fitted {name} ({len(fitted)}/{len(names)}) in {time.monotonic() - started:.0f}s")

    def fit_in_turn(chain: tuple[str, ...]):
        return lambda: [fit(name) for name in chain if name in names]

    # Side by side, as in_parallel says why; the two ALS fits one after the other (each caches its blocks), and
    # next-basket after the TIFU-KNN it re-ranks.
    in_parallel({chain: fit_in_turn(chain) for chain in FIT_CHAINS})
    return Sources(models={name: fitted[name] for name in names}, as_of=as_of)


# Models fitted one after the other within a chain, chains side by side (see fit_sources).
FIT_CHAINS = ((BASELINE, "popularity_by_country", "trending", "first_basket", "buy_again"), ("cooccurrence",), ("als", "segment_als"),
              ("tifu", "next_basket"))


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
    """Each candidate source's top-n list for ``customers`` (with a country column for by-country sources).

    Every model is asked once: a model that is also part of a fused source is read
    ``fusion_depth`` deep, and its own top-n list is the head of that.
    """
    from pyspark.sql import functions as F

    if list_name not in CANDIDATES:
        raise RecommendationError(f"unknown list '{list_name}': lists are {', '.join(CANDIDATES)}")
    wanted = names or config.candidates(list_name)
    fused_parts = {part for name in wanted if is_fused(name) for part in source_parts(name)}
    singles_wanted = sorted({part for name in wanted for part in source_parts(name)})

    def single(name: str):
        depth = max(config.fusion_depth, config.n) if name in fused_parts else config.n
        return lambda: materialize(sources.models[name].recommend(customers, depth, exclude_seen=EXCLUDES_SEEN[list_name]))

    def fused(name: str):
        first, second = source_parts(name)
        return lambda: materialize(fuse(singles[first], singles[second], weight=config.fusion_weight, offset=config.fusion_offset, n=config.n))

    # Each model is asked once (its lists are independent), then the fused lists are made from them.
    singles = in_parallel({name: single(name) for name in singles_wanted})
    lists = in_parallel({name: fused(name) for name in wanted if is_fused(name)})
    return {name: lists[name] if is_fused(name) else singles[name].where(F.col(C.RANK) <= config.n) for name in wanted}


def materialize(frame):
    """Compute ``frame`` once and cut its lineage.

    Each list is read several times (scored overall and per segment, fused, routed),
    and the plans of per-segment ALS lists are large: used as they are, every later
    query would re-plan them, which costs the driver far more memory than the rows.
    The copy's columns get new ids: a checkpoint keeps those of the plan it cut, and
    when a list made from the scored customers met their relevant items twice in one
    query (the hits, then the per-customer totals), Spark 4.3 with adaptive execution
    off could not tell the two apart ("Failure when resolving conflicting references").
    """
    from pyspark.sql import functions as F

    checkpoint = frame.localCheckpoint(eager=True)
    return checkpoint.select(*(F.col(name).alias(name) for name in checkpoint.columns))


def score_lists(lists: dict, relevant, *, k: int, catalogue_size: int, segments=None, intervals: bool = False) -> list[dict]:
    """NDCG and friends for every source, with its paired difference from popularity when popularity is among them:
    overall (segment "all"), and per segment when ``segments`` is given; bootstrap intervals with ``intervals``."""
    from cf.evaluation import compare_lists

    rows = compare_lists(lists, relevant, k=k, catalogue_size=catalogue_size, by=segments,
                         baseline=BASELINE if BASELINE in lists else None, intervals=intervals)
    return [{**row, C.SEGMENT: row.get(C.SEGMENT) or ALL_SEGMENTS} for row in rows]


Z_95 = 1.959964  # a two-sided 95% interval is mean ± Z_95 standard errors


def choose_routes(windows: list[list[dict]], metric: str = "ndcg", *, min_customers: int = 1) -> dict[str, dict]:
    """Per segment, the route ``windows`` (each a window's ``score_lists`` rows, the latest first) support; each says why.

    A source is a candidate only when it beats popularity on every window and significantly over them all
    (``pooled_lead``: windows that disagree widen the interval, so one window's peak cannot carry it).
    From popularity, candidates are taken in the order they are listed (the simplest
    first), each replacing the choice so far when it scores higher on every window. A
    segment scored on fewer than ``min_customers`` customers chooses nothing of its own:
    it takes the overall route if that beats popularity significantly in the segment
    (``chosen_on``: "all"), else popularity.
    """
    scored = [_by_segment(rows) for rows in windows]
    latest = scored[0]
    if not latest:
        return {}

    def row(window: dict, segment: str, source: str) -> dict | None:
        return window.get(segment, {}).get(source)

    def beats_popularity(segment: str, source: str) -> bool:
        if source == BASELINE:
            return True
        rows = [row(window, segment, source) for window in scored]
        return all(_leads(found) for found in rows) and _significant_win(pooled_lead(rows))

    def better(segment: str, source: str, than: str) -> bool:
        return all(row(window, segment, source) and row(window, segment, than)
                   and row(window, segment, source)[metric] > row(window, segment, than)[metric] for window in scored)

    def choose(segment: str) -> str:
        choice = BASELINE if BASELINE in latest[segment] else next(iter(latest[segment]))
        for source in latest[segment]:
            if source != choice and beats_popularity(segment, source) and better(segment, source, choice):
                choice = source
        return choice

    overall = choose(ALL_SEGMENTS) if ALL_SEGMENTS in latest else None
    routes = {}
    for segment, here in sorted(latest.items()):
        customers = next(iter(here.values()))["customers"]
        small = segment != ALL_SEGMENTS and customers < min_customers and overall is not None
        if small:
            source = overall if overall in here and beats_popularity(segment, overall) else BASELINE
            chosen_on = ALL_SEGMENTS if source == overall else segment
        else:
            source, chosen_on = choose(segment), segment
        if source not in here:  # a list without popularity among its candidates
            source = next(iter(here))
        chosen, baseline = here[source], here.get(BASELINE)
        pooled = pooled_lead([row(window, segment, source) for window in scored]) if len(scored) > 1 else None
        routes[segment] = {
            "source": source, metric: chosen[metric], f"baseline_{metric}": baseline[metric] if baseline else None,
            "customers": chosen["customers"], "chosen_on": chosen_on, "windows": len(scored),
            "vs_baseline": _interval(chosen), "pooled_vs_baseline": pooled and _interval(pooled),
            "why": _why(source, small=small, customers=customers, overall=overall, windows=len(scored), here=here, metric=metric,
                        pooled=pooled),
        }
    return routes


def contenders_after(rows: list[dict]) -> dict[str, list[str]]:
    """The sources ``choose_routes`` may still choose after a window's ``score_lists`` rows, in the order of ``rows``, each with
    the segments it may still be chosen in: popularity in every segment, another source where it is ahead of popularity
    (a source needs that on every window)."""
    running: dict[str, list[str]] = {}
    for row in rows:
        if row[C.SEGMENT] is not None and (row["source"] == BASELINE or _leads(row)):
            running.setdefault(row["source"], []).append(row[C.SEGMENT])
    return {source: running[source] for source in dict.fromkeys(row["source"] for row in rows) if source in running}


def still_in_the_running(rows: list[dict], contenders: dict[str, list[str]]) -> list[dict]:
    """The ``score_lists`` rows of the ``contenders_after`` sources in the segments each may still be chosen in."""
    return [row for row in rows if row[C.SEGMENT] in contenders.get(row["source"], ())]


def segments_scored_with(contenders_by_list: dict[str, dict[str, list[str]]], model: str) -> list[str] | None:
    """The segments whose customers ``model`` must serve to score the contenders (list -> ``contenders_after``); None when an
    overall row needs it, which is scored on every customer."""
    segments: set[str] = set()
    for contenders in contenders_by_list.values():
        for source, running in contenders.items():
            if model in source_parts(source):
                if ALL_SEGMENTS in running:
                    return None
                segments.update(running)
    return sorted(segments)


def _by_segment(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """segment -> source -> row, sources in the order of ``rows``."""
    found: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row[C.SEGMENT] is not None:
            found.setdefault(row[C.SEGMENT], {})[row["source"]] = row
    return found


def pooled_lead(rows: list[dict]) -> dict | None:
    """One row's paired difference from popularity (``ndcg_vs_baseline`` and its ``_se``) pooled over several windows' rows of
    a source: the random-effects mean (Paule-Mandel between-window variance, statsmodels), whose standard error grows when
    the windows disagree. One row is itself; None when a window lacks the difference."""
    import numpy as np
    from statsmodels.stats.meta_analysis import combine_effects

    if any(row is None or row.get("ndcg_vs_baseline_se") is None for row in rows):
        return None
    if len(rows) == 1:
        return rows[0]
    errors = np.array([row["ndcg_vs_baseline_se"] for row in rows])
    if not errors.all():  # a window with no spread in the difference: nothing to weigh it by
        return None
    with np.errstate(divide="ignore", invalid="ignore"):  # its I² divides by Q, zero when the windows agree exactly
        pooled = combine_effects(np.array([row["ndcg_vs_baseline"] for row in rows]), errors ** 2, method_re="pm")
    return {"ndcg_vs_baseline": float(pooled.mean_effect_re), "ndcg_vs_baseline_se": float(pooled.sd_eff_w_re)}


def _leads(row: dict | None) -> bool:
    return row is not None and (row.get("ndcg_vs_baseline") or 0.0) > 0


def _significant_win(row: dict | None) -> bool:
    if row is None or row.get("ndcg_vs_baseline") is None or row.get("ndcg_vs_baseline_se") is None:
        return False
    return row["ndcg_vs_baseline"] - Z_95 * row["ndcg_vs_baseline_se"] > 0


def _interval(row: dict) -> list[float] | None:
    """[mean, low, high] of the row's paired difference from popularity, rounded; None without one."""
    mean, error = row.get("ndcg_vs_baseline"), row.get("ndcg_vs_baseline_se")
    if mean is None:
        return None
    error = error or 0.0
    return [round(value, 4) + 0.0 for value in (mean, mean - Z_95 * error, mean + Z_95 * error)]  # + 0.0: no "-0.0"


def _why(source: str, *, small: bool, customers: int, overall: str | None, windows: int, here: dict, metric: str,
         pooled: dict | None) -> str:
    """One sentence for the manifest: why a segment with these ``customers`` and scores (``here``; ``pooled``: the source's lead
    over the windows) is served ``source``."""
    on = f"on {windows} validation windows" if windows > 1 else "on the validation window"
    if small:
        too_few = f"{customers:,} customers are too few to choose a route of their own; "
        if source != BASELINE:
            return f"{too_few}the overall route {overall} beats popularity significantly among them {on}"
        return f"{too_few}the overall route {overall} does not beat popularity significantly among them {on}"
    if source == BASELINE:
        best = max((row for name, row in here.items() if name != BASELINE), key=lambda row: row[metric], default=None)
        if best is None:
            return "popularity is the only candidate"
        return f"no source beats popularity significantly {on} (best on the latest: {best['source']}, {_describe_interval(best)})"
    lead = _describe_interval(here[source]) + " on the latest window"
    if pooled is not None:
        lead = f"{_describe_interval(pooled)} pooled over them, {lead}"
    return f"beats popularity significantly {on} ({lead}) and scores above every simpler candidate it replaced on each"


def _describe_interval(row: dict) -> str:
    interval = _interval(row)
    return "no paired difference" if interval is None else f"{interval[0]:+.3f} [{interval[1]:+.3f}, {interval[2]:+.3f}]"


def unvalidated_routes(list_name: str, config: RoutingConfig) -> dict[str, dict]:
    """The route of ``list_name`` for everyone when no validation window could choose one (see ``UNVALIDATED``)."""
    fitted = set(config.candidates(list_name))
    source = next(name for name in UNVALIDATED[list_name] if name in fitted)
    return {ALL_SEGMENTS: {"source": source, "ndcg": None, "baseline_ndcg": None, "customers": 0, "chosen_on": UNVALIDATED_ROUTE,
                           "windows": 0, "vs_baseline": None, "why": "no validation window: the route that needs no validation"}}


def describe_routes(routes: dict[str, dict]) -> str:
    """``segment -> source`` for each segment, marking those with too few customers to choose their own."""

    def describe(segment: str, route: dict) -> str:
        chosen_on = route.get("chosen_on", segment)
        if chosen_on == UNVALIDATED_ROUTE:
            return f"{segment} -> {route['source']} (not validated)"
        return f"{segment} -> {route['source']}" + (f" (overall route: {route['customers']:,} customers)" if chosen_on != segment else "")

    return ", ".join(describe(segment, route) for segment, route in routes.items())


def assign_sources(routes: dict[str, dict], customers, segments=None):
    """``customers`` (every column kept) with the source that serves them: their segment's winner, else the overall winner."""
    from pyspark.sql import functions as F

    pick = F.lit(routes[ALL_SEGMENTS]["source"])
    if segments is None:
        return customers.withColumn("source", pick)
    for segment, route in routes.items():
        if segment != ALL_SEGMENTS:
            pick = F.when(F.col(C.SEGMENT) == segment, F.lit(route["source"])).otherwise(pick)
    return customers.join(segments.select(C.CUSTOMER_ID, C.SEGMENT), C.CUSTOMER_ID, "left").withColumn("source", pick).drop(C.SEGMENT)


def serve_routed(sources: Sources, customers, list_name: str, routes: dict[str, dict], segments=None, config: RoutingConfig = RoutingConfig()):
    """Each customer's list from their segment's source (or the overall route's), topped up to ``config.n`` from popularity.

    Each source's list is computed only for the customers routed to it, and the popularity
    list that tops up short lists only for the customers whose list is short (with bought
    items excluded it is the costliest list).
    """
    from pyspark.sql import functions as F

    chosen = assign_sources(routes, customers, segments).cache()
    served = reduce(lambda a, b: a.unionByName(b), [
        candidate_lists(sources, chosen.where(F.col("source") == name).drop("source"), list_name, config, names=[name])[name]
        .withColumn("source", F.lit(name))
        for name in sorted(routed_sources(routes))
    ])
    full = list_lengths(served).where(F.col("_length") >= config.n)
    short = chosen.join(full, C.CUSTOMER_ID, "left_anti")
    return top_up(served, candidate_lists(sources, short, list_name, config, names=[BASELINE])[BASELINE], config.n)


def top_up(served, popular, n: int):
    """Lists shorter than ``n`` (buy-again for a customer with few staples, say) filled from ``popular``, marked as its source.

    Only the filler is ranked, after the list it fills: served lists are ranked 1..k
    already, and re-ranking them all would sort every served row again. Its scores keep
    popularity's order below the list's last score s (the first at s/2 when s > 0), so
    each list's scores still fall with its rank.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    lengths = list_lengths(served)
    short = popular.join(lengths, C.CUSTOMER_ID, "left").withColumn("_length", F.coalesce("_length", F.lit(0))).where(F.col("_length") < n)
    filler = short.join(served.select(C.CUSTOMER_ID, C.ITEM_ID), [C.CUSTOMER_ID, C.ITEM_ID], "left_anti")
    per_customer = Window.partitionBy(C.CUSTOMER_ID)
    after = F.col("_length") + F.row_number().over(per_customer.orderBy(C.RANK))
    first, last = F.max(C.SCORE).over(per_customer), F.col("_last_score")
    below_last = F.when(last.isNull(), F.col(C.SCORE)).otherwise(last - F.abs(last) * first / (first + F.col(C.SCORE)))
    filled = filler.withColumns({C.RANK: after, C.SCORE: below_last}).where(F.col(C.RANK) <= n).withColumn("source", F.lit(BASELINE))
    return served.unionByName(filled.select(*served.columns))


def list_lengths(served):
    """customer_id, _length, _last_score: rows per customer and their lowest score. One definition, so that serving and its
    top-up count in one shuffle (Spark reuses it)."""
    from pyspark.sql import functions as F

    return served.groupBy(C.CUSTOMER_ID).agg(F.count(F.lit(1)).alias("_length"), F.min(C.SCORE).alias("_last_score"))


def routed_sources(routes: dict[str, dict]) -> set[str]:
    return {route["source"] for route in routes.values()}


def segments_served_by(routes_by_list: dict[str, dict[str, dict]], model: str) -> list[str] | None:
    """The segments whose customers ``model`` serves in some list (alone or fused); None when an overall route uses it.

    Customers of a segment without a route of its own take the overall route, so
    when that one uses the model, anyone may be served by it.
    """
    def uses(route: dict) -> bool:
        return model in source_parts(route["source"])

    if any(uses(routes[ALL_SEGMENTS]) for routes in routes_by_list.values() if ALL_SEGMENTS in routes):
        return None
    return sorted({segment for routes in routes_by_list.values() for segment, route in routes.items() if uses(route)})


def last_basket_neighbours(similar, train, customers, n: int):
    """Items "also bought" with each customer's last basket (their last purchase day), none they bought before.

    This is how an "also bought" list is used on a site, so it is how the
    item-to-item sources are compared: as a ``discover`` list.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    bought = train.join(customers.select(C.CUSTOMER_ID), C.CUSTOMER_ID).select(C.CUSTOMER_ID, C.ITEM_ID, F.to_date(C.TIMESTAMP).alias("_day"))
    last_day = F.max("_day").over(Window.partitionBy(C.CUSTOMER_ID))
    basket = bought.withColumn("_last", last_day).where(F.col("_day") == F.col("_last")).select(C.CUSTOMER_ID, C.ITEM_ID).distinct()
    scored = basket.join(similar, C.ITEM_ID).groupBy(C.CUSTOMER_ID, F.col(C.SIMILAR_ITEM_ID).alias(C.ITEM_ID)).agg(
        F.sum(C.SCORE).alias(C.SCORE))
    return top_n(drop_seen(scored, bought.select(C.CUSTOMER_ID, C.ITEM_ID).distinct()), n)


def similar_item_lists(sources: Sources, train, customers, config: RoutingConfig = RoutingConfig()) -> dict:
    """Each item-to-item source's last-basket list for ``customers`` (materialized, like ``candidate_lists``)."""
    items = train.select(C.ITEM_ID).distinct()
    return {
        name: materialize(last_basket_neighbours(sources.models[name].similar_items(items, config.similar_items), train, customers, config.n))
        for name in config.similar_item_sources()
    }


def choose_similar_source(rows: list[dict], candidates: list[str], metric: str = "ndcg") -> str:
    """The item-to-item source with the best overall ``metric`` in ``rows``; a lone candidate needs no rows."""
    if len(candidates) == 1:
        return candidates[0]
    overall = [row for row in rows if row[C.SEGMENT] == ALL_SEGMENTS and row["source"] in candidates]
    return max(overall, key=lambda row: (row[metric], row["source"]))["source"]
