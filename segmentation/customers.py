"""From transactions to scored, segmented customers: the steps every value-segment job shares."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from segmentation import clv, rfm
from segmentation import columns as C
from segmentation.clv import DAYS_PER_MONTH, CLVConfig, FittedCLV
from segmentation.rfm import SegmentationError
from segmentation.segments import SegmentConfig, ValueSegmenter, ValueSegmentModel

CUSTOMER_COLUMNS = (
    C.CUSTOMER_ID, C.FREQUENCY, C.RECENCY, C.AGE, C.MONETARY_VALUE, C.ORDERS, C.TOTAL_SPEND,
    C.FIRST_PURCHASE, C.LAST_PURCHASE, C.DAYS_SINCE_LAST, C.COUNTRY,
    C.P_ALIVE, C.EXPECTED_PURCHASES, C.EXPECTED_SPEND, C.CLV, C.SEGMENT,
)


@dataclass
class ValueSegments:
    customers: object  # DataFrame with CUSTOMER_COLUMNS
    clv: FittedCLV
    model: ValueSegmentModel


def check_as_of(purchases, as_of: dt.date) -> None:
    from pyspark.sql import functions as F

    first = purchases.agg(F.min(C.TIMESTAMP)).first()[0]
    if first is None:
        raise SegmentationError("there are no clean purchases to segment")
    if first.date() >= as_of:
        raise SegmentationError(f"the as-of date {as_of} is not after the first purchase ({first.date()}): nothing to learn from")


def score_customers(purchases, returns, *, as_of: dt.date, config: CLVConfig):
    """Customer features with CLV scores over ``config.horizon_months``; and the fitted CLV models."""
    check_as_of(purchases, as_of)
    features = rfm.customer_features(purchases, returns, as_of=as_of, period=config.period)
    fitted = clv.fit_clv(features, purchases, as_of=as_of, config=config)
    horizon = config.horizon_months * DAYS_PER_MONTH
    return clv.score_clv(features, fitted, horizon_days=horizon, discount_rate=config.discount_rate), fitted


def segment_customers(purchases, returns, *, as_of: dt.date, clv_config: CLVConfig, segment_config: SegmentConfig) -> ValueSegments:
    scored, fitted = score_customers(purchases, returns, as_of=as_of, config=clv_config)
    scored = scored.cache()
    model = ValueSegmenter.from_config(segment_config).fit(scored)
    return ValueSegments(customers=model.transform(scored).select(*CUSTOMER_COLUMNS), clv=fitted, model=model)
