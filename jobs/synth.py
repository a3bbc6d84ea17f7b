"""Synthetic transactions with planted structure, in the Online Retail II schema.

Customers belong to value tiers (high / mid / low) that differ in purchase rate,
drop-out, basket size and spend; items belong to groups and each tier prefers
its own groups; each customer has staple items it re-buys; November and December
get a seasonal bump. The dirt of the real data is added on top: cancellations,
missing customer ids, exact duplicate rows, service codes and zero prices.

Everything is generated in Spark from ``spark.range`` with hash-based random
numbers keyed by (seed, ids), so the output depends on the seed only, not on the
number of partitions, and scales from thousands to hundreds of millions of rows.

Written next to the data, under ``<output>/truth/``: the tier of every customer,
the affinity of every tier for every item group, and the group of every item,
so tests can check that the pipeline recovers them.

    python -m jobs.synth --output /tmp/synth --rows 100000 --seed 7
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import sys
from dataclasses import dataclass, field

from runtime import cli, storage
from runtime.config import build, load_config_file
from runtime.spark import SparkSettings, build_session

TIERS = ("high", "mid", "low")


@dataclass(frozen=True)
class TierProfile:
    share: float  # of customers
    orders_per_year: float  # purchase rate while alive
    dropout: float  # probability of leaving after each order (BG/NBD's p)
    lines_per_order: float
    spend_multiplier: float  # on quantity
    favourite_groups: tuple[int, ...]  # item groups this tier prefers


COUNTRIES = (("United Kingdom", 0.82), ("Germany", 0.05), ("France", 0.04), ("EIRE", 0.04), ("Netherlands", 0.03), ("Spain", 0.02))

DEFAULT_TIERS = {
    "high": TierProfile(share=0.15, orders_per_year=20.0, dropout=0.01, lines_per_order=14, spend_multiplier=3.0, favourite_groups=(0, 1)),
    "mid": TierProfile(share=0.35, orders_per_year=6.0, dropout=0.04, lines_per_order=9, spend_multiplier=1.5, favourite_groups=(2, 3)),
    "low": TierProfile(share=0.50, orders_per_year=1.5, dropout=0.30, lines_per_order=6, spend_multiplier=1.0, favourite_groups=(4, 5)),
}


@dataclass(frozen=True)
class SynthConfig:
    customers: int = 2_000
    items: int = 600
    item_groups: int = 6
    seed: int = 42
    start: dt.date = dt.date(2009, 12, 1)
    days: int = 740
    favourite_share: float = 0.7  # of lines drawn from the tier's favourite groups
    staples: int = 5  # items each customer keeps coming back to
    staple_share: float = 0.3  # of lines that are re-buys of a staple
    seasonal_bump: float = 1.8  # purchase rate multiplier in November and December
    max_orders: int = 400
    cancellation_rate: float = 0.02
    anonymous_rate: float = 0.08
    duplicate_rate: float = 0.02
    service_rate: float = 0.05  # orders with a POSTAGE line
    zero_price_rate: float = 0.003
    countries: tuple[tuple[str, float], ...] = COUNTRIES  # (name, share of customers)
    country_column: bool = True  # False: the log has no country at all
    line_totals: bool = False  # True: a LineTotal column (quantity x price) instead of the unit Price
    tiers: dict[str, TierProfile] = field(default_factory=lambda: dict(DEFAULT_TIERS))



def _uniform(seed: int, *keys):
    """A uniform number in [0, 1) from a hash of (seed, keys): the same for the same keys, on any partitioning."""
    from pyspark.sql import functions as F

    bits = F.xxhash64(F.lit(seed), *keys)
    return (F.pmod(bits, F.lit(1 << 52)).cast("double")) / float(1 << 52)


def _pick(u, weighted: list[tuple]):
    """Map a uniform column to a value by cumulative weights."""
    from pyspark.sql import functions as F

    total = sum(w for _, w in weighted)
    expr, cumulative = None, 0.0
    for value, weight in weighted:
        cumulative += weight / total
        expr = F.when(u < cumulative, F.lit(value)) if expr is None else expr.when(u < cumulative, F.lit(value))
    return expr.otherwise(F.lit(weighted[-1][0]))


def _by_tier(attribute: str, tiers: dict[str, TierProfile]):
    from pyspark.sql import functions as F

    expr = None
    for name, profile in tiers.items():
        setting = getattr(profile, attribute)
        value = F.array(*map(F.lit, setting)) if isinstance(setting, tuple) else F.lit(setting)
        expr = F.when(F.col("tier") == name, value) if expr is None else expr.when(F.col("tier") == name, value)
    return expr


def generate_customers(spark, config: SynthConfig):
    """One row per customer: tier, birth day, purchase rate, drop-out count, country, spend level."""
    from pyspark.sql import functions as F

    tiers = config.tiers
    u = lambda k: _uniform(config.seed, F.lit(k), F.col("id"))  # noqa: E731 - a local shorthand
    customers = spark.range(config.customers).withColumn("tier", _pick(u("tier"), [(n, p.share) for n, p in tiers.items()]))
    # Individual rates scatter log-normally around the tier's rate (Box-Muller from two uniforms).
    normal = F.sqrt(-2 * F.log(1 - u("rate1"))) * F.cos(2 * math.pi * u("rate2"))
    rate_per_day = _by_tier("orders_per_year", tiers) / 365.0 * F.exp(0.5 * normal - 0.125)
    # Orders before dropping out: geometric with the tier's p (the first order always happens).
    dropout = _by_tier("dropout", tiers)
    lifetime_orders = F.least(F.lit(config.max_orders), (F.floor(F.log(1 - u("life")) / F.log(1 - dropout)) + 1).cast("int"))
    return customers.select(
        (F.col("id") + 12000).cast("double").alias("customer_number"),
        "id", "tier",
        (u("birth") * config.days * 0.9).alias("birth_day"),
        rate_per_day.alias("rate_per_day"),
        lifetime_orders.alias("lifetime_orders"),
        _pick(u("country"), list(config.countries)).alias("country"),
        _by_tier("spend_multiplier", tiers).alias("spend_multiplier"),
        _by_tier("lines_per_order", tiers).alias("lines_per_order"),
    )


def generate_orders(customers, config: SynthConfig):
    """Orders as a thinned Poisson process from each customer's birth until drop-out or the end of the window."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    seed, bump = config.seed, config.seasonal_bump
    slots = customers.withColumn("slot", F.explode(F.sequence(F.lit(1), F.col("lifetime_orders"))))
    # Gaps are drawn at the peak rate; a slot is then kept with probability rate(t)/peak.
    gap = -F.log(1 - _uniform(seed, F.lit("gap"), F.col("id"), F.col("slot"))) / (F.col("rate_per_day") * bump)
    by_customer = Window.partitionBy("id").orderBy("slot").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    orders = slots.withColumn("day", F.col("birth_day") + F.when(F.col("slot") == 1, F.lit(0.0)).otherwise(F.sum(gap).over(by_customer)))
    orders = orders.where(F.col("day") < config.days)
    orders = orders.withColumn("ts", F.timestamp_add("SECOND", (F.col("day") * 86400).cast("long"), F.lit(dt.datetime.combine(config.start, dt.time(8, 0)))))
    in_season = F.month("ts").isin(11, 12)
    keep = _uniform(seed, F.lit("thin"), F.col("id"), F.col("slot")) < F.when(in_season, 1.0).otherwise(1.0 / bump)
    orders = orders.where(keep | (F.col("slot") == 1))
    lines = F.greatest(F.lit(1), F.round(F.col("lines_per_order") * 2 * _uniform(seed, F.lit("lines"), F.col("id"), F.col("slot")))).cast("int")
    return orders.withColumn("lines", lines)


def item_catalogue(spark, config: SynthConfig):
    """Items with their group, a stock code, a description and a base price."""
    from pyspark.sql import functions as F

    u = lambda k: _uniform(config.seed, F.lit(k), F.col("id"))  # noqa: E731
    return spark.range(config.items).select(
        F.col("id").alias("item_index"),
        (F.col("id") % config.item_groups).cast("int").alias("group"),
        (F.col("id") + 20000).cast("string").alias("StockCode"),
        F.concat(F.lit("GROUP "), (F.col("id") % config.item_groups).cast("string"), F.lit(" ITEM "), F.col("id").cast("string")).alias("Description"),
        F.round(F.lit(0.5) + F.pow(u("price"), 2) * 12, 2).alias("base_price"),
    )


def generate_lines(orders, items, config: SynthConfig):
    """Order lines: staples, the tier's favourite groups, or anything; quantity scaled by the tier's spend."""
    from pyspark.sql import functions as F

    seed, groups, per_group = config.seed, config.item_groups, max(1, config.items // config.item_groups)
    u = lambda k: _uniform(seed, F.lit(k), F.col("id"), F.col("slot"), F.col("line"))  # noqa: E731
    lines = orders.withColumn("line", F.explode(F.sequence(F.lit(1), F.col("lines"))))
    favourites = _by_tier("favourite_groups", config.tiers)
    favourite_group = F.element_at(favourites, (F.floor(u("fav") * F.size(favourites)) + 1).cast("int"))
    any_group = F.floor(u("anygroup") * groups).cast("int")
    group = F.when(u("which") < config.favourite_share, favourite_group).otherwise(any_group)
    # Popular items within a group: squaring the uniform skews picks to low indexes.
    chosen = (F.floor(F.pow(u("item"), 2) * per_group) * groups + group).cast("long")
    staple_rank = F.floor(u("staple_rank") * config.staples).cast("int")
    staple = (F.pmod(F.xxhash64(F.lit(seed), F.lit("staple"), F.col("id"), staple_rank), F.lit(per_group)) * groups + favourite_group).cast("long")
    lines = lines.withColumn("item_index", F.when(u("is_staple") < config.staple_share, staple).otherwise(chosen) % config.items)
    lines = lines.join(items, "item_index")
    quantity = F.greatest(F.lit(1), F.round(F.col("spend_multiplier") * (1 - F.log(1 - u("qty"))) * 2)).cast("long")
    return lines.withColumns({"Quantity": quantity, "Price": F.col("base_price"), "u_dirt": u("dirt"), "u_dirt2": u("dirt2")})


def to_online_retail(lines, config: SynthConfig):
    """Add the dirt and shape rows like Online Retail II (Invoice, StockCode, ..., Customer ID, Country)."""
    from pyspark.sql import functions as F

    invoice = (F.lit(500000) + F.col("id") * config.max_orders + F.col("slot")).cast("string")
    anonymous = _uniform(config.seed, F.lit("anon"), F.col("id"), F.col("slot")) < config.anonymous_rate
    base = lines.select(
        invoice.alias("Invoice"), "StockCode", "Description", "Quantity",
        F.col("ts").alias("InvoiceDate"),
        F.when(F.col("u_dirt") < config.zero_price_rate, F.lit(0.0)).otherwise(F.col("Price")).alias("Price"),
        F.when(anonymous, F.lit(None).cast("double")).otherwise(F.col("customer_number")).alias("Customer ID"),
        F.col("country").alias("Country"),
        "u_dirt", "u_dirt2", "line",
    )
    columns = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
    cancellations = base.where(F.col("u_dirt2") < config.cancellation_rate).select(
        F.concat(F.lit("C"), F.col("Invoice")).alias("Invoice"), "StockCode", "Description", (-F.col("Quantity")).alias("Quantity"),
        F.timestamp_add("HOUR", F.lit(26), F.col("InvoiceDate")).alias("InvoiceDate"), "Price", "Customer ID", "Country",
    )
    duplicates = base.where(F.col("u_dirt2") > 1 - config.duplicate_rate).select(*columns)
    postage = base.where((F.col("line") == 1) & (F.col("u_dirt") > 1 - config.service_rate)).select(
        "Invoice", F.lit("POST").alias("StockCode"), F.lit("POSTAGE").alias("Description"), F.lit(1).cast("long").alias("Quantity"),
        "InvoiceDate", F.lit(18.0).alias("Price"), "Customer ID", "Country",
    )
    rows = base.select(*columns).unionByName(cancellations).unionByName(duplicates).unionByName(postage)
    if config.line_totals:
        rows = rows.withColumn("LineTotal", F.round(F.col("Quantity") * F.col("Price"), 2)).drop("Price")
    return rows if config.country_column else rows.drop("Country")


def generate(spark, config: SynthConfig) -> dict:
    """All generated tables: ``transactions`` plus the planted truth."""
    from pyspark.sql import functions as F

    customers = generate_customers(spark, config)
    items = item_catalogue(spark, config)
    lines = generate_lines(generate_orders(customers, config), items, config)
    affinity_rows = [
        (tier, group, config.favourite_share / len(profile.favourite_groups) * (group in profile.favourite_groups)
         + (1 - config.favourite_share) / config.item_groups)
        for tier, profile in config.tiers.items() for group in range(config.item_groups)
    ]
    return {
        "transactions": to_online_retail(lines, config),
        "truth/customers": customers.select(
            F.col("customer_number").cast("long").cast("string").alias("customer_id"), "tier",
            "rate_per_day", "lifetime_orders", "country",
        ),
        "truth/tier_affinity": spark.createDataFrame(affinity_rows, "tier string, group int, affinity double"),
        "truth/items": items.select(F.upper(F.col("StockCode")).alias("item_id"), "group", "Description"),
    }


def customers_for_rows(spark, rows: int, config: SynthConfig, pilot_customers: int = 2_000) -> int:
    """How many customers give about ``rows`` transaction rows, measured on a pilot of the same seed."""
    pilot = dataclasses.replace(config, customers=pilot_customers)
    pilot_rows = generate(spark, pilot)["transactions"].count()
    return max(10, round(rows * pilot_customers / max(1, pilot_rows)))


def write(spark, tables: dict, output_uri: str) -> None:
    with storage.atomic_output(spark, output_uri) as staging:
        for name, frame in tables.items():
            frame.write.parquet(storage.join(staging, name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory (path or URI) for transactions/ and truth/")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--rows", type=int, help="about this many transaction rows")
    size.add_argument("--customers", type=int, help="exactly this many customers")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--config", help="TOML/JSON file with a [synth] table")
    parser.add_argument("--master", help="Spark master when not run through spark-submit")
    args = parser.parse_args(argv)
    file_settings = load_config_file(args.config)
    config = build(SynthConfig, file_settings.get("synth"), {"seed": args.seed, "customers": args.customers})
    spark = build_session(build(SparkSettings, {"app_name": "segrec-synth"}, file_settings.get("spark"), {"master": args.master}))
    if args.rows:
        config = dataclasses.replace(config, customers=customers_for_rows(spark, args.rows, config))
    write(spark, generate(spark, config), args.output)
    rows = spark.read.parquet(storage.join(args.output, "transactions")).count()
    print(f"{rows:,} transaction rows for {config.customers:,} customers written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
