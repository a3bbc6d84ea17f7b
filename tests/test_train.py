"""The train stage on synthetic data: the lists written are the ones a customer must be served."""

import pandas as pd
import pytest

from cf.interactions import RecommendationError
from cf.routing import CANDIDATES
from jobs import train

N = 10


def test_every_known_customer_gets_each_list(trained):
    _, manifest, tables, purchases = trained
    recs = tables["recommendations"]
    assert list(recs.columns) == ["customer_id", "list", "rank", "item_id", "score", "source"]
    known = set(purchases.customer_id)
    assert manifest["customers"] == len(known)
    for list_name in ("discover", "for_you", "buy_again"):
        rows = recs[recs.list == list_name]
        assert set(rows.customer_id) == known, list_name
        sizes = rows.groupby("customer_id").size()
        assert sizes.max() <= N
        if list_name != "buy_again":  # a customer's staples can be fewer than N; the other lists are topped up
            assert (sizes == N).all(), list_name
        ranks = rows.sort_values(["customer_id", "rank"]).groupby("customer_id")["rank"]
        assert ranks.apply(lambda r: list(r) == list(range(1, len(r) + 1))).all(), list_name
        assert not rows.duplicated(["customer_id", "item_id"]).any(), list_name
    for list_name, routes in manifest["routes"].items():
        assert {route["source"] for route in routes.values()} <= set(CANDIDATES[list_name])
    served = recs.groupby("list").source.unique()
    assert set(served["buy_again"]) == {"buy_again"}
    for list_name in ("discover", "for_you"):  # the routed sources, topped up from popularity
        assert set(served[list_name]) <= {route["source"] for route in manifest["routes"][list_name].values()} | {"popularity"}


def test_discover_never_lists_a_bought_item(trained):
    _, _, tables, purchases = trained
    discover = tables["recommendations"].query("list == 'discover'")
    bought = purchases[["customer_id", "item_id"]].drop_duplicates()
    assert discover.merge(bought, on=["customer_id", "item_id"]).empty
    buy_again = tables["recommendations"].query("list == 'buy_again'")
    assert len(buy_again.merge(bought, on=["customer_id", "item_id"])) == len(buy_again)


def test_unknown_customers_get_the_cold_route_overall_and_per_country(trained):
    _, manifest, tables, purchases = trained
    trending = tables["trending"]
    assert list(trending.columns) == ["country", "rank", "item_id", "score", "source"]
    assert set(trending.source) == {manifest["trending_source"]} and manifest["trending_source"] in CANDIDATES["cold"]
    everyone = trending[trending.country.isna()].sort_values("rank")
    assert list(everyone["rank"]) == list(range(1, N + 1))
    assert set(trending.country.dropna()) == set(purchases.country)
    assert (trending.groupby("country").size() == N).all()


def test_every_item_has_an_also_bought_list(trained):
    _, manifest, tables, purchases = trained
    similar = tables["similar_items"]
    assert list(similar.columns) == ["item_id", "rank", "similar_item_id", "score"]
    assert manifest["similar_items_source"] in ("als", "cooccurrence")
    assert (similar.item_id != similar.similar_item_id).all()
    assert similar.groupby("item_id").size().max() == 5
    assert similar.item_id.nunique() >= 0.9 * purchases.item_id.nunique()


def test_the_saved_models_and_manifest_reproduce_the_lists(spark, trained):
    from cf.neighbours import BuyAgainRecommender

    output, manifest, tables, _ = trained
    assert {"buy_again", manifest["similar_items_source"]} <= set(manifest["models"])
    assert manifest["tuning"] == {}  # no budget: no search
    model = BuyAgainRecommender.load(spark, str(output / train.STAGE / "models" / "buy_again"))
    written = tables["recommendations"].query("list == 'buy_again'")
    some = spark.createDataFrame(written[["customer_id"]].drop_duplicates().head(40))
    again = model.recommend(some, N).toPandas().sort_values(["customer_id", "rank"]).reset_index(drop=True)
    expected = written.merge(again[["customer_id"]].drop_duplicates()).sort_values(["customer_id", "rank"]).reset_index(drop=True)
    assert list(again.item_id) == list(expected.item_id)
    # Every model but per-segment ALS learnt from all the pairs: one copy of them, written by the first saved.
    models = output / train.STAGE / "models"
    with_seen = sorted(name for name in manifest["models"] if (models / name / "seen").exists())
    assert with_seen == sorted({manifest["models"][0]} | ({"segment_als"} & set(manifest["models"])))


def test_segments_of_another_date_are_a_clear_error_and_the_lists_stay(spark, trained, train_settings):
    import datetime as dt

    output, manifest, tables, _ = trained
    with pytest.raises(RecommendationError, match="segments were computed as of"):
        train.run_train(spark, str(output), as_of=dt.date(2011, 6, 1), **train_settings)
    assert len(pd.read_parquet(output / train.STAGE / "recommendations")) == len(tables["recommendations"])
