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
import sys

from runtime import cli, layout
from runtime.spark import build_session
from runtime.stages.evaluation import format_results, run_evaluation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    cli.add_evaluation_arguments(parser)
    cli.add_recommendation_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = cli.resolve_settings(args, app_name="segrec-evaluate")
    spark = build_session(settings.spark)
    layout.fit_to_transactions(spark, args.output)
    print(format_results(run_evaluation(spark, args.output, as_of=args.as_of, settings=settings)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
