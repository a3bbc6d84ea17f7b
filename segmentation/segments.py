"""High / mid / low value segments: K-means on log-transformed RFM and CLV features.

``ValueSegmenter`` (settings) fits a ``ValueSegmentModel`` (state): a Spark ML
pipeline (log transform -> assembler -> scaler -> K-means) plus the mapping of
clusters to labels. Clusters are ordered by mean CLV: ``high``, ``mid``, ``low``
for k=3, ``value_1`` .. ``value_k`` (1 = highest) otherwise. The model is saved
and loaded as a directory, so customers it has never seen can be assigned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from segmentation import columns as C
from segmentation.rfm import SegmentationError

# Classic RFM (days since last purchase, repeat purchases, net spend) plus the CLV forecast.
DEFAULT_FEATURES = (C.DAYS_SINCE_LAST, C.FREQUENCY, C.TOTAL_SPEND, C.CLV)
_CLUSTER = "_cluster"
_SCALED = "_scaled_features"


def segment_labels(k: int) -> list[str]:
    return ["high", "mid", "low"] if k == 3 else [f"value_{rank}" for rank in range(1, k + 1)]


@dataclass(frozen=True)
class SegmentConfig:
    k: int = 3
    seed: int = 42
    features: tuple[str, ...] = DEFAULT_FEATURES
    max_iter: int = 100


class ValueSegmenter:
    """Estimator: holds the settings; ``fit`` returns a ``ValueSegmentModel``."""

    def __init__(self, *, k: int = 3, seed: int = 42, features: tuple[str, ...] = DEFAULT_FEATURES, max_iter: int = 100):
        if k < 2:
            raise SegmentationError(f"k must be at least 2, got {k}")
        self.k, self.seed, self.features, self.max_iter = k, seed, tuple(features), max_iter

    @classmethod
    def from_config(cls, config: SegmentConfig) -> "ValueSegmenter":
        return cls(k=config.k, seed=config.seed, features=config.features, max_iter=config.max_iter)

    def _pipeline(self):
        from pyspark.ml import Pipeline
        from pyspark.ml.clustering import KMeans
        from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler

        # Spend and counts are heavy-tailed: logs keep a few whales from owning a cluster.
        logs = ", ".join(f"log1p(greatest(`{name}`, 0D)) AS `_log_{name}`" for name in self.features)
        return Pipeline(stages=[
            SQLTransformer(statement=f"SELECT *, {logs} FROM __THIS__"),
            VectorAssembler(inputCols=[f"_log_{name}" for name in self.features], outputCol="_log_features"),
            StandardScaler(inputCol="_log_features", outputCol=_SCALED, withMean=True, withStd=True),
            KMeans(k=self.k, seed=self.seed, maxIter=self.max_iter, featuresCol=_SCALED, predictionCol=_CLUSTER),
        ])

    def fit(self, customers) -> "ValueSegmentModel":
        from pyspark.ml.evaluation import ClusteringEvaluator
        from pyspark.sql import functions as F

        missing = [name for name in (*self.features, C.CLV) if name not in customers.columns]
        if missing:
            raise SegmentationError(f"customers lack the feature column(s) {', '.join(missing)}")
        count = customers.count()
        if count < self.k:
            raise SegmentationError(f"{self.k} segments need at least {self.k} customers, found {count}")
        pipeline_model = self._pipeline().fit(customers)
        clustered = pipeline_model.transform(customers)
        means = clustered.groupBy(_CLUSTER).agg(F.avg(C.CLV).alias("mean_clv")).collect()
        order = sorted(means, key=lambda row: (-row["mean_clv"], row[_CLUSTER]))
        labels = {row[_CLUSTER]: label for row, label in zip(order, segment_labels(self.k))}
        distinct = len(means)
        silhouette = (
            ClusteringEvaluator(featuresCol=_SCALED, predictionCol=_CLUSTER).evaluate(clustered) if distinct > 1 else float("nan")
        )
        return ValueSegmentModel(pipeline_model, labels, silhouette=silhouette, features=self.features)


class ValueSegmentModel:
    def __init__(self, pipeline_model, labels: dict[int, str], *, silhouette: float, features: tuple[str, ...]):
        self.pipeline_model = pipeline_model
        self.labels = labels
        self.silhouette = silhouette
        self.features = features

    def transform(self, customers):
        """``customers`` with a ``segment`` column (labels ordered by CLV)."""
        from itertools import chain

        from pyspark.sql import functions as F

        mapping = F.create_map(*chain.from_iterable((F.lit(cluster), F.lit(label)) for cluster, label in self.labels.items()))
        clustered = self.pipeline_model.transform(customers)
        helper_columns = [name for name in clustered.columns if name.startswith("_") and name not in customers.columns]
        return clustered.withColumn(C.SEGMENT, mapping[F.col(_CLUSTER)]).drop(*helper_columns)

    def save(self, path: str) -> None:
        self.pipeline_model.write().overwrite().save(f"{path}/pipeline")
        meta = {"labels": {str(k): v for k, v in self.labels.items()}, "silhouette": self.silhouette, "features": list(self.features)}
        from pyspark.sql import SparkSession

        spark = SparkSession.active()
        spark.createDataFrame([(json.dumps(meta),)], "meta string").coalesce(1).write.mode("overwrite").text(f"{path}/labels")

    @classmethod
    def load(cls, spark, path: str) -> "ValueSegmentModel":
        from pyspark.ml import PipelineModel

        meta = json.loads(spark.read.text(f"{path}/labels").first()[0])
        return cls(
            PipelineModel.load(f"{path}/pipeline"),
            {int(k): v for k, v in meta["labels"].items()},
            silhouette=meta["silhouette"],
            features=tuple(meta["features"]),
        )


def segment_summary(customers):
    """Per segment: size, shares of customers and revenue, mean and median of each feature."""
    from pyspark.sql import functions as F

    measures = (C.FREQUENCY, C.RECENCY, C.AGE, C.MONETARY_VALUE, C.ORDERS, C.TOTAL_SPEND, C.DAYS_SINCE_LAST, C.P_ALIVE, C.EXPECTED_PURCHASES, C.CLV)
    aggregates = [F.count(F.lit(1)).alias("customers"), F.sum(C.TOTAL_SPEND).alias("revenue")]
    for name in measures:
        aggregates += [F.avg(name).alias(f"mean_{name}"), F.percentile_approx(name, 0.5, 10000).cast("double").alias(f"median_{name}")]
    per_segment = customers.groupBy(C.SEGMENT).agg(*aggregates)
    totals = customers.agg(F.count(F.lit(1)).alias("all_customers"), F.sum(C.TOTAL_SPEND).alias("all_revenue"))
    return per_segment.crossJoin(totals).select(
        C.SEGMENT, "customers",
        (F.col("customers") / F.col("all_customers")).alias("share_of_customers"),
        F.round("revenue", 2).alias("revenue"),
        (F.col("revenue") / F.col("all_revenue")).alias("share_of_revenue"),
        *(name for name in per_segment.columns if name.startswith(("mean_", "median_"))),
    )
