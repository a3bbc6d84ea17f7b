"""Turn the pipeline's outputs into the one SQLite file the web app serves.

    python -m jobs.publish --output output --db output/segrec.sqlite

The file is built next to its destination under a temporary name and renamed
into place only when complete and checked, so the app (which watches the file)
only ever sees a whole store. Rows are streamed from Spark partition by
partition (``toLocalIterator``): the driver holds one partition at a time, not
the tables. The web app never imports pyspark; this job is the only bridge.
"""

from __future__ import annotations

import argparse
import os
import sys

from runtime import cli
from runtime.spark import build_session
from runtime.stages.publish import publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory")
    parser.add_argument("--db", help="SQLite file to publish (a local path; default <output>/segrec.sqlite)")
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = cli.resolve_settings(args, app_name="segrec-publish")
    spark = build_session(settings.spark)
    result = publish(spark, args.output, args.db or os.path.join(args.output, "segrec.sqlite"), settings.content)
    print(f"published {result['db']} (as of {result['as_of']}): " + ", ".join(f"{table} {n:,}" for table, n in result["rows"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
