"""Where each stage reads and writes under the pipeline's output directory (a path or URI): the one definition.

    <output>/ingest/           clean/, returns/, anonymous/, quarantine/ (transactions.ingest.PLACES), summary.json
    <output>/segments/         customers/, segments/, model/, clv.json, summary.json
    <output>/backtest/         backtest.json
    <output>/recommendations/  recommendations/, trending/, similar_items/, models/, manifest.json
    <output>/report/           index.html and a PNG per chart
    <output>/evaluation/       evaluation.json (jobs.evaluate, run on its own)
    <output>/run.json          what jobs.pipeline ran, with figures per stage
    <output>/runs/             each run's customers under its run id, and CURRENT (runtime/history.py)
    <output>/segrec.sqlite     what jobs.publish made of it all, for the web app
"""

from __future__ import annotations

from runtime import storage
from runtime.spark import fit_to_input
from transactions.ingest import CLEAN, RETURNS

INGEST = "ingest"
SEGMENTS = "segments"
BACKTEST = "backtest"
RECOMMENDATIONS = "recommendations"
REPORT = "report"
EVALUATION = "evaluation"
REPLAY = "evaluation-replay"
RUN_SUMMARY = "run.json"
RUNS = "runs"


PRODUCED_BY = {
    INGEST: "the ingest stage (jobs.ingest)",
    SEGMENTS: "the segments stage (jobs.segment)",
    BACKTEST: "the backtest stage (jobs.segment --backtest)",
    RECOMMENDATIONS: "the recommendations stage (jobs.train)",
    REPORT: "the report stage (jobs.report)",
}


def stage(output_uri: str, name: str) -> str:
    """Where stage ``name`` publishes under ``output_uri``."""
    return storage.join(output_uri, name)


def open_stage(spark, output_uri: str, name: str) -> str:
    """Stage ``name``'s published directory, recovered if a publish was interrupted; a clear error if it was never run."""
    return storage.open_stage(spark, stage(output_uri, name), produced_by=PRODUCED_BY[name])


def read_transactions(spark, output_uri: str):
    """The ingest's clean purchases and returns, as the later stages read them."""
    ingested = open_stage(spark, output_uri, INGEST)
    return spark.read.parquet(storage.join(ingested, CLEAN)), spark.read.parquet(storage.join(ingested, RETURNS))


def fit_to_transactions(spark, output_uri: str) -> None:
    """For a stage run on its own: the session sized to the ingest's output, as the pipeline sizes it to its input."""
    fit_to_input(spark, stage(output_uri, INGEST))
