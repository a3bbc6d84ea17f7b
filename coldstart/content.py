"""Items described by their words: groups a merchandiser can filter on when the data carries no category.

TF-IDF over each item's description, clustered with mini-batch k-means (on unit-length rows, so the
clusters follow cosine similarity); each group is named by its centroid's strongest words, so a
merchandiser reads "christmas-tree" rather than a number. Runs on the driver over the item catalogue
(one row per item, not per transaction), which stays small next to the log.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

MAX_GROUPS = 40
NAME_WORDS = 2
UNDESCRIBED = "undescribed"  # the group of items with no description (or none of the shared words)
UNGROUPED = "ungrouped"  # items the data gives no group when it gives others one


def group_name(text: str) -> str:
    """A group given in the data (a category column) as a name the API accepts: lower case, words joined by '-'."""
    name = "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:64].strip("-")
    return name or UNDESCRIBED


def description_groups(descriptions: pd.Series, *, groups: int | None = None, seed: int = 0) -> pd.Series:
    """A group name for each description (same index). ``groups``: how many; by default about sqrt(items / 2), at most 40."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    named = pd.Series(UNDESCRIBED, index=descriptions.index, dtype=object)
    text = descriptions.fillna("").astype(str)
    described = text.str.strip() != ""
    if described.sum() < 4:
        return named
    # words seen in at least two items: an item's own code or a one-off word says nothing about its neighbours
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w\w+\b|\b\d\b", min_df=2, sublinear_tf=True, stop_words="english")
    try:
        matrix = vectorizer.fit_transform(text[described])
    except ValueError:  # no word is shared by two items
        return named
    has_words = np.asarray(matrix.getnnz(axis=1) > 0)
    count = groups or min(MAX_GROUPS, max(2, round(math.sqrt(has_words.sum() / 2))))
    count = min(count, int(has_words.sum()))
    if count < 2:
        return named
    model = MiniBatchKMeans(n_clusters=count, n_init=3, random_state=seed, batch_size=4096).fit(matrix[has_words])
    vocabulary = vectorizer.get_feature_names_out()
    names = _unique([_name(centre, vocabulary) for centre in model.cluster_centers_])
    labels = pd.Series([names[label] for label in model.labels_], index=text[described].index[has_words])
    named.loc[labels.index] = labels
    return named


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
