"""Audiences (rules, live count, saved, suppression) and the campaign lifecycle, in the real app on store_data's store.

store_data: customer c<k> (k = 1..39) spent 100 k, is in lifecycle state LIFECYCLE[k % 4], lives in France when k is odd,
bought I<k> on 2011-0<k % 9 + 1>-15 and I<k+1> on 2011-11-15; the customers most likely to buy I005 are c39, c38, ...
"""

import html
import io
import re

import pytest

from tests import store_data
from tests.webclient import create_campaign, csrf, read_export, signed_in
from webapp import audience_rules

CUSTOMERS = {f"c{k}": {"segment": segment, "lifecycle": store_data.LIFECYCLE[k % 4], "spend": 100.0 * k, "country": "France" if k % 2 else "United Kingdom"}
             for segment, members in store_data.SEGMENTS.items() for k in (int(c[1:]) for c in members)}
ITEM_GROUP = {item: store_data.GROUPS[i % len(store_data.GROUPS)] for i, item in enumerate(store_data.ITEMS)}


def counted(client, **query) -> tuple[int, str]:
    """The builder's live count for ``query``, and the page."""
    page = client.get("/audiences/", query_string=query).get_data(as_text=True)
    found = re.search(r'<p id="count"><strong>([\d,]+)</strong>', page)
    return (int(found.group(1).replace(",", "")) if found else -1), page


def expected(predicate) -> set[str]:
    return {customer for customer, row in CUSTOMERS.items() if predicate(int(customer[1:]), row)}


@pytest.mark.parametrize("query, members", [
    ({"lifecycle": "lapsed", "total_spend_min": "2000"}, lambda k, c: c["lifecycle"] == "lapsed" and c["spend"] >= 2000),
    ({"segment": ["high", "mid"], "country": "France"}, lambda k, c: c["segment"] in ("high", "mid") and c["country"] == "France"),
    ({"match": "any", "segment": "high", "days_since_last_max": "5"}, lambda k, c: c["segment"] == "high" or k <= 5),
    ({"bought_target": "I005", "bought_from": "2011-06-01", "bought_to": "2011-06-30"}, lambda k, c: k == 5),
    ({"bought_target": "I005", "bought_mode": "not_bought", "segment": "low"}, lambda k, c: c["segment"] == "low" and 5 not in (k, k + 1)),
    ({"bought_kind": "group", "bought_target": "red"}, lambda k, c: "red" in (ITEM_GROUP[f"I{k:03d}"], ITEM_GROUP[f"I{k + 1:03d}"])),
    ({"affinity_target": "I005", "affinity_amount": "3"}, lambda k, c: k >= 37),
    ({"affinity_target": "I005", "affinity_amount": "10", "affinity_unit": "percent"}, lambda k, c: k >= 36),  # 10% of 39: 4
    ({"affinity_kind": "group", "affinity_target": "red", "affinity_amount": "5", "lifecycle": "new"}, lambda k, c: k <= 5 and k % 4 == 0),
])
def test_the_builder_counts_who_matches_the_rules(client, query, members):
    count, page = counted(client, **query)
    chosen = expected(members)
    assert count == len(chosen) and chosen, page[:2000]
    revenue = sum(CUSTOMERS[c]["spend"] for c in chosen)
    assert f"who have spent <strong>€{revenue:,.2f}</strong>" in page
    shown = set(re.findall(r"<tr><td>(c\d+)</td>", page))
    assert shown <= chosen and len(shown) == min(len(chosen), 20)


@pytest.mark.parametrize("query, message", [
    ({"clv_min": "500", "clv_max": "100"}, "the lowest predicted 12-month value (500) is above the highest (100)"),
    ({"total_spend_min": "lots"}, "the lowest total spend so far must be a number, got 'lots'"),
    ({"bought_target": "I005", "bought_from": "15/06/2011"}, "the 'from' date must be YYYY-MM-DD"),
    ({"bought_target": "I005", "bought_from": "2011-07-01", "bought_to": "2011-06-01"}, "the period starts (2011-07-01) after it ends"),
    ({"affinity_target": "I005", "affinity_amount": "many"}, "the affinity rule needs a number of customers or a percentage"),
    ({"affinity_target": "I005", "affinity_amount": "0"}, "the top number of customers must be a whole number of 1 or more"),
    ({"affinity_target": "I005", "affinity_amount": "150", "affinity_unit": "percent"}, "the top share must be above 0% and at most 100%"),
    ({"match": "some", "segment": "high"}, "match must be all or any"),
    ({"bought_kind": "shelf", "bought_target": "x"}, "bought_kind must be item or group"),
])
def test_a_bad_rule_is_400_with_its_message(client, query, message):
    response = client.get("/audiences/", query_string=query)
    assert response.status_code == 400 and message in html.unescape(response.get_data(as_text=True))


def test_the_live_count_is_json_and_says_what_is_wrong(client):
    found = client.get("/audiences/count", query_string={"lifecycle": "lapsed", "total_spend_min": "2000"}).get_json()
    assert found["customers"] == 5 and found["text"] == "5 customers, who have spent €15,500.00 so far"  # c23, c27, .., c39
    bad = client.get("/audiences/count", query_string={"clv_min": "x"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "the lowest predicted 12-month value must be a number, got 'x'"


def test_definitions_are_checked_whole_and_described_in_words():
    with pytest.raises(audience_rules.AudienceError, match="rule 1: unknown field 'colour'.*rule 2: choose 1 to 200 values"):
        audience_rules.parse({"rules": [{"field": "colour"}, {"field": "segment", "in": []}]})
    with pytest.raises(audience_rules.AudienceError, match="an audience needs 1 to 20 rules"):
        audience_rules.parse({"match": "all", "rules": []})
    definition = audience_rules.parse('{"match": "all", "rules": [{"field": "lifecycle", "in": ["lapsed"]}, '
                                      '{"field": "total_spend", "min": 1000}, {"field": "bought", "group": "red", "to": "2011-06-30", "negate": true}, '
                                      '{"field": "affinity", "item": "Côte à côte 85123A", "share": 0.05}]}')
    assert audience_rules.describe(definition) == (
        "lifecycle state is lapsed and total spend so far at least 1000 and did not buy group red to 2011-06-30 and "
        "top 5% customers most likely to buy item Côte à côte 85123A")


def test_saved_audiences_reopen_change_and_make_campaigns_that_never_include_the_suppressed(client):
    token = csrf(client, "/audiences/")
    rules = {"affinity_target": "I005", "affinity_amount": "4", "lifecycle": ["at_risk", "lapsed", "active", "new"]}
    response = client.post("/audiences/", data={"csrf_token": token, "name": "Likely to buy I005", **rules})
    assert response.status_code == 302
    audience_path = response.headers["Location"]
    page = client.get(audience_path).get_data(as_text=True)
    assert "top 4 customers most likely to buy item I005" in page and 'value="4"' in page
    assert re.search(r'<strong>4</strong> customers', page)

    # A suppression upload: bad rows change nothing, good ones leave those customers out of every count and export
    bad = client.post("/audiences/suppression", data={"csrf_token": token, "customers": (io.BytesIO(b"customer_id\nc39\n<b>\n"), "o.csv")},
                      content_type="multipart/form-data")
    assert bad.status_code == 400 and "line 3: customer_id must be 1-64 letters" in bad.get_data(as_text=True)
    assert "<strong>0</strong> customers opted out" in client.get("/audiences/suppression").get_data(as_text=True)
    good = client.post("/audiences/suppression", data={"csrf_token": token, "customers": (io.BytesIO(b"customer_id\nc39\nc38\nc38\n"), "o.csv")},
                       content_type="multipart/form-data")
    assert good.status_code == 302
    assert "<strong>2</strong> customers opted out" in client.get("/audiences/suppression").get_data(as_text=True)
    page = client.get(audience_path).get_data(as_text=True)
    assert re.search(r'<strong>2</strong> customers', page) and "2 more match but opted out" in page

    # Changed: the top 6 (c39 .. c34), of whom two opted out
    changed = client.post(audience_path, data={"csrf_token": token, "name": "Likely to buy I005", **rules, "affinity_amount": "6"})
    assert changed.status_code == 302 and re.search(r'<strong>4</strong> customers', client.get(audience_path).get_data(as_text=True))
    audience_id = audience_path.rsplit("/", 1)[1]
    campaign = client.post("/campaigns/", data={"csrf_token": token, "name": "I005 fans", "audience": audience_id, "list": "for_you",
                                                "n": "2", "control_share": "25"})
    assert campaign.status_code == 302
    rows = read_export(client, campaign.headers["Location"])
    assert {row["customer_id"] for row in rows} == {"c37", "c36", "c35", "c34"}


def test_a_campaign_is_a_draft_until_exported_and_can_be_duplicated_and_archived(client):
    path = create_campaign(client, name="Spring").headers["Location"]
    token = csrf(client, path)
    assert 'id="status">draft<' in client.get(path).get_data(as_text=True)
    edit = {"csrf_token": token, "name": "Spring sale", "segments": ["high"], "list": "discover", "n": "4", "control_share": "20"}
    assert client.post(f"{path}/edit", data=edit).status_code == 302
    page = client.get(path).get_data(as_text=True)
    assert "Campaign: Spring sale" in page and "value segment is high" in page
    assert {row["customer_id"] for row in read_export(client, path)} == set(store_data.SEGMENTS["high"])
    assert 'id="status">exported<' in client.get(path).get_data(as_text=True)
    refused = client.post(f"{path}/edit", data={**edit, "name": "Too late"})
    assert refused.status_code == 409 and "only a draft can be changed" in refused.get_data(as_text=True)
    bad = client.post(f"{path}/edit", data={**edit, "n": "99"})
    assert bad.status_code == 409  # the state is checked before the fields

    copy = client.post(f"{path}/duplicate", data={"csrf_token": token})
    copy_path = copy.headers["Location"]
    page = client.get(copy_path).get_data(as_text=True)
    assert "Campaign: Copy of Spring sale" in page and 'id="status">draft<' in page and "value segment is high" in page
    assert client.post(f"{copy_path}/edit", data={**edit, "n": "99"}).status_code == 400  # a draft's bad change says what is wrong

    assert client.post(f"{path}/archive", data={"csrf_token": token}).status_code == 302
    listed = client.get("/campaigns/").get_data(as_text=True)
    assert "Copy of Spring sale" in listed and ">Spring sale<" not in listed
    assert ">Spring sale<" in client.get("/campaigns/?show=all").get_data(as_text=True)
    assert client.get(f"{path}/export.csv").status_code == 409
    client.post(f"{path}/archive", data={"csrf_token": token})
    assert 'id="status">exported<' in client.get(path).get_data(as_text=True)


def test_viewers_see_audiences_but_cannot_change_them(app):
    viewer = signed_in(app, "viewer")
    assert viewer.get("/audiences/?segment=high").status_code == 200
    token = csrf(viewer, "/audiences/")
    assert viewer.post("/audiences/", data={"csrf_token": token, "name": "x", "segment": "high"}).status_code == 403
    upload = viewer.post("/audiences/suppression", data={"csrf_token": token, "customers": (io.BytesIO(b"customer_id\nc1\n"), "o.csv")},
                         content_type="multipart/form-data")
    assert upload.status_code == 403
