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
        from pyspark.sql import functions as F

        distinct = ids.select(id_column).where(F.col(id_column).isNotNull()).distinct()
        if previous is None:
            start, known = 0, None
        else:
            known = previous.frame
            start = (known.agg(F.max(index_column)).first()[0] or -1) + 1
            distinct = distinct.join(known.select(id_column), id_column, "left_anti")
        frame = _sorted_positions(distinct, id_column, index_column, start)
        return cls(frame if known is None else known.unionByName(frame), id_column, index_column)

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


def _sorted_positions(distinct, id_column: str, index_column: str, start: int):
    """Number ``distinct`` ids start, start+1, ... in sorted order: the same numbering on every run.

    A single ordered window would pull every id into one partition. Instead the
    ids are range-partitioned, numbered within each (contiguous) range, and
    shifted by the sizes of the ranges before it: one small collect of a count per
    partition.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ranged = distinct.repartitionByRange(id_column).withColumn("_part", F.spark_partition_id())
    # Cached: the partition numbers must be the same when counted and when numbered.
    numbered = ranged.withColumn("_local", F.row_number().over(Window.partitionBy("_part").orderBy(id_column))).cache()
    offsets, total = [], start
    for row in sorted(numbered.groupBy("_part").count().collect()):
        offsets.append((row["_part"], total))
        total += row["count"]
    offset_frame = distinct.sparkSession.createDataFrame(offsets, "_part int, _offset long")
    return numbered.join(F.broadcast(offset_frame), "_part").select(
        id_column, (F.col("_offset") + F.col("_local") - 1).cast("int").alias(index_column))
