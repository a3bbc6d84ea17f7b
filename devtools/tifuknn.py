"""TIFU-KNN (Hu, He, Gao & Zhang, SIGIR 2020) on segrec's split: the single-machine anchor for ``for_you`` and ``discover``.

A customer's baskets (here: purchase days) are split in order into ``groups`` groups of near-equal size.
Within a group a basket counts ``within_decay ** (baskets after it)``, the group is the mean of its
baskets, and the groups add up weighted ``group_decay ** (groups after it)``: the customer's
time-decayed item frequency. The prediction blends it with the mean vector of the ``k`` nearest
customers (Euclidean, as the paper's code): ``alpha * own + (1 - alpha) * neighbours``.

The settings are chosen on the validation window (fitted before it, as ``jobs.evaluate`` chooses
routes) and scored on the test window; the best settings on the test window itself are reported too,
as an optimistic bound. NDCG@10 as ``cf.evaluation``: relevant items are the distinct items a warm
customer bought in the window (``for_you``), or those of them they had never bought (``discover``);
95% bootstrap intervals over customers.

    .venv/bin/python -m devtools.tifuknn --output output     # reads output/ingest (make pipeline)
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
from dataclasses import asdict

import numpy as np
import pandas as pd
from scipy import sparse, stats
from sklearn.neighbors import NearestNeighbors

from cf.tifu import TifuSettings
from runtime.stages.replay import ndcg_and_recall
from segmentation import columns as C

K = 10
TEST_DAYS = 92  # as jobs.evaluate: at most 92 days, at most a quarter of the history
VALIDATION_DAYS = 90


# the grid of the issue that set the anchor: 32 settings
GRID = [TifuSettings(*values) for values in itertools.product((3, 7), (0.9, 1.0), (0.6, 0.7), (100, 300), (0.7, 0.9))]


def basket_weights(days: pd.DataFrame, *, groups: int, within_decay: float, group_decay: float) -> pd.Series:
    """Each (customer, day) row's weight in the customer's decayed frequency vector. ``days``: customer_id, day, sorted."""
    position = days.groupby(C.CUSTOMER_ID).cumcount().to_numpy()
    count = days.groupby(C.CUSTOMER_ID)[C.CUSTOMER_ID].transform("size").to_numpy()
    used = np.minimum(groups, count)
    group = position * used // count
    group_size = np.ceil((group + 1) * count / used) - np.ceil(group * count / used)
    last_in_group = np.ceil((group + 1) * count / used) - 1
    weight = within_decay ** (last_in_group - position) / group_size * group_decay ** (used - 1 - group) / used
    return pd.Series(weight, index=days.index)


def frequency_vectors(lines: pd.DataFrame, customers: pd.Index, items: pd.Index, settings: TifuSettings) -> sparse.csr_matrix:
    days = lines[[C.CUSTOMER_ID, "day"]].drop_duplicates().sort_values([C.CUSTOMER_ID, "day"]).reset_index(drop=True)
    days["weight"] = basket_weights(days, groups=settings.groups, within_decay=settings.within_decay, group_decay=settings.group_decay)
    weighted = lines.merge(days, on=[C.CUSTOMER_ID, "day"])
    rows, cols = customers.get_indexer(weighted[C.CUSTOMER_ID]), items.get_indexer(weighted[C.ITEM_ID])
    return sparse.csr_matrix((weighted["weight"].to_numpy(), (rows, cols)), shape=(len(customers), len(items)))


def ndcg(top: np.ndarray, relevant: list[set]) -> np.ndarray:
    return np.array([ndcg_and_recall(list(listed), wanted, K)[0] for listed, wanted in zip(top, relevant)])


class Window:
    """Purchases before ``start`` to fit on, and each warm customer's relevant items from ``start`` to ``end``."""

    def __init__(self, purchases: pd.DataFrame, start: dt.date, end: dt.date):
        self.start, self.end = start, end
        before = purchases[purchases["day"] < start]
        inside = purchases[(purchases["day"] >= start) & (purchases["day"] < end)]
        self.lines = before[[C.CUSTOMER_ID, "day", C.ITEM_ID]].drop_duplicates()
        self.customers = pd.Index(sorted(self.lines[C.CUSTOMER_ID].unique()))
        self.items = pd.Index(sorted(purchases[C.ITEM_ID].unique()))
        bought = self.lines.groupby(C.CUSTOMER_ID)[C.ITEM_ID].agg(set)
        warm = inside[inside[C.CUSTOMER_ID].isin(self.customers)].groupby(C.CUSTOMER_ID)[C.ITEM_ID].agg(set)
        self.rows = self.customers.get_indexer(warm.index)
        self.relevant = {"for_you": list(warm), "discover": [items - bought[customer] for customer, items in warm.items()]}
        self.bought = sparse.csr_matrix((np.ones(len(self.lines)), (self.customers.get_indexer(self.lines[C.CUSTOMER_ID]),
                                                                    self.items.get_indexer(self.lines[C.ITEM_ID]))),
                                        shape=(len(self.customers), len(self.items))).tocsr()[self.rows]
        popularity = self.lines.drop_duplicates([C.CUSTOMER_ID, C.ITEM_ID])[C.ITEM_ID].value_counts()
        self.popularity = np.zeros(len(self.items))
        self.popularity[self.items.get_indexer(popularity.index)] = popularity.to_numpy()

    def top(self, scores: np.ndarray, list_name: str, rows: np.ndarray) -> np.ndarray:
        """The top K item ids of the warm customers in ``rows``; ``discover`` leaves out what they bought; ties go to the popular item."""
        scores = scores + 1e-9 * self.popularity / max(self.popularity.max(), 1)
        if list_name == "discover":
            scores = np.where(self.bought[rows].toarray() > 0, -np.inf, scores)
        best = np.argpartition(-scores, K, axis=1)[:, :K]
        ordered = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1), axis=1)
        return self.items.to_numpy()[ordered]

    def score(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Per-customer NDCG@K of each list, over customers with a relevant item."""
        found = {}
        for list_name, relevant in self.relevant.items():
            keep = np.array([bool(items) for items in relevant])
            top = self.top(scores[keep], list_name, keep)
            found[list_name] = ndcg(top, [items for items, kept in zip(relevant, keep) if kept])
        return found


def tifu_scores(window: Window, settings: TifuSettings, neighbour_index: dict) -> np.ndarray:
    """Each warm customer's TIFU-KNN scores over the items; ``neighbour_index`` caches the neighbour search per vectors."""
    vector_key = (settings.groups, settings.within_decay, settings.group_decay)
    if vector_key not in neighbour_index:
        vectors = frequency_vectors(window.lines, window.customers, window.items, settings)
        search = NearestNeighbors(n_neighbors=max(g.neighbours for g in GRID) + 1, algorithm="brute").fit(vectors)
        _, nearest = search.kneighbors(vectors[window.rows])
        neighbour_index[vector_key] = (vectors, nearest)
    vectors, nearest = neighbour_index[vector_key]
    own = vectors[window.rows].toarray()
    others = nearest[:, 1:settings.neighbours + 1]  # the first is the customer
    averaging = sparse.csr_matrix((np.full(others.size, 1 / settings.neighbours), others.ravel(),
                                   np.arange(0, others.size + 1, settings.neighbours)), shape=(len(others), vectors.shape[0]))
    return settings.alpha * own + (1 - settings.alpha) * (averaging @ vectors).toarray()


def interval(values: np.ndarray) -> dict:
    low, high = stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile",
                                rng=np.random.default_rng(0)).confidence_interval
    return {"mean": round(float(values.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4)}


def windows(purchases: pd.DataFrame) -> tuple[Window, Window]:
    """(validation, test) as ``jobs.evaluate`` places them before the last purchase day."""
    first, last = purchases["day"].min(), purchases["day"].max()
    end = last + dt.timedelta(days=1)
    cutoff = end - dt.timedelta(days=min(TEST_DAYS, (end - first).days // 4))
    validation_start = cutoff - dt.timedelta(days=min(VALIDATION_DAYS, (cutoff - first).days // 4))
    return Window(purchases, validation_start, cutoff), Window(purchases, cutoff, end)


def run(purchases: pd.DataFrame, echo=print) -> dict:
    validation, test = windows(purchases)
    echo(f"validation {validation.start}..{validation.end}, test {test.start}..{test.end}: "
         f"{len(test.relevant['for_you']):,} warm test customers, {len(test.items):,} items")
    chosen, on_test, caches = {}, {}, ({}, {})
    for settings in GRID:
        for window, cache, found in ((validation, caches[0], chosen), (test, caches[1], on_test)):
            means = {name: values.mean() for name, values in window.score(tifu_scores(window, settings, cache)).items()}
            for list_name, mean in means.items():
                if mean > found.get(list_name, (-1, None))[0]:
                    found[list_name] = (mean, settings)
    result = {"validation": [str(validation.start), str(validation.end)], "test": [str(test.start), str(test.end)], "lists": {}}
    popularity = test.score(np.tile(test.popularity, (len(test.rows), 1)))
    for list_name in ("for_you", "discover"):
        settings = chosen[list_name][1]
        scored = test.score(tifu_scores(test, settings, caches[1]))[list_name]
        best = on_test[list_name][1]
        result["lists"][list_name] = {
            "tifu_knn": interval(scored), "settings_chosen_on_validation": asdict(settings),
            "tifu_knn_best_on_test": interval(test.score(tifu_scores(test, best, caches[1]))[list_name]),
            "settings_best_on_test": asdict(best),
            "popularity": interval(popularity[list_name]), "customers": int(len(scored))}
        echo(f"{list_name}: TIFU-KNN {result['lists'][list_name]['tifu_knn']} with {asdict(settings)} (chosen on validation); "
             f"best on test {result['lists'][list_name]['tifu_knn_best_on_test']}; popularity {result['lists'][list_name]['popularity']}")
    return result


def read_purchases(output: str) -> pd.DataFrame:
    purchases = pd.read_parquet(f"{output}/ingest/clean", columns=[C.CUSTOMER_ID, C.ITEM_ID, C.TIMESTAMP])
    purchases["day"] = purchases[C.TIMESTAMP].dt.date
    return purchases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest/clean)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(read_purchases(args.output))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
