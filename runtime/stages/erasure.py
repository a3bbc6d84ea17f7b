"""Erasing customers from everything a pipeline output holds, and keeping them out of later runs.

Each stage directory is rewritten without the customers' rows and swapped in atomically,
like every other output: every Parquet table with a ``customer_id`` column, the
quarantine (by its source customer column), and each ALS model's factors of those
customers (found through the model's id mapping). Files without rows of customers
(summaries, charts, model metadata) are copied as they are. The customers' keyed
hashes join the suppression list, which the ingest honours on every later run.

A model also learnt from the customers' purchases in ways no one row holds (item
factors, co-occurrence counts, popularity): the recommendations' manifest marks the
models stale until the next run refits them. segrec cannot delete the raw input it
was given: the report names it.
"""

from __future__ import annotations

import datetime as dt
import functools
import os

from cf.base import in_parallel
from runtime import layout, storage
from segmentation import columns as C
from transactions.ingest import QUARANTINE, as_text
from transactions.suppression import Suppression, new_key

ERASURE = "erasure"
KEY_ENVIRONMENT = "SEGREC_ERASURE_KEY"
STAGES = (layout.INGEST, layout.SEGMENTS, layout.BACKTEST, layout.RECOMMENDATIONS, layout.EVALUATION, layout.REPORT, layout.RUNS)


def _key(spark, output_uri: str, *, create: bool) -> str | None:
    """The key of the keyed hashes: ``SEGREC_ERASURE_KEY``, else the key file beside the list (made, owner-only, on first use)."""
    if os.environ.get(KEY_ENVIRONMENT):
        return os.environ[KEY_ENVIRONMENT]
    files = storage.FileSystem(spark)
    path = storage.join(output_uri, ERASURE, "key")
    if files.exists(path):
        return files.read_text(path).strip()
    if not create:
        return None
    key = new_key()
    files.mkdirs(storage.join(output_uri, ERASURE))
    files.write_text(path, key + "\n")
    local = path.removeprefix("file:")
    if "://" not in local and os.path.exists(local):
        os.chmod(local, 0o600)
    return key


def read_suppression(spark, output_uri: str) -> Suppression | None:
    """The output's suppression list, or None when no one was ever erased there."""
    path = storage.join(output_uri, ERASURE, "suppressed.json")
    if not storage.FileSystem(spark).exists(path):
        return None
    key = _key(spark, output_uri, create=False)
    if key is None:
        raise storage.StorageError(f"{path} exists but its key does not: set {KEY_ENVIRONMENT} or restore {ERASURE}/key")
    return Suppression(key, frozenset(storage.read_json(spark, path)["hashes"]))


def _write_suppression(spark, output_uri: str, suppression: Suppression) -> None:
    """Written beside the list and renamed over it: a crash leaves the old list or the new one."""
    files = storage.FileSystem(spark)
    path = storage.join(output_uri, ERASURE, "suppressed.json")
    partial = path + ".partial"
    storage.write_json(spark, partial, {"hashes": sorted(suppression.hashes), "hash": "sha256 of '<key>:<customer id>'"})
    if files.exists(path):
        files.delete(path)
    files.rename(partial, path)


_ERASED = "_erased"


class _Rewriter:
    """Copies one stage directory without the customers on ``suppression``, counting the rows removed per table."""

    def __init__(self, spark, suppression: Suppression, customer_column: str | None):
        self.spark, self.suppression, self.customer_column = spark, suppression, customer_column
        self.files = storage.FileSystem(spark)
        self.removed: dict[str, int] = {}

    def copy_tree(self, source: str, target: str, name: str) -> None:
        tables: dict[str, tuple] = {}
        self._copy_files(source, target, name, tables)
        # Each table is one job (written, with its removed rows counted on the way); independent, so side by side.
        removed = in_parallel({table: functools.partial(_write_without_erased, *rewrite) for table, rewrite in tables.items()})
        self.removed.update({table: rows for table, rows in removed.items() if rows})

    def _copy_files(self, source: str, target: str, name: str, tables: dict) -> None:
        """Copies the files of no customer under ``source`` as they are; each table with customers goes into ``tables``
        (name -> the table marked by ``_marked``, where to write it)."""
        names = self.files.list_names(source)
        marked = self._marked(source, name) if any(entry.endswith(".parquet") for entry in names) else None
        if marked is not None:
            tables[name] = (marked, target)
            return
        self.files.mkdirs(target)
        for entry in names:
            child = storage.join(source, entry)
            if self.files.is_dir(child):
                self._copy_files(child, storage.join(target, entry), f"{name}/{entry}", tables)
            else:
                self.files.write_bytes(storage.join(target, entry), self.files.read_bytes(child))

    def _marked(self, source: str, name: str):
        """The table at ``source`` with ``_erased`` true on the customers' rows; None for a table that holds no customer."""
        from pyspark.sql import functions as F

        table = self.spark.read.parquet(source)
        if C.CUSTOMER_ID in table.columns:
            return table.withColumn(_ERASED, self.suppression.matches(F.col(C.CUSTOMER_ID)))
        if name.endswith(f"/{QUARANTINE}") and self.customer_column in table.columns:
            return table.withColumn(_ERASED, self.suppression.matches(as_text(table, self.customer_column)))
        if name.endswith("/als/userFactors"):  # an ALS model's customer factors, by the index its id mapping gave them
            mapping = self.spark.read.parquet(source.rsplit("/als/", 1)[0] + "/customer_ids")
            erased = mapping.where(self.suppression.matches(F.col(C.CUSTOMER_ID))).select(F.col(C.CUSTOMER_INDEX).alias("id"),
                                                                                           F.lit(True).alias(_ERASED))
            return table.join(erased, "id", "left").select(*table.columns, F.coalesce(F.col(_ERASED), F.lit(False)).alias(_ERASED))
        return None


def _write_without_erased(marked, target: str) -> int:
    """Writes ``marked`` (see ``_Rewriter._marked``) to ``target`` without the erased rows; how many rows that removed."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    columns = [column for column in marked.columns if column != _ERASED]
    counted = Observation()
    marked.observe(counted, F.count_if(F.col(_ERASED)).alias("removed")).where(~F.col(_ERASED)).select(*columns).write.parquet(target)
    return counted.get["removed"]


def erase_customers(spark, output_uri: str, customer_ids: list[str], *, store_db: str | None = None, state_db: str | None = None) -> dict:
    """Remove ``customer_ids`` from every stage under ``output_uri`` (and the app's SQLite files, when given); the report."""
    from webapp.erasure import erase_from_state, erase_from_store, record_erasure

    key = _key(spark, output_uri, create=True)
    suppression = (read_suppression(spark, output_uri) or Suppression(key)).adding(customer_ids)
    erased_now = Suppression(key, frozenset(suppression.hash_of(customer_id) for customer_id in customer_ids))
    # The list first: if a rewrite fails half-way, the next run of the ingest already keeps them out.
    _write_suppression(spark, output_uri, suppression)
    files = storage.FileSystem(spark)
    report = {"erased_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "customers": len(set(customer_ids)),
              "suppression_list": len(suppression.hashes), "removed": {}, "not_removed": []}
    ingest_summary = storage.join(output_uri, layout.INGEST, "summary.json")
    summary = storage.read_json(spark, ingest_summary) if files.exists(ingest_summary) else {}
    for stage in STAGES:
        target = layout.stage(output_uri, stage)
        storage.recover(files, target)
        if not files.exists(target):
            continue
        rewriter = _Rewriter(spark, erased_now, summary.get("columns", {}).get(C.CUSTOMER_ID))
        with storage.atomic_output(spark, target) as staging:
            rewriter.copy_tree(target, staging, stage)
            if stage == layout.RECOMMENDATIONS:
                _mark_models_stale(spark, staging, report)
        report["removed"].update(rewriter.removed)
    if store_db and os.path.exists(store_db):
        report["removed"].update({f"store/{table}": rows for table, rows in erase_from_store(store_db, customer_ids).items() if rows})
    if state_db and os.path.exists(state_db):
        report["removed"].update({f"state/{table}": rows for table, rows in erase_from_state(state_db, customer_ids).items() if rows})
        record_erasure(state_db, report)
    if summary.get("input"):
        report["not_removed"].append(f"the raw input {summary['input']}: segrec reads it but cannot delete from it; remove the "
                                     "customers' rows there yourself (every later run keeps them out in any case)")
    report_path = storage.join(output_uri, ERASURE, "reports", report["erased_at"].replace(":", "") + ".json")
    storage.write_json(spark, report_path, report)
    report["report"] = report_path
    return report


def _mark_models_stale(spark, staging: str, report: dict) -> None:
    manifest_path = storage.join(staging, "manifest.json")
    manifest = storage.read_json(spark, manifest_path)
    manifest["stale"] = {"since": report["erased_at"], "reason": "customers were erased after the models were fitted: their "
                         "rows, ids and factors are gone, but the items' factors, co-occurrences and popularity still reflect "
                         "their purchases until the next run refits the models"}
    storage.write_json(spark, manifest_path, manifest)
    report["stale_models"] = manifest.get("models", [])


def format_report(report: dict) -> str:
    lines = [f"erased {report['customers']} customer(s) at {report['erased_at']}; the suppression list holds {report['suppression_list']}"]
    lines += [f"  {place:<55} {rows:>8,} rows" for place, rows in sorted(report["removed"].items())]
    if report.get("stale_models"):
        lines.append(f"  models marked stale until the next run: {', '.join(report['stale_models'])}")
    lines += [f"  not removed: {note}" for note in report["not_removed"]]
    lines.append(f"report: {report['report']}")
    return "\n".join(lines)
