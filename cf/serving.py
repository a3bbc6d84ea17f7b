"""The lists that are served, made from fitted sources and the routes validation chose.

For every known customer: the routed ``discover`` and ``for_you`` lists (each
customer's segment's source, topped up to length from popularity) and their own
``buy_again``. For customers the models do not know: the cold route's list per
country and for everyone.
"""

from __future__ import annotations

import datetime as dt
import functools
from functools import reduce

from cf import routing
from cf.base import in_parallel
from cf.routing import RoutingConfig
from segmentation import columns as C

SERVED_LISTS = ("discover", "for_you")  # routed; buy_again has one source, cold is the trending table
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


def served_lists(sources, customers, segments, routes: dict, config: RoutingConfig):
    """customer_id, list, rank, item_id, score, source for every customer: the routed lists and buy-again."""
    from pyspark.sql import functions as F

    routed = in_parallel({list_name: functools.partial(routing.serve_routed, sources, customers, list_name, routes[list_name], segments, config)
                          for list_name in SERVED_LISTS})
    parts = [routed[list_name].withColumn(C.LIST, F.lit(list_name)) for list_name in SERVED_LISTS]
    buy_again = sources.models["buy_again"].recommend(customers, config.n)
    parts.append(buy_again.withColumns({"source": F.lit("buy_again"), C.LIST: F.lit("buy_again")}))
    columns = [C.CUSTOMER_ID, C.LIST, C.RANK, C.ITEM_ID, C.SCORE, "source"]
    return reduce(lambda a, b: a.unionByName(b), (part.select(*columns) for part in parts))


def cold_lists(sources, purchases, route: str, config: RoutingConfig):
    """The cold route's list per country and overall (country null), as served to unknown customers."""
    from pyspark.sql import functions as F

    visitors = country_visitors(purchases)
    lists = routing.candidate_lists(sources, visitors, "cold", config, names=[route])
    return lists[route].join(visitors, C.CUSTOMER_ID).select(C.COUNTRY, C.RANK, C.ITEM_ID, C.SCORE, F.lit(route).alias("source"))
