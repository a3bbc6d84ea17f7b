"""The tables that are served, made by the routed recommender.

For every known customer: the routed ``discover`` and ``for_you`` lists and their
own ``buy_again``. For customers the models do not know: the cold route's list per
country and for everyone.
"""

from __future__ import annotations

import datetime as dt
import functools
from functools import reduce

from cf.base import in_parallel
from routing.model import RoutedRecommender
from segmentation import columns as C

SERVED_LISTS = ("discover", "for_you", "buy_again")  # for each known customer; cold is the trending table
EVERYONE = "everyone"  # the pseudo-customer that stands for visitors without a country


def known_customers(purchases, as_of: dt.date):
    """customer_id and their usual country, for everyone who bought before ``as_of``."""
    from pyspark.sql import functions as F

    before = purchases.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp"))
    return before.groupBy(C.CUSTOMER_ID).agg(F.mode(C.COUNTRY, deterministic=True).alias(C.COUNTRY))


def country_visitors(purchases):
    """One pseudo-customer per country plus one for visitors whose country is unknown (country null)."""
    from pyspark.sql import functions as F

    countries = purchases.select(C.COUNTRY).distinct().where(F.col(C.COUNTRY).isNotNull())
    per_country = countries.select(F.concat(F.lit("country:"), F.col(C.COUNTRY)).alias(C.CUSTOMER_ID), C.COUNTRY)
    return per_country.unionByName(purchases.sparkSession.createDataFrame([(EVERYONE, None)], f"{C.CUSTOMER_ID} string, {C.COUNTRY} string"))


def served_lists(routed: RoutedRecommender, customers, n: int):
    """customer_id, list, rank, item_id, score, source for every customer: the routed lists and buy-again."""
    from pyspark.sql import functions as F

    # The lists are independent: made side by side (see in_parallel).
    lists = in_parallel({list_name: functools.partial(routed.routed_list, customers, n, list_name=list_name) for list_name in SERVED_LISTS})
    columns = [C.CUSTOMER_ID, C.LIST, C.RANK, C.ITEM_ID, C.SCORE, "source"]
    return reduce(lambda a, b: a.unionByName(b), (lists[list_name].withColumn(C.LIST, F.lit(list_name)).select(*columns)
                                                  for list_name in SERVED_LISTS))


def cold_lists(routed: RoutedRecommender, purchases, n: int):
    """The cold route's list per country and overall (country null), as served to unknown customers."""
    visitors = country_visitors(purchases)
    return routed.routed_list(visitors, n, list_name="cold").join(visitors, C.CUSTOMER_ID).select(
        C.COUNTRY, C.RANK, C.ITEM_ID, C.SCORE, "source")
