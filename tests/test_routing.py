import datetime as dt
import re

import pandas as pd
import pytest

from cf import evaluation
from routing import routes as routing
from routing.routes import RoutingConfig
from cf.tuning import ALL_SEGMENTS, ALSSettings

CUTOFF = dt.date(2011, 9, 9)
SMALL = RoutingConfig(fusion_depth=20)
SMALL_ALS = {ALL_SEGMENTS: ALSSettings(rank=8, max_iter=5)}


def row(source, segment, ndcg, customers=100, *, popularity=None, se=0.005):
    """A validation row; its paired difference from popularity's ``popularity`` (default: the row is popularity's)."""
    difference = 0.0 if popularity is None else ndcg - popularity
    return {"source": source, "segment": segment, "ndcg": ndcg, "customers": customers,
            "ndcg_vs_baseline": difference, "ndcg_vs_baseline_se": se}


def test_routes_pick_the_validation_winner_when_it_beats_popularity_significantly():
    rows = [row("popularity", "all", 0.05), row("als", "all", 0.07, popularity=0.05), row("trending", "all", 0.06, popularity=0.05),
            row("popularity", "high", 0.04), row("als", "high", 0.09, popularity=0.04),
            row("popularity", "low", 0.08), row("als", "low", 0.03, popularity=0.08),
            # mid: als is ahead, but within its interval (0.004 ± 1.96 x 0.005)
            row("popularity", "mid", 0.05), row("als", "mid", 0.054, popularity=0.05)]
    routes = routing.choose_routes([rows])
    assert {segment: route["source"] for segment, route in routes.items()} == {
        "all": "als", "high": "als", "low": "popularity", "mid": "popularity"}
    assert routes["low"]["baseline_ndcg"] == 0.08
    assert routes["high"]["vs_baseline"] == [0.05, pytest.approx(0.0402), pytest.approx(0.0598)]
    assert routes["mid"]["why"].startswith("no source beats popularity significantly on the validation window (best on the latest: als, +0.004")
    assert routes["all"]["why"].startswith("beats popularity significantly on the validation window (+0.020 [+0.010, +0.030]")


def test_a_tie_with_popularity_goes_to_popularity():
    routes = routing.choose_routes([[row("als", "all", 0.05, popularity=0.05), row("popularity", "all", 0.05)]])
    assert routes["all"]["source"] == "popularity"


def test_a_small_segment_takes_the_overall_route_only_where_it_beats_popularity():
    rows = [row("popularity", "all", 0.05, 500), row("als", "all", 0.07, 500, popularity=0.05), row("trending", "all", 0.06, 500, popularity=0.05),
            row("popularity", "high", 0.04, 400), row("trending", "high", 0.09, 400, popularity=0.04),
            row("popularity", "low", 0.02, 30), row("als", "low", 0.08, 30, popularity=0.02, se=0.02), row("trending", "low", 0.20, 30, popularity=0.02),
            # 27 customers the overall route serves worse than popularity: they get popularity
            row("popularity", "new", 0.117, 27), row("als", "new", 0.089, 27, popularity=0.117, se=0.02)]
    routes = routing.choose_routes([rows], min_customers=100)
    assert {segment: (route["source"], route["chosen_on"]) for segment, route in routes.items()} == {
        "all": ("als", "all"), "high": ("trending", "high"), "low": ("als", "all"), "new": ("popularity", "new")}
    assert routes["low"]["ndcg"] == 0.08 and routes["low"]["customers"] == 30  # als as measured on the segment
    assert routes["new"]["why"] == ("27 customers are too few to choose a route of their own; "
                                    "the overall route als does not beat popularity significantly among them on the validation window")
    assert routing.describe_routes(routes) == "all -> als, high -> trending, low -> als (overall route: 30 customers), new -> popularity"
    assert routing.choose_routes([rows], min_customers=30)["low"]["source"] == "trending"


def test_rolling_origin_keeps_the_simpler_source_unless_the_other_wins_on_every_window():
    latest = [row("popularity", "all", 0.05), row("trending", "all", 0.07, popularity=0.05), row("als", "all", 0.08, popularity=0.05)]
    # On the earlier window als still beats popularity, but not trending; a holiday peak made it win the latest alone.
    earlier = [row("popularity", "all", 0.05), row("trending", "all", 0.07, popularity=0.05), row("als", "all", 0.06, popularity=0.05)]
    assert routing.choose_routes([latest])["all"]["source"] == "als"
    routes = routing.choose_routes([latest, earlier])
    assert routes["all"]["source"] == "trending" and routes["all"]["windows"] == 2
    assert "significantly on 2 validation windows" in routes["all"]["why"]
    # A source that beats popularity on the latest window only is not a candidate at all.
    flat = [row("popularity", "all", 0.05), row("trending", "all", 0.051, popularity=0.05), row("als", "all", 0.06, popularity=0.05)]
    assert routing.choose_routes([latest, flat])["all"]["source"] == "als"
    assert routing.choose_routes([[row("popularity", "all", 0.05), row("als", "all", 0.08, popularity=0.05)],
                                  [row("popularity", "all", 0.05), row("als", "all", 0.051, popularity=0.05)]])["all"]["source"] == "popularity"


def test_leads_too_small_for_one_window_count_when_every_window_agrees_and_not_when_they_disagree():
    # first_basket leads by 0.009 ± 1.96 x 0.005 on each window: not significant on either, significant over both
    agree = [[row("popularity", "all", 0.10), row("first_basket", "all", 0.109, popularity=0.10)],
             [row("popularity", "all", 0.09), row("first_basket", "all", 0.1, popularity=0.09)]]
    assert routing.choose_routes(agree[:1])["all"]["source"] == "popularity"
    routes = routing.choose_routes(agree)
    assert routes["all"]["source"] == "first_basket"
    assert routes["all"]["pooled_vs_baseline"][1] > 0 and routes["all"]["pooled_vs_baseline"][0] == pytest.approx(0.0095, abs=1e-4)
    assert "pooled over them" in routes["all"]["why"]
    # a holiday peak on one window and a hair's lead on the other: the windows disagree, so the pooled interval is wide
    disagree = [[row("popularity", "all", 0.05), row("als", "all", 0.09, popularity=0.05)],
                [row("popularity", "all", 0.05), row("als", "all", 0.052, popularity=0.05)]]
    assert routing.choose_routes(disagree)["all"]["source"] == "popularity"
    assert routing.pooled_lead([row("als", "all", 0.09, popularity=0.05)]) == row("als", "all", 0.09, popularity=0.05)


def test_an_earlier_window_needs_to_score_only_the_sources_still_in_the_running():
    latest = [row("popularity", "all", 0.05), row("trending", "all", 0.051, popularity=0.05), row("als", "all", 0.08, popularity=0.05),
              row("popularity", "low", 0.02), row("cooccurrence", "low", 0.06, popularity=0.02), row("als", "low", 0.01, popularity=0.02)]
    contenders = routing.contenders_after(latest)
    # als trails popularity among the low customers: it can only be chosen overall, and its low row need not be scored again
    assert contenders == {"popularity": ["all", "low"], "trending": ["all"], "als": ["all"], "cooccurrence": ["low"]}
    assert routing.contenders_after([row("popularity", "all", 0.05), row("als", "all", 0.05, popularity=0.05)]) == {"popularity": ["all"]}
    earlier = [row("popularity", "all", 0.05), row("trending", "all", 0.07, popularity=0.05), row("als", "all", 0.07, popularity=0.05),
               row("popularity", "low", 0.02), row("cooccurrence", "low", 0.05, popularity=0.02), row("als", "low", 0.03, popularity=0.02),
               row("cooccurrence", "all", 0.09, popularity=0.05)]
    pruned = routing.still_in_the_running(earlier, contenders)
    assert len(pruned) == len(earlier) - 2
    assert routing.choose_routes([latest, pruned]) == routing.choose_routes([latest, earlier])
    # a model is fitted for the segments its contenders are scored in; for everyone when one is scored overall
    assert routing.segments_scored_with({"for_you": contenders}, "cooccurrence") == ["low"]
    assert routing.segments_scored_with({"for_you": contenders, "discover": {"trending+als": ["high"]}}, "als") is None
    assert routing.segments_scored_with({"for_you": {"buy_again+segment_als": ["low"]}, "discover": {"segment_als": ["mid"]}},
                                        "segment_als") == ["low", "mid"]


def test_short_lists_are_topped_up_after_their_own_items_and_full_lists_are_untouched(spark):
    served = spark.createDataFrame(pd.DataFrame({
        "customer_id": ["full"] * 3 + ["short"] * 2, "rank": [1, 2, 3, 1, 2], "item_id": ["p3", "x", "y", "p1", "z"],
        "score": [0.9, 0.8, 0.7, 0.5, 0.4], "source": ["als"] * 3 + ["buy_again"] * 2}))
    customers = ["full", "short", "none"]
    popular = spark.createDataFrame(pd.DataFrame({
        "customer_id": [c for c in customers for _ in range(3)], "rank": [1, 2, 3] * 3, "item_id": ["p1", "p2", "p3"] * 3, "score": [3.0, 2.0, 1.0] * 3}))
    rows = routing.top_up(served, popular, 3).toPandas().sort_values(["customer_id", "rank"])
    as_tuples = list(rows[["customer_id", "rank", "item_id", "source", "score"]].itertuples(index=False, name=None))
    assert as_tuples == [
        ("full", 1, "p3", "als", 0.9), ("full", 2, "x", "als", 0.8), ("full", 3, "y", "als", 0.7),
        ("none", 1, "p1", "popularity", 3.0), ("none", 2, "p2", "popularity", 2.0), ("none", 3, "p3", "popularity", 1.0),
        # Below the list's last score (0.4), the first filler at half of it.
        ("short", 1, "p1", "buy_again", 0.5), ("short", 2, "z", "buy_again", 0.4), ("short", 3, "p2", "popularity", pytest.approx(0.2)),
    ]


@pytest.fixture(scope="module")
def with_future_item(spark, synthetic):
    """The synthetic purchases plus an item that only exists after the cutoff, bought by many customers."""
    from pyspark.sql import functions as F

    clean = synthetic.place("clean")
    launches = (clean.where(F.col("timestamp") >= F.lit(CUTOFF).cast("timestamp"))
                .dropDuplicates(["customer_id"]).withColumn("item_id", F.lit("FUTURE-1")))
    return clean.unionByName(launches).cache()


# Routes the serving tests follow; per-segment ALS is fitted, as in the final fit, only for the segments they route to it.
SERVED_ROUTES = {
    "for_you": {"all": {"source": "buy_again"}, "high": {"source": "buy_again+trending"}, "low": {"source": "segment_als"}},
    "discover": {"all": {"source": "cooccurrence"}, "mid": {"source": "trending+segment_als"}},
}


@pytest.fixture(scope="module")
def fitted(spark, with_future_item, synthetic):
    """Every source fitted before the cutoff, the planted tiers as segments, and 300 customers with their country."""
    train, _ = evaluation.split_by_time(with_future_item, cutoff=CUTOFF)
    segments = spark.createDataFrame(synthetic.truth("customers")[["customer_id", "tier"]].rename(columns={"tier": "segment"}))
    sources = routing.fit_sources(train, as_of=CUTOFF, segments=segments, config=SMALL, als_settings=SMALL_ALS,
                                  segment_als_serves=routing.segments_served_by(SERVED_ROUTES, "segment_als"))
    customers = train.select("customer_id", "country").dropDuplicates(["customer_id"]).orderBy("customer_id").limit(300).cache()
    return sources, segments, customers


def test_nothing_from_the_test_window_reaches_the_models(fitted):
    sources, _, customers = fitted
    # Every model once; fused lists are made only of these.
    singles = {"discover": ["popularity", "trending", "cooccurrence", "als", "segment_als"], "for_you": ["buy_again"],
               "cold": ["popularity_by_country"]}
    for list_name, names in singles.items():
        for name, recs in routing.candidate_lists(sources, customers, list_name, SMALL, names=names).items():
            assert recs.where("item_id = 'FUTURE-1'").count() == 0, (list_name, name)
            assert recs.count() > 0, (list_name, name)


def test_segment_als_is_fitted_only_for_the_segments_routed_to_it(fitted):
    sources, segments, customers = fitted
    model = sources.models["segment_als"]
    assert sorted(model._by_segment) == ["low", "mid"] and not model.has_fallback
    high = customers.join(segments.where("segment = 'high'"), "customer_id")
    assert high.count() > 0 and model.recommend(high, 5).count() == 0  # never asked for in serving: no model knows them


def routed_reference(lists: dict[str, pd.DataFrame], routes: dict, segments: pd.DataFrame, n: int) -> pd.DataFrame:
    """Pandas: each customer's list from their segment's source (else the overall one), then popularity's items after it up to ``n``."""
    served = []
    for customer, popular in lists["popularity"].groupby("customer_id"):
        segment = segments.set_index("customer_id").segment.get(customer)
        source = routes.get(segment, routes["all"])["source"]
        own = lists[source][lists[source].customer_id == customer].sort_values("rank").assign(source=source)
        filler = popular[~popular.item_id.isin(own.item_id)].sort_values("rank").assign(source="popularity")
        if len(own):  # below the list's last score, in popularity's order
            last, first = own.score.min(), filler.score.max()
            filler = filler.assign(score=last - abs(last) * first / (first + filler.score))
        rows = pd.concat([own, filler]).head(n)
        served.append(rows.assign(rank=range(1, len(rows) + 1)))
    return pd.concat(served)


@pytest.mark.parametrize("list_name, routes", SERVED_ROUTES.items())
def test_serving_runs_each_source_for_its_customers_only_and_serves_the_same_lists(fitted, list_name, routes):
    sources, segments, customers = fitted
    config = RoutingConfig(fusion_depth=20, n=12)
    names = sorted(routing.routed_sources(routes) | {"popularity"})
    everyone = {name: recs.toPandas() for name, recs in routing.candidate_lists(sources, customers, list_name, config, names=names).items()}
    columns = ["customer_id", "rank", "item_id", "score", "source"]
    expected = routed_reference(everyone, routes, segments.toPandas(), n=config.n)[columns]
    actual = routing.serve_routed(sources, customers, list_name, routes, segments, config).toPandas()[columns]
    order = ["customer_id", "rank"]
    pd.testing.assert_frame_equal(actual.sort_values(order).reset_index(drop=True), expected.sort_values(order).reset_index(drop=True),
                                  check_dtype=False)
    assert set(routing.routed_sources(routes)) <= set(actual["source"])
    assert actual.groupby("customer_id").size().eq(12).all() and actual["customer_id"].nunique() == 300
    if list_name == "for_you":
        assert "popularity" in set(actual["source"])  # buy-again lists shorter than n were topped up


def test_the_segments_a_model_serves_are_read_from_the_routes():
    routes = {
        "discover": {"all": {"source": "cooccurrence"}, "high": {"source": "trending+segment_als"}, "low": {"source": "trending"}},
        "for_you": {"all": {"source": "buy_again"}, "low": {"source": "buy_again+segment_als"}},
        "cold": {"all": {"source": "popularity"}},
    }
    assert routing.segments_served_by(routes, "segment_als") == ["high", "low"]
    assert routing.segments_served_by(routes, "als") == []
    # Segments without a route of their own take the overall one: when it uses the model, anyone may need it.
    assert routing.segments_served_by({**routes, "for_you": {"all": {"source": "segment_als"}}}, "segment_als") is None


def test_evaluation_scores_every_candidate_and_the_routed_system(spark, synthetic, session_settings):
    from routing.validation import evaluate_window
    from segmentation.clv import CLVConfig
    from segmentation.segments import SegmentConfig

    # Route choice is tested above; here the routes are given, so one window is enough.
    routes = {
        "discover": {"all": {"source": "als"}, "high": {"source": "segment_als"}},
        "for_you": {"all": {"source": "buy_again"}},
        "cold": {"all": {"source": "first_basket+popularity"}},
    }
    # The rest of the suite runs with adaptive execution on; a cluster may have it off, and scoring failed there (see routing.materialize).
    session_settings.set("spark.sql.adaptive.enabled", "false")
    test = evaluate_window(synthetic.place("clean"), synthetic.place("returns"), cutoff=CUTOFF, end=dt.date(2011, 12, 10),
                           routes=routes, config=SMALL, als_settings=SMALL_ALS, clv_config=CLVConfig(), segment_config=SegmentConfig())

    assert test["warm_customers"] > 300 and test["cold_customers"] > 20
    for list_name in ("discover", "for_you", "cold"):
        overall = {r["source"]: r for r in test["lists"][list_name] if r["segment"] == "all"}
        assert set(overall) == set(routing.CANDIDATES[list_name]) | {"routed"}
        assert all(0 <= r["ndcg"] <= 1 for r in overall.values())
    discover = {r["source"]: r["ndcg"] for r in test["lists"]["discover"] if r["segment"] == "all"}
    # The planted affinities make the personal models beat popularity on new items.
    assert discover["segment_als"] > discover["popularity"]
    by_segment = {r["segment"] for r in test["lists"]["discover"]}
    assert {"high", "mid", "low"} <= by_segment
    # Served as routed: cold customers get the fused first-basket list, so the routed cold list scores exactly like it.
    cold = {r["source"]: r for r in test["lists"]["cold"] if r["segment"] == "all"}
    assert cold["routed"]["ndcg"] == pytest.approx(cold["first_basket+popularity"]["ndcg"])
    assert cold["first_basket+popularity"]["ndcg"] != pytest.approx(cold["popularity"]["ndcg"])  # the fusion changes the list
    for_you = {r["source"]: r for r in test["lists"]["for_you"] if r["segment"] == "all"}
    # Buy-again lists shorter than n are topped up from popularity: the same hits, and maybe more.
    assert for_you["routed"]["ndcg"] >= for_you["buy_again"]["ndcg"] - 1e-12
    assert for_you["routed"]["hit_rate"] >= for_you["buy_again"]["hit_rate"]
    # Both item-to-item sources are scored as last-basket "also bought" lists; co-purchases carry the planted affinities.
    also_bought = {r["source"]: r["ndcg"] for r in test["similar_items"]}
    assert set(also_bought) == set(routing.SIMILAR_ITEM_SOURCES)
    assert min(also_bought.values()) > discover["popularity"]


def test_the_better_item_to_item_source_is_chosen():
    rows = [row("als", "all", 0.04), row("cooccurrence", "all", 0.06)]
    assert routing.choose_similar_source(rows, ["cooccurrence", "als"]) == "cooccurrence"
    assert routing.choose_similar_source(rows, ["als"]) == "als"  # the only one fitted wins, scored or not
    assert routing.choose_similar_source([], ["als"]) == "als"


def test_item_to_item_sources_are_scored_when_reported_or_chosen_between():
    from routing.validation import scores_item_to_item

    lone, both = RoutingConfig(models=("buy_again", "cooccurrence")), RoutingConfig()
    assert not scores_item_to_item(lone, routes=None)  # validation: nothing to choose
    assert scores_item_to_item(both, routes=None)
    assert scores_item_to_item(lone, routes={"discover": {}})  # a test window reports every source


@pytest.mark.parametrize("models, message", [
    (("als", "buy_again", "neural"), "unknown model(s) neural"),
    (("als", "cooccurrence"), "must include buy_again"),
    (("buy_again", "trending"), "needs one of cooccurrence, als"),
])
def test_a_model_selection_that_cannot_serve_every_list_is_a_clear_error(models, message):
    from cf.interactions import RecommendationError

    with pytest.raises(RecommendationError, match=re.escape(message)):
        RoutingConfig(models=models)


def test_candidates_are_made_only_of_fitted_models():
    config = RoutingConfig(models=("buy_again", "trending", "als"))
    assert config.candidates("discover") == ["popularity", "trending", "als", "trending+als"]
    assert config.similar_item_sources() == ["als"]
