"""Next-basket re-ranking: its repurchase statistics against pandas, its scores against its own ranker, its save and load, and its fallback."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from cf.nextbasket import FEATURES, NextBasketRecommender, statistics, with_features
from segmentation import columns as C

AS_OF = dt.date(2011, 9, 9)


@pytest.fixture(scope="module")
def purchases(synthetic):
    return synthetic.place("clean")


@pytest.fixture(scope="module")
def model(purchases):
    return NextBasketRecommender(as_of=AS_OF.isoformat(), label_days=60).fit(purchases)


def test_repurchase_statistics_match_pandas(spark):
    # c1 buys tea every 30 days and a kettle once; c2 buys tea once, 10 days before the as-of date.
    days = [dt.date(2011, 6, 1) + dt.timedelta(days=30 * step) for step in range(4)]
    rows = ([("c1", "tea", day) for day in days] + [("c1", "kettle", days[0]), ("c2", "tea", AS_OF - dt.timedelta(days=10)),
                                                      ("c3", "mug", dt.date(2010, 9, 20)), ("c4", "mug", dt.date(2010, 7, 1))])
    lines = spark.createDataFrame(pd.DataFrame(rows, columns=[C.CUSTOMER_ID, C.ITEM_ID, "_day"]))
    pairs, customers, items = (frame.toPandas() for frame in statistics(lines, AS_OF, season_days=90))
    pair = pairs.set_index([C.CUSTOMER_ID, C.ITEM_ID])
    assert pair.loc[("c1", "tea"), ["_times", "_age", "_gap"]].tolist() == [4, (AS_OF - days[-1]).days, 30.0]
    assert np.isnan(pair.loc[("c1", "kettle"), "_gap"]) and pair.loc[("c2", "tea"), "_age"] == 10
    customer = customers.set_index(C.CUSTOMER_ID)
    assert customer.loc["c1", "_baskets"] == 4 and customer.loc["c1", "_customer_repeats"] == pytest.approx(1 - 2 / 5)
    item = items.set_index(C.ITEM_ID)
    # tea: two buyers, one of them again; both bought it in the last 30 days (c1 on day 92 of June + 90 = Aug 30)
    assert item.loc["tea", ["_buyers", "_item_repeats", "_recent"]].tolist() == [2, 0.5, 2]
    # a year before: c3 bought a mug on 2010-09-20 (in the 90 days from 2010-09-09) and c4 on 2010-07-01 (in the 90 before)
    assert pair.loc[("c3", "mug"), "_season_times"] == 1 and pair.loc[("c4", "mug"), "_season_times"] == 0
    assert item.loc["mug", ["_season_ahead", "_season_before"]].tolist() == [1, 1] and pair["_season_times"].sum() == 1
    candidates = spark.createDataFrame(pd.DataFrame({C.CUSTOMER_ID: ["c1", "c2"], C.RANK: [1, 1], C.ITEM_ID: ["tea", "kettle"],
                                                     C.SCORE: [0.5, 0.1], "own_score": [0.5, 0.0], "neighbour_score": [0.4, 0.3]}))
    features = with_features(candidates, statistics(lines, AS_OF, season_days=90)).toPandas().set_index(C.CUSTOMER_ID)
    # c1's tea is due: 9 days since the last against a 30-day cycle; c2 never bought a kettle.
    assert features.loc["c1", "log_due"] == pytest.approx(np.log(((AS_OF - days[-1]).days) / 30))
    assert features.loc["c2", ["bought", "log_times", "log_age", "cycle", "log_due"]].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]


def test_scores_are_the_rankers_probabilities_of_the_features_and_survive_save_and_load(model, purchases, spark, tmp_path):
    assert model.ranker is not None and list(model.ranker.feature_names_in_) == list(FEATURES)
    assert model.training["rows"] > 0 and 0 < model.training["positives"] < model.training["rows"]
    customers = model._model._vectors.select(C.CUSTOMER_ID).distinct().orderBy(C.CUSTOMER_ID).limit(50)
    recs = model.recommend(customers, 10).toPandas()
    features = with_features(model._model.scored(customers, model.depth), model._statistics).toPandas()
    features["expected"] = model.ranker.predict_proba(features[list(FEATURES)])[:, 1]
    merged = recs.merge(features[[C.CUSTOMER_ID, C.ITEM_ID, "expected"]], on=[C.CUSTOMER_ID, C.ITEM_ID])
    assert len(merged) == len(recs) and merged[C.SCORE].to_numpy() == pytest.approx(merged["expected"].to_numpy())
    # each list is the top 10 of the candidates by that score
    best = features.sort_values([C.CUSTOMER_ID, "expected"], ascending=[True, False]).groupby(C.CUSTOMER_ID).head(10)
    assert set(zip(recs[C.CUSTOMER_ID], recs[C.ITEM_ID])) == set(zip(best[C.CUSTOMER_ID], best[C.ITEM_ID]))
    model.save(str(tmp_path / "next_basket"))
    loaded = NextBasketRecommender.load(str(tmp_path / "next_basket")).recommend(customers, 10).toPandas()
    pd.testing.assert_frame_equal(loaded.sort_values([C.CUSTOMER_ID, C.RANK]).reset_index(drop=True),
                                  recs.sort_values([C.CUSTOMER_ID, C.RANK]).reset_index(drop=True))


def test_too_short_a_history_keeps_tifu_knn_order(purchases):
    from pyspark.sql import functions as F

    first = purchases.agg(F.min(C.TIMESTAMP)).first()[0].date()
    short = NextBasketRecommender(as_of=(first + dt.timedelta(days=40)).isoformat()).fit(purchases)
    assert short.ranker is None and "too few to learn repurchase weights" in short.training["reason"]
    customers = short._model._vectors.select(C.CUSTOMER_ID).distinct().limit(20)
    ours = short.recommend(customers, 5).toPandas().sort_values([C.CUSTOMER_ID, C.RANK]).reset_index(drop=True)
    tifu = short._model.recommend(customers, 5).toPandas().sort_values([C.CUSTOMER_ID, C.RANK]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours[[C.CUSTOMER_ID, C.RANK, C.ITEM_ID]], tifu[[C.CUSTOMER_ID, C.RANK, C.ITEM_ID]])
