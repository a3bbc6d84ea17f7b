import dataclasses

import pandas as pd
import pytest

from jobs import synth
from jobs.ingest import run_ingest
from transactions.ingest import IngestConfig

SMALL = synth.SynthConfig(customers=600, items=120, seed=11)


@pytest.fixture(scope="module")
def generated(spark, tmp_path_factory):
    output = tmp_path_factory.mktemp("synth") / "data"
    synth.write(spark, synth.generate(spark, SMALL), str(output))
    return output


def test_same_seed_same_data_whatever_the_partitioning(spark, generated, session_settings):
    session_settings.set("spark.sql.shuffle.partitions", "7")
    again = synth.generate(spark, SMALL)["transactions"].toPandas()
    first = pd.read_parquet(generated / "transactions")
    columns = list(first.columns)
    pd.testing.assert_frame_equal(
        first.sort_values(columns).reset_index(drop=True), again[columns].sort_values(columns).reset_index(drop=True),
        check_dtype=False,
    )


def test_another_seed_gives_other_data(spark, generated):
    other = synth.generate(spark, dataclasses.replace(SMALL, seed=12))["transactions"].count()
    assert other != len(pd.read_parquet(generated / "transactions"))


def purchases_with_tiers(generated):
    tx = pd.read_parquet(generated / "transactions")
    tx = tx[(tx.Quantity > 0) & tx["Customer ID"].notna() & (tx.StockCode != "POST")].drop_duplicates()
    tx["customer_id"] = tx["Customer ID"].astype("int64").astype(str)
    tx["amount"] = tx.Quantity * tx.Price
    truth = pd.read_parquet(generated / "truth" / "customers")
    return tx.merge(truth[["customer_id", "tier"]], on="customer_id", validate="many_to_one")


def test_value_tiers_are_visible_in_the_data(generated):
    tx = purchases_with_tiers(generated)
    per_customer = tx.groupby(["tier", "customer_id"]).agg(revenue=("amount", "sum"), orders=("Invoice", "nunique"))
    by_tier = per_customer.groupby("tier").median()

    assert by_tier.loc["high", "revenue"] > 4 * by_tier.loc["mid", "revenue"]
    assert by_tier.loc["mid", "revenue"] > 2 * by_tier.loc["low", "revenue"]
    assert by_tier.loc["high", "orders"] > by_tier.loc["mid", "orders"] > by_tier.loc["low", "orders"]


def test_each_tier_prefers_its_planted_item_groups(generated):
    tx = purchases_with_tiers(generated)
    items = pd.read_parquet(generated / "truth" / "items")
    tx = tx.merge(items[["item_id", "group"]], left_on="StockCode", right_on="item_id")
    affinity = pd.read_parquet(generated / "truth" / "tier_affinity")
    for tier, profile in SMALL.tiers.items():
        share = tx[tx.tier == tier].group.value_counts(normalize=True)
        assert set(share.index[:2]) == set(profile.favourite_groups)
        planted = affinity[affinity.tier == tier].set_index("group").affinity
        assert planted.sum() == pytest.approx(1.0)
        assert share[list(profile.favourite_groups)].sum() > 0.6


def test_tier_shares_follow_the_profile(generated):
    truth = pd.read_parquet(generated / "truth" / "customers")
    shares = truth.tier.value_counts(normalize=True)
    for tier, profile in SMALL.tiers.items():
        assert shares[tier] == pytest.approx(profile.share, abs=0.06)


def test_the_dirt_of_the_real_data_is_there(spark, generated, tmp_path):
    summary = run_ingest(spark, str(generated / "transactions"), str(tmp_path), IngestConfig())
    assert all(summary["places"][place] > 0 for place in ("clean", "returns", "anonymous", "quarantine"))
    reasons = summary["quarantine_reasons"]
    assert reasons["duplicate"] > 0 and reasons["non_product"] > 0 and reasons["non_positive_price"] > 0


def test_seasonal_bump_in_november_and_december(generated):
    tx = pd.read_parquet(generated / "transactions")
    orders_per_month = tx.drop_duplicates("Invoice").groupby(tx.InvoiceDate.dt.to_period("M")).size()
    in_2010 = orders_per_month[orders_per_month.index.year == 2010]
    assert in_2010[in_2010.index.month.isin([11, 12])].mean() > 1.3 * in_2010[in_2010.index.month.isin([5, 6, 7, 8])].mean()


def test_rows_target_is_met_approximately(spark):
    customers = synth.customers_for_rows(spark, 20_000, SMALL, pilot_customers=300)
    rows = synth.generate(spark, dataclasses.replace(SMALL, customers=customers))["transactions"].count()
    assert 0.85 * 20_000 < rows < 1.15 * 20_000
