"""TIFU-KNN in Spark against the single-machine reference (devtools/tifuknn.py), and its blocked neighbour search."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from cf.tifu import TifuRecommender, TifuSettings
from devtools import tifuknn as reference
from segmentation import columns as C

AS_OF = dt.date(2011, 9, 9)
SETTINGS = TifuSettings(groups=3, within_decay=0.9, group_decay=0.7, neighbours=20, alpha=0.7)
N = 10


@pytest.fixture(scope="module")
def purchases(synthetic):
    return synthetic.place("clean")


@pytest.fixture(scope="module")
def exact(purchases):
    return TifuRecommender(**SETTINGS.model_settings(), as_of=AS_OF.isoformat()).fit(purchases)


@pytest.fixture(scope="module")
def lines(purchases):
    rows = purchases.select(C.CUSTOMER_ID, C.ITEM_ID, C.TIMESTAMP).toPandas()
    rows["day"] = rows[C.TIMESTAMP].dt.date
    return rows[rows["day"] < AS_OF][[C.CUSTOMER_ID, "day", C.ITEM_ID]].drop_duplicates()


def test_vectors_and_lists_match_the_single_machine_reference(exact, lines):
    customers, items = pd.Index(sorted(lines[C.CUSTOMER_ID].unique())), pd.Index(sorted(lines[C.ITEM_ID].unique()))
    vectors = reference.frequency_vectors(lines, customers, items, SETTINGS)
    spark_vectors = exact._vectors.toPandas().set_index([C.CUSTOMER_ID, C.ITEM_ID])["_weight"].sort_index()
    found = vectors.tocoo()
    expected = pd.Series(found.data, index=pd.MultiIndex.from_arrays([customers[found.row], items[found.col]])).sort_index()
    assert len(spark_vectors) == len(expected) and np.allclose(spark_vectors.to_numpy(), expected.to_numpy())

    asked = customers[::25]
    _, nearest = NearestNeighbors(n_neighbors=SETTINGS.neighbours + 1, algorithm="brute").fit(vectors).kneighbors(
        vectors[customers.get_indexer(asked)])
    recs = exact.recommend(exact._vectors.sparkSession.createDataFrame(pd.DataFrame({C.CUSTOMER_ID: asked})), N).toPandas()
    assert recs[C.CUSTOMER_ID].nunique() == len(asked)
    for customer, near in zip(asked, nearest):
        me = customers.get_loc(customer)
        others = [row for row in near if row != me][:SETTINGS.neighbours]
        scores = SETTINGS.alpha * vectors[me].toarray()[0] + (1 - SETTINGS.alpha) * np.asarray(vectors[others].mean(axis=0))[0]
        listed = recs[recs[C.CUSTOMER_ID] == customer].sort_values(C.RANK)
        # Each listed score is the reference's, and nothing left out scores above the last listed (ties aside).
        assert listed[C.SCORE].to_numpy() == pytest.approx(scores[items.get_indexer(listed[C.ITEM_ID])])
        assert np.sort(scores)[-N - 1] <= listed[C.SCORE].min() + 1e-12


def test_blocked_neighbours_stay_in_their_block_and_keep_most_of_the_lists(exact, purchases):
    blocked = TifuRecommender(**SETTINGS.model_settings(), block_size=400, as_of=AS_OF.isoformat()).fit(purchases)
    blocks = blocked._vectors.select(C.CUSTOMER_ID, "_block").distinct().toPandas().set_index(C.CUSTOMER_ID)["_block"]
    assert blocks.nunique() == 4  # 1,500 customers, blocks of about 400: two hyperplanes
    nearest = blocked._nearest.toPandas()
    assert all((blocks[list(names)] == blocks[customer]).all() for customer, names in zip(nearest[C.CUSTOMER_ID], nearest["_neighbours"]))
    customers = exact._vectors.select(C.CUSTOMER_ID).distinct().orderBy(C.CUSTOMER_ID).limit(300)
    both = exact.recommend(customers, N).toPandas().merge(blocked.recommend(customers, N).toPandas(), on=[C.CUSTOMER_ID, C.ITEM_ID])
    assert len(both) / (300 * N) > 0.7  # the customer's own items carry most of a list


def test_an_alpha_of_one_is_the_customers_own_decayed_frequency(exact, purchases):
    own = exact.with_alpha(1.0)
    customers = exact._vectors.select(C.CUSTOMER_ID).distinct().limit(100)
    recs = own.recommend(customers, N).toPandas()
    vectors = exact._vectors.toPandas()
    merged = recs.merge(vectors, on=[C.CUSTOMER_ID, C.ITEM_ID], how="left")
    assert merged["_weight"].notna().all() and merged[C.SCORE].to_numpy() == pytest.approx(merged["_weight"].to_numpy())


def test_bad_settings_and_inputs_are_clear_errors(purchases):
    from cf.interactions import RecommendationError

    with pytest.raises(RecommendationError, match="alpha must be in"):
        TifuRecommender(alpha=0)
    with pytest.raises(RecommendationError, match="groups and neighbours of 1 or more"):
        TifuRecommender(groups=0)
    with pytest.raises(RecommendationError, match="lack column"):
        TifuRecommender().fit(purchases.drop(C.TIMESTAMP))
