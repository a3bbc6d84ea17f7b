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

TRANSACTION_COLUMNS = (ORDER_ID, CUSTOMER_ID, ITEM_ID, DESCRIPTION, COUNTRY, TIMESTAMP, QUANTITY, UNIT_PRICE, AMOUNT)

# Quarantined rows keep their source columns and say why they were set aside.
REASON = "reason"
DETAIL = "detail"

