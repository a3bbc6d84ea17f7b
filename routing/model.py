"""What is served, as one model: the routes validation chose, over the sources they use.

``RoutedRecommender`` keeps the ``Recommender`` contract, so the train stage fits,
writes and saves it, and the evaluation scores it, as it would any single model:

    routed = RoutedRecommender(routes=chosen_routes, as_of="2011-12-10").fit(purchases, customers)
    routed.recommend(customers, 30, list_name="for_you")   # or exclude_seen=True for discover
    routed.similar_items(items, 20)
    routed.save(path); RoutedRecommender.load(path)

Its lists: ``discover`` and ``for_you`` (each customer's segment's route, topped up
from popularity), ``buy_again`` (the customer's staples, never topped up) and
``cold`` (the cold route's list for a visitor with a country). ``routed_list`` gives
the same with the source each row came from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from cf.base import Recommender, check_n, drop_seen, in_parallel
from cf.interactions import RecommendationError
from cf.tifu import TifuSettings
from cf.tuning import ALL_SEGMENTS, ALSSettings
from routing.routes import (BASELINE, EXCLUDES_SEEN, RoutingConfig, Sources, candidate_lists, fit_sources, segments_served_by,
                            serve_routed, source_parts, unvalidated_routes)
from segmentation import columns as C

ROUTED_LISTS = ("discover", "for_you", "cold")  # chosen per segment (cold: for everyone) on validation
LISTS = (*ROUTED_LISTS, "buy_again")


class RoutedRecommender(Recommender):
    """Each list served from the source its route names, per customer segment.

    ``routes``: list -> segment (or ``ALL_SEGMENTS``) -> {"source": ...}, as validation chose
    them (default: the routes that need no validation, ``routes.UNVALIDATED``);
    ``als_settings``: tuned ALS settings per segment; ``tifu_settings``: TIFU-KNN's; ``similar_items_source``: the
    model behind "also bought"; ``as_of``: ISO date the models learn up to (default:
    the day after the last purchase they are given).

    It learns from purchase rows (customer_id, item_id, timestamp, quantity, amount,
    country), not from interactions: each source weighs them its own way (decay
    half-lives), and ``customers`` gives each customer's segment.
    """

    name = "routed"

    def __init__(self, *, routes: dict | None = None, als_settings: dict[str, ALSSettings] | None = None,
                 tifu_settings: TifuSettings | None = None, similar_items_source: str | None = None, as_of: str | None = None, config: RoutingConfig | None = None,
                 echo=None):
        super().__init__()
        self.echo = echo  # when given, told of each model as it is fitted
        self.config = config or RoutingConfig()
        self.routes = routes or {list_name: unvalidated_routes(list_name, self.config) for list_name in ROUTED_LISTS}
        missing = [list_name for list_name in ROUTED_LISTS if ALL_SEGMENTS not in self.routes.get(list_name, {})]
        if missing:
            raise RecommendationError(f"routes need an overall ('{ALL_SEGMENTS}') route for {', '.join(missing)}")
        self.als_settings = als_settings or {}
        self.tifu_settings = tifu_settings or TifuSettings()
        self.similar_items_source = similar_items_source or self.config.similar_item_sources()[0]
        self.as_of = as_of
        self._sources: Sources | None = None
        self._segments = None  # customer_id, segment

    @classmethod
    def from_choice(cls, chosen: dict, *, as_of: str | None = None, config: RoutingConfig | None = None, echo=None) -> "RoutedRecommender":
        """The model serving what validation chose (``routing.validation.validate``'s result, or a reused one)."""
        return cls(routes=chosen["routes"], als_settings=chosen["als_settings"], tifu_settings=chosen["tifu_settings"],
                   similar_items_source=chosen.get("similar_items_source"), as_of=as_of, config=config, echo=echo)

    def models_used(self) -> list[str]:
        """The models the routes, "also bought" and the top-up of short lists need: the only ones fitted and saved."""
        parts = {part for routes in self.routes.values() for route in routes.values() for part in source_parts(route["source"])}
        return sorted(parts | {BASELINE, "buy_again", self.similar_items_source} | ({"als"} if self.lists_likely_buyers else set()))

    @property
    def lists_likely_buyers(self) -> bool:
        return self.config.affinity_items > 0 and "als" in self.config.models

    # ------------------------------------------------------------------ fitting

    def fit(self, interactions, customers=None):
        """``interactions``: purchase rows (see the class); ``customers``: customer_id and segment."""
        from pyspark.sql import functions as F

        if customers is None or C.SEGMENT not in customers.columns:
            raise RecommendationError("the routed recommender needs a table of customer_id and segment")
        if C.TIMESTAMP not in interactions.columns:
            raise RecommendationError("the routed recommender learns from purchase rows with a timestamp")
        as_of = (dt.date.fromisoformat(self.as_of) if self.as_of
                 else interactions.agg(F.max(C.TIMESTAMP)).first()[0].date() + dt.timedelta(days=1))
        used = self.models_used()
        config = dataclasses.replace(self.config, models=tuple(name for name in self.config.models if name in used))
        segments = customers.select(C.CUSTOMER_ID, C.SEGMENT)
        # A segment model no route serves costs as much to fit as one that does.
        sources = fit_sources(interactions, as_of=as_of, segments=segments, config=config, als_settings=self.als_settings,
                              tifu_settings=self.tifu_settings,
                              segment_als_serves=segments_served_by(self.routes, "segment_als"), echo=self.echo)
        self.as_of = as_of.isoformat()
        return self.assemble(sources, segments)

    def assemble(self, sources: Sources, segments) -> "RoutedRecommender":
        """This model over sources fitted already (by ``routes.fit_sources``, on purchases up to ``as_of``)."""
        missing = sorted(set(self.models_used()) - set(sources.models))
        if missing:
            raise RecommendationError(f"the routes need model(s) {', '.join(missing)}, which were not fitted")
        self._sources, self._segments = sources, segments
        self.as_of = sources.as_of.isoformat()
        self._seen = sources.models["buy_again"]._seen  # it learnt from every pair
        return self

    # ------------------------------------------------------------------ lists

    def routed_list(self, customers, n: int = 10, *, list_name: str = "for_you"):
        """customer_id, rank, item_id, score, source: ``list_name`` for ``customers`` (with a country column for ``cold``)."""
        from pyspark.sql import functions as F

        self._ready(n)
        if list_name not in LISTS:
            raise RecommendationError(f"unknown list '{list_name}': lists are {', '.join(LISTS)}")
        config = dataclasses.replace(self.config, n=n)
        if list_name == "buy_again":
            return self._sources.models["buy_again"].recommend(customers, n).withColumn("source", F.lit("buy_again"))
        if list_name == "cold":
            route = self.routes["cold"][ALL_SEGMENTS]["source"]
            visitors = customers if C.COUNTRY in customers.columns else customers.withColumn(C.COUNTRY, F.lit(None).cast("string"))
            return candidate_lists(self._sources, visitors, "cold", config, names=[route])[route].withColumn("source", F.lit(route))
        return serve_routed(self._sources, customers.select(C.CUSTOMER_ID).distinct(), list_name, self.routes[list_name],
                            self._segments, config)

    def recommend(self, customers, n: int = 10, *, exclude_seen: bool = False, list_name: str | None = None):
        """``list_name`` (default: ``discover`` with ``exclude_seen``, else ``for_you``); ``exclude_seen`` also drops
        bought items from a list that may repeat them."""
        check_n(n)
        list_name = list_name or ("discover" if exclude_seen else "for_you")
        recs = self.routed_list(customers, n, list_name=list_name).select(C.CUSTOMER_ID, C.RANK, C.ITEM_ID, C.SCORE)
        return drop_seen(recs, self._seen) if exclude_seen and not EXCLUDES_SEEN[list_name] else recs

    def similar_items(self, items, n: int = 10):
        self._check_fitted()
        return self._sources.models[self.similar_items_source].similar_items(items, n)

    def likely_buyers(self, purchases):
        """kind, key, rank, customer_id, score: the ``config.affinity_customers`` customers the global ALS finds likeliest to buy
        each of the ``config.affinity_items`` items most bought before the as-of date, and each item group (the affinity
        audiences); None when ALS is not among the models."""
        from pyspark.sql import functions as F

        self._check_fitted()
        if not self.lists_likely_buyers:
            return None
        before = purchases.where(F.col(C.TIMESTAMP) < F.lit(self.as_of).cast("timestamp"))
        popular = (before.groupBy(C.ITEM_ID).agg(F.count_distinct(C.CUSTOMER_ID).alias("_buyers"))
                   .orderBy(F.desc("_buyers"), C.ITEM_ID).limit(self.config.affinity_items))
        targets = popular.select(F.lit("item").alias("kind"), F.col(C.ITEM_ID).alias("key"), C.ITEM_ID)
        if C.ITEM_GROUP in before.columns:
            groups = before.where(F.col(C.ITEM_GROUP).isNotNull()).select(F.lit("group").alias("kind"), F.col(C.ITEM_GROUP).alias("key"), C.ITEM_ID)
            targets = targets.unionByName(groups.distinct())
        return self._sources.models["als"].likely_buyers(targets, self.config.affinity_customers)

    # ------------------------------------------------------------------ persistence

    def settings(self) -> dict:
        return json.loads(json.dumps({
            "routes": self.routes, "als_settings": {name: dataclasses.asdict(values) for name, values in self.als_settings.items()},
            "tifu_settings": dataclasses.asdict(self.tifu_settings),
            "similar_items_source": self.similar_items_source, "as_of": self.as_of, "config": dataclasses.asdict(self.config),
        }))

    @classmethod
    def from_settings(cls, settings: dict) -> "RoutedRecommender":
        config = {**settings["config"], "models": tuple(settings["config"]["models"])}
        return cls(routes=settings["routes"], similar_items_source=settings["similar_items_source"], as_of=settings["as_of"],
                   als_settings={name: ALSSettings(**values) for name, values in settings["als_settings"].items()},
                   tifu_settings=TifuSettings(**settings["tifu_settings"]),
                   config=RoutingConfig(**config))

    def _write_seen(self, path: str, seen_in: str | None) -> None:
        """Nothing: the seen pairs are buy-again's, saved with it."""

    def _read_seen(self, spark, path: str, seen_in: str | None):
        return None  # set by _load_state, from buy-again

    def _save_state(self, path: str) -> None:
        """Each model the routes use in ``path``/sources/name; the seen pairs of those that learnt from all pairs, once."""
        used = self.models_used()
        shared = next((name for name in used if name in self._sources.on_all_pairs), None)

        def save(name: str):
            seen_in = shared if name in self._sources.on_all_pairs and name != shared else None
            return lambda: self._sources.models[name].save(f"{path}/sources/{name}", seen_in=seen_in)

        # The models are independent: written side by side (see in_parallel).
        in_parallel({**{name: save(name) for name in used},
                     "segments": lambda: self._segments.write.mode("overwrite").parquet(f"{path}/segments")})

    def _load_state(self, spark, path: str) -> None:
        models = {name: Recommender.load(f"{path}/sources/{name}") for name in self.models_used()}
        sources = Sources(models=models, as_of=dt.date.fromisoformat(self.as_of))
        self.assemble(sources, spark.read.parquet(f"{path}/segments"))
