"""The train stage on synthetic data: the lists written are the ones a customer must be served."""

import json
import re

import pandas as pd
import pytest

from cf.interactions import RecommendationError
from routing.routes import CANDIDATES
from jobs import train
from routing.reuse import reusable_choice
from runtime.layout import INGEST, RECOMMENDATIONS, SEGMENTS
from runtime.stages.recommendations import run_train

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


def test_routes_are_chosen_on_two_windows_and_say_why(trained):
    _, manifest, _, _ = trained
    earlier = manifest["validation"]["earlier_windows"]
    assert len(earlier) == 1 and earlier[0]["window"]["end"] < manifest["validation"]["window"]["start"]
    assert earlier[0]["window"]["days"] == manifest["validation"]["window"]["days"]
    scored_again = set(earlier[0]["lists"])  # the lists where some source beat popularity significantly on the latest window
    assert scored_again, "the synthetic shop's lists beat popularity"
    for list_name, routes in manifest["routes"].items():
        for route in routes.values():
            assert route["windows"] == (2 if list_name in scored_again else 1) and route["why"]
            if list_name not in scored_again:
                assert route["source"] == "popularity"
            if route["source"] != "popularity":  # it beat popularity significantly: the interval lies above zero
                assert route["vs_baseline"][1] > 0, route


def test_the_likeliest_buyers_of_the_most_bought_items_are_listed_for_affinity_audiences(trained, pipeline_run):
    _, manifest, _, purchases = trained
    assert manifest["affinity"] == {"items": 20, "customers": 100}  # jobs/profiles/quick.toml
    affinity = pd.read_parquet(pipeline_run / RECOMMENDATIONS / "affinity")
    buyers = purchases.groupby("item_id")["customer_id"].nunique().rename("buyers").reset_index()
    most_bought = buyers.sort_values(["buyers", "item_id"], ascending=[False, True])["item_id"][:20]
    assert set(affinity["key"]) == set(most_bought) and set(affinity["kind"]) == {"item"}  # the synthetic shop has no groups
    assert (affinity.groupby("key")["rank"].apply(lambda ranks: sorted(ranks) == list(range(1, 101)))).all()
    assert affinity.sort_values(["key", "rank"]).groupby("key")["score"].is_monotonic_decreasing.all()
    assert set(affinity["customer_id"]) <= set(purchases["customer_id"])


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
    # Chosen between on validation: both were scored there.
    assert {row["source"] for row in manifest["validation"]["similar_items"]} == {"als", "cooccurrence"}
    assert (similar.item_id != similar.similar_item_id).all()
    assert similar.groupby("item_id").size().max() == 5
    assert similar.item_id.nunique() >= 0.9 * purchases.item_id.nunique()


def test_the_saved_routed_model_reproduces_every_list(spark, trained):
    from routing.model import RoutedRecommender

    output, manifest, tables, _ = trained
    assert {"popularity", "buy_again", manifest["similar_items_source"]} <= set(manifest["models"])
    assert manifest["tuning"] == {}  # no budget: no search
    model = RoutedRecommender.load(str(output / RECOMMENDATIONS / "model"))
    assert model.routes == manifest["routes"] and model.models_used() == manifest["models"]
    written = tables["recommendations"]
    some = spark.createDataFrame(written[["customer_id"]].drop_duplicates().sort_values("customer_id").head(40))
    for list_name in ("discover", "for_you", "buy_again"):
        again = model.routed_list(some, N, list_name=list_name).toPandas().sort_values(["customer_id", "rank"]).reset_index(drop=True)
        expected = written[written.customer_id.isin(again.customer_id) & (written.list == list_name)]
        expected = expected.sort_values(["customer_id", "rank"]).reset_index(drop=True)
        assert len(again) > 0 and again.customer_id.nunique() == 40, list_name
        assert list(again.item_id) == list(expected.item_id) and list(again.source) == list(expected.source), list_name
    similar = model.similar_items(spark.createDataFrame(tables["similar_items"][["item_id"]].drop_duplicates().head(20)), 5).toPandas()
    expected = tables["similar_items"].merge(similar[["item_id", "rank"]])
    assert len(similar) == len(expected) and set(similar.similar_item_id) == set(expected.similar_item_id)
    # Every model but per-segment ALS learnt from all the pairs: one copy of them, written by the first saved.
    models = output / RECOMMENDATIONS / "model" / "sources"
    with_seen = sorted(name for name in manifest["models"] if (models / name / "seen").exists())
    assert with_seen == sorted({manifest["models"][0]} | ({"segment_als"} & set(manifest["models"])))
    assert not (output / RECOMMENDATIONS / "model" / "seen").exists()


def test_segments_of_another_date_are_a_clear_error_and_the_lists_stay(spark, trained, train_settings):
    import datetime as dt

    output, manifest, tables, _ = trained
    with pytest.raises(RecommendationError, match="segments were computed as of"):
        run_train(spark, str(output), as_of=dt.date(2011, 6, 1), **train_settings)
    assert len(pd.read_parquet(output / RECOMMENDATIONS / "recommendations")) == len(tables["recommendations"])


def _earlier() -> dict:
    """The parts of a manifest that route reuse reads."""
    return {"routes_chosen_as_of": "2011-12-01", "settings": {"routing": {"k": 10}, "tuning": {"alpha": [1.0]}},
            "routes": {"discover": {"all": {"source": "als"}}}, "similar_items_source": "cooccurrence",
            "als_settings": {"all": {"rank": 16, "reg_param": 0.1, "alpha": 1.0, "max_iter": 10, "half_life_days": 0.0}},
            "tifu_settings": {"groups": 7, "within_decay": 0.9, "group_decay": 0.7, "neighbours": 100, "alpha": 0.9},
            "tuning": {}, "validation": {"cutoff": "2011-09-02"}}


def test_routes_are_reused_only_when_recent_and_chosen_under_the_same_settings():
    import datetime as dt

    from cf.tifu import TifuSettings
    from cf.tuning import ALSSettings

    def choice(earlier, as_of=dt.date(2011, 12, 8), max_age_days=7, settings=None):
        return reusable_choice(earlier, as_of=as_of, max_age_days=max_age_days,
                               settings=settings or {"routing": {"k": 10}, "tuning": {"alpha": [1.0]}})

    chosen, reason = choice(_earlier())
    assert reason == "routes chosen as of 2011-12-01, 7 days before"
    assert chosen["routes"] == _earlier()["routes"] and chosen["similar_items_source"] == "cooccurrence"
    assert chosen["als_settings"] == {"all": ALSSettings(rank=16, alpha=1.0)}
    assert chosen["tifu_settings"] == TifuSettings(groups=7, alpha=0.9)
    assert chosen["window"] == {"cutoff": "2011-09-02", "tuning": {}}
    for earlier, kwargs, why in [
        (None, {}, "no earlier run"),
        ({key: value for key, value in _earlier().items() if key != "routes_chosen_as_of"}, {}, "before --reuse-routes existed"),
        (_earlier(), {"max_age_days": 6}, "chosen 7 days before 2011-12-08, more than 6"),
        ({key: value for key, value in _earlier().items() if key != "tifu_settings"}, {}, "changed .*: tifu_settings \\(the last run had no TIFU-KNN\\)"),
        (_earlier(), {"as_of": dt.date(2011, 11, 30)}, "chosen as of 2011-12-01, after 2011-11-30"),
        (_earlier(), {"settings": {"routing": {"k": 5}, "tuning": {"alpha": [1.0]}}}, "settings changed .*: routing.k$"),
        (_earlier(), {"settings": {"routing": {"k": 10}, "tuning": {"alpha": [1.0]}, "segments": {"k": 4}}}, "changed .*: segments.k$"),
    ]:
        chosen, reason = choice(earlier, **kwargs)
        assert chosen is None and re.search(why, reason), reason


def test_a_refit_with_the_last_routes_skips_validation_and_writes_the_same_lists(trained, tmp_path, capsys):
    import shutil

    from runtime import cli
    from tests.conftest import PIPELINE_CONFIG

    output, manifest, tables, _ = trained
    for stage in (INGEST, SEGMENTS, RECOMMENDATIONS):
        shutil.copytree(output / stage, tmp_path / stage)
    assert cli.run(train.main, ["--output", str(tmp_path), "--config", str(PIPELINE_CONFIG), "--reuse-routes", "0"]) == 0
    refit = json.loads((tmp_path / RECOMMENDATIONS / "manifest.json").read_text())
    assert refit["reuse"] == {"max_age_days": 0, "reused": True, "reason": f"routes chosen as of {manifest['as_of']}, 0 days before"}
    printed = capsys.readouterr().out
    assert "validation: skipped" in printed and "tune ALS" not in printed
    assert {key: refit[key] for key in ("routes", "routes_chosen_as_of", "als_settings", "validation", "models")} == {
        key: manifest[key] for key in ("routes", "routes_chosen_as_of", "als_settings", "validation", "models")}
    for name, table in tables.items():
        again = pd.read_parquet(tmp_path / RECOMMENDATIONS / name)
        keys = [column for column in table.columns if column != "score"]
        pd.testing.assert_frame_equal(again.sort_values(keys).reset_index(drop=True), table.sort_values(keys).reset_index(drop=True))
