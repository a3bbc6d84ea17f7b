"""The replay evaluation: one customer's days by hand, then ``jobs.evaluate --replay`` on the synthetic shop's full run."""

import datetime as dt
import json
import shutil

import pytest

from runtime import cli
from runtime.stages.replay import StoreAtCutoff, ndcg_and_recall, replay_customer
from tests.conftest import PIPELINE_CONFIG
from webapp.live import Event, LiveSettings, Ranked, live_list


def store(neighbours: dict, trending: dict, *, nearest_new=None, arrivals=None, new_neighbours=None) -> StoreAtCutoff:
    return StoreAtCutoff(neighbours=neighbours, trending=trending, content_neighbours={**neighbours, **(new_neighbours or {})},
                         nearest_new=nearest_new or {}, arrivals=arrivals or {})


def day(number: int, *items: str) -> dict:
    return {"day": dt.date(2011, 11, number), "first_purchase": dt.datetime(2011, 11, number, 10), "items": list(items)}


def test_the_metrics_are_the_textbook_ones():
    assert ndcg_and_recall(["a", "b", "c"], {"a"}, 3) == (1.0, 1.0)
    ndcg, recall = ndcg_and_recall(["x", "a", "y"], {"a", "b"}, 3)
    assert ndcg == pytest.approx((1 / 1.5849625) / (1 + 1 / 1.5849625)) and recall == 0.5


def test_a_warm_customers_earlier_purchases_move_their_next_days_lists():
    customer = {"customer_id": "c1", "group": "warm", "country": "UK", "bought": ["old"],
                "for_you": [f"f{n}" for n in range(12)], "discover": [f"d{n}" for n in range(12)],
                "days": [day(1, "sofa"), day(3, "cushion")]}
    cases = replay_customer(customer, store=store({"sofa": ["cushion", "lamp"]}, {None: ["t1", "t2"]}), k=10, settings=LiveSettings())
    scored = {list_name: [case for case in cases if case["list"] == list_name] for list_name in ("for_you", "discover")}
    for list_name in ("for_you", "discover"):
        assert [case["variant"] for case in scored[list_name]] == ["static", "events", "content"] * 2
    assert all(len(case["items"]) == 10 for case in cases)
    first_static, first_events, _, second_static, second_events, _ = scored["discover"]
    assert first_static["ndcg"] == first_events["ndcg"] == 0  # no events before the first day: the sofa is in no list
    assert second_static["ndcg"] == 0 and second_events["ndcg"] > 0  # the sofa's neighbour
    assert "sofa" not in second_events["items"]  # bought the day before
    assert "cushion" not in scored["for_you"][-2]["items"] and "sofa" in scored["for_you"][-2]["items"]  # for_you: no neighbours


def test_a_warm_customers_purchase_comes_back_into_for_you_weeks_later():
    customer = {"customer_id": "c1", "group": "warm", "country": "UK", "bought": ["old"],
                "for_you": [f"f{n}" for n in range(12)], "discover": [f"d{n}" for n in range(12)],
                "days": [day(1, "sofa"), day(20, "sofa")]}
    cases = replay_customer(customer, store=store({"sofa": ["lamp"]}, {None: ["t1"]}), k=10, settings=LiveSettings())
    *_, static, moved, _ = [case for case in cases if case["list"] == "for_you"]
    assert static["ndcg"] == 0 and moved["ndcg"] > 0 and "lamp" not in moved["items"]


def test_a_new_customer_is_scored_from_their_second_day_on_their_events_against_trending():
    customer = {"customer_id": "n1", "group": "new", "country": "France", "bought": None, "for_you": None, "discover": None,
                "days": [day(1, "sofa"), day(2, "cushion"), day(4, "rug")]}
    cases = replay_customer(customer, store=store({"sofa": ["cushion"], "cushion": ["rug"]}, {None: ["t1"], "France": ["fr1", "fr2"]}),
                            k=10, settings=LiveSettings())
    assert [(case["list"], case["variant"]) for case in cases] == [("for_you", "static"), ("for_you", "events"), ("for_you", "content")] * 2
    static, moved = cases[0], cases[1]
    assert static["items"] == ["fr1", "fr2"] and static["ndcg"] == 0
    assert moved["items"][:2] == ["cushion", "sofa"] and moved["recall"] == 1.0  # the bought sofa is demoted below its neighbour


def test_the_content_model_puts_new_items_near_what_was_bought_into_discover():
    customer = {"customer_id": "c1", "group": "warm", "country": "UK", "bought": ["old"],
                "for_you": [f"f{n}" for n in range(12)], "discover": [f"d{n}" for n in range(12)],
                "days": [day(1, "sofa"), day(3, "new-cushion")]}
    at_cutoff = store({"sofa": ["lamp"]}, {None: ["t1"]}, nearest_new={"sofa": ["new-cushion"], "d0": ["new-rug"]},
                      arrivals={None: ["new-vase"]}, new_neighbours={"new-cushion": ["sofa"]})
    cases = replay_customer(customer, store=at_cutoff, k=10, settings=LiveSettings(exploration_share=0.2))
    static, events, content = [case for case in cases if case["list"] == "discover"][-3:]  # the day after the sofa
    assert "new-cushion" not in static["items"] + events["items"] and content["ndcg"] > 0
    assert [item for item in content["items"] if item.startswith("new-")] == ["new-cushion", "new-rug"]  # the sofa's first


def test_a_just_bought_item_is_demoted_for_hours_not_days():
    bought = dt.datetime(2011, 11, 1, 10, tzinfo=dt.timezone.utc)
    batch = [Ranked(item, 0.0, "for_you") for item in ("sofa", "lamp", "rug")]

    def rank_of_sofa(hours_later: float) -> int:
        ranked = live_list("for_you", batch=batch, events=[Event("sofa", "purchase", bought)], neighbours={}, bought=set(),
                           popular=[], n=3, now=bought + dt.timedelta(hours=hours_later))
        return [row.item_id for row in ranked].index("sofa")

    assert rank_of_sofa(0.1) == 2 and rank_of_sofa(48) == 0


def test_the_replay_job_scores_static_against_event_moved_lists_with_intervals(spark, pipeline_run, tmp_path, capsys):
    from jobs import evaluate

    output = tmp_path / "out"
    shutil.copytree(pipeline_run / "ingest", output / "ingest")  # what it reads; the shared run stays as the pipeline left it
    status = cli.run(evaluate.main, ["--output", str(output), "--config", str(PIPELINE_CONFIG), "--replay"])
    out = capsys.readouterr().out
    assert status == 0 and "replay of" in out and "content − events" in out and "few-buyer items" in out
    result = json.loads((output / "evaluation-replay" / "replay.json").read_text())
    rows = {(row["group"], row["list"]): row for row in result["results"]}
    assert set(rows) == {("warm", "for_you"), ("warm", "discover"), ("new", "for_you")}
    for row in rows.values():
        assert row["cases"] >= row["customers"] > 0
        for metric in ("ndcg_static", "ndcg_events", "ndcg_content", "recall_static", "recall_events", "recall_content",
                       "ndcg_events_vs_static", "ndcg_content_vs_events"):
            cell = row[metric]
            assert cell["low"] <= cell["mean"] <= cell["high"]
        assert all(0 < row[f"coverage_{variant}"] <= 1 and 0 <= row[f"few_buyer_slots_{variant}"] <= 1 for variant in ("static", "events", "content"))
    # every synthetic item sells from the first day to many buyers: no new items here (the unit test above has some)
    assert result["few_buyer_items"] == result["new_items"] == 0 and result["few_buyer_share_of_test_purchases"] == 0
    # The synthetic shop plants affinities, so what a customer bought says what they buy next: the events' neighbours help
    # discover (hundreds of customers: the whole interval is above 0) and new customers (a few dozen: the mean is).
    assert rows["warm", "discover"]["ndcg_events_vs_static"]["low"] > 0 and rows["new", "for_you"]["ndcg_events_vs_static"]["mean"] > 0
