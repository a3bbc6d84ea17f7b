"""From Spark outputs to the SQLite store, and the app serving exactly what the train stage wrote."""

import sqlite3
from contextlib import closing

import pytest

from jobs import publish
from runtime import cli
from webapp import create_app, schema


@pytest.fixture(scope="module")
def published(spark, trained, tmp_path_factory):
    output = trained[0]
    db = tmp_path_factory.mktemp("store") / "segrec.sqlite"
    return publish.publish(spark, str(output), str(db)), db


def test_the_store_holds_every_table_and_passes_its_check(published, trained):
    result, db = published
    _, manifest, tables, purchases = trained
    with closing(sqlite3.connect(db)) as connection:
        assert schema.problems(connection) == []
        meta = dict(connection.execute("SELECT key, value FROM meta"))
    assert meta["as_of"] == manifest["as_of"]
    assert result["rows"]["recommendations"] == len(tables["recommendations"])
    assert result["rows"]["similar_items"] == len(tables["similar_items"])
    assert result["rows"]["items"] == purchases.item_id.nunique()
    with closing(sqlite3.connect(db)) as connection:
        assert connection.execute("SELECT COUNT(*) FROM items WHERE price > 0 AND buyers > 0 AND item_group != ''").fetchone()[0] == result["rows"]["items"]
    assert result["rows"]["customers"] == purchases.customer_id.nunique()
    assert result["rows"]["bought"] == len(purchases[["customer_id", "item_id"]].drop_duplicates())
    assert not list(db.parent.glob(".segrec-*"))  # no temporary file left behind


def test_the_app_serves_the_written_lists_and_trending_to_cold_customers(published, trained, tmp_path):
    _, db = published
    _, _, tables, _ = trained
    from webapp import accounts
    from webapp.state import get_state

    app = create_app({"SEGREC_DB": str(db), "SEGREC_STATE_DB": str(tmp_path / "state.sqlite"), "SECRET_KEY": "publish-test-" + "0123456789abcdef" * 2})
    with app.app_context():
        key = accounts.create_key(get_state(), "storefront", ["recommendations:read"])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    recs = tables["recommendations"]
    customer = recs.customer_id.iloc[0]
    for list_name in ("for_you", "discover", "buy_again"):
        expected = list(recs[(recs.customer_id == customer) & (recs.list == list_name)].sort_values("rank").item_id)
        body = client.get(f"/api/v1/customers/{customer}/recommendations?list={list_name}&n=10").get_json()
        assert body["known"] and [item["item_id"] for item in body["items"]] == expected
    trending = tables["trending"]
    everyone = list(trending[trending.country.isna()].sort_values("rank").item_id)
    cold = client.get("/api/v1/customers/first-time-visitor/recommendations?n=10").get_json()
    assert not cold["known"] and [item["item_id"] for item in cold["items"]] == everyone
    assert all(item["description"] for item in cold["items"])


def test_a_failed_publish_keeps_the_previous_store(spark, published, tmp_path, capsys):
    _, db = published
    before = db.read_bytes()
    status = cli.run(publish.main, ["--output", str(tmp_path / "no-run-here"), "--db", str(db)])
    assert status == 2 and "error:" in capsys.readouterr().err
    assert db.read_bytes() == before


def _lines(spark, rows, with_group: bool):
    import datetime as dt

    from segmentation import columns as C

    columns = [C.CUSTOMER_ID, C.ITEM_ID, C.DESCRIPTION, C.TIMESTAMP, C.UNIT_PRICE, C.COUNTRY] + ([C.ITEM_GROUP] if with_group else [])
    return spark.createDataFrame([(c, i, d, dt.datetime.fromisoformat(t), p, "France", *g) for c, i, d, t, p, *g in rows], columns)


WORDS = {"A": "RED HEART MUG", "B": "RED HEART CUP", "C": "RED HEART JUG", "D": "BLUE STAR BAG", "E": "BLUE STAR BOX",
         "F": "BLUE STAR TIN", "G": "RED HEART PLATE"}
LINES = ([("c1", "A", WORDS["A"], "2011-01-05", 1.0)] + [(f"c{k}", "A", WORDS["A"], "2011-11-2" + str(k), 2.0) for k in range(2, 5)]
         + [(f"c{k}", item, WORDS[item], "2011-06-01", 3.0) for item in "BCDEF" for k in range(2)]
         + [("c9", "G", WORDS["G"], "2011-12-01", 4.0)])  # G: first sold nine days before the as-of date, one buyer


def test_the_catalogue_gives_each_item_its_recent_price_buyers_and_a_group(spark):
    from runtime.stages.publish import item_catalogue, with_groups

    catalogue = item_catalogue(_lines(spark, LINES, with_group=False))
    descriptions = catalogue.toPandas().set_index("item_id")["description"]
    grouped = with_groups(spark, catalogue, descriptions).toPandas().set_index("item_id")
    assert grouped.loc["A", ["price", "buyers", "first_sold"]].tolist() == [2.0, 4, "2011-01-05"]  # the old price has faded
    groups = grouped["item_group"]
    assert groups["A"] == groups["B"] == groups["C"] == groups["G"] != groups["D"] == groups["E"] == groups["F"]
    assert sorted(groups["A"].split("-")) == ["heart", "red"] and sorted(groups["D"].split("-")) == ["blue", "star"]

    given = [row + (group,) for row, group in zip(LINES, ["Home & Garden!"] * 4 + [None] * 11)]
    catalogue = item_catalogue(_lines(spark, given, with_group=True))
    named = with_groups(spark, catalogue, descriptions).toPandas().set_index("item_id")["item_group"]
    assert named["A"] == "home-garden" and set(named.drop("A")) == {"ungrouped"}  # the data's own groups, made safe for the API


def test_new_items_get_content_neighbours_and_a_new_arrivals_list(spark):
    from coldstart.content import ContentConfig
    from runtime.stages.publish import content_tables, item_catalogue, new_arrivals

    purchases = _lines(spark, LINES, with_group=False)
    catalogue = item_catalogue(purchases)
    descriptions = catalogue.toPandas().set_index("item_id")["description"]
    also_bought = spark.createDataFrame([("G", 1, "D", 0.5), ("A", 1, "B", 0.9)], "item_id string, rank int, similar_item_id string, score double")
    tables = content_tables(spark, catalogue, descriptions, also_bought, "2011-12-10", ContentConfig(neighbours=3))
    similar = tables["similar_items"].toPandas().sort_values(["item_id", "rank"])
    for_g = similar[similar.item_id == "G"]
    assert for_g["similar_item_id"].tolist()[0] == "D" and for_g["source"].tolist() == ["also_bought", "content", "content", "content"]
    assert set(for_g["similar_item_id"][1:]) == {"A", "B", "C"} and for_g["rank"].tolist() == [1, 2, 3, 4]  # after its co-purchases
    assert similar[similar.item_id == "A"]["source"].tolist() == ["also_bought"]  # A is not new: its list is its co-purchases
    nearest = tables["new_item_neighbours"].toPandas()
    assert set(nearest[nearest.new_item_id == "G"]["item_id"]) == {"A", "B", "C"}  # the red hearts lead to G
    assert set(nearest["new_item_id"]) == {"G"}
    arrivals = new_arrivals(purchases, catalogue, "2011-12-10", ContentConfig()).toPandas()
    assert sorted(zip(arrivals["country"].fillna(""), arrivals["item_id"], arrivals["rank"])) == [("", "G", 1), ("France", "G", 1)]
    assert new_arrivals(purchases, catalogue, "2011-12-10", ContentConfig(new_item_days=5)).count() == 0
