"""The single-machine pipeline a user might write instead of segrec: pandas + lifetimes + implicit.

    python -m devtools.reference --input output/bench/rows-1000000/input/transactions --report reference.json

Benchmark-only (``pip install -e ".[bench]"`` brings ``implicit``); ``devtools.bench``
runs it next to the Spark pipeline on the same data. It does the same work in
the plain way: read everything into pandas, drop the same dirt, RFM with
``lifetimes.utils.summary_data_from_transaction_data``, BG/NBD and Gamma-Gamma
fitted on every customer, K-means (scikit-learn) into three value segments,
implicit-feedback ALS per segment with ``implicit`` (top-10 unseen items for
every customer, 20 "also bought" items for every item), and the most popular
items of the last 30 days for unknown customers. It has no hold-out, no route
choice and no quarantine, so it does less than the Spark pipeline.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from transactions.ingest import DEFAULT_NON_PRODUCT_CODES, glob_regex

HORIZON_MONTHS = 12
SEGMENTS = 3
RANK, ITERATIONS, REGULARIZATION, ALPHA = 32, 10, 0.1, 1.0


class Steps:
    """Wall time of each named step, in order."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def time(self, name: str, action):
        started = time.monotonic()
        result = action()
        self.seconds[name] = round(time.monotonic() - started, 2)
        print(f"  {name}: {self.seconds[name]:.1f}s", flush=True)
        return result


def read_transactions(path: str):
    import pandas as pd

    return pd.read_parquet(path)


def clean(raw):
    frame = raw.drop_duplicates()
    item_id = frame["StockCode"].astype(str).str.upper()
    keep = (~frame["Invoice"].astype(str).str.startswith("C") & (frame["Quantity"] > 0) & (frame["Price"] > 0)
            & frame["Customer ID"].notna() & ~item_id.str.match(glob_regex(DEFAULT_NON_PRODUCT_CODES)))
    frame = frame[keep].assign(item_id=item_id[keep])
    frame["customer_id"] = frame["Customer ID"].astype("int64").astype(str)
    frame["amount"] = frame["Quantity"] * frame["Price"]
    frame["day"] = frame["InvoiceDate"].dt.floor("D")
    return frame[["customer_id", "item_id", "day", "Quantity", "amount"]]


def value_segments(purchases, steps: Steps):
    """customer_id -> clv and segment 0 (highest value) .. SEGMENTS-1."""
    import numpy as np
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    daily = purchases.groupby(["customer_id", "day"], as_index=False)["amount"].sum()
    as_of = purchases["day"].max() + np.timedelta64(1, "D")
    summary = steps.time("rfm (lifetimes)", lambda: summary_data_from_transaction_data(
        daily, "customer_id", "day", monetary_value_col="amount", observation_period_end=as_of, freq="D"))
    bgnbd = steps.time("bg/nbd fit", lambda: BetaGeoFitter(penalizer_coef=0.001).fit(summary["frequency"], summary["recency"], summary["T"]))
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    gamma_gamma = steps.time("gamma-gamma fit", lambda: GammaGammaFitter(penalizer_coef=0.001).fit(repeat["frequency"], repeat["monetary_value"]))
    summary["clv"] = steps.time("clv", lambda: gamma_gamma.customer_lifetime_value(
        bgnbd, summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"].clip(lower=0),
        time=HORIZON_MONTHS, freq="D", discount_rate=0.01).fillna(0.0))
    features = np.log1p(summary[["frequency", "recency", "monetary_value", "clv"]].clip(lower=0))
    labels = steps.time("k-means", lambda: KMeans(n_clusters=SEGMENTS, n_init=4, random_state=42).fit_predict(StandardScaler().fit_transform(features)))
    by_value = summary.assign(cluster=labels).groupby("cluster")["clv"].mean().sort_values(ascending=False)
    summary["segment"] = summary.assign(cluster=labels)["cluster"].map({cluster: rank for rank, cluster in enumerate(by_value.index)})
    return summary[["clv", "segment"]]


def segment_recommendations(purchases, segments, steps: Steps) -> dict:
    """implicit ALS per segment: top-10 unseen items for every customer, 20 similar items for every item."""
    import numpy as np
    import scipy.sparse as sparse
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    pairs = purchases.groupby(["customer_id", "item_id"], as_index=False)["Quantity"].sum()
    pairs = pairs.join(segments["segment"], on="customer_id")
    counts = {"recommendations": 0, "similar_items": 0}
    # implicit's ALS runs its own threads; a BLAS thread pool under them slows it down (its advice).
    with threadpool_limits(1, "blas"):
        for segment, part in pairs.groupby("segment"):
            customers = part["customer_id"].astype("category")
            items = part["item_id"].astype("category")
            matrix = sparse.csr_matrix((1.0 + ALPHA * np.log1p(part["Quantity"].to_numpy(dtype=np.float32)),
                                        (customers.cat.codes.to_numpy(), items.cat.codes.to_numpy())),
                                       shape=(len(customers.cat.categories), len(items.cat.categories)), dtype=np.float32)
            model = AlternatingLeastSquares(factors=RANK, iterations=ITERATIONS, regularization=REGULARIZATION, random_state=42)
            steps.time(f"als fit segment {segment}", lambda: model.fit(matrix, show_progress=False))
            users = np.arange(matrix.shape[0])
            ids, _ = steps.time(f"als recommend segment {segment}", lambda: model.recommend(users, matrix, N=10, filter_already_liked_items=True))
            similar, _ = steps.time(f"als similar items segment {segment}", lambda: model.similar_items(np.arange(matrix.shape[1]), N=21))
            counts["recommendations"] += int((ids >= 0).sum())
            counts["similar_items"] += int(similar.size)
    return counts


def trending(purchases, days: int = 30, n: int = 30):
    import numpy as np

    recent = purchases[purchases["day"] >= purchases["day"].max() - np.timedelta64(days, "D")]
    return recent.groupby("item_id")["customer_id"].nunique().nlargest(n)


def run_reference(input_path: str) -> dict:
    steps = Steps()
    raw = steps.time("read", lambda: read_transactions(input_path))
    purchases = steps.time("clean", functools.partial(clean, raw))
    rows_in = len(raw)
    del raw
    segments = value_segments(purchases, steps)
    counts = segment_recommendations(purchases, segments, steps)
    steps.time("trending", lambda: trending(purchases))
    return {"rows_in": rows_in, "clean_rows": len(purchases), "customers": len(segments), **counts,
            "seconds": steps.seconds, "total_seconds": round(sum(steps.seconds.values()), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="transactions in the Online Retail II schema (Parquet file or directory)")
    parser.add_argument("--report", required=True, type=Path, help="JSON file for the timings")
    args = parser.parse_args(argv)
    result = run_reference(args.input)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(result, indent=2))
    print(f"reference: {result['rows_in']:,} rows in {result['total_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
