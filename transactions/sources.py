"""Reading a raw transaction log as it is: CSV (every column a string, so bad values can be reported), Parquet or Excel."""

from __future__ import annotations

from runtime import storage
from transactions.ingest import IngestConfig, IngestError

FORMATS_BY_EXTENSION = {
    ".csv": "csv", ".csv.gz": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".xlsx": "excel", ".xlsm": "excel", ".xls": "excel",
}


def detect_format(fs: storage.FileSystem, uri: str) -> str:
    name = uri.rstrip("/").lower()
    for extension, fmt in FORMATS_BY_EXTENSION.items():
        if name.endswith(extension):
            return fmt
    if fs.is_dir(uri):
        # A directory written by Spark or Hive: judge by its data files.
        data_files = [n.lower() for n in fs.list_names(uri) if not n.startswith(("_", "."))]
        for fmt in ("parquet", "csv"):
            if data_files and all(f".{fmt}" in n for n in data_files):
                return fmt
    known = ", ".join(sorted(FORMATS_BY_EXTENSION))
    raise IngestError(f"unknown input format for {uri}: expected one of {known} (or set --format)")


def read_source(spark, uri: str, config: IngestConfig):
    """Read the raw rows, untouched: CSV columns all stay strings so bad values can be reported."""
    from pyspark.errors import AnalysisException

    fs = storage.FileSystem(spark)
    if not fs.exists(uri):
        raise IngestError(f"input {uri} does not exist")
    if fs.size(uri) == 0:
        raise IngestError(f"input {uri} is empty (0 bytes)")
    fmt = config.input_format or detect_format(fs, uri)
    try:
        raw = _read(spark, uri, fmt, config)
    except AnalysisException as error:
        first_line = str(error).strip().splitlines()[0]
        raise IngestError(f"could not read {uri} as {fmt}: {first_line}") from None
    if not raw.columns:
        raise IngestError(f"input {uri} has no columns (is it really {fmt}?)")
    return raw, fmt


def _read(spark, uri: str, fmt: str, config: IngestConfig):
    if fmt == "csv":
        return spark.read.csv(
            uri, header=True, inferSchema=False, sep=config.csv_separator,
            encoding=config.csv_encoding, mode="PERMISSIVE", multiLine=False,
        )
    if fmt == "parquet":
        return spark.read.parquet(uri)
    if fmt == "excel":
        return _read_excel(spark, uri)
    raise IngestError(f"unknown --format '{fmt}': expected csv, parquet or excel")


def _read_excel(spark, uri: str):
    # Excel is read on the driver with pandas: a sheet holds at most 1,048,576 rows,
    # so this stays small. Every sheet is read (Online Retail II ships two).
    import pandas as pd

    path = uri.removeprefix("file://")
    if "://" in path:
        raise IngestError(f"Excel input must be a local file, not {uri}: convert it to CSV or Parquet first")
    sheets = pd.read_excel(path, sheet_name=None, dtype=str)
    frame = pd.concat(sheets.values(), ignore_index=True)
    frame = frame.astype(object).where(frame.notna(), None)
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField(str(name), StringType()) for name in frame.columns])
    return spark.createDataFrame(frame, schema=schema)
