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


def segment_customers(purchases, returns, *, as_of: dt.date, clv_config: CLVConfig, segment_config: SegmentConfig,
                      fitted: FittedCLV | None = None) -> ValueSegments:
    """Customer features with CLV scores over ``clv_config.horizon_months``, split into value segments.

    ``fitted``: the CLV model ``clv_config`` fits on these purchases as of ``as_of``, when
    the caller has it already (the backtest does); fitted here otherwise.
    """
    check_as_of(purchases, as_of)
    # Fitting reads the features three times and scoring once more; each read would otherwise
    # aggregate every purchase again (about 7 s a read at 10M rows).
    features = rfm.customer_features(purchases, returns, as_of=as_of, period=clv_config.period).cache()
    fitted = fitted or clv.fit_clv(features, purchases, as_of=as_of, config=clv_config)
    horizon = clv_config.horizon_months * DAYS_PER_MONTH
    scored = clv.score_clv(features, fitted, horizon_days=horizon, discount_rate=clv_config.discount_rate).cache()
    model = ValueSegmenter.from_config(segment_config).fit(scored)
    # Fitting the segments has filled the scores' cache, which no longer needs the features'.
    features.unpersist()
    return ValueSegments(customers=model.transform(scored).select(*CUSTOMER_COLUMNS), clv=fitted, model=model)
