"""Per-customer RFM features in Spark, with lifetimes' exact definitions.

``lifetimes.utils.summary_data_from_transaction_data`` collapses a customer's
transactions into periods (days by default) and defines, in period units:

    frequency       number of periods with a purchase, minus the first (repeat periods)
    recency         last purchase period - first purchase period
    T               end of observation period - first purchase period (the customer's age)
    monetary_value  mean spend per repeat period (the first period is left out; 0 without repeats)

The end of observation is the last period *before* the as-of date (the as-of date
itself is excluded, like every stage treats it). ``tests/test_rfm.py`` proves the
numbers equal lifetimes' on the same transactions.
"""

from __future__ import annotations

import datetime as dt

from segmentation import columns as C

PERIOD_DAYS = {"D": 1, "W": 7}
_TRUNC_UNIT = {"D": "day", "W": "week"}  # Spark's weeks start on Monday, like pandas' 'W' periods


class SegmentationError(ValueError):
    """Input that segmentation cannot work with, explained in one sentence."""


def observation_end(as_of: dt.date, period: str = "D") -> dt.date:
    """The first day of the last whole period before ``as_of`` (lifetimes' observation_period_end)."""
    last_day = as_of - dt.timedelta(days=1)
    return last_day - dt.timedelta(days=last_day.weekday()) if period == "W" else last_day


def _check_period(period: str) -> None:
    if period not in PERIOD_DAYS:
        raise SegmentationError(f"period must be one of {', '.join(PERIOD_DAYS)}, got '{period}'")


def rfm_summary(purchases, *, as_of: dt.date, period: str = "D"):
    """frequency, recency, T, monetary_value per customer from clean purchases before ``as_of``."""
    from pyspark.sql import functions as F

    _check_period(period)
    days = PERIOD_DAYS[period]
    end = observation_end(as_of, period)
    period_start = F.to_date(F.date_trunc(_TRUNC_UNIT[period], C.TIMESTAMP))
    per_period = (
        purchases.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp"))
        .groupBy(C.CUSTOMER_ID, period_start.alias("_period"))
        .agg(F.sum(C.AMOUNT).alias("_spend"))
    )
    per_customer = per_period.groupBy(C.CUSTOMER_ID).agg(
        F.min("_period").alias("_first"),
        F.max("_period").alias("_last"),
        F.count(F.lit(1)).alias("_periods"),
        F.sum("_spend").alias("_spend"),
        F.min_by("_spend", "_period").alias("_first_spend"),
    )
    repeats = F.col("_periods") - 1
    return per_customer.select(
        C.CUSTOMER_ID,
        repeats.cast("double").alias(C.FREQUENCY),
        (F.datediff("_last", "_first") / days).cast("double").alias(C.RECENCY),
        (F.datediff(F.lit(end), "_first") / days).cast("double").alias(C.AGE),
        F.when(repeats > 0, (F.col("_spend") - F.col("_first_spend")) / repeats).otherwise(F.lit(0.0)).alias(C.MONETARY_VALUE),
    )


def descriptive_features(purchases, returns, *, as_of: dt.date):
    """The columns marketers know: orders, net spend, first/last purchase, days since last, main country."""
    from pyspark.sql import functions as F

    before = F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp")
    bought = purchases.where(before).groupBy(C.CUSTOMER_ID).agg(
        F.count_distinct(C.ORDER_ID).alias(C.ORDERS),
        F.sum(C.AMOUNT).alias("_bought"),
        F.min(C.TIMESTAMP).alias(C.FIRST_PURCHASE),
        F.max(C.TIMESTAMP).alias(C.LAST_PURCHASE),
        F.mode(C.COUNTRY, deterministic=True).alias(C.COUNTRY),
    )
    returned = returns.where(before & F.col(C.CUSTOMER_ID).isNotNull()).groupBy(C.CUSTOMER_ID).agg(
        F.sum(C.AMOUNT).alias("_returned")
    )
    return bought.join(returned, C.CUSTOMER_ID, "left").select(
        C.CUSTOMER_ID,
        C.ORDERS,
        F.round(F.col("_bought") + F.coalesce("_returned", F.lit(0.0)), 2).alias(C.TOTAL_SPEND),
        C.FIRST_PURCHASE,
        C.LAST_PURCHASE,
        F.datediff(F.lit(as_of), F.to_date(C.LAST_PURCHASE)).alias(C.DAYS_SINCE_LAST),
        C.COUNTRY,
    )


def customer_features(purchases, returns, *, as_of: dt.date, period: str = "D"):
    """RFM and descriptive columns, one row per customer with a purchase before ``as_of``."""
    return rfm_summary(purchases, as_of=as_of, period=period).join(
        descriptive_features(purchases, returns, as_of=as_of), C.CUSTOMER_ID
    )


def default_as_of(purchases) -> dt.date:
    """The day after the last purchase: everything in the data is observed."""
    from pyspark.sql import functions as F

    last = purchases.agg(F.max(C.TIMESTAMP)).first()[0]
    if last is None:
        raise SegmentationError("there are no purchases to segment")
    return last.date() + dt.timedelta(days=1)
