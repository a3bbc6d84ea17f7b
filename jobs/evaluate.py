"""Evaluate every recommender on a temporal hold-out, and choose routes on a validation window.

    python -m jobs.evaluate --output output          # reads output/ingest, writes output/evaluation

Test window: the last ``--test-days`` before the as-of date (default: a quarter
of the history, at most 92 days); training is everything before it. ALS settings
are tuned (within ``--tune-budget`` seconds) and routes chosen on a validation
window carved from the end of the training period (``--validation-days``: a
quarter of the history before the test window, at most 90 days), with models
fitted on what came before it, so nothing from the test window is seen when choosing. The train
stage (``jobs.train``) runs the same validation before the as-of date.
Warm customers (bought before the cutoff) are scored on ``discover`` (new items
only) and ``for_you`` (all purchases); cold customers (first purchase after the
cutoff) on ``cold``. Every source and the routed system are reported, overall
and per value segment.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import math
import sys
import time

from jobs import cli, segment, storage
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session
from cf import evaluation, routing
from cf.base import in_parallel
from cf.routing import RoutingConfig
from cf.tuning import ALL_SEGMENTS, ALSSettings, TuningConfig, tune
from segmentation import columns as C
from segmentation.customers import segment_customers
from segmentation.rfm import SegmentationError
from segmentation.windows import History, Window, WindowError, WindowRule, choose_window, read_history

STAGE = "evaluation"
# list -> (customers it is scored on, which test purchases count)
RELEVANCE = {"discover": ("warm", "new"), "for_you": ("warm", "all"), "cold": ("cold", "all")}


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
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


def evaluate_window(purchases, returns, *, cutoff: dt.date, end: dt.date, config: RoutingConfig, clv_config, segment_config,
                    tuning: TuningConfig | None = None, als_settings: dict | None = None, routes: dict | None = None,
                    echo=None) -> dict:
    """Fit on purchases before ``cutoff`` and score [cutoff, end): every source, and the routed system when ``routes`` is given.

    With ``tuning``, ALS settings are first searched per segment on this window
    (so only ever on a validation window) and the sources use what won;
    otherwise they use ``als_settings`` (from an earlier tuning) or the defaults.
    Item-to-item sources are scored when ``scores_item_to_item`` says so. ``echo``, when
    given, is told of each tuning trial, each model fitted and the scoring.
    """
    from pyspark.sql import functions as F

    started = time.monotonic()
    train, test = evaluation.split_by_time(purchases, cutoff=cutoff, end=end)
    segments = segment_customers(train, returns, as_of=cutoff, clv_config=clv_config, segment_config=segment_config).customers.select(
        C.CUSTOMER_ID, C.SEGMENT).cache()
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
        tuned = tune(train, relevant["discover"], segments, as_of=cutoff, config=tuning, k=config.k, segment_names=names, echo=echo)
        results["tuning"] = {name: result.as_dict() for name, result in tuned.items()}
        als_settings = {name: result.best.settings for name, result in tuned.items()}
    elif tuning is not None:
        results["tuning"] = {}  # no budget: every model uses the first value of each parameter
        als_settings = {ALL_SEGMENTS: tuning.start()}
    sources = routing.fit_sources(train, as_of=cutoff, segments=segments, config=config, als_settings=als_settings, echo=echo)
    score = functools.partial(routing.score_lists, k=config.k, catalogue_size=results["catalogue"])

    def score_list(list_name: str):
        customers = groups[RELEVANCE[list_name][0]]
        by_segment = None if list_name == "cold" else segments
        lists = routing.candidate_lists(sources, customers, list_name, config)
        if routes is not None:
            lists["routed"] = routing.serve(lists, routes[list_name], customers, by_segment, n=config.n)
        return score(lists, relevant[list_name], segments=by_segment)

    def score_similar_items():
        return score(routing.similar_item_lists(sources, train, groups["warm"], config), relevant["discover"])

    tasks = {name: functools.partial(score_list, name) for name in RELEVANCE}
    if scores_item_to_item(config, routes):
        tasks["similar_items"] = score_similar_items
    if echo:
        echo(f"    scoring every source of {', '.join(tasks)} on {results['warm_customers']:,} warm and "
             f"{results['cold_customers']:,} cold customers")
    # The lists are independent: made and scored side by side (see in_parallel).
    scored = in_parallel(tasks)
    results["lists"] = {name: scored[name] for name in RELEVANCE}
    results["similar_items"] = scored.get("similar_items", [])
    # Models, segments and customer groups of this window are not needed any more.
    purchases.sparkSession.catalog.clearCache()
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


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


def validation_window(history: History, config: RoutingConfig, *, end: dt.date) -> Window:
    """The validation window ending the day before ``end``: ``config.validation_days`` long, else chosen from the history."""
    return choose_window(history, config.validation_rule(), days=config.validation_days, end=end)


def unvalidated_choice(config: RoutingConfig, tuning: TuningConfig, window: Window) -> dict:
    """What ``validate`` returns when ``window`` was skipped: fixed routes, default ALS settings, the first item-to-item source."""
    return {
        "window": {"window": window.as_dict(), "tuning": {}},
        "routes": {list_name: routing.unvalidated_routes(list_name, config) for list_name in RELEVANCE},
        "als_settings": {ALL_SEGMENTS: tuning.start()},
        "similar_items_source": config.similar_item_sources()[0],
    }


def validate(purchases, returns, *, window: Window, config: RoutingConfig, tuning: TuningConfig, clv_config, segment_config,
             echo=None) -> dict:
    """Tune, score every source and choose the routes on the validation ``window`` (see ``validation_window``).

    A skipped window, or one whose earlier history cannot be segmented, validates nothing:
    the lists get fixed routes (``unvalidated_choice``), and the window's reason says why.

    Routes are chosen by comparing sources on the same customers, which a sample does as
    well as everyone: beyond ``config.validation_customers`` the window is a hash sample of
    customers, so validation costs stop growing with the data while the final fit does not.
    (The validation models learn from the sample only, which tends to understate the
    collaborative ones against the final fit.)
    """
    if window.skipped:
        return unvalidated_choice(config, tuning, window)
    purchases, returns, share = customer_sample(purchases, returns, config.validation_customers)
    try:
        validation = evaluate_window(purchases, returns, cutoff=window.start, end=window.end, config=config, tuning=tuning,
                                     clv_config=clv_config, segment_config=segment_config, echo=echo)
    except SegmentationError as error:
        return unvalidated_choice(config, tuning, Window(
            window.name, window.end, None, f"{window.reason}, but the history before {window.start} cannot be segmented: {error}"))
    validation.update(customer_share=share, window=window.as_dict())
    return {
        "window": validation,
        # A list no validation customer could be scored on (no warm customers, say) is not validated either.
        "routes": {list_name: routing.choose_routes(rows, min_customers=config.min_route_customers)
                   or routing.unvalidated_routes(list_name, config)
                   for list_name, rows in validation["lists"].items()},
        "als_settings": chosen_settings(validation["tuning"]) or {ALL_SEGMENTS: tuning.start()},
        "similar_items_source": routing.choose_similar_source(validation["similar_items"], config.similar_item_sources()),
    }


def run_evaluation(spark, output_uri: str, *, as_of: dt.date | None, config: EvaluationConfig, routing_config: RoutingConfig,
                   tuning_config: TuningConfig, clv_config, segment_config, echo=print) -> dict:
    purchases, returns = segment.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    test_window = config.window(history)
    cutoff, end = test_window.start, test_window.end
    common = {"config": routing_config, "clv_config": clv_config, "segment_config": segment_config}

    window = validation_window(history, routing_config, end=cutoff)
    echo(f"validation: tune and choose routes on the {window.describe()}")
    chosen = validate(purchases, returns, window=window, tuning=tuning_config, echo=echo, **common)
    echo(f"test: fit before {cutoff}, score the {test_window.describe()}")
    test = evaluate_window(purchases, returns, cutoff=cutoff, end=end, routes=chosen["routes"], als_settings=chosen["als_settings"],
                           echo=echo, **common)
    test["window"] = test_window.as_dict()
    result = {"k": routing_config.k, "validation": chosen["window"], "routes": chosen["routes"],
              "similar_items_source": chosen["similar_items_source"], "test": test,
              "settings": {"routing": dataclasses.asdict(routing_config), "tuning": dataclasses.asdict(tuning_config)}}
    with storage.atomic_output(spark, storage.join(output_uri, STAGE)) as staging:
        storage.write_json(spark, storage.join(staging, "evaluation.json"), result)
    return result


def format_results(result: dict) -> str:
    k = result["k"]
    test = result["test"]
    lines = [f"test window {test['cutoff']}..{test['end']}: {test['warm_customers']:,} warm and {test['cold_customers']:,} cold customers"]
    tables = {**test["lists"], "also_bought": test["similar_items"]}
    for list_name, rows in tables.items():
        overall = sorted((row for row in rows if row[C.SEGMENT] == ALL_SEGMENTS), key=lambda row: -row["ndcg"])
        relevance = RELEVANCE.get(list_name, RELEVANCE["discover"])[1]
        lines.append(f"\n{list_name} ({relevance} items), NDCG@{k} on the test window:")
        lines.append(f"  {'source':<34} {'ndcg':>6} {'prec':>6} {'recall':>6} {'map':>6} {'mrr':>6} {'hit':>6} {'cover':>6}")
        for row in overall:
            lines.append(f"  {row['source']:<34} {row['ndcg']:>6.3f} {row['precision']:>6.3f} {row['recall']:>6.3f} "
                         f"{row['map']:>6.3f} {row['mrr']:>6.3f} {row['hit_rate']:>6.3f} {row['coverage']:>6.3f}")
        if list_name in result["routes"]:
            routes = result["routes"][list_name]
            lines.append("  routes chosen on validation: " + routing.describe_routes(routes))
    lines.append(f"  item-to-item source chosen on validation: {result['similar_items_source']}")
    lines.append("\nALS settings tuned on validation (discover NDCG, default -> chosen):")
    for segment_name, tuned in result["validation"]["tuning"].items():
        chosen = ", ".join(f"{key} {value}" for key, value in tuned["chosen"].items())
        lines.append(f"  {segment_name:<6} {tuned['default_ndcg']:.3f} -> {tuned['validation_ndcg']:.3f} "
                     f"({len(tuned['trials'])} trials): {chosen}")
    return "\n".join(lines)


def add_recommendation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validation-days", type=int, help="validation window for tuning and routing (default: a quarter of "
                        "the history before it, at most 90; below 14 the routes are not validated)")
    parser.add_argument("--tune-budget", type=float, help="seconds for the ALS search over all segments (default 240; 0: defaults)")


def recommendation_configs(args: argparse.Namespace, settings: dict) -> tuple[RoutingConfig, TuningConfig]:
    flag = vars(args).get
    routing_config = build(RoutingConfig, settings.get("routing"), {"validation_days": flag("validation_days")})
    tuning_config = build(TuningConfig, settings.get("tuning"), {"budget_seconds": flag("tune_budget")})
    return routing_config, tuning_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    parser.add_argument("--cutoff", type=cli.as_of_date, help="first day of the test window (default: --test-days before the as-of date)")
    parser.add_argument("--test-days", type=int, help="test window length (default: a quarter of the history before the "
                        "as-of date, at most 92)")
    add_recommendation_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    config = build(EvaluationConfig, settings.get("evaluation"), {"cutoff": args.cutoff, "test_days": args.test_days})
    routing_config, tuning_config = recommendation_configs(args, settings)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-evaluate"}, settings.get("spark"), {"master": args.master}))
    segment.fit_to_transactions(spark, args.output)
    clv_config, segment_config, _ = segment.segment_configs(args, settings)
    result = run_evaluation(spark, args.output, as_of=args.as_of, config=config, routing_config=routing_config,
                            tuning_config=tuning_config, clv_config=clv_config, segment_config=segment_config)
    print(format_results(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
