"""Canonical column names of segrec's tables, shared by every stage.

Plain strings only (no pyspark import): the web app uses them too.
"""

# Canonical transactions, as written by the ingest stage.
ORDER_ID = "order_id"
CUSTOMER_ID = "customer_id"
ITEM_ID = "item_id"
DESCRIPTION = "description"
COUNTRY = "country"
TIMESTAMP = "timestamp"
QUANTITY = "quantity"
UNIT_PRICE = "unit_price"
AMOUNT = "amount"
ITEM_GROUP = "item_group"  # a category, when the data carries one

TRANSACTION_COLUMNS = (ORDER_ID, CUSTOMER_ID, ITEM_ID, DESCRIPTION, COUNTRY, TIMESTAMP, QUANTITY, UNIT_PRICE, AMOUNT, ITEM_GROUP)

# Quarantined rows keep their source columns and say why they were set aside.
REASON = "reason"
DETAIL = "detail"


# Per-customer RFM, with lifetimes' definitions (see segmentation/rfm.py).
FREQUENCY = "frequency"
RECENCY = "recency"
AGE = "T"
MONETARY_VALUE = "monetary_value"
ORDERS = "orders"
TOTAL_SPEND = "total_spend"
FIRST_PURCHASE = "first_purchase"
LAST_PURCHASE = "last_purchase"
DAYS_SINCE_LAST = "days_since_last"

# CLV scores.
P_ALIVE = "p_alive"
EXPECTED_PURCHASES = "expected_purchases"
EXPECTED_SPEND = "expected_avg_spend"
CLV = "clv"

SEGMENT = "segment"
LIFECYCLE = "lifecycle"  # new, active, at_risk, lapsed (segmentation/lifecycle.py)

# Recommendations.
STRENGTH = "strength"  # implicit feedback per (customer, item)
RANK = "rank"
SCORE = "score"
SIMILAR_ITEM_ID = "similar_item_id"

# The item catalogue the web app filters on (merchandising rules).
PRICE = "price"  # the median unit price of the item's last 90 days of sales
BUYERS = "buyers"
FIRST_SOLD = "first_sold"
LIST = "list"
SOURCE = "source"
CUSTOMER_INDEX = "customer_index"  # integer ids for ALS
ITEM_INDEX = "item_index"
