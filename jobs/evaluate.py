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

    python -m jobs.evaluate --output output --replay   # writes output/evaluation-replay

``--replay`` instead feeds the test window's purchases back day by day as events
and scores each customer's next purchase day with the static batch lists and with
the lists those events move (``webapp.live``, as the API serves them).
"""

from __future__ import annotations

import argparse
import sys

from runtime import cli, layout
from runtime.spark import build_session
from runtime.stages.evaluation import format_results, run_evaluation
from runtime.stages.replay import format_replay, run_replay
from webapp.live import LiveSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    cli.add_evaluation_arguments(parser)
    parser.add_argument("--replay", action="store_true", help="replay the test window's purchases as events: static lists "
                        "against event-moved lists, instead of scoring every source")
    parser.add_argument("--event-share", type=float, default=LiveSettings.event_share,
                        help="with --replay: the events' share of a fused list score, as the app's SEGREC_EVENT_SHARE")
    parser.add_argument("--event-half-life-hours", type=float, default=LiveSettings.half_life_hours,
                        help="with --replay: hours an event takes to pull half as hard, as the app's SEGREC_EVENT_HALF_LIFE_HOURS")
    parser.add_argument("--exploration-share", type=float, default=LiveSettings.exploration_share,
                        help="with --replay: discover's share of slots for new items, as the app's SEGREC_EXPLORATION_SHARE")
    cli.add_recommendation_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    try:
        live_settings = LiveSettings(event_share=args.event_share, half_life_hours=args.event_half_life_hours,
                                     exploration_share=args.exploration_share)
    except ValueError as error:
        parser.error(str(error))
    settings = cli.resolve_settings(args, app_name="segrec-evaluate")
    spark = build_session(settings.spark)
    layout.fit_to_transactions(spark, args.output)
    if args.replay:
        print(format_replay(run_replay(spark, args.output, as_of=args.as_of, settings=settings, live_settings=live_settings)))
    else:
        print(format_results(run_evaluation(spark, args.output, as_of=args.as_of, settings=settings)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
