"""Raw transaction logs into segrec's canonical schema: every row sorted into exactly one place.

    clean       purchases by known customers
    returns     cancellations ("C" invoices) and negative quantities, with negative amounts
    anonymous   purchases with no customer id (they still count for item popularity)
    quarantine  everything else, with its source columns, a ``reason`` and a ``detail``

Pure DataFrame functions: the ingest job (``jobs/ingest.py``) reads the log, calls them and
writes the places. The place names are also the directories the ingest writes.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import reduce

from segmentation import columns as C

CLEAN, RETURNS, ANONYMOUS, QUARANTINE = "clean", "returns", "anonymous", "quarantine"
PLACES = (CLEAN, RETURNS, ANONYMOUS, QUARANTINE)  # what is written
ERASED = "erased"  # rows of customers on the suppression list: counted (summary "erased"), never written

DUPLICATE = "duplicate"
MALFORMED = "malformed"
NON_PRODUCT = "non_product"
NON_POSITIVE_PRICE = "non_positive_price"
AFTER_AS_OF = "after_as_of"
REASONS = (DUPLICATE, MALFORMED, NON_PRODUCT, NON_POSITIVE_PRICE, AFTER_AS_OF)

# Online Retail II's column names: the bundled data needs no mapping.
DEFAULT_COLUMNS = {
    C.ORDER_ID: "Invoice",
    C.ITEM_ID: "StockCode",
    C.DESCRIPTION: "Description",
    C.QUANTITY: "Quantity",
    C.TIMESTAMP: "InvoiceDate",
    C.UNIT_PRICE: "Price",
    C.CUSTOMER_ID: "Customer ID",
    C.COUNTRY: "Country",
    C.ITEM_GROUP: "Category",  # optional: most logs have none
}
REQUIRED = (C.CUSTOMER_ID, C.ITEM_ID, C.TIMESTAMP, C.QUANTITY)
PRICE_COLUMNS = (C.UNIT_PRICE, C.AMOUNT)

# Postage, fees, manual adjustments, samples, gift vouchers... of Online Retail II.
# Shell-style patterns, matched against upper-cased item ids.
DEFAULT_NON_PRODUCT_CODES = (
    "POST", "DOT", "M", "D", "S", "B", "C2", "BANK CHARGES", "AMAZONFEE",
    "ADJUST*", "PADS", "CRUK", "TEST*", "DCGS*", "GIFT_*",
)
DEFAULT_TIMESTAMP_FORMATS = (
    "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd HH:mm", "yyyy-MM-dd",
    "M/d/yyyy H:mm", "M/d/yyyy H:mm:ss", "M/d/yyyy",
)


class IngestError(ValueError):
    """A problem with the raw log or the ingest settings, told in one line."""


@dataclass(frozen=True)
class IngestConfig:
    columns: dict[str, str] = field(default_factory=dict)  # canonical -> source, over DEFAULT_COLUMNS
    input_format: str | None = None  # csv | parquet | excel; None = from the extension
    non_product_codes: tuple[str, ...] = DEFAULT_NON_PRODUCT_CODES
    timestamp_formats: tuple[str, ...] = DEFAULT_TIMESTAMP_FORMATS
    cancellation_prefix: str | None = "C"  # order ids starting with this are cancellations
    csv_separator: str = ","
    csv_encoding: str = "UTF-8"
    strict: bool = False
    max_quarantine_share: float = 0.05  # with strict: fail above this share of set-aside rows

    def mapping(self) -> dict[str, str]:
        unknown = set(self.columns) - set(C.TRANSACTION_COLUMNS)
        if unknown:
            raise IngestError(
                f"unknown canonical column(s) in the mapping: {', '.join(sorted(unknown))} "
                f"(canonical columns: {', '.join(C.TRANSACTION_COLUMNS)})"
            )
        return {**DEFAULT_COLUMNS, **self.columns}


def resolve_columns(available: list[str], config: IngestConfig) -> dict[str, str]:
    """Map each canonical column to a source column present in the input (exact, then case-insensitive)."""
    by_folded = {name.strip().lower(): name for name in available}
    resolved = {}
    for canonical, source in config.mapping().items():
        if source in available:
            resolved[canonical] = source
        elif source.strip().lower() in by_folded:
            resolved[canonical] = by_folded[source.strip().lower()]
    missing = [c for c in REQUIRED if c not in resolved]
    if not any(c in resolved for c in PRICE_COLUMNS):
        missing.append(" or ".join(PRICE_COLUMNS))
    if missing:
        wanted = ", ".join(f"{c} (from '{config.mapping().get(c, '?')}')" if c in config.mapping() else c for c in missing)
        raise IngestError(
            f"required column(s) missing: {wanted}. Available columns: {', '.join(available)}. "
            "Map them with --columns canonical=source,..."
        )
    return resolved


def glob_regex(patterns: tuple[str, ...]) -> str:
    alternatives = (re.escape(p.upper()).replace(r"\*", ".*") for p in patterns)
    return "^(?:" + "|".join(alternatives) + ")$"


def _internal_names(source_columns: list[str]) -> list[str]:
    return [f"_source_{position}" for position in range(len(source_columns))]


def as_text(raw, name: str):
    """A source column as trimmed text, with integral numbers written without '.0' (13085.0 -> 13085)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType, DoubleType, FloatType

    column = F.col(name)
    if isinstance(raw.schema[name].dataType, (DoubleType, FloatType, DecimalType)):
        text = F.when(column == F.floor(column), column.cast("long").cast("string")).otherwise(column.cast("string"))
    else:
        text = F.trim(column.cast("string"))
        text = F.regexp_replace(text, r"^(-?\d+)\.0+$", "$1")
    return F.when(text != "", text)


def _as_number(raw, name: str):
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType

    column = F.col(name)
    if isinstance(raw.schema[name].dataType, NumericType):
        return column.cast("double")
    return F.trim(column.cast("string")).try_cast("double")


def _as_timestamp(raw, name: str, formats: tuple[str, ...]):
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, NumericType, TimestampNTZType, TimestampType

    column = F.col(name)
    kind = raw.schema[name].dataType
    if isinstance(kind, (TimestampType, TimestampNTZType, DateType)):
        return column.cast("timestamp")
    if isinstance(kind, NumericType):
        # Epoch numbers; the unit is told by the magnitude (dates after 1973 in any unit).
        # Nanosecond Parquet timestamps written by pandas also arrive here (nanosAsLong).
        magnitude = F.abs(column)
        seconds = (F.when(magnitude >= 1e17, column / 1e9).when(magnitude >= 1e14, column / 1e6)
                   .when(magnitude >= 1e11, column / 1e3).otherwise(column))
        return F.timestamp_micros((seconds * 1e6).cast("long"))
    text = F.trim(column.cast("string"))
    return F.coalesce(*(F.try_to_timestamp(text, F.lit(fmt)) for fmt in formats))


def classify(raw, resolved: dict[str, str], config: IngestConfig, as_of: dt.date | None = None, suppression=None):
    """Add canonical columns plus ``_place``, ``reason`` and ``detail`` to every raw row (pure transform).

    The source columns keep their values in quarantined rows only: no other place is written with them.
    Rows of customers on ``suppression`` (a ``transactions.suppression.Suppression``) go to ``ERASED``, which is never written.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Source columns get positional names, so that no source name can clash with a
    # canonical one (Spark matches names case-insensitively: Quantity is quantity).
    source = raw.toDF(*_internal_names(raw.columns))
    resolved = {canonical: _internal_names(raw.columns)[raw.columns.index(name)] for canonical, name in resolved.items()}
    every_column = [F.col(name) for name in source.columns]
    copy_number = F.row_number().over(Window.partitionBy(*every_column).orderBy(*every_column))

    def raw_text(canonical):
        return F.coalesce(F.col(resolved[canonical]).cast("string"), F.lit("<empty>"))

    def optional_text(canonical):
        return as_text(source, resolved[canonical]) if canonical in resolved else F.lit(None).cast("string")

    df = source.withColumn("_copy", copy_number)
    df = df.withColumns({
        C.CUSTOMER_ID: as_text(source, resolved[C.CUSTOMER_ID]),
        C.ITEM_ID: F.upper(as_text(source, resolved[C.ITEM_ID])),
        C.TIMESTAMP: _as_timestamp(source, resolved[C.TIMESTAMP], config.timestamp_formats),
        C.QUANTITY: _as_number(source, resolved[C.QUANTITY]),
        C.DESCRIPTION: optional_text(C.DESCRIPTION),
        C.COUNTRY: optional_text(C.COUNTRY),
        C.ITEM_GROUP: optional_text(C.ITEM_GROUP),
    })
    if C.UNIT_PRICE in resolved:
        df = df.withColumn(C.UNIT_PRICE, _as_number(source, resolved[C.UNIT_PRICE]))
    if C.AMOUNT in resolved:
        df = df.withColumn(C.AMOUNT, _as_number(source, resolved[C.AMOUNT]))
    if C.UNIT_PRICE not in resolved:
        df = df.withColumn(C.UNIT_PRICE, F.try_divide(F.col(C.AMOUNT), F.col(C.QUANTITY)))
    if C.AMOUNT not in resolved:
        df = df.withColumn(C.AMOUNT, F.col(C.QUANTITY) * F.col(C.UNIT_PRICE))
    given_order = optional_text(C.ORDER_ID)
    default_order = F.concat_ws("|", F.coalesce(F.col(C.CUSTOMER_ID), F.lit("anonymous")),
                                F.date_format(C.TIMESTAMP, "yyyy-MM-dd'T'HH:mm:ss"))
    df = df.withColumn(C.ORDER_ID, F.coalesce(given_order, default_order))

    price_column = C.UNIT_PRICE if C.UNIT_PRICE in resolved else C.AMOUNT
    checks = [
        (F.col("_copy") > 1, DUPLICATE, F.lit("exact copy of an earlier row")),
        (F.col(C.ITEM_ID).isNull(), MALFORMED, F.lit("missing item id")),
        (F.col(C.TIMESTAMP).isNull(), MALFORMED, F.concat(F.lit("unparseable timestamp '"), raw_text(C.TIMESTAMP), F.lit("'"))),
        (F.col(C.QUANTITY).isNull(), MALFORMED, F.concat(F.lit("unparseable quantity '"), raw_text(C.QUANTITY), F.lit("'"))),
        (F.col(price_column).isNull(), MALFORMED, F.concat(F.lit(f"unparseable {price_column} '"), raw_text(price_column), F.lit("'"))),
        (F.col(C.QUANTITY) == 0, MALFORMED, F.lit("quantity is zero")),
    ]
    if as_of is not None:
        checks.append((F.col(C.TIMESTAMP) >= F.lit(as_of).cast("timestamp"), AFTER_AS_OF,
                       F.lit(f"on or after the as-of date {as_of.isoformat()}")))
    if config.non_product_codes:
        checks.append((F.col(C.ITEM_ID).rlike(glob_regex(config.non_product_codes)), NON_PRODUCT,
                       F.concat(F.lit("item "), F.col(C.ITEM_ID), F.lit(" is a service code, not a product"))))
    checks.append((F.col(C.UNIT_PRICE) <= 0, NON_POSITIVE_PRICE,
                   F.concat(F.lit("unit price "), F.col(C.UNIT_PRICE).cast("string"), F.lit(" is not positive"))))

    if suppression is not None:
        checks.insert(0, (suppression.matches(F.col(C.CUSTOMER_ID)), ERASED, F.lit(None).cast("string")))
    reason = reduce(lambda acc, check: acc.when(check[0], F.lit(check[1])), checks[1:], F.when(checks[0][0], F.lit(checks[0][1])))
    detail = reduce(lambda acc, check: acc.when(check[0], check[2]), checks[1:], F.when(checks[0][0], checks[0][2]))
    df = df.withColumns({C.REASON: reason, C.DETAIL: detail})

    is_cancellation = F.col(C.QUANTITY) < 0
    if config.cancellation_prefix and C.ORDER_ID in resolved:
        is_cancellation = is_cancellation | F.col(C.ORDER_ID).startswith(config.cancellation_prefix)
    place = (
        F.when(F.col(C.REASON) == ERASED, F.lit(ERASED))
        .when(F.col(C.REASON).isNotNull(), F.lit(QUARANTINE))
        .when(is_cancellation, F.lit(RETURNS))
        .when(F.col(C.CUSTOMER_ID).isNull(), F.lit(ANONYMOUS))
        .otherwise(F.lit(CLEAN))
    )
    # Only quarantined rows are written with their source columns: emptying them elsewhere halves
    # what the ingest persists.
    quarantined = F.col("_place") == QUARANTINE
    return (df.withColumn("_place", place).drop("_copy")
            .withColumns({name: F.when(quarantined, F.col(name)) for name in source.columns}))


# The columns of an events file (``python -m webapp.events export`` writes them): purchases the web app recorded.
EVENT_COLUMNS = (C.ORDER_ID, C.CUSTOMER_ID, C.ITEM_ID, C.TIMESTAMP, C.QUANTITY, C.UNIT_PRICE, C.COUNTRY)


def events_as_source(events, raw, resolved: dict[str, str]):
    """The rows of an events file in the raw log's own columns (``resolved``: canonical -> source), so that they are
    classified exactly as the log's rows are; source columns the events do not fill are null."""
    from pyspark.sql import functions as F

    missing = [column for column in EVENT_COLUMNS if column not in events.columns]
    if missing:
        raise IngestError(f"the events file lacks column(s) {', '.join(missing)}; it has {', '.join(events.columns)} "
                          f"(python -m webapp.events export writes {', '.join(EVENT_COLUMNS)})")
    from pyspark.sql.types import NumericType

    values = {canonical: F.col(canonical) for canonical in EVENT_COLUMNS}
    values[C.AMOUNT] = F.col(C.QUANTITY).try_cast("double") * F.col(C.UNIT_PRICE).try_cast("double")  # for logs of line totals
    if isinstance(raw.schema[resolved[C.TIMESTAMP]].dataType, NumericType):  # a log of epoch numbers: microseconds read back
        values[C.TIMESTAMP] = F.unix_micros(F.try_to_timestamp(C.TIMESTAMP))
    by_source = {source: values[canonical] for canonical, source in resolved.items() if canonical in values}
    typed = {name: by_source.get(name, F.lit(None)).try_cast(raw.schema[name].dataType) for name in raw.columns}
    lost = [F.sum((by_source[name].isNotNull() & typed[name].isNull()).cast("int")).alias(name) for name in by_source]
    counts = events.agg(*lost).first().asDict()
    for name, count in counts.items():
        if count:
            raise IngestError(f"{count:,} event(s) have a value that the log's column '{name}' ({raw.schema[name].dataType.simpleString()}) "
                              "cannot hold (such as a customer id with letters where the log's ids are numbers); those events cannot join this log")
    return events.select(*(typed[name].alias(name) for name in raw.columns))


def split_places(classified, source_columns: list[str]) -> dict:
    """One DataFrame per place. Returns carry negative quantities and amounts, whatever the source's signs."""
    from pyspark.sql import functions as F

    canonical = classified.select(*C.TRANSACTION_COLUMNS, "_place")
    returns = canonical.where(F.col("_place") == RETURNS).withColumns({
        C.QUANTITY: -F.abs(C.QUANTITY), C.AMOUNT: -F.abs(C.AMOUNT), C.UNIT_PRICE: F.abs(C.UNIT_PRICE),
    })
    quarantine = classified.where(F.col("_place") == QUARANTINE).select(
        *(F.col(internal).cast("string").alias(name) for internal, name in zip(_internal_names(source_columns), source_columns)),
        C.REASON, C.DETAIL,
    )
    return {
        CLEAN: canonical.where(F.col("_place") == CLEAN).drop("_place"),
        RETURNS: returns.drop("_place"),
        ANONYMOUS: canonical.where(F.col("_place") == ANONYMOUS).drop("_place"),
        QUARANTINE: quarantine,
    }


def count_places(classified) -> list[dict]:
    """Rows and amount per (place, reason): one small aggregate, the only thing brought to the driver."""
    from pyspark.sql import functions as F

    rows = classified.groupBy("_place", C.REASON).agg(F.count(F.lit(1)).alias("rows"), F.sum(C.AMOUNT).alias("amount"))
    return [row.asDict() for row in rows.collect()]


def summarize(counts: list[dict], rows_in: int) -> dict:
    places = {place: sum(c["rows"] for c in counts if c["_place"] == place) for place in PLACES}
    erased = sum(c["rows"] for c in counts if c["_place"] == ERASED)
    reasons = {reason: sum(c["rows"] for c in counts if c[C.REASON] == reason) for reason in REASONS}
    if sum(places.values()) + erased != rows_in:
        raise RuntimeError(f"ingest lost rows: {rows_in} read but {sum(places.values())} placed ({places}) and {erased} erased")
    considered = rows_in - reasons[AFTER_AS_OF]
    rejected = places[QUARANTINE] - reasons[AFTER_AS_OF]
    amount = {place: round(sum((c["amount"] or 0.0) for c in counts if c["_place"] == place), 2)
              for place in (CLEAN, RETURNS, ANONYMOUS)}
    return {
        "rows_in": rows_in,
        "places": places,
        ERASED: erased,
        "quarantine_reasons": reasons,
        "quarantine_share": rejected / considered if considered else 0.0,
        "amount": amount,
    }


def check_strict(summary: dict, config: IngestConfig) -> None:
    if config.strict and summary["quarantine_share"] > config.max_quarantine_share:
        reasons = ", ".join(f"{r}={n}" for r, n in summary["quarantine_reasons"].items() if n and r != AFTER_AS_OF)
        raise IngestError(
            f"--strict: {summary['quarantine_share']:.1%} of rows were quarantined ({reasons}), "
            f"above the allowed {config.max_quarantine_share:.1%}; nothing was written"
        )
