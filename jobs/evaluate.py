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
import sys

from jobs import cli, layout, storage
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session
from cf.tuning import ALL_SEGMENTS, TuningConfig
from routing.routes import RoutingConfig, describe_routes
from routing.validation import RELEVANCE, evaluate_window, validate, validation_window
from segmentation import columns as C
from segmentation.windows import History, Window, WindowError, WindowRule, choose_window, read_history

STAGE = layout.EVALUATION


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


def run_evaluation(spark, output_uri: str, *, as_of: dt.date | None, config: EvaluationConfig, routing_config: RoutingConfig,
                   tuning_config: TuningConfig, clv_config, segment_config, echo=print) -> dict:
    purchases, returns = layout.read_transactions(spark, output_uri)
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
            lines.append("  routes chosen on validation: " + describe_routes(routes))
    lines.append(f"  item-to-item source chosen on validation: {result['similar_items_source']}")
    lines.append("\nALS settings tuned on validation (discover NDCG, default -> chosen):")
    for segment_name, tuned in result["validation"]["tuning"].items():
        chosen = ", ".join(f"{key} {value}" for key, value in tuned["chosen"].items())
        lines.append(f"  {segment_name:<6} {tuned['default_ndcg']:.3f} -> {tuned['validation_ndcg']:.3f} "
                     f"({len(tuned['trials'])} trials): {chosen}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    parser.add_argument("--cutoff", type=cli.as_of_date, help="first day of the test window (default: --test-days before the as-of date)")
    parser.add_argument("--test-days", type=int, help="test window length (default: a quarter of the history before the "
                        "as-of date, at most 92)")
    cli.add_recommendation_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    config = build(EvaluationConfig, settings.get("evaluation"), {"cutoff": args.cutoff, "test_days": args.test_days})
    routing_config, tuning_config = cli.recommendation_configs(args, settings)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-evaluate"}, settings.get("spark"), {"master": args.master}))
    layout.fit_to_transactions(spark, args.output)
    clv_config, segment_config, _ = cli.segment_configs(args, settings)
    result = run_evaluation(spark, args.output, as_of=args.as_of, config=config, routing_config=routing_config,
                            tuning_config=tuning_config, clv_config=clv_config, segment_config=segment_config)
    print(format_results(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
