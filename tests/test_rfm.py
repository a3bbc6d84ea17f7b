import datetime as dt

import numpy as np
import pandas as pd
import pytest
from lifetimes.utils import summary_data_from_transaction_data

from segmentation import rfm
from segmentation.rfm import SegmentationError


def lifetimes_summary(purchases: pd.DataFrame, as_of: dt.date, period: str) -> pd.DataFrame:
    before = purchases[purchases.timestamp < pd.Timestamp(as_of)]
    return summary_data_from_transaction_data(
        before, "customer_id", "timestamp", monetary_value_col="amount",
        observation_period_end=pd.Timestamp(rfm.observation_end(as_of, period)), freq=period,
    )


@pytest.mark.parametrize("period, as_of", [("D", dt.date(2011, 9, 9)), ("D", dt.date(2011, 12, 12)), ("W", dt.date(2011, 6, 2))])
def test_rfm_equals_lifetimes(spark, synthetic, period, as_of):
    purchases = synthetic.place("clean")
    ours = rfm.rfm_summary(purchases, as_of=as_of, period=period).toPandas().set_index("customer_id").sort_index()
    theirs = lifetimes_summary(purchases.select("customer_id", "timestamp", "amount").toPandas(), as_of, period).sort_index()

    assert len(ours) == len(theirs) > 500
    assert list(ours.index) == list(theirs.index)
    for column in ("frequency", "recency", "T", "monetary_value"):
        np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-9, atol=1e-9, err_msg=column)
    assert (ours.frequency > 0).mean() > 0.3  # repeat buyers are really compared, not only zeros


def transactions(spark, rows):
    from pyspark.sql import functions as F

    schema = "order_id string, customer_id string, timestamp string, amount double, country string"
    return spark.createDataFrame(rows, schema).withColumn("timestamp", F.to_timestamp("timestamp"))


def test_descriptive_features(spark):
    purchases = transactions(spark, [
        ("o1", "a", "2011-01-03 10:00:00", 10.0, "UK"), ("o2", "a", "2011-01-03 15:00:00", 5.0, "UK"),
        ("o3", "a", "2011-01-10 09:00:00", 20.0, "France"), ("o4", "a", "2011-03-01 09:00:00", 1.0, "UK"),
        ("o5", "b", "2011-02-01 09:00:00", 7.0, "EIRE"),
    ])
    returns = transactions(spark, [("C9", "a", "2011-01-04 10:00:00", -4.0, "UK")])
    rows = {r.customer_id: r for r in rfm.customer_features(purchases, returns, as_of=dt.date(2011, 2, 15)).collect()}

    a = rows["a"]
    assert (a.frequency, a.recency, a.T, a.monetary_value) == (1.0, 7.0, 42.0, 20.0)  # two purchase days before as-of
    assert a.orders == 3 and a.total_spend == pytest.approx(31.0)  # 35 bought - 4 returned
    assert a.days_since_last == 36 and a.country == "UK"
    assert rows["b"].frequency == 0.0 and rows["b"].monetary_value == 0.0


def test_unknown_period_is_a_clear_error(spark, synthetic):
    with pytest.raises(SegmentationError, match="period must be one of D, W"):
        rfm.rfm_summary(synthetic.place("clean"), as_of=dt.date(2011, 1, 1), period="M")
