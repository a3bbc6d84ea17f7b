"""Fit the final models and write the lists that are served.

    python -m jobs.train --output output      # reads output/ingest and output/segments

First the last ``--validation-days`` before the as-of date (default: a quarter
of the history, at most 90 days) serve as a validation window: ALS settings are
tuned per segment within ``--tune-budget`` seconds, every candidate source is
scored, and the routes (which source serves each segment's list) and the
item-to-item source are chosen; with too little history for a window, each list
gets a fixed route that needs no tuning (``routing.routes.UNVALIDATED``). Then the models
those routes need are refitted on everything before the as-of date and the
lists are written, atomically, to ``<output>/recommendations``:

    recommendations/  customer_id, list, rank, item_id, score, source
                      (lists discover, for_you and buy_again for every known customer)
    trending/         country (null: everyone), rank, item_id, score, source: what
                      customers unknown to the models are served
    similar_items/    item_id, rank, similar_item_id, score: "also bought", every item
    model/            the routed recommender that made them (routing.model; load with RoutedRecommender.load)
    manifest.json     routes, tuned ALS settings with every trial, validation scores

Routes change slowly while validation is most of this stage's time on small
inputs. ``--reuse-routes DAYS`` skips it when the last run written under
``--output`` chose its routes at most DAYS before this as-of date, under the same
settings; otherwise it validates as usual and says why. A daily refit can then
validate once a week: ``--reuse-routes 6``.
"""

from __future__ import annotations

import argparse
import sys

from runtime import cli, layout
from runtime.spark import build_session
from runtime.stages.recommendations import format_manifest, run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest and <output>/segments)")
    cli.add_recommendation_arguments(parser)
    cli.add_train_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = cli.resolve_settings(args, app_name="segrec-train")
    spark = build_session(settings.spark)
    layout.fit_to_transactions(spark, args.output)
    print(format_manifest(run_train(spark, args.output, as_of=args.as_of, settings=settings)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
