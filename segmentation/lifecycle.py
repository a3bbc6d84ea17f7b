"""Lifecycle states beside the value segments: new, active, at risk, lapsed.

A value segment says what a customer is worth; a lifecycle state says whether they are
still buying. "Lapsed big spenders" (a win-back audience) are lapsed customers of high
spend, whatever bucket K-means put them in.

Each customer's usual gap between purchases is their own (days from first to last
purchase over their repeat purchases) or, for one-time buyers, the shop's median of
those gaps; so "overdue" means the same for weekly grocery shoppers and yearly gift
buyers. BG/NBD's chance of still being a customer (``p_alive``) weighs in for repeat
buyers; for one-time buyers it is 1 by the model's definition and says nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from segmentation import columns as C
from segmentation.rfm import SegmentationError

NEW, ACTIVE, AT_RISK, LAPSED = "new", "active", "at_risk", "lapsed"
STATES = (NEW, ACTIVE, AT_RISK, LAPSED)
USUAL_GAP = "usual_gap_days"


@dataclasses.dataclass(frozen=True)
class LifecycleConfig:
    new_days: int = 30  # first purchase at most this many days before the as-of date: new
    at_risk_gaps: float = 2.0  # more days since the last purchase than this many usual gaps: at risk
    lapsed_gaps: float = 4.0  # ... than this many: lapsed
    at_risk_p_alive: float = 0.8  # a repeat buyer less likely than this to still be a customer: at risk
    lapsed_p_alive: float = 0.5  # ... less likely than this: lapsed

    def __post_init__(self):
        if self.new_days < 0:
            raise SegmentationError(f"lifecycle.new_days must be 0 or more, got {self.new_days}")
        if not 0 < self.at_risk_gaps < self.lapsed_gaps:
            raise SegmentationError(f"lifecycle.at_risk_gaps ({self.at_risk_gaps}) must be above 0 and below lifecycle.lapsed_gaps "
                                    f"({self.lapsed_gaps})")
        if not 0 <= self.lapsed_p_alive <= self.at_risk_p_alive <= 1:
            raise SegmentationError(f"lifecycle.lapsed_p_alive ({self.lapsed_p_alive}) must be at most lifecycle.at_risk_p_alive "
                                    f"({self.at_risk_p_alive}), both from 0 to 1")

    def explain(self) -> dict[str, str]:
        """One sentence per state, for the report and the pages."""
        return {
            NEW: f"Made their first purchase in the last {self.new_days} days.",
            ACTIVE: "Buying at their usual pace: back within "
                    f"{self.at_risk_gaps:g} times their usual gap between purchases, and likely still a customer.",
            AT_RISK: f"Slipping: more than {self.at_risk_gaps:g} times their usual gap since their last purchase, or less than "
                     f"{self.at_risk_p_alive:.0%} likely to still be a customer.",
            LAPSED: f"Gone quiet: more than {self.lapsed_gaps:g} times their usual gap since their last purchase, or less than "
                    f"{self.lapsed_p_alive:.0%} likely to still be a customer.",
        }


def with_lifecycle(customers, *, as_of: dt.date, config: LifecycleConfig = LifecycleConfig()):
    """``customers`` (the segment stage's table) with ``lifecycle`` and ``usual_gap_days`` columns.

    One aggregation (the shop's median gap) and column expressions: nothing is collected but one number.
    """
    from pyspark.sql import functions as F

    span = F.datediff(F.col(C.LAST_PURCHASE), F.col(C.FIRST_PURCHASE))
    own_gap = F.when(F.col(C.FREQUENCY) > 0, F.greatest(span / F.col(C.FREQUENCY), F.lit(1.0)))
    shop_gap = customers.select(F.percentile_approx(own_gap, 0.5, 10000).alias("gap")).first()["gap"]
    # No repeat buyer at all: nobody can be overdue yet, so one-time buyers count against the whole history.
    fallback = shop_gap if shop_gap is not None else float(max(1, customers.select(
        F.max(F.datediff(F.lit(as_of), F.col(C.FIRST_PURCHASE)))).first()[0] or 1))
    gap = F.coalesce(own_gap, F.lit(float(fallback)))
    overdue = F.col(C.DAYS_SINCE_LAST) / F.col(USUAL_GAP)
    repeat_p_alive = F.when(F.col(C.FREQUENCY) > 0, F.col(C.P_ALIVE)).otherwise(F.lit(1.0))
    state = (F.when(F.datediff(F.lit(as_of), F.col(C.FIRST_PURCHASE)) <= config.new_days, F.lit(NEW))
             .when((overdue > config.lapsed_gaps) | (repeat_p_alive < config.lapsed_p_alive), F.lit(LAPSED))
             .when((overdue > config.at_risk_gaps) | (repeat_p_alive < config.at_risk_p_alive), F.lit(AT_RISK))
             .otherwise(F.lit(ACTIVE)))
    return customers.withColumn(USUAL_GAP, gap).withColumn(C.LIFECYCLE, state)


def lifecycle_summary(customers):
    """Per lifecycle state and value segment: customers and their revenue so far (a small table)."""
    from pyspark.sql import functions as F

    return customers.groupBy(C.LIFECYCLE, C.SEGMENT).agg(F.count(F.lit(1)).alias("customers"),
                                                          F.round(F.sum(C.TOTAL_SPEND), 2).alias("revenue"))
