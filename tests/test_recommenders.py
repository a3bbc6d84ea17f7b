"""One contract, every recommender; and known answers from the planted synthetic data."""

import datetime as dt

import pandas as pd
import pytest

from cf.als import ALSRecommender, SegmentedALS
from cf.base import Recommender
from cf.interactions import InteractionConfig, RecommendationError, interactions
from cf.neighbours import BuyAgainRecommender, CooccurrenceRecommender
from cf.nextbasket import NextBasketRecommender
from cf.tifu import TifuRecommender
from cf.tuning import ALL_SEGMENTS, ALSSettings
from coldstart.popularity import FirstBasketRecommender, PopularityRecommender, TrendingRecommender
from routing.model import RoutedRecommender

AS_OF = dt.date(2011, 9, 9)
N = 10


@pytest.fixture(scope="module")
def training(synthetic):
    return interactions(synthetic.place("clean"), as_of=AS_OF).cache()


@pytest.fixture(scope="module")
def tiers(spark, synthetic):
    truth = synthetic.truth("customers")[["customer_id", "tier"]].rename(columns={"tier": "segment"})
    return spark.createDataFrame(truth)


# What the routed model serves in the contract suite: fused, per-segment and by-country sources, each list its own route.
ROUTES = {
    "discover": {"all": {"source": "trending+als"}, "high": {"source": "segment_als"}},
    "for_you": {"all": {"source": "buy_again"}, "low": {"source": "buy_again+trending"}},
    "cold": {"all": {"source": "popularity_by_country"}},
}


def make(name, training, tiers, purchases):
    if name == "popularity":
        return PopularityRecommender().fit(training)
    if name == "trending":
        return TrendingRecommender(as_of=AS_OF.isoformat()).fit(training)
    if name == "buy_again":
        return BuyAgainRecommender().fit(training)
    if name == "cooccurrence":
        return CooccurrenceRecommender().fit(training)
    if name == "als":
        return ALSRecommender(rank=16, max_iter=8).fit(training)
    if name == "first_basket":
        return FirstBasketRecommender(as_of=AS_OF.isoformat(), days=120).fit(purchases)
    if name == "tifu":
        return TifuRecommender(as_of=AS_OF.isoformat()).fit(purchases)
    if name == "next_basket":
        return NextBasketRecommender(as_of=AS_OF.isoformat()).fit(purchases)
    if name == "routed":
        return RoutedRecommender(routes=ROUTES, als_settings={ALL_SEGMENTS: ALSSettings(rank=16, max_iter=8)}, as_of=AS_OF.isoformat(),
                                 similar_items_source="cooccurrence").fit(purchases, tiers)
    return SegmentedALS(rank=16, max_iter=8).fit(training, tiers)


MODELS = ["popularity", "trending", "first_basket", "buy_again", "cooccurrence", "als", "segment_als", "tifu", "next_basket", "routed"]


@pytest.fixture(scope="module")
def fitted(training, tiers, synthetic):
    """Each model fitted once per module, on first use."""
    models = {}

    def get(name):
        if name not in models:
            models[name] = make(name, training, tiers, synthetic.place("clean"))
        return models[name]

    return get


@pytest.fixture(scope="module", params=MODELS)
def model(request, fitted):
    return fitted(request.param)


@pytest.fixture(scope="module")
def customers(training):
    return training.select("customer_id").distinct().orderBy("customer_id").limit(200).cache()


def test_recommend_returns_ranked_lists(model, customers):
    recs = model.recommend(customers, N).toPandas()
    assert list(recs.columns) == ["customer_id", "rank", "item_id", "score"]
    assert recs.customer_id.nunique() > 150
    for _, rows in recs.groupby("customer_id"):
        assert list(rows.sort_values("rank")["rank"]) == list(range(1, len(rows) + 1))
        assert len(rows) <= N and rows.item_id.is_unique
        assert rows.sort_values("rank").score.is_monotonic_decreasing


def test_exclude_seen_never_returns_a_bought_item(model, customers, training):
    recs = model.recommend(customers, N, exclude_seen=True).toPandas()
    bought = training.join(customers, "customer_id").select("customer_id", "item_id").toPandas()
    overlap = recs.merge(bought, on=["customer_id", "item_id"])
    assert overlap.empty
    if model.name == "buy_again":
        assert recs.empty  # a customer's staples are all things they bought
    else:
        assert recs.groupby("customer_id").size().min() == N


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_popularity_lists_match_the_pandas_reference(spark, training, tiers, customers, exclude_seen):
    """Each customer's group list (distinct buyers, ties to the smaller id), the overall one for an unknown group; bought items dropped if asked."""
    model = PopularityRecommender(by="segment").fit(training, tiers)
    wanted = customers.join(tiers, "customer_id").toPandas()
    wanted.loc[wanted.index[::7], "segment"] = "no such segment"
    bought = training.select("customer_id", "item_id").toPandas().merge(tiers.toPandas(), on="customer_id")
    lists = pd.concat([bought.assign(segment="__all__"), bought])
    scores = lists.groupby(["segment", "item_id"]).customer_id.nunique().rename("score").reset_index()
    scores = scores.sort_values(["segment", "score", "item_id"], ascending=[True, False, True])
    expected = wanted.assign(segment=wanted.segment.where(wanted.segment.isin(scores.segment), "__all__")).merge(scores, on="segment")
    if exclude_seen:
        expected = expected.merge(bought[["customer_id", "item_id"]].assign(_seen=True), on=["customer_id", "item_id"], how="left")
        expected = expected[expected._seen.isna()]
    expected = expected.sort_values(["customer_id", "score", "item_id"], ascending=[True, False, True]).groupby("customer_id").head(N)
    expected["rank"] = expected.groupby("customer_id").cumcount() + 1

    actual = model.recommend(spark.createDataFrame(wanted), N, exclude_seen=exclude_seen).toPandas()
    merged = expected.merge(actual, on=["customer_id", "rank"], how="outer", suffixes=("_expected", "_actual"), indicator=True)
    assert (merged["_merge"] == "both").all() and merged.customer_id.nunique() == len(wanted) and len(merged) == N * len(wanted)
    assert list(merged.item_id_expected) == list(merged.item_id_actual)
    assert merged.score_expected.to_numpy() == pytest.approx(merged.score_actual.to_numpy())


def test_similar_items_never_lists_the_item_itself(model, training):
    items = training.select("item_id").distinct().orderBy("item_id").limit(30)
    similar = model.similar_items(items, 5).toPandas()
    assert list(similar.columns) == ["item_id", "rank", "similar_item_id", "score"]
    assert similar.item_id.nunique() >= 25
    assert (similar.item_id != similar.similar_item_id).all()
    assert similar.groupby("item_id").size().max() <= 5


def lists_of(model, customers) -> pd.DataFrame:
    """The model's top-N lists for ``customers`` in a fixed order, to compare with another model's."""
    return model.recommend(customers, N).toPandas().sort_values(["customer_id", "rank"]).reset_index(drop=True)


def test_save_and_load_give_the_same_lists(spark, model, customers, tmp_path):
    model.save(str(tmp_path / "model"))
    loaded = type(model).load(str(tmp_path / "model"))
    assert type(Recommender.load(str(tmp_path / "model"))) is type(model)  # the base class reads any model
    other = BuyAgainRecommender if type(model) is not BuyAgainRecommender else PopularityRecommender
    with pytest.raises(RecommendationError, match=f"holds a {type(model).__name__}, not a {other.__name__}"):
        other.load(str(tmp_path / "model"))
    before = lists_of(model, customers)
    after = lists_of(loaded, customers)
    pd.testing.assert_frame_equal(before[["customer_id", "rank", "item_id"]], after[["customer_id", "rank", "item_id"]])
    assert after.score.to_numpy() == pytest.approx(before.score.to_numpy(), rel=1e-6)


def test_a_model_saved_with_another_models_seen_pairs_reads_them(spark, training, customers, tmp_path):
    """Models fitted on the same pairs: the second references the first's seen pairs, and still never lists a bought item."""
    BuyAgainRecommender().fit(training).save(str(tmp_path / "buy_again"))
    model = PopularityRecommender().fit(training)
    model.save(str(tmp_path / "popularity"), seen_in="buy_again")
    assert not (tmp_path / "popularity" / "seen").exists()
    loaded = PopularityRecommender.load(str(tmp_path / "popularity"))
    before = model.recommend(customers, N, exclude_seen=True).toPandas().sort_values(["customer_id", "rank"]).reset_index(drop=True)
    after = loaded.recommend(customers, N, exclude_seen=True).toPandas().sort_values(["customer_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before[["customer_id", "rank", "item_id"]], after[["customer_id", "rank", "item_id"]])
    assert loaded._seen.count() == training.select("customer_id", "item_id").distinct().count()


def test_unfitted_and_bad_n_are_clear_errors(model, customers):
    unfitted = type(model)(as_of="2011-01-01") if isinstance(model, TrendingRecommender) else type(model)()
    with pytest.raises(RecommendationError, match="is not fitted"):
        unfitted.recommend(customers, N)
    with pytest.raises(RecommendationError, match="n must be at least 1"):
        model.recommend(customers, 0)


def favourite_share(recs: pd.DataFrame, truth: pd.DataFrame, items: pd.DataFrame, favourites: dict) -> float:
    """Share of recommended items that belong to their customer's planted favourite groups."""
    joined = recs.merge(truth, on="customer_id").merge(items[["item_id", "group"]], on="item_id")
    return joined.apply(lambda row: row.group in favourites[row.tier], axis=1).mean()


def test_segment_als_recovers_planted_affinities_well_above_popularity(synthetic, training, fitted):
    truth = synthetic.truth("customers")[["customer_id", "tier"]]
    items = synthetic.truth("items")
    favourites = {tier: set(profile.favourite_groups) for tier, profile in synthetic.config.tiers.items()}
    customers = training.select("customer_id").distinct()

    per_segment = fitted("segment_als").recommend(customers, N, exclude_seen=True).toPandas()
    popular = fitted("popularity").recommend(customers, N, exclude_seen=True).toPandas()
    als_share = favourite_share(per_segment, truth, items, favourites)
    popular_share = favourite_share(popular, truth, items, favourites)
    print(f"share of discover items in the planted favourite groups: segment ALS {als_share:.2f}, popularity {popular_share:.2f}")
    assert als_share > 0.6
    assert als_share > popular_share + 0.2


def test_segment_als_fits_its_global_model_only_for_customers_no_segment_model_knows(spark, training, tiers, fitted, tmp_path):
    from pyspark.sql import functions as F

    covered = fitted("segment_als")
    assert not covered.has_fallback  # every synthetic customer has a trainable tier
    covered.save(str(tmp_path / "covered"))
    reloaded = SegmentedALS.load(str(tmp_path / "covered"))
    assert not reloaded.has_fallback
    assert reloaded.similar_items(training.select("item_id").distinct().limit(5), 3).count() == 15  # fitted from the saved interactions
    ordered = tiers.join(training.select("customer_id").distinct(), "customer_id").orderBy("customer_id")
    without_segment = ordered.limit(20).select("customer_id")
    too_small = ordered.offset(20).limit(10).withColumn("segment", F.lit("tiny"))
    # One segment big enough for a model of its own is all the fallback needs beside it (each model is an ALS fit).
    rest = tiers.join(ordered.limit(30).select("customer_id"), "customer_id", "left_anti").withColumn("segment", F.lit("rest"))
    relabelled = rest.unionByName(too_small)
    model = SegmentedALS(rank=16, max_iter=8).fit(training, relabelled)
    assert model.has_fallback
    fallback_customers = without_segment.unionByName(too_small.select("customer_id"))
    served = lists_of(model, fallback_customers)
    expected = lists_of(fitted("als"), fallback_customers)  # the global model's settings
    assert served.customer_id.nunique() == 30
    pd.testing.assert_frame_equal(served[["customer_id", "rank", "item_id"]], expected[["customer_id", "rank", "item_id"]])
    model.save(str(tmp_path / "with_fallback"))
    reloaded = SegmentedALS.load(str(tmp_path / "with_fallback"))
    assert reloaded.has_fallback
    again = lists_of(reloaded, fallback_customers)
    pd.testing.assert_frame_equal(again[["customer_id", "rank", "item_id"]], served[["customer_id", "rank", "item_id"]])


def test_time_decay_weighs_recent_orders_more(spark):
    rows = [("a", "old", "o1", "2010-01-01 10:00:00", 1.0, 1.0), ("a", "new", "o2", "2011-08-01 10:00:00", 1.0, 1.0)]
    purchases = spark.createDataFrame(rows, "customer_id string, item_id string, order_id string, timestamp string, quantity double, amount double")
    purchases = purchases.withColumn("timestamp", purchases.timestamp.cast("timestamp"))
    plain = dict((r.item_id, r.strength) for r in interactions(purchases, as_of=AS_OF).collect())
    decayed = dict((r.item_id, r.strength) for r in interactions(purchases, as_of=AS_OF, config=InteractionConfig(half_life_days=30)).collect())
    assert plain == {"old": 1.0, "new": 1.0}
    age_days = 38 + 14 / 24  # 2011-08-01 10:00 to the as-of date, 2011-09-09 00:00
    assert decayed["new"] == pytest.approx(0.5 ** (age_days / 30)) and decayed["old"] < 1e-5


def test_the_interaction_cache_gives_each_half_life_what_a_pass_of_its_own_would(synthetic):
    from cf.tuning import ALSSettings, InteractionCache

    purchases = synthetic.place("clean")
    cache = InteractionCache(purchases, AS_OF, [0.0, 30.0, 180.0, 30.0])
    try:
        for days in (0.0, 30.0, 180.0):
            alone = interactions(purchases, as_of=AS_OF, config=InteractionConfig(half_life_days=days or None)).toPandas()
            shared = cache.get(ALSSettings(half_life_days=days)).toPandas()
            assert list(shared.columns) == list(alone.columns)
            key = ["customer_id", "item_id"]
            merged = alone.merge(shared, on=key, suffixes=("_alone", "_shared"), how="outer", indicator=True)
            assert len(merged) > 1000 and (merged["_merge"] == "both").all()
            assert merged["strength_shared"].to_numpy() == pytest.approx(merged["strength_alone"].to_numpy(), rel=1e-12)
            assert (merged["last_purchase_shared"] == merged["last_purchase_alone"]).all()
        with pytest.raises(RecommendationError, match="half-life of 365"):
            cache.with_half_life(365.0)
    finally:
        cache.release()


def test_stable_ids_keep_their_index_when_new_ids_arrive(spark):
    from cf.ids import IdMapping

    first = IdMapping.build(spark.createDataFrame([("b",), ("a",)], "customer_id string"), "customer_id", "customer_index")
    second = IdMapping.build(spark.createDataFrame([("c",), ("a",), ("0",)], "customer_id string"), "customer_id", "customer_index", previous=first)
    assert dict(first.frame.collect()) == {"a": 0, "b": 1}
    assert dict(second.frame.collect()) == {"a": 0, "b": 1, "0": 2, "c": 3}


def test_cooccurrence_similarities_match_the_pandas_reference(training):
    """Cosine over the capped histories: common buyers / sqrt(buyers x other buyers), min_common, top neighbours, ties to the smaller id."""
    model = CooccurrenceRecommender(max_items_per_customer=20, neighbours=15, min_common=3).fit(training)
    history = model._history.toPandas()
    assert history.groupby("customer_id").size().max() == 20
    pairs = history.merge(history, on="customer_id", suffixes=("", "_other"))
    pairs = pairs[pairs["item_id"] != pairs["item_id_other"]]
    common = pairs.groupby(["item_id", "item_id_other"]).size().rename("common").reset_index()
    common = common[common["common"] >= 3]
    buyers = history.groupby("item_id").size()
    common["score"] = common["common"] / (buyers[common["item_id"]].to_numpy() * buyers[common["item_id_other"]].to_numpy()) ** 0.5
    expected = common.sort_values(["item_id", "score", "item_id_other"], ascending=[True, False, True]).groupby("item_id").head(15)

    actual = model._similar.toPandas().rename(columns={"similar_item_id": "item_id_other"})
    merged = expected.merge(actual, on=["item_id", "item_id_other"], how="outer", suffixes=("_expected", "_actual"), indicator=True)
    assert len(merged) > 1000
    assert (merged["_merge"] == "both").mean() > 0.999  # equal scores at the cut may fall either way
    both = merged[merged["_merge"] == "both"]
    assert both["score_expected"].to_numpy() == pytest.approx(both["score_actual"].to_numpy(), rel=1e-12)


def test_block_neighbours_are_the_same_for_any_number_of_blocks_and_batches():
    """Cosine by hand on 4 baskets; split into 1, 2 or 3 blocks of items, and the baskets into 1 or 2 batches."""
    from cf.neighbours import block_neighbours

    baskets = [[0, 1, 2], [1, 2], [2, 0], [3, 1, 2]]  # buyers: 0: 2, 1: 3, 2: 4, 3: 1
    expected = {  # item, neighbour, common buyers / sqrt(buyers x buyers): the best 2 of each item
        (0, 2, 2 / 8 ** 0.5), (0, 1, 1 / 6 ** 0.5),
        (1, 2, 3 / 12 ** 0.5), (1, 3, 1 / 3 ** 0.5),
        (2, 1, 3 / 12 ** 0.5), (2, 0, 2 / 8 ** 0.5),
        (3, 1, 1 / 3 ** 0.5), (3, 2, 1 / 4 ** 0.5),
    }
    expected = {(a, b, round(score, 12)) for a, b, score in expected}
    for blocks in (1, 2, 3):
        for batches in ([baskets], [baskets[:2], baskets[2:]]):
            rows = set()
            for block in range(blocks):
                for frame in block_neighbours(iter(pd.DataFrame({"_basket": part}) for part in batches), block=block, blocks=blocks,
                                              catalogue=4, neighbours=2, min_common=1):
                    rows |= {(a, b, round(score, 12)) for a, b, score in frame.itertuples(index=False)}
            assert rows == expected, (blocks, len(batches))
    kept = pd.concat(block_neighbours(iter([pd.DataFrame({"_basket": baskets})]), block=0, blocks=1, catalogue=4, neighbours=5, min_common=2))
    assert sorted(zip(kept["item_index"], kept["_similar_index"])) == [(0, 2), (1, 2), (2, 0), (2, 1)]  # 2 common buyers or more


def test_best_per_row_ranks_each_row_and_breaks_ties_by_the_smaller_column():
    """Against a plain sort, on rows full of ties (small integer scores), some shorter than n and some empty."""
    import numpy as np
    from scipy import sparse

    from cf.neighbours import best_per_row

    rng = np.random.default_rng(3)
    dense = rng.integers(0, 4, size=(200, 60)).astype(float) * (rng.random((200, 60)) < rng.random((200, 1)))
    dense[:5] = 0.0
    scores = sparse.csr_matrix(dense)
    rows, ranks, positions = best_per_row(scores, 7)
    actual = list(zip(rows, ranks, scores.indices[positions], scores.data[positions]))
    expected = [(row, rank, column, value) for row in range(200)
                for rank, (value, column) in enumerate(sorted((-v, c) for c, v in enumerate(dense[row]) if v)[:7], start=1)]
    assert actual == [(row, rank, column, -value) for row, rank, column, value in expected]
    assert 0 < (ranks == 7).sum() < 200 - 5  # some rows are cut at n, some are shorter


def test_membership_marks_known_ids_once():
    import pandas as pd

    from cf.neighbours import membership

    matrix = membership([["b", "a", "b"], None, [], ["zz", "c"]], pd.Index(["a", "b", "c"]))
    assert matrix.toarray().tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_cooccurrence_scores_match_the_pandas_reference(training, customers, exclude_seen):
    """Score = sum of similarities to the customer's strongest items; bought items dropped if asked; ties to the smaller id."""
    model = CooccurrenceRecommender(max_items_per_customer=20).fit(training)
    similar = model._similar.toPandas()
    history = model._history.toPandas()
    wanted = set(customers.toPandas()["customer_id"])
    candidates = history[history["customer_id"].isin(wanted)].merge(similar, on="item_id")
    expected = candidates.groupby(["customer_id", "similar_item_id"], as_index=False)["score"].sum().rename(
        columns={"similar_item_id": "item_id"})
    if exclude_seen:
        seen = training.select("customer_id", "item_id").toPandas().assign(_seen=True)
        expected = expected.merge(seen, on=["customer_id", "item_id"], how="left")
        expected = expected[expected["_seen"].isna()].drop(columns="_seen")
    expected = expected.sort_values(["customer_id", "score", "item_id"], ascending=[True, False, True])
    expected = expected.groupby("customer_id").head(N)
    expected["rank"] = expected.groupby("customer_id").cumcount() + 1

    actual = model.recommend(customers, N, exclude_seen=exclude_seen).toPandas()
    merged = expected.merge(actual, on=["customer_id", "rank"], how="outer", suffixes=("_expected", "_actual"), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert len(merged) > 1000
    assert (merged["item_id_expected"] == merged["item_id_actual"]).mean() > 0.999  # float sums may tie differently
    assert merged["score_expected"].to_numpy() == pytest.approx(merged["score_actual"].to_numpy(), rel=1e-9)


def test_likely_buyers_are_the_customers_whose_factors_score_the_item_or_the_groups_mean_highest(spark, fitted, training):
    import numpy as np

    als = fitted("als")
    users = als._model.userFactors.toPandas().merge(als._customers.frame.toPandas(), left_on="id", right_on="customer_index")
    items = als._model.itemFactors.toPandas().merge(als._items.frame.toPandas(), left_on="id", right_on="item_index").set_index("item_id")
    popular = training.groupBy("item_id").count().orderBy("count", ascending=False).limit(5).toPandas()["item_id"].tolist()
    targets = [("item", item, item) for item in popular[:2]] + [("group", "favourites", item) for item in popular[2:]]
    found = als.likely_buyers(spark.createDataFrame(targets, "kind string, key string, item_id string"), 7).toPandas()
    vectors = np.vstack(users["features"].to_numpy())
    for kind, key, members in (("item", popular[0], popular[:1]), ("item", popular[1], popular[1:2]), ("group", "favourites", popular[2:])):
        target = np.mean(np.vstack(items.loc[members, "features"].to_numpy()), axis=0)
        scores = vectors @ target
        best = np.argsort(-scores, kind="stable")[:7]
        here = found[(found["kind"] == kind) & (found["key"] == key)].sort_values("rank")
        assert here["rank"].tolist() == list(range(1, 8))
        assert here["score"].to_numpy() == pytest.approx(scores[best], rel=1e-4)
        assert set(here["customer_id"]) == set(users["customer_id"].to_numpy()[best])


def test_first_basket_ranks_what_recent_newcomers_bought_first_as_pandas_does(fitted, synthetic):
    purchases = synthetic.place("clean").toPandas()
    before = purchases[purchases["timestamp"] < pd.Timestamp(AS_OF)].assign(day=lambda rows: rows["timestamp"].dt.normalize())
    first = before.groupby("customer_id")["day"].transform("min")
    newcomers = before[(before["day"] == first) & (first >= pd.Timestamp(AS_OF) - pd.Timedelta(days=120))]
    expected = newcomers.groupby("item_id")["customer_id"].nunique().rename("buyers").reset_index()
    expected = expected.sort_values(["buyers", "item_id"], ascending=[False, True]).head(N)
    ranked = fitted("first_basket").ranked(N).toPandas()
    assert ranked["item_id"].tolist() == expected["item_id"].tolist() and ranked["score"].tolist() == expected["buyers"].astype(float).tolist()
    assert newcomers["customer_id"].nunique() < before["customer_id"].nunique() / 2  # a list of its own, not overall popularity
