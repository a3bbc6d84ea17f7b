"""The whole segrec pipeline, stage by stage, on one SparkSession.

    python -m jobs.pipeline --input data/online_retail_ii.parquet --output output
    spark-submit jobs/pipeline.py --input hdfs:///retail/tx.parquet --output hdfs:///segrec

Each stage reads what earlier stages published under ``--output`` and publishes
its own directory there atomically; ``--stages`` runs a subset. Progress is
printed per stage (rows in/out, elapsed) and the run is summarised in
``<output>/run.json``.
"""

from __future__ import annotations

import argparse
import sys

from runtime import cli
from runtime.pipeline import STAGES, RunContext, run_pipeline, selected_stages
from runtime.spark import build_session, fit_to_input


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="raw transactions: CSV, Parquet or Excel (path or URI)")
    parser.add_argument("--output", required=True, help="output directory (path or URI)")
    parser.add_argument("--stages", help=f"comma-separated subset of: {', '.join(STAGES)} (default: all)")
    cli.add_ingest_arguments(parser)
    cli.add_segment_arguments(parser)
    cli.add_recommendation_arguments(parser)
    cli.add_train_arguments(parser)
    cli.add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stages = selected_stages(args.stages)
    settings = cli.resolve_settings(args, app_name="segrec-pipeline")
    spark = build_session(settings.spark)
    fit_to_input(spark, args.input)
    run_pipeline(RunContext(spark=spark, input_uri=args.input, output_uri=args.output, as_of=args.as_of, settings=settings,
                            events_uri=args.events), stages)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
