"""Scoring every recommender on a time window, and choosing routes on a validation window.

``evaluate_window`` fits every source on the purchases before a cutoff and scores
the window after it: warm customers (bought before the cutoff) on ``discover``
(new items only) and ``for_you`` (all purchases), cold customers (first purchase
after the cutoff) on ``cold``, overall and per value segment. ``validate`` runs it
on the validation window before an as-of date, tuning ALS on the way, and chooses
what each segment's lists are served. The train stage validates before the as-of
date; the evaluation validates before its test window, then scores the test window
with what was chosen, so what is evaluated is chosen exactly as what is served.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import time

from cf import evaluation
from cf.base import in_background, in_parallel
from cf.tifu import TifuSettings
from cf.tuning import ALL_SEGMENTS, ALSSettings, TuningConfig, tune, tune_tifu
from routing.model import RoutedRecommender
from routing.routes import (RoutingConfig, candidate_lists, choose_routes, choose_similar_source, contenders_after, fit_sources, materialize,
                            score_lists, segments_scored_with, similar_item_lists, source_parts, still_in_the_running, unvalidated_routes)
from segmentation import columns as C
from segmentation.customers import segment_customers
from segmentation.rfm import SegmentationError
from segmentation.windows import History, Window, WindowError, WindowRule, choose_window

# list -> (customers it is scored on, which test purchases count)
RELEVANCE = {"discover": ("warm", "new"), "for_you": ("warm", "all"), "cold": ("cold", "all")}


def evaluate_window(purchases, returns, *, cutoff: dt.date, end: dt.date, config: RoutingConfig, clv_config, segment_config,
                    tuning: TuningConfig | None = None, als_settings: dict | None = None, tifu_settings: TifuSettings | None = None,
                    routes: dict | None = None, contenders: dict[str, dict[str, list[str]]] | None = None, intervals: bool = False,
                    segments=None, echo=None) -> dict:
    """Fit on purchases before ``cutoff`` and score [cutoff, end): every source, and the routed system when ``routes`` is given.

    With ``tuning``, ALS settings (per segment) and TIFU-KNN's are first searched on
    this window (so only ever on a validation window) and the sources use what won;
    otherwise they use ``als_settings`` and ``tifu_settings`` (from an earlier tuning) or the defaults.
    With ``contenders`` (list -> ``contenders_after``: an earlier rolling-origin window, see ``validate``), only
    those lists and sources are fitted and scored, and kept in the segments where they may still be chosen (per-segment
    ALS is fitted for those segments only); otherwise every candidate, and the item-to-item
    sources when ``scores_item_to_item`` says so. Every score has its bootstrap interval with ``intervals`` (the evaluation's test window).
    ``segments``: ``window_segments`` of this cutoff when made already. ``echo``, when given, is told of each tuning trial, each model
    fitted and the scoring.
    """
    from pyspark.sql import functions as F

    started = time.monotonic()
    train, test = evaluation.split_by_time(purchases, cutoff=cutoff, end=end)
    if segments is None:
        segments = window_segments(purchases, returns, cutoff=cutoff, clv_config=clv_config, segment_config=segment_config)
    known = train.select(C.CUSTOMER_ID).distinct()
    test_customers = test.groupBy(C.CUSTOMER_ID).agg(F.mode(C.COUNTRY, deterministic=True).alias(C.COUNTRY))
    groups = {
        "warm": test_customers.join(known, C.CUSTOMER_ID).cache(),
        "cold": test_customers.join(known, C.CUSTOMER_ID, "left_anti").cache(),
    }
    relevant = {
        list_name: evaluation.relevant_items(test.join(groups[group].select(C.CUSTOMER_ID), C.CUSTOMER_ID), train, mode=mode).cache()
        for list_name, (group, mode) in RELEVANCE.items()
    }
    results = {"cutoff": cutoff.isoformat(), "end": (end - dt.timedelta(days=1)).isoformat(),
               "warm_customers": groups["warm"].count(), "cold_customers": groups["cold"].count(),
               "catalogue": train.select(C.ITEM_ID).distinct().count()}
    if tuning is not None and tuning.budget_seconds > 0:
        names = [ALL_SEGMENTS] + sorted(row[C.SEGMENT] for row in segments.groupBy(C.SEGMENT).count().collect()
                                        if row["count"] >= config.min_segment_customers)
        started_tuning = time.monotonic()
        if "tifu" in config.models:  # TIFU-KNN takes a share of the budget like one more segment
            tifu = tune_tifu(train, relevant["for_you"], as_of=cutoff, config=tuning, k=config.k,
                             budget_seconds=tuning.budget_seconds / (len(names) + 1), echo=echo)
            results["tifu_tuning"] = tifu.as_dict()
            tifu_settings = tifu.best.settings
        left = dataclasses.replace(tuning, budget_seconds=max(0.0, tuning.budget_seconds - (time.monotonic() - started_tuning)))
        tuned = tune(train, relevant["discover"], segments, as_of=cutoff, config=left, k=config.k, segment_names=names, echo=echo)
        results["tuning"] = {name: result.as_dict() for name, result in tuned.items()}
        als_settings = {name: result.best.settings for name, result in tuned.items()}
    elif tuning is not None:
        results["tuning"] = {}  # no budget: every model uses the first value of each parameter
        als_settings, tifu_settings = {ALL_SEGMENTS: tuning.start()}, tuning.tifu_start()
    lists_scored = ({name: config.candidates(name) for name in RELEVANCE} if contenders is None
                    else {name: list(running) for name, running in contenders.items()})
    needed, segment_als_serves = None, None
    if contenders is not None:  # and per-segment ALS only for the segments where it may still be chosen
        needed = sorted({part for names in lists_scored.values() for name in names for part in source_parts(name)})
        segment_als_serves = segments_scored_with(contenders, "segment_als")
    sources = fit_sources(train, as_of=cutoff, segments=segments, config=config, als_settings=als_settings, tifu_settings=tifu_settings,
                          models=needed, segment_als_serves=segment_als_serves, echo=echo)
    # What is served, over the same fitted sources: scored as it would be written.
    routed = None if routes is None else RoutedRecommender(routes=routes, als_settings=als_settings, tifu_settings=tifu_settings,
                                                           config=config).assemble(sources, segments)
    score = functools.partial(score_lists, k=config.k, catalogue_size=results["catalogue"], intervals=intervals)

    def score_list(list_name: str):
        customers = groups[RELEVANCE[list_name][0]]
        by_segment = None if list_name == "cold" else segments
        lists = candidate_lists(sources, customers, list_name, config, names=lists_scored[list_name])
        if routed is not None:
            lists["routed"] = materialize(routed.recommend(customers, config.n, list_name=list_name))
        return score(lists, relevant[list_name], segments=by_segment)

    def score_similar_items():
        return score(similar_item_lists(sources, train, groups["warm"], config), relevant["discover"])

    tasks = {name: functools.partial(score_list, name) for name in lists_scored}
    if contenders is None and scores_item_to_item(config, routes):
        tasks["similar_items"] = score_similar_items
    if echo:
        echo(f"    scoring every source of {', '.join(tasks)} on {results['warm_customers']:,} warm and "
             f"{results['cold_customers']:,} cold customers")
    # The lists are independent: made and scored side by side (see in_parallel).
    scored = in_parallel(tasks)
    results["lists"] = {name: scored[name] if contenders is None else still_in_the_running(scored[name], contenders[name])
                        for name in lists_scored}
    results["similar_items"] = scored.get("similar_items", [])
    # Models, segments and customer groups of this window are not needed any more.
    purchases.sparkSession.catalog.clearCache()
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def window_segments(purchases, returns, *, cutoff: dt.date, clv_config, segment_config):
    """customer_id, segment: the value segments of the customers who bought before ``cutoff``, as of that day, computed
    now and kept apart from the cache (a window clears that when it is done, while the next window's may be ready)."""
    train, _ = evaluation.split_by_time(purchases, cutoff=cutoff)
    segmented = segment_customers(train, returns, as_of=cutoff, clv_config=clv_config, segment_config=segment_config)
    return segmented.customers.select(C.CUSTOMER_ID, C.SEGMENT).localCheckpoint(eager=True)


def scores_item_to_item(config: RoutingConfig, routes: dict | None) -> bool:
    """Whether a window scores its item-to-item sources: always when it reports on routes it was given, and when
    it chooses them (``routes`` None) only if there is a choice: a lone source's score decides nothing."""
    return routes is not None or len(config.similar_item_sources()) > 1


def chosen_settings(tuning: dict) -> dict[str, ALSSettings]:
    """The winning ALS settings per segment, from the ``tuning`` part of a window's results."""
    return {name: ALSSettings(**result["chosen"]) for name, result in tuning.items()}


def customer_sample(purchases, returns, max_customers: int):
    """Purchases and returns of a hash sample of about ``max_customers`` customers (everyone when there are fewer), and the share kept."""
    from pyspark.sql import functions as F

    customers = purchases.select(C.CUSTOMER_ID).distinct().count()
    if customers <= max_customers:
        return purchases, returns, 1.0
    buckets = 100_000
    kept = math.ceil(buckets * max_customers / customers)
    keep = F.pmod(F.xxhash64(C.CUSTOMER_ID), F.lit(buckets)) < kept
    return purchases.where(keep), returns.where(keep), kept / buckets


def validation_windows(history: History, config: RoutingConfig, *, end: dt.date) -> list[Window]:
    """The validation windows, latest first: the one ending the day before ``end`` (``config.validation_days`` long, else
    chosen from the history), then up to ``config.validation_windows - 1`` as long before it, as far as the history allows."""
    windows = [choose_window(history, config.validation_rule(), days=config.validation_days, end=end)]
    while not windows[0].skipped and len(windows) < config.validation_windows:
        try:
            earlier = choose_window(history, config.validation_rule(), days=windows[0].days, end=windows[-1].start)
            windows.append(dataclasses.replace(earlier, reason="as long as the latest, just before the window after it (rolling origin)"))
        except WindowError:
            break  # too little history before it: the windows so far decide
    return windows


def describe_windows(windows: list[Window]) -> str:
    if len(windows) == 1:
        return windows[0].describe()
    return f"{len(windows)} validation windows (rolling origin): " + "; ".join(window.describe() for window in windows)


def unvalidated_choice(config: RoutingConfig, tuning: TuningConfig, window: Window) -> dict:
    """What ``validate`` returns when ``window`` was skipped: fixed routes, default ALS settings, the first item-to-item source."""
    return {
        "window": {"window": window.as_dict(), "tuning": {}},
        "routes": {list_name: unvalidated_routes(list_name, config) for list_name in RELEVANCE},
        "als_settings": {ALL_SEGMENTS: tuning.start()},
        "tifu_settings": tuning.tifu_start(),
        "similar_items_source": config.similar_item_sources()[0],
    }


def validate(purchases, returns, *, windows: list[Window], config: RoutingConfig, tuning: TuningConfig, clv_config, segment_config,
             echo=None) -> dict:
    """Tune on the latest of the validation ``windows`` (see ``validation_windows``), score every source on each, and
    choose the routes that hold on all of them (``choose_routes``).

    A skipped latest window, or one whose earlier history cannot be segmented, validates nothing:
    the lists get fixed routes (``unvalidated_choice``), and the window's reason says why. An
    earlier window whose history cannot be segmented is left out, and the manifest says so.

    Routes are chosen by comparing sources on the same customers, which a sample does as
    well as everyone: beyond ``config.validation_customers`` the window is a hash sample of
    customers, so validation costs stop growing with the data while the final fit does not.
    (The validation models learn from the sample only, which tends to understate the
    collaborative ones against the final fit.)
    """
    window, *earlier = windows
    if window.skipped:
        return unvalidated_choice(config, tuning, window)
    purchases, returns, share = customer_sample(purchases, returns, config.validation_customers)
    common = {"config": config, "clv_config": clv_config, "segment_config": segment_config, "echo": echo}
    # An earlier window's segments need nothing from the latest: segmented on the side while the latest is tuned and scored.
    segmenting = {before: in_background(functools.partial(window_segments, purchases, returns, cutoff=before.start, clv_config=clv_config,
                                                          segment_config=segment_config)) for before in earlier}
    try:
        validation = evaluate_window(purchases, returns, cutoff=window.start, end=window.end, tuning=tuning, **common)
    except SegmentationError as error:
        return unvalidated_choice(config, tuning, Window(
            window.name, window.end, None, f"{window.reason}, but the history before {window.start} cannot be segmented: {error}"))
    validation.update(customer_share=share, window=window.as_dict())
    als_settings = chosen_settings(validation["tuning"]) or {ALL_SEGMENTS: tuning.start()}
    tifu_settings = TifuSettings(**validation["tifu_tuning"]["chosen"]) if "tifu_tuning" in validation else tuning.tifu_start()
    scored = [validation]
    validation["earlier_windows"] = []
    # Only what can still be chosen is scored again: popularity, and sources ahead of it, in the segments where they are.
    contenders = {name: sources for name, rows in validation["lists"].items() if len(sources := contenders_after(rows)) > 1}
    for before in earlier:
        if not contenders:
            validation["earlier_windows"].append({"window": before.as_dict(), "left_out": "no source beat popularity significantly on "
                                                  "the latest window: there is nothing for an earlier one to confirm"})
            continue
        if echo:
            echo(f"  validation: score {', '.join(sorted({name for names in contenders.values() for name in names}))} on the "
                 f"{before.describe()}, with the settings tuned on the latest")
        try:
            scored.append(evaluate_window(purchases, returns, cutoff=before.start, end=before.end, als_settings=als_settings,
                                          tifu_settings=tifu_settings, contenders=contenders, segments=segmenting[before].result(),
                                          **common))
            scored[-1]["window"] = before.as_dict()
            validation["earlier_windows"].append(scored[-1])
        except SegmentationError as error:
            validation["earlier_windows"].append({"window": before.as_dict(),
                                                  "left_out": f"the history before {before.start} cannot be segmented: {error}"})
    by_list = {name: [result["lists"][name] for result in scored if name in result["lists"]] for name in validation["lists"]}
    return {
        "window": validation,
        # A list no validation customer could be scored on (no warm customers, say) is not validated either.
        "routes": {list_name: choose_routes(windows, min_customers=config.min_route_customers) or unvalidated_routes(list_name, config)
                   for list_name, windows in by_list.items()},
        "als_settings": als_settings,
        "tifu_settings": tifu_settings,
        "similar_items_source": choose_similar_source(validation["similar_items"], config.similar_item_sources()),
    }


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The evaluation's test window (``jobs.evaluate``): the routes are chosen on the validation window before it."""

    cutoff: dt.date | None = None  # first day of the test window; default: test_days before the as-of date
    test_days: int | None = None  # None: test_share of the history before the as-of date, at most max_test_days
    test_share: float = 0.25
    max_test_days: int = 92
    min_test_days: int = 14

    def rule(self) -> WindowRule:
        return WindowRule(name="test window", flag="--test-days", share=self.test_share, max_days=self.max_test_days,
                          min_days=self.min_test_days)

    def window(self, history: History) -> Window:
        """The test window: from ``cutoff`` or ``test_days`` when given, else chosen from the history; never skipped."""
        days = self.test_days
        if self.cutoff is not None:
            days = (history.as_of - self.cutoff).days
            if days < 1:
                raise WindowError(f"--cutoff {self.cutoff} leaves an empty test window before {history.describe_as_of()}")
        window = choose_window(history, self.rule(), days=days)
        if window.skipped:
            raise WindowError(f"too little history to evaluate: {window.reason}")
        return window
