"""A small hand-made transaction log in Online Retail II's schema, with every kind of dirt.

EXPECTED says where each row must end up; the tests write this frame as CSV, Parquet
and Excel and check the ingest against it.
"""

import pandas as pd

COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]

ROWS = [
    # clean purchases (item ids are trimmed and upper-cased; 13085.0 becomes 13085)
    ("489434", "85048", "GLASS BALL", "12", "2010-01-04 07:45:00", "6.95", "13085.0", "United Kingdom"),
    ("489434", " 79323p ", "LIGHT", "6", "2010-01-04 07:45:00", "1.25", "13085.0", "United Kingdom"),
    ("489435", "22041", "CARD", "3", "2010-02-10 10:00:00", "2.10", "13086", "France"),
    ("489436", "22041", "CARD", "2", "2010-03-15 11:30:00", "2.10", "13086", "France"),
    ("489437", "85048", "GLASS BALL", "1", "2011-06-01 09:00:00", "6.95", "13087", "EIRE"),
    # the same line twice: one copy is clean, the other a duplicate
    ("489438", "21232", "MUG", "4", "2010-05-05 12:00:00", "1.65", "13087", "EIRE"),
    ("489438", "21232", "MUG", "4", "2010-05-05 12:00:00", "1.65", "13087", "EIRE"),
    # returns: a cancellation invoice, and a negative quantity without one
    ("C489439", "85048", "GLASS BALL", "-2", "2010-01-06 08:00:00", "6.95", "13085", "United Kingdom"),
    ("489440", "22041", "CARD", "-1", "2010-02-11 08:00:00", "2.10", "13086", "France"),
    # anonymous purchases
    ("489441", "85048", "GLASS BALL", "5", "2010-04-01 10:00:00", "6.95", None, "United Kingdom"),
    ("489441", "22041", "CARD", "1", "2010-04-01 10:00:00", "2.10", "", "United Kingdom"),
    # non-products: service codes, matched as patterns and case-insensitively
    ("489442", "POST", "POSTAGE", "1", "2010-01-04 07:45:00", "18.00", "13085", "United Kingdom"),
    ("489443", "gift_0001_10", "GIFT VOUCHER", "1", "2010-01-05 07:45:00", "8.70", "13086", "France"),
    ("489444", "ADJUST2", "ADJUSTMENT", "1", "2010-01-05 07:45:00", "100.00", "13086", "France"),
    # non-positive prices
    ("489445", "21232", "MUG", "10", "2010-06-01 09:00:00", "0", "13087", "EIRE"),
    ("A489446", "B2", "BAD DEBT", "1", "2010-06-02 09:00:00", "-11062.06", None, "United Kingdom"),
    # malformed
    ("489447", "21232", "MUG", "2", "not a date", "1.65", "13087", "EIRE"),
    ("489448", "21232", "MUG", "two", "2010-06-03 09:00:00", "1.65", "13087", "EIRE"),
    ("489449", None, "NO CODE", "2", "2010-06-04 09:00:00", "1.65", "13087", "EIRE"),
    ("489450", "21232", "MUG", "0", "2010-06-05 09:00:00", "1.65", "13087", "EIRE"),
]

EXPECTED_PLACES = {"clean": 6, "returns": 2, "anonymous": 2, "quarantine": 10}
EXPECTED_REASONS = {"duplicate": 1, "non_product": 3, "non_positive_price": 2, "malformed": 4, "after_as_of": 0}


def dirty_frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=COLUMNS)


def write_csv(path) -> str:
    dirty_frame().to_csv(path, index=False)
    return str(path)


def write_parquet(path) -> str:
    """Typed the way Online Retail II's Parquet is typed; unparseable values become nulls."""
    frame = dirty_frame()
    frame["Quantity"] = pd.to_numeric(frame["Quantity"], errors="coerce")
    frame["Price"] = pd.to_numeric(frame["Price"], errors="coerce")
    frame["Customer ID"] = pd.to_numeric(frame["Customer ID"], errors="coerce")
    frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"], errors="coerce")
    frame.to_parquet(path, index=False)
    return str(path)
