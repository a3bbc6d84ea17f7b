"""The replay evaluation: the test window's purchases fed back day by day as events, static lists against event-moved ones.

The routed recommender is chosen on a validation window and fitted before the test window, as
``jobs.evaluate`` does. Then each test customer's purchase days are replayed in order: before a
day, every earlier purchase of theirs in the window is an event, and that day is scored with

- ``static``: the lists as the batch wrote them (warm customers) or trending (new customers);
- ``events``: the same lists moved by those events with ``webapp.live``, the code the API runs
  (for a new customer, trending is the list their events move);
- ``content``: ``events`` with the content model as the store carries it: new items' neighbours in
  words after their co-purchases, and discover's exploration slots for new items.

Exposure: the share of listed slots, per variant, and of the window's purchases that go to items
with fewer than ``content.new_item_buyers`` buyers before the cutoff.

Warm customers (bought before the window) are scored on every purchase day: ``for_you`` on all
items bought that day, ``discover`` on items they had never bought. New customers (first seen in
the window) are scored from their second purchase day on ``for_you``. Each customer-day is one
case; the intervals are percentile bootstraps over customers (their days stay together).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

from cf import evaluation
from routing.model import RoutedRecommender
from routing.serving import cold_lists, served_lists
from runtime import layout, storage
from runtime.stages import publish as publishing
from runtime.config import Settings
from runtime.stages.evaluation import choose_before_test_window
from segmentation import columns as C
from segmentation.customers import segment_customers
from webapp import live

STAGE = layout.REPLAY
CASES = (("warm", "for_you"), ("warm", "discover"), ("new", "for_you"))
VARIANTS = ("static", "events", "content")
CHANGES = (("events", "static"), ("content", "events"))  # what each change compares: the events, then the content model
BOOTSTRAP_RESAMPLES = 1000
CASE_SCHEMA = "customer_id string, group string, list string, variant string, ndcg double, recall double, items array<string>"


def ndcg_and_recall(ranked: list[str], relevant: set[str], k: int) -> tuple[float, float]:
    """Binary-relevance NDCG@k and recall@k of one list (the definitions of ``cf.evaluation``)."""
    gains = [1.0 / math.log2(position + 2) for position, item in enumerate(ranked[:k]) if item in relevant]
    ideal = sum(1.0 / math.log2(position + 2) for position in range(min(len(relevant), k)))
    return sum(gains) / ideal, len(gains) / len(relevant)


def _listed(values) -> list:
    """A list from an array cell (None, a list, or the numpy array pandas makes of it)."""
    return [] if values is None else list(values)


@dataclasses.dataclass(frozen=True)
class StoreAtCutoff:
    """What the published store would hold for the web process at the cutoff (small tables: item and country keyed)."""
    neighbours: dict  # item -> its "also bought" items in rank order
    trending: dict  # country (None: everyone) -> items
    content_neighbours: dict  # the same as ``neighbours`` with new items' content neighbours after their co-purchases
    nearest_new: dict  # item -> the new items nearest it in words
    arrivals: dict  # country (None: everyone) -> new arrivals


def replay_customer(customer: dict, *, store: StoreAtCutoff, k: int, settings: live.LiveSettings) -> list[dict]:
    """One customer's scored cases: ``customer`` holds group, country, days (day, first purchase time, items) in order,
    the batch lists (for_you, discover: item ids in rank order) and the items bought before the window."""
    popular = store.trending.get(customer["country"]) or store.trending[None]
    arrivals = (store.arrivals.get(customer["country"]) or []) + store.arrivals.get(None, [])
    ranked_popular = [live.Ranked(item, 1.0, "trending") for item in popular]
    bought_before = set(_listed(customer["bought"]))
    cases, events, bought_since = [], [], set()
    for number, day in enumerate(_listed(customer["days"])):
        items = set(_listed(day["items"]))
        if customer["group"] == "warm" or number > 0:
            now = dt.datetime.combine(day["day"], dt.time(), dt.timezone.utc)
            for list_name in (("for_you", "discover") if customer["group"] == "warm" else ("for_you",)):
                relevant = items - bought_before - bought_since if list_name == "discover" else items
                if not relevant:
                    continue
                stored = _listed(customer[list_name]) if customer["group"] == "warm" else popular
                lists = {}
                for variant, neighbours in (("events", store.neighbours), ("content", store.content_neighbours)):
                    moved = live.live_list(
                        list_name, batch=[live.Ranked(item, 0.0, "batch") for item in stored], events=events, neighbours=neighbours,
                        bought=bought_before | bought_since, popular=ranked_popular, n=k, now=now,
                        known=customer["group"] == "warm", settings=settings)
                    if variant == "content" and list_name == "discover":
                        moved = live.with_exploration(moved, anchors=live.exploration_anchors(events, moved), nearest_new=store.nearest_new,
                                                      arrivals=arrivals, left_out=bought_before | bought_since, n=k, settings=settings)
                    lists[variant] = [row.item_id for row in moved]
                for variant, ranked in (("static", stored[:k]), *lists.items()):
                    ndcg, recall = ndcg_and_recall(ranked, relevant, k)
                    cases.append({"customer_id": customer["customer_id"], "group": customer["group"], "list": list_name,
                                  "variant": variant, "ndcg": ndcg, "recall": recall, "items": ranked})
        when = day["first_purchase"].replace(tzinfo=dt.timezone.utc) if day["first_purchase"].tzinfo is None else day["first_purchase"]
        events += [live.Event(item, "purchase", when) for item in sorted(items)]
        bought_since |= items
    return cases


def replay_customers(train, test, lists, *, store: StoreAtCutoff, k: int, settings: live.LiveSettings):
    """A DataFrame of scored cases (``CASE_SCHEMA``), one customer per Python call on the executors."""
    from pyspark.sql import functions as F

    days = (test.groupBy(C.CUSTOMER_ID, F.to_date(C.TIMESTAMP).alias("day"))
            .agg(F.min(C.TIMESTAMP).alias("first_purchase"), F.collect_set(C.ITEM_ID).alias("items"))
            .groupBy(C.CUSTOMER_ID).agg(F.sort_array(F.collect_list(F.struct("day", "first_purchase", "items"))).alias("days")))
    known = train.groupBy(C.CUSTOMER_ID).agg(F.mode(C.COUNTRY, deterministic=True).alias("known_country"),
                                             F.collect_set(C.ITEM_ID).alias("bought"))
    seen_country = test.groupBy(C.CUSTOMER_ID).agg(F.mode(C.COUNTRY, deterministic=True).alias("test_country"))
    ordered = (lists.groupBy(C.CUSTOMER_ID).pivot(C.LIST, ["for_you", "discover"])
               .agg(F.transform(F.sort_array(F.collect_list(F.struct(C.RANK, C.ITEM_ID))), lambda row: row[C.ITEM_ID])))
    customers = (days.join(seen_country, C.CUSTOMER_ID).join(known, C.CUSTOMER_ID, "left").join(ordered, C.CUSTOMER_ID, "left")
                 .select(C.CUSTOMER_ID, "days", "bought", "for_you", "discover",
                         F.when(F.col("bought").isNotNull(), "warm").otherwise("new").alias("group"),
                         F.coalesce("known_country", "test_country").alias("country")))

    def replay_partition(frames):
        import pandas as pd

        for frame in frames:
            rows = [case for customer in frame.to_dict("records")
                    for case in replay_customer(customer, store=store, k=k, settings=settings)]
            yield pd.DataFrame(rows, columns=[field.split()[0] for field in CASE_SCHEMA.split(", ")])

    return customers.mapInPandas(replay_partition, CASE_SCHEMA)


def summarise(per_customer, *, catalogue: int, coverage: dict, exposure: dict) -> list[dict]:
    """Mean NDCG and recall over customer-days per group, list and variant, with 95% bootstrap intervals over customers,
    and the paired differences of ``CHANGES``. ``per_customer``: pandas rows of customer, group, list, variant, days,
    ndcg_sum, recall_sum; ``coverage``: distinct items listed, ``exposure``: the share of slots given to items with
    few buyers, per (group, list, variant)."""
    import numpy as np
    from scipy import stats

    found = []
    for (group, list_name), cases in per_customer.groupby(["group", "list"]):
        wide = cases.pivot_table(index="customer_id", columns="variant", values=["ndcg_sum", "recall_sum", "days"])
        days = wide["days"]["static"].to_numpy()
        row = {"group": group, "list": list_name, "customers": len(wide), "cases": int(days.sum())}
        for metric in ("ndcg", "recall"):
            sums = {variant: wide[f"{metric}_sum"][variant].to_numpy() for variant in VARIANTS}
            for variant in VARIANTS:
                row[f"{metric}_{variant}"] = _mean_with_interval(sums[variant], days, stats, np)
            for after, before in CHANGES:
                row[f"{metric}_{after}_vs_{before}"] = _mean_with_interval(sums[after] - sums[before], days, stats, np)
        for variant in VARIANTS:
            row[f"coverage_{variant}"] = round(coverage[(group, list_name, variant)] / catalogue, 4)
            row[f"few_buyer_slots_{variant}"] = exposure[(group, list_name, variant)]
        found.append(row)
    return found


def _mean_with_interval(sums, days, stats, np) -> dict:
    """The case-weighted mean and its 95% percentile-bootstrap interval, customers resampled whole."""
    def ratio(resampled_sums, resampled_days):
        return resampled_sums.sum() / resampled_days.sum()

    interval = stats.bootstrap((sums, days), ratio, paired=True, vectorized=False, n_resamples=BOOTSTRAP_RESAMPLES,
                               method="percentile", rng=np.random.default_rng(0)).confidence_interval
    return {"mean": round(float(ratio(sums, days)), 4), "low": round(float(interval.low), 4), "high": round(float(interval.high), 4)}


def store_at_cutoff(spark, routed, train, catalogue, *, cutoff: dt.date, settings: Settings) -> StoreAtCutoff:
    """The tables the web process would read, built from the purchases before the cutoff as ``jobs.publish`` builds them."""
    config = settings.routing
    also_bought = routed.similar_items(train.select(C.ITEM_ID).distinct(), config.similar_items)
    descriptions = catalogue.select(C.ITEM_ID, C.DESCRIPTION).toPandas().set_index(C.ITEM_ID)[C.DESCRIPTION]
    tables = publishing.content_tables(spark, catalogue, descriptions, also_bought, cutoff.isoformat(), settings.content)

    def keyed(frame, key: str, value: str, order: str) -> dict:
        found: dict = {}
        for row in frame.orderBy(key, order).toLocalIterator():
            found.setdefault(row[key], []).append(row[value])
        return found

    return StoreAtCutoff(
        neighbours=keyed(also_bought, C.ITEM_ID, C.SIMILAR_ITEM_ID, C.RANK),
        trending=keyed(cold_lists(routed, train, config.served_n), C.COUNTRY, C.ITEM_ID, C.RANK),
        content_neighbours=keyed(tables["similar_items"], C.ITEM_ID, C.SIMILAR_ITEM_ID, C.RANK),
        nearest_new=keyed(tables["new_item_neighbours"], C.ITEM_ID, "new_item_id", C.RANK),
        arrivals=keyed(publishing.new_arrivals(train, catalogue, cutoff.isoformat(), settings.content), C.COUNTRY, C.ITEM_ID, C.RANK))


def run_replay(spark, output_uri: str, *, as_of: dt.date | None, settings: Settings, live_settings: live.LiveSettings = live.LiveSettings(),
               echo=print) -> dict:
    from pyspark.sql import functions as F

    routing_config = settings.routing
    setup = choose_before_test_window(spark, output_uri, as_of=as_of, settings=settings, echo=echo)
    purchases, returns, test_window, chosen = setup.purchases, setup.returns, setup.test_window, setup.chosen
    cutoff, end = test_window.start, test_window.end
    train, test = evaluation.split_by_time(purchases, cutoff=cutoff, end=end)
    train, test = train.cache(), test.cache()
    echo(f"replay: fit before {cutoff}, replay the {test_window.describe()} day by day")
    segments = segment_customers(train, returns, as_of=cutoff, clv_config=settings.clv, segment_config=settings.segments).customers
    routed = RoutedRecommender.from_choice(chosen, as_of=cutoff.isoformat(), config=routing_config).fit(train, segments.select(C.CUSTOMER_ID, C.SEGMENT))
    test_customers = test.select(C.CUSTOMER_ID).distinct()
    warm = train.join(test_customers, C.CUSTOMER_ID).groupBy(C.CUSTOMER_ID).agg(F.mode(C.COUNTRY, deterministic=True).alias(C.COUNTRY))
    lists = served_lists(routed, warm, routing_config.served_n)
    catalogue = publishing.item_catalogue(train)
    store = store_at_cutoff(spark, routed, train, catalogue, cutoff=cutoff, settings=settings)
    cases = replay_customers(train, test, lists, store=store, k=routing_config.k, settings=live_settings).cache()
    keys = ["group", "list", "variant"]
    per_customer = cases.groupBy(C.CUSTOMER_ID, *keys).agg(
        F.count("*").alias("days"), F.sum("ndcg").alias("ndcg_sum"), F.sum("recall").alias("recall_sum")).toPandas()
    few_buyers = catalogue.where(F.col(C.BUYERS) < settings.content.new_item_buyers).select(C.ITEM_ID, F.lit(1).alias("_few"))
    slots = cases.select(*keys, F.explode("items").alias(C.ITEM_ID)).join(few_buyers, C.ITEM_ID, "left").cache()
    coverage = {tuple(row[key] for key in keys): row["items"] for row in
                slots.groupBy(*keys).agg(F.countDistinct(C.ITEM_ID).alias("items")).collect()}
    exposure = {tuple(row[key] for key in keys): round(row["share"], 4) for row in
                slots.groupBy(*keys).agg(F.avg(F.coalesce("_few", F.lit(0))).alias("share")).collect()}
    bought_in_test = test.select(C.CUSTOMER_ID, F.to_date(C.TIMESTAMP).alias("day"), C.ITEM_ID).distinct().join(few_buyers, C.ITEM_ID, "left")
    result = {"k": routing_config.k, "cutoff": cutoff.isoformat(), "end": (end - dt.timedelta(days=1)).isoformat(),
              "routes": chosen["routes"], "live_settings": dataclasses.asdict(live_settings),
              "content": dataclasses.asdict(settings.content),
              "few_buyer_items": few_buyers.count(), "new_items": publishing.new_items(catalogue, cutoff.isoformat(), settings.content)
              .where(F.col(C.BUYERS) < settings.content.new_item_buyers).count(),
              "few_buyer_share_of_test_purchases": round(bought_in_test.agg(F.avg(F.coalesce("_few", F.lit(0)))).first()[0], 4),
              "results": summarise(per_customer, catalogue=catalogue.count(), coverage=coverage, exposure=exposure)}
    catalogue.unpersist()
    spark.catalog.clearCache()
    with storage.atomic_output(spark, storage.join(output_uri, STAGE)) as staging:
        storage.write_json(spark, storage.join(staging, "replay.json"), result)
    return result


def format_replay(result: dict) -> str:
    def figure(cell: dict) -> str:
        return f"{cell['mean']:.4f} [{cell['low']:.4f}, {cell['high']:.4f}]"

    lines = [f"replay of {result['cutoff']}..{result['end']}, NDCG@{result['k']} and recall@{result['k']} per customer-day, "
             "95% bootstrap intervals over customers",
             f"items with fewer than {result['content']['new_item_buyers']} buyers before the cutoff: {result['few_buyer_items']:,} "
             f"({result['new_items']:,} of them new), {result['few_buyer_share_of_test_purchases']:.1%} of the test window's purchases"]
    for row in result["results"]:
        lines.append(f"\n{row['group']} customers, {row['list']}: {row['customers']:,} customers, {row['cases']:,} customer-days")
        for metric in ("ndcg", "recall"):
            lines.append(f"  {metric:<7} " + "   ".join(f"{variant} {figure(row[f'{metric}_{variant}'])}" for variant in VARIANTS))
            lines.append("          " + "   ".join(f"{after} − {before} {figure(row[f'{metric}_{after}_vs_{before}'])}"
                                                  for after, before in CHANGES))
        lines.append("  coverage " + "   ".join(f"{variant} {row[f'coverage_{variant}']:.3f}" for variant in VARIANTS)
                     + "   slots to few-buyer items " + "   ".join(f"{variant} {row[f'few_buyer_slots_{variant}']:.1%}" for variant in VARIANTS))
    return "\n".join(lines)
