"""Items described by their words: groups a merchandiser can filter on, and neighbours for items too new to have buyers.

TF-IDF over each item's description. Groups: the rows clustered with mini-batch k-means (on
unit-length rows, so the clusters follow cosine similarity), each named by its centroid's strongest
words, so a merchandiser reads "christmas-tree" rather than a number. Neighbours: the items whose
rows are nearest by cosine, for new items that collaborative filtering cannot place yet. Runs on the
driver over the item catalogue (one row per item, not per transaction), which stays small next to
the log.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_GROUPS = 40
NAME_WORDS = 2
UNDESCRIBED = "undescribed"  # the group of items with no description (or none of the shared words)
UNGROUPED = "ungrouped"  # items the data gives no group when it gives others one


@dataclass(frozen=True, kw_only=True)
class ContentConfig:
    new_item_days: int = 28  # an item first sold this many days before the as-of date or later is new...
    new_item_buyers: int = 5  # ...while it has fewer buyers than this: too few for collaborative filtering
    neighbours: int = 20  # content neighbours kept per new item, and new items kept per item
    new_arrivals: int = 100  # length of the new arrivals list, overall and per country

    def __post_init__(self):
        for name in ("new_item_days", "new_item_buyers", "neighbours", "new_arrivals"):
            if getattr(self, name) < 1:
                raise ValueError(f"content.{name} must be at least 1, got {getattr(self, name)}")


def group_name(text: str) -> str:
    """A group given in the data (a category column) as a name the API accepts: lower case, words joined by '-'."""
    name = "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:64].strip("-")
    return name or UNDESCRIBED


def item_vectors(descriptions: pd.Series):
    """TF-IDF rows (unit length) of the described items that share a word with another item, their ids, and the words.

    Words seen in at least two items only: an item's own code or a one-off word says nothing about its neighbours.
    None when no two items share a word."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    text = descriptions.fillna("").astype(str)
    text = text[text.str.strip() != ""]
    if len(text) < 2:
        return None
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w\w+\b|\b\d\b", min_df=2, sublinear_tf=True, stop_words="english")
    try:
        matrix = vectorizer.fit_transform(text)
    except ValueError:  # no word is shared by two items
        return None
    has_words = np.asarray(matrix.getnnz(axis=1) > 0)
    return matrix[has_words], text.index[has_words], vectorizer.get_feature_names_out()


def description_groups(descriptions: pd.Series, *, groups: int | None = None, seed: int = 0) -> pd.Series:
    """A group name for each description (same index). ``groups``: how many; by default about sqrt(items / 2), at most 40."""
    from sklearn.cluster import MiniBatchKMeans

    named = pd.Series(UNDESCRIBED, index=descriptions.index, dtype=object)
    vectors = item_vectors(descriptions)
    if vectors is None:
        return named
    matrix, ids, vocabulary = vectors
    count = min(groups or min(MAX_GROUPS, max(2, round(math.sqrt(len(ids) / 2)))), len(ids))
    if count < 2:
        return named
    model = MiniBatchKMeans(n_clusters=count, n_init=3, random_state=seed, batch_size=4096).fit(matrix)
    names = _unique([_name(centre, vocabulary) for centre in model.cluster_centers_])
    named.loc[ids] = [names[label] for label in model.labels_]
    return named


def content_neighbours(descriptions: pd.Series, items, candidates, *, k: int = 20, chunk: int = 2048) -> pd.DataFrame:
    """item_id, rank, similar_item_id, score: for each of ``items``, the ``k`` of ``candidates`` whose descriptions are
    nearest (cosine of TF-IDF rows; the item itself and candidates with no shared word left out)."""
    columns = ["item_id", "rank", "similar_item_id", "score"]
    vectors = item_vectors(descriptions)
    if vectors is None:
        return pd.DataFrame(columns=columns)
    matrix, ids, _ = vectors
    position = pd.Series(np.arange(len(ids)), index=ids)
    sources = position.reindex(pd.Index(items).unique()).dropna().astype(int)
    targets = position.reindex(pd.Index(candidates).unique()).dropna().astype(int)
    if sources.empty or targets.empty:
        return pd.DataFrame(columns=columns)
    candidate_ids = np.asarray(ids)[targets.to_numpy()]
    candidate_matrix = matrix[targets.to_numpy()].T.tocsc()
    found = []
    for start in range(0, len(sources), chunk):  # a block of items at a time: the similarity block stays small
        block = sources.iloc[start:start + chunk]
        similarity = (matrix[block.to_numpy()] @ candidate_matrix).toarray()
        similarity[np.asarray(block.index)[:, None] == candidate_ids[None, :]] = 0.0
        take = min(k, similarity.shape[1])
        best = np.argpartition(-similarity, take - 1, axis=1)[:, :take]
        for row, item in enumerate(block.index):
            order = best[row][np.argsort(-similarity[row, best[row]], kind="stable")]
            ranked = [(candidate_ids[j], similarity[row, j]) for j in order if similarity[row, j] > 0]
            found += [(item, rank, other, round(float(score), 4)) for rank, (other, score) in enumerate(ranked, start=1)]
    return pd.DataFrame(found, columns=columns)


def _name(centre: np.ndarray, vocabulary: np.ndarray) -> str:
    return group_name(" ".join(vocabulary[i] for i in np.argsort(-centre)[:NAME_WORDS]))


def _unique(names: list[str]) -> list[str]:
    """Names made distinct by a number where two clusters share their strongest words."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique
