"""Stable integer ids for ALS, persisted next to the model.

Spark's ALS needs integer user and item ids. An ``IdMapping`` gives every
string id an integer index; extending a mapping keeps every index it already
had and numbers new ids after the largest one, in sorted order, so the same
customer keeps the same index from run to run.
"""

from __future__ import annotations


class IdMapping:
    def __init__(self, frame, id_column: str, index_column: str):
        self.frame = frame  # DataFrame[id_column string, index_column int]
        self.id_column = id_column
        self.index_column = index_column

    @classmethod
    def build(cls, ids, id_column: str, index_column: str, previous: "IdMapping | None" = None) -> "IdMapping":
        """Index every distinct value of ``ids[id_column]``, keeping ``previous``'s indexes."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        distinct = ids.select(id_column).where(F.col(id_column).isNotNull()).distinct()
        if previous is None:
            start, known = 0, None
        else:
            known = previous.frame
            start = (known.agg(F.max(index_column)).first()[0] or -1) + 1
            distinct = distinct.join(known.select(id_column), id_column, "left_anti")
        # One ordered window over the new ids only: a numbering that is the same on every run.
        numbered = distinct.withColumn(index_column, (F.row_number().over(Window.orderBy(id_column)) - 1 + start).cast("int"))
        frame = numbered if known is None else known.unionByName(numbered)
        return cls(frame, id_column, index_column)

    def cache_frame(self) -> "IdMapping":
        self.frame = self.frame.cache()
        return self

    def encode(self, frame, how: str = "inner"):
        return frame.join(self.frame, self.id_column, how)

    def decode(self, frame):
        return frame.join(self.frame, self.index_column).drop(self.index_column)

    def save(self, path: str) -> None:
        self.frame.write.mode("overwrite").parquet(path)

    @classmethod
    def load(cls, spark, path: str, id_column: str, index_column: str) -> "IdMapping":
        return cls(spark.read.parquet(path), id_column, index_column)
