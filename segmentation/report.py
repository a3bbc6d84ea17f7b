"""The segment report for marketers: the small tables its charts are drawn from, and its one HTML page.

Only small aggregates reach the driver: per-segment quantiles, a bounded sample of
customers for the scatter plot, and the top items of each segment. The page opens
from disk: its images are embedded.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from dataclasses import dataclass

import pandas as pd

from segmentation import charts
from segmentation import columns as C

SCATTER_SAMPLE = 4000
TOP_ITEMS = 10
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def distribution_stats(customers) -> pd.DataFrame:
    from pyspark.sql import functions as F

    measures = list(charts.DISTRIBUTION_MEASURES)
    stats = customers.groupBy(C.SEGMENT).agg(
        *(F.percentile_approx(F.col(m).cast("double"), list(QUANTILES), 10000).alias(m) for m in measures)
    ).toPandas()
    rows = []
    for _, row in stats.iterrows():
        for measure in measures:
            rows.append({"segment": row[C.SEGMENT], "measure": measure,
                         **{f"p{round(q * 100):02d}": value for q, value in zip(QUANTILES, row[measure])}})
    return pd.DataFrame(rows)


def customer_sample(customers, total: int) -> pd.DataFrame:
    fraction = min(1.0, SCATTER_SAMPLE / max(total, 1))
    return customers.sample(fraction=fraction, seed=7).select(C.FREQUENCY, C.TOTAL_SPEND, C.SEGMENT).limit(SCATTER_SAMPLE).toPandas()


def top_items_per_segment(purchases, customers, as_of: dt.date, per_segment: int = TOP_ITEMS) -> pd.DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    bought = purchases.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp")).join(
        customers.select(C.CUSTOMER_ID, C.SEGMENT), C.CUSTOMER_ID
    )
    # Partitioned by segment and item first, the distinct count runs on that one shuffle instead of two.
    buyers = bought.repartition(C.SEGMENT, C.ITEM_ID).groupBy(C.SEGMENT, C.ITEM_ID).agg(
        F.count_distinct(C.CUSTOMER_ID).alias("buyers"))
    ranked = buyers.withColumn("rank", F.row_number().over(Window.partitionBy(C.SEGMENT).orderBy(F.desc("buyers"), C.ITEM_ID)))
    top = ranked.where(F.col("rank") <= per_segment)
    descriptions = purchases.join(top.select(C.ITEM_ID).distinct(), C.ITEM_ID).groupBy(C.ITEM_ID).agg(
        F.mode(C.DESCRIPTION, deterministic=True).alias(C.DESCRIPTION)
    )
    return top.join(descriptions, C.ITEM_ID, "left").orderBy(C.SEGMENT, "rank").toPandas()


def _table(frame: pd.DataFrame, formats: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in formats)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt.format(row[col]) if row[col] is not None else '')}</td>" for col, fmt in formats.items()) + "</tr>"
        for _, row in frame.iterrows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class ReportConfig:
    currency: str = ""  # shown before amounts ("£", "€", "US$ "); empty: plain numbers
    data_credit: str = ""  # the footer's line on where the data comes from; empty: the input's name


def render_html(drawn: list[charts.Chart], summary: dict, table: pd.DataFrame, backtest: dict, *, config: ReportConfig = ReportConfig(),
                source: str = "") -> str:
    """The report page; ``source``: the input the pipeline read, named in the footer unless ``config.data_credit`` says more."""
    table = table.set_index("segment").loc[charts.ordered_segments(table.segment)].reset_index()
    money = config.currency.replace("{", "{{").replace("}", "}}") + "{:,.0f}"
    plain_names = {
        "share_of_customers": "share of customers", "share_of_revenue": "share of revenue",
        "median_days_since_last": "median days since last purchase", "median_frequency": "median repeat purchase days",
        "median_total_spend": "median net spend", "median_clv": "median 12-month value", "mean_p_alive": "mean chance still active",
    }
    segment_table = _table(table.rename(columns=plain_names), {
        "segment": "{}", "customers": "{:,}", "share of customers": "{:.1%}", "revenue": money, "share of revenue": "{:.1%}",
        "median days since last purchase": "{:.0f}", "median repeat purchase days": "{:.0f}", "median net spend": money,
        "median 12-month value": money, "mean chance still active": "{:.0%}",
    })
    lifecycle = _lifecycle_section(summary, money)
    credit = html.escape(config.data_credit or (f"Data: {source}." if source else ""))
    backtest_section = _backtest_section(backtest)
    sections = "".join(
        f'<section><h2>{html.escape(chart.title)}</h2><img alt="{html.escape(chart.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(chart.png).decode()}"><p>{html.escape(chart.caption)}</p></section>'
        for chart in drawn
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in summary["notes"] + backtest["notes"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>segrec segment report, {summary['as_of']}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: right; font-size: 0.9em; }}
th {{ max-width: 9em; }}
th:first-child, td:first-child {{ text-align: left; }} img {{ max-width: 100%; }} section {{ margin: 2em 0; }}
p.small {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>Customer value segments</h1>
<p>{summary['customers']:,} customers who bought before {summary['as_of']}, split into value segments by K-means on
days since last purchase, repeat purchases, net spend and predicted {summary['horizon_months']}-month value (CLV).
Segment quality (silhouette): {summary['silhouette']:.2f}.</p>
{segment_table}
{lifecycle}
{sections}
<section><h2>How good is the CLV forecast?</h2>
{backtest_section}
</section>
{f'<section><h2>Notes</h2><ul>{notes}</ul></section>' if notes else ''}
<p class="small">Made by segrec. {credit}</p>
</body></html>
"""


def _lifecycle_section(summary: dict, money: str) -> str:
    """Customers and past revenue per lifecycle state, each explained in a sentence."""
    names = {"new": "New", "active": "Active", "at_risk": "At risk", "lapsed": "Lapsed"}
    rows = pd.DataFrame([{"state": names.get(state, state), "what it means": summary["lifecycle_explained"][state], **counts}
                         for state, counts in summary["lifecycle"].items()])
    table = _table(rows.rename(columns={"revenue": "revenue so far"}),
                   {"state": "{}", "what it means": "{}", "customers": "{:,}", "revenue so far": money})
    return f"""<section><h2>Lifecycle: who is still buying</h2>
<p>Next to its value segment, each customer has a lifecycle state from their days since the last purchase (against their usual gap
between purchases) and the model's chance that they are still a customer.</p>
{table}</section>"""


def _backtest_section(backtest: dict) -> str:
    if backtest["skipped"]:
        return f"<p>The backtest was skipped: {html.escape(backtest['window']['reason'])}.</p>"
    return f"""<p>Backtest: models fitted on purchases up to {backtest['calibration_end']}, checked against the
{backtest['holdout_days']} days after it ({html.escape(backtest['window']['reason'])}). "error" is predicted minus actual
purchase days, in percent; "Spearman" and "top 20%" measure how well the predicted value ranks customers by what they
really spent in the hold-out, next to simply ranking them by past spend.</p>
{_backtest_table(backtest)}"""


def _backtest_table(backtest: dict) -> str:
    rows = []
    for row in backtest["variants"]:
        has_counts = "predicted_purchases" in row
        rows.append({
            "variant": row["variant"],
            "predicted": f"{row['predicted_purchases']:,.0f}" if has_counts else "",
            "actual": f"{row['actual_purchases']:,}" if has_counts else "",
            "error": f"{row['aggregate_error']:+.1%}" if has_counts else "",
            "MAE per customer": f"{row['mae']:.2f}" if has_counts else "",
            "Spearman": f"{row['spearman']:.3f}",
            "top 20%": f"{row['top_20_capture']:.3f}",
        })
    frame = pd.DataFrame(rows)
    return _table(frame, {name: "{}" for name in frame.columns})
