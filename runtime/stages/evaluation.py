"""The evaluation: choose routes on a validation window, then score every source and the routed recommender on a test window after it."""

from __future__ import annotations

import dataclasses
import datetime as dt

from cf.tuning import ALL_SEGMENTS
from routing.routes import BASELINE, describe_routes
from routing.validation import RELEVANCE, describe_windows, evaluate_window, validate, validation_windows
from runtime import layout, storage
from runtime.config import Settings
from segmentation import columns as C
from segmentation.windows import read_history

STAGE = layout.EVALUATION


@dataclasses.dataclass(frozen=True)
class TestSetup:
    """The evaluation's inputs: transactions, the test window and what validation before it chose."""
    purchases: object
    returns: object
    test_window: object
    chosen: dict
    common: dict  # routing, CLV and segment settings, as ``evaluate_window`` takes them


def choose_before_test_window(spark, output_uri: str, *, as_of: dt.date | None, settings: Settings, echo=print) -> TestSetup:
    """Read the transactions, place the test window, and choose routes and ALS settings on the validation window before it."""
    purchases, returns = layout.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    test_window = settings.evaluation.window(history)
    common = {"config": settings.routing, "clv_config": settings.clv, "segment_config": settings.segments}
    windows = validation_windows(history, settings.routing, end=test_window.start)
    echo(f"validation: tune and choose routes on the {describe_windows(windows)}")
    chosen = validate(purchases, returns, windows=windows, tuning=settings.tuning, echo=echo, **common)
    return TestSetup(purchases, returns, test_window, chosen, common)


def run_evaluation(spark, output_uri: str, *, as_of: dt.date | None, settings: Settings, echo=print) -> dict:
    routing_config, tuning_config = settings.routing, settings.tuning
    setup = choose_before_test_window(spark, output_uri, as_of=as_of, settings=settings, echo=echo)
    purchases, returns, test_window, chosen, common = setup.purchases, setup.returns, setup.test_window, setup.chosen, setup.common
    cutoff, end = test_window.start, test_window.end
    echo(f"test: fit before {cutoff}, score the {test_window.describe()}")
    test = evaluate_window(purchases, returns, cutoff=cutoff, end=end, routes=chosen["routes"], als_settings=chosen["als_settings"],
                           tifu_settings=chosen["tifu_settings"], intervals=True, echo=echo, **common)
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
    lines = [f"test window {test['cutoff']}..{test['end']}: {test['warm_customers']:,} warm and {test['cold_customers']:,} cold customers",
             "each figure: mean [95% bootstrap interval over customers]"]
    tables = {**test["lists"], "also_bought": test["similar_items"]}
    for list_name, rows in tables.items():
        overall = sorted((row for row in rows if row[C.SEGMENT] == ALL_SEGMENTS), key=lambda row: -row["ndcg"])
        relevance = RELEVANCE.get(list_name, RELEVANCE["discover"])[1]
        lines.append(f"\n{list_name} ({relevance} items), NDCG@{k} on the test window:")
        lines.append(f"  {'source':<28} {'ndcg':>20} {'recall':>20} {'hit rate':>20} {'cover':>6}")
        for row in overall:
            lines.append(f"  {row['source']:<28} {with_interval(row, 'ndcg'):>20} {with_interval(row, 'recall'):>20} "
                         f"{with_interval(row, 'hit_rate'):>20} {row['coverage']:>6.3f}")
        segments = sorted({row[C.SEGMENT] for row in rows} - {ALL_SEGMENTS, None})
        if segments and any(row["source"] == "routed" for row in rows):
            lines.append(f"  per segment, NDCG@{k}: served (routed) against popularity")
            for segment in segments:
                here = {row["source"]: row for row in rows if row[C.SEGMENT] == segment}
                routed, popular = here.get("routed"), here.get(BASELINE)
                if routed and popular:
                    lines.append(f"    {segment:<10} {routed['customers']:>7,} customers  routed {with_interval(routed, 'ndcg'):>20}"
                                 f"  popularity {with_interval(popular, 'ndcg'):>20}")
        if list_name in result["routes"]:
            routes = result["routes"][list_name]
            lines.append("  routes chosen on validation: " + describe_routes(routes))
    lines.append(f"  item-to-item source chosen on validation: {result['similar_items_source']}")
    lines.append("\nsettings tuned on validation (ALS: discover NDCG; TIFU-KNN: for_you NDCG; default -> chosen):")
    tuning = result["validation"]["tuning"]
    if "tifu_tuning" in result["validation"]:
        tuning = {**tuning, "tifu": result["validation"]["tifu_tuning"]}
    for segment_name, tuned in tuning.items():
        chosen = ", ".join(f"{key} {value}" for key, value in tuned["chosen"].items())
        lines.append(f"  {segment_name:<6} {tuned['default_ndcg']:.3f} -> {tuned['validation_ndcg']:.3f} "
                     f"({len(tuned['trials'])} trials): {chosen}")
    return "\n".join(lines)


def with_interval(row: dict, metric: str) -> str:
    """``0.358 [0.347, 0.369]``, or the mean alone when the row has no interval."""
    if row.get(f"{metric}_low") is None:
        return f"{row[metric]:.3f}"
    return f"{row[metric]:.3f} [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]"
