"""The whole pipeline on synthetic data, and the marketer report it ends with."""

import base64
import datetime as dt
import io
import json
import re
import shutil

import matplotlib.image
import pytest

from jobs import pipeline, report, segment
from runtime import cli, layout
from segmentation.report import top_items_per_segment

CHART_NAMES = ["segment_sizes", "distributions", "frequency_vs_spend", "clv_backtest", "top_items"]


@pytest.fixture(scope="module")
def run(pipeline_run):
    return pipeline_run


def test_every_stage_ran_and_published(run):
    record = json.loads((run / "run.json").read_text())
    assert [stage["stage"] for stage in record["stages"]] == ["ingest", "segments", "backtest", "recommendations", "report"]
    assert sorted(p.name for p in run.iterdir()) == ["backtest", "ingest", "recommendations", "report", "run.json", "runs", "segments"]
    segments = json.loads((run / "segments" / "summary.json").read_text())
    assert set(segments["segments"]) == {"high", "mid", "low"}
    assert sorted(p.name for p in (run / "segments").iterdir()) == ["clv.json", "customers", "lifecycle", "model", "segments", "summary.json"]
    assert sum(state["customers"] for state in segments["lifecycle"].values()) == sum(segments["segments"].values())
    backtest = json.loads((run / "backtest" / "backtest.json").read_text())
    assert [row["variant"] for row in backtest["variants"]] == ["bgnbd", "bgnbd+seasonal", "past spend"]


def test_pipeline_prints_each_stage(pipeline_printout):
    out = pipeline_printout
    assert list(pipeline.STAGES) == ["ingest", "segments", "backtest", "recommendations", "report"]
    for number, stage in enumerate(pipeline.STAGES, start=1):
        assert f"[{number}/5] {stage} ..." in out
    assert re.search(r"\[2/5\] segments: [\d,]+ rows in, [\d,]+ out, [\d.]+s \(high [\d,]+, low [\d,]+, mid [\d,]+; silhouette", out)
    assert re.search(r"\[4/5\] recommendations: [\d,]+ rows in, [\d,]+ out, [\d.]+s \(discover: all ", out)
    assert "done: 5 stage(s)" in out


def test_report_embeds_every_chart_and_opens_from_disk(run):
    page = (run / "report" / "index.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', page)
    assert [alt for alt, _ in images] == [
        "Segment size and revenue share", "RFM and CLV by segment", "Purchase frequency against spend", "CLV backtest",
        "Top items per segment",
    ]
    for _, data in images:
        picture = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert picture.shape[0] > 300 and picture.shape[1] > 500
    assert "http://" not in page and "https://" not in page.split("Made by segrec")[0]  # nothing to fetch
    assert "How good is the CLV forecast?" in page and "past spend" in page


def test_each_chart_is_also_a_png_file_with_a_caption(run):
    page = (run / "report" / "index.html").read_text()
    for name in CHART_NAMES:
        assert (run / "report" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captions = re.findall(r'<img [^>]+><p>([^<]+)</p>', page)
    assert len(captions) == len(CHART_NAMES) and all(len(caption) > 30 for caption in captions)


def test_top_items_come_with_descriptions(spark, run):
    purchases, _ = layout.read_transactions(spark, str(run))
    customers = spark.read.parquet(str(run / "segments" / "customers"))
    items = top_items_per_segment(purchases, customers, dt.date(2011, 12, 12), per_segment=5)
    assert set(items.segment) == {"high", "mid", "low"}
    assert items.groupby("segment").size().tolist() == [5, 5, 5]
    assert items.description.str.startswith("GROUP ").all()
    assert (items.groupby("segment").buyers.apply(lambda b: b.is_monotonic_decreasing)).all()
    bought = purchases.where(f"timestamp < '{dt.date(2011, 12, 12)}'").select("customer_id", "item_id").toPandas().merge(
        customers.select("customer_id", "segment").toPandas(), on="customer_id")
    buyers = bought.groupby(["segment", "item_id"]).customer_id.nunique()
    assert all(buyers[(row.segment, row.item_id)] == row.buyers for row in items.itertuples())


def test_the_report_explains_the_lifecycle_states_in_the_configured_currency_and_credits_the_data(spark, run, tmp_path):
    page = (run / "report" / "index.html").read_text()
    assert "Made by segrec. Data: transactions." in page  # no credit configured: the input's name
    run = shutil.copytree(run, tmp_path / "run")
    config = tmp_path / "segrec.toml"
    config.write_text('[report]\ncurrency = "€"\ndata_credit = "Data: a test shop <demo>."\n')
    assert cli.run(report.main, ["--output", str(run), "--config", str(config)]) == 0
    page = (run / "report" / "index.html").read_text()
    assert "Made by segrec. Data: a test shop &lt;demo&gt;." in page and "£" not in page
    lifecycle = page[page.index("<h2>Lifecycle: who is still buying</h2>"):].split("</section>")[0]
    summary = json.loads((run / "segments" / "summary.json").read_text())
    for state, name in (("new", "New"), ("active", "Active"), ("at_risk", "At risk"), ("lapsed", "Lapsed")):
        figures = summary["lifecycle"][state]
        assert f"<td>{name}</td><td>{summary['lifecycle_explained'][state]}</td><td>{figures['customers']:,}</td><td>€{figures['revenue']:,.0f}</td>" in lifecycle
    assert json.loads((run / "report" / "report.json").read_text()) == {"currency": "€"}


def test_report_before_segments_says_what_to_run(spark, tmp_path, capsys):
    status = cli.run(report.main, ["--output", str(tmp_path)])
    assert status == 2
    assert "run the segments stage (jobs.segment) first" in capsys.readouterr().err


def test_backtest_command_with_a_calibration_end(spark, run, tmp_path, capsys):
    # On a copy: other tests (the cluster comparison among them) need the run as the pipeline wrote it.
    run = shutil.copytree(run, tmp_path / "run")
    config = tmp_path / "segrec.toml"
    config.write_text('[backtest]\nmodels = ["mbgnbd"]\n')
    status = cli.run(segment.main, ["--output", str(run), "--backtest", "--calibration-end", "2011-06-30", "--config", str(config)])
    out = capsys.readouterr().out

    assert status == 0
    assert "calibration to 2011-06-30, hold-out 2011-07-01..2011-12-" in out
    assert re.search(r"mbgnbd\+seasonal\s+[\d,]+\s+[\d,]+\s+[+-][\d.]+%", out)
    assert "hold-out revenue per customer by calibration segment" in out
    backtest = json.loads((run / "backtest" / "backtest.json").read_text())
    assert backtest["calibration_end"] == "2011-06-30"
    # The model the segments really use is always backtested, whatever the list says.
    assert backtest["chosen_variant"] == "bgnbd+seasonal"
    assert [row["variant"] for row in backtest["variants"]] == ["bgnbd", "bgnbd+seasonal", "mbgnbd", "mbgnbd+seasonal", "past spend"]


def test_evaluation_with_a_cutoff_after_the_data_is_one_clear_line(spark, run, capsys):
    from jobs import evaluate

    status = cli.run(evaluate.main, ["--output", str(run), "--cutoff", "2012-01-01"])
    assert status == 2
    assert capsys.readouterr().err.strip() == ("error: --cutoff 2012-01-01 leaves an empty test window before the as-of date "
                                               "2011-12-12 (the day after the last purchase; --as-of sets another)")
