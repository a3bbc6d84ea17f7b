"""The segment report's charts, drawn with matplotlib from small pandas tables.

No pyspark here: the report job gathers the tables in Spark, and the web app
can draw the same charts from what is published. Every function returns a
``Chart``: a title, one plain sentence saying what it shows, and the PNG bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SEGMENT_COLOURS = {"high": "#1b7837", "mid": "#f1a340", "low": "#b2182b"}
FALLBACK_COLOURS = plt.get_cmap("tab10").colors


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    caption: str
    png: bytes


def colour(segment: str, position: int) -> str:
    return SEGMENT_COLOURS.get(segment, FALLBACK_COLOURS[position % len(FALLBACK_COLOURS)])


def ordered_segments(segments) -> list[str]:
    """high, mid, low first (or value_1..k), then anything else alphabetically."""
    rank = {label: i for i, label in enumerate(("high", "mid", "low"))}
    return sorted(set(segments), key=lambda s: (rank.get(s, 3), int(s.split("_")[1]) if s.startswith("value_") else 0, s))


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def segment_sizes(summary: pd.DataFrame) -> Chart:
    """``summary``: segment, share_of_customers, share_of_revenue."""
    summary = summary.set_index("segment").loc[ordered_segments(summary.segment)]
    figure, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(summary))
    ax.bar(x - 0.2, summary.share_of_customers * 100, width=0.4, label="customers", color="#92c5de")
    ax.bar(x + 0.2, summary.share_of_revenue * 100, width=0.4, label="revenue", color="#0571b0")
    for i, (customers, revenue) in enumerate(zip(summary.share_of_customers, summary.share_of_revenue)):
        ax.annotate(f"{customers:.0%}", (i - 0.2, customers * 100), ha="center", va="bottom", fontsize=9)
        ax.annotate(f"{revenue:.0%}", (i + 0.2, revenue * 100), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, summary.index)
    ax.set_ylabel("share of all customers / revenue (%)")
    ax.set_title("Segment size and revenue share")
    ax.legend(frameon=False)
    top = summary.index[0]
    caption = (f"The {top} segment is {summary.share_of_customers.iloc[0]:.0%} of customers "
               f"and brings {summary.share_of_revenue.iloc[0]:.0%} of net revenue.")
    return Chart("segment_sizes", "Segment size and revenue share", caption, _png(figure))


DISTRIBUTION_MEASURES = {
    "days_since_last": ("Days since last purchase", "days", False),
    "frequency": ("Repeat purchase days", "days with a purchase after the first", False),
    "total_spend": ("Net spend to date", "spend{currency}, log scale", True),
    "clv": ("Predicted 12-month value (CLV)", "value{currency}, log scale", True),
}


def in_currency(currency: str) -> str:
    """" (£)" for an axis label, or nothing when no currency is configured."""
    return f" ({currency})" if currency else ""


def distributions(stats: pd.DataFrame, currency: str = "") -> Chart:
    """``stats``: segment, measure, p05, p25, p50, p75, p95 (box = quartiles, whiskers = 5th-95th percentile)."""
    segments = ordered_segments(stats.segment)
    # Two by two, so that each panel stays legible when the page shows the chart at its width.
    figure, axes = plt.subplots(2, 2, figsize=(10, 8))
    for ax, (measure, (title, unit, log)) in zip(axes.flat, DISTRIBUTION_MEASURES.items()):
        rows = stats[stats.measure == measure].set_index("segment")
        boxes = []
        for segment in segments:
            q = rows.loc[segment]
            floor = 0.01 if log else -np.inf
            boxes.append({"label": segment, "whislo": max(q.p05, floor), "q1": max(q.p25, floor), "med": max(q.p50, floor),
                          "q3": max(q.p75, floor), "whishi": max(q.p95, floor), "fliers": []})
        artists = ax.bxp(boxes, showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for i, (patch, segment) in enumerate(zip(artists["boxes"], segments)):
            patch.set_facecolor(colour(segment, i))
            patch.set_alpha(0.7)
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=12)
        ax.set_ylabel(unit.format(currency=in_currency(currency)), fontsize=11)
        ax.tick_params(labelsize=11)
    figure.suptitle("RFM and CLV by segment (boxes: middle half of customers; whiskers: 5th to 95th percentile)", fontsize=12)
    caption = "Higher-value segments bought more recently, more often and for more, and are predicted to be worth more next year."
    return Chart("distributions", "RFM and CLV by segment", caption, _png(figure))


def frequency_vs_spend(sample: pd.DataFrame, currency: str = "") -> Chart:
    """``sample``: frequency, total_spend, segment (a sample of customers)."""
    figure, ax = plt.subplots(figsize=(7, 5))
    for i, segment in enumerate(ordered_segments(sample.segment)):
        rows = sample[sample.segment == segment]
        jitter = np.random.default_rng(i).uniform(-0.2, 0.2, len(rows))
        ax.scatter(rows.frequency + 1 + jitter, rows.total_spend.clip(lower=1), s=8, alpha=0.5, label=segment, color=colour(segment, i))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("purchase days (1 = one-time buyer), log scale")
    ax.set_ylabel(f"net spend to date{in_currency(currency)}, log scale")
    ax.set_title(f"Purchase days against spend, {len(sample):,} customers")
    ax.legend(title="segment", frameon=False)
    caption = "Each dot is a customer: segments separate along both how often and how much customers buy."
    return Chart("frequency_vs_spend", "Purchase frequency against spend", caption, _png(figure))


def migration(moved: pd.DataFrame, before: str, after: str) -> Chart:
    """``moved``: from_segment, to_segment, customers (one row per pair); ``before``/``after``: the two runs' dates."""
    sources = ordered_segments(set(moved.from_segment) - {"(new)"}) + (["(new)"] if "(new)" in set(moved.from_segment) else [])
    targets = ordered_segments(set(moved.to_segment) - {"(gone)"}) + (["(gone)"] if "(gone)" in set(moved.to_segment) else [])
    grid = moved.pivot_table(index="from_segment", columns="to_segment", values="customers", aggfunc="sum", fill_value=0).reindex(
        index=sources, columns=targets, fill_value=0)
    figure, ax = plt.subplots(figsize=(1.6 * len(targets) + 3, 1.0 * len(sources) + 2))
    ax.imshow(grid.to_numpy(), cmap="Blues")
    for (row, column), value in np.ndenumerate(grid.to_numpy()):
        ax.text(column, row, f"{value:,}", ha="center", va="center", fontsize=12,
                color="white" if value > grid.to_numpy().max() / 2 else "black")
    ax.set_xticks(range(len(targets)), targets, fontsize=11)
    ax.set_yticks(range(len(sources)), sources, fontsize=11)
    ax.set_xlabel(f"segment as of {after}", fontsize=11)
    ax.set_ylabel(f"segment as of {before}", fontsize=11)
    ax.set_title(f"Customers moving between segments, {before} to {after}", fontsize=12)
    stayed = int(sum(grid.loc[name, name] for name in sources if name in grid.columns))
    known = int(grid.drop(index="(new)", errors="ignore").to_numpy().sum())
    caption = f"{stayed:,} of the {known:,} customers of {before} stayed in their segment; the rest moved as the cells show."
    return Chart("migration", "Customers moving between segments", caption, _png(figure))


def clv_backtest(by_frequency: pd.DataFrame, backtest: dict) -> Chart:
    """``by_frequency``: calibration_frequency, customers, actual, predicted_plain, predicted."""
    figure, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{int(f)}" if f < by_frequency.calibration_frequency.max() else f"{int(f)}+" for f in by_frequency.calibration_frequency]
    x = np.arange(len(by_frequency))
    ax.plot(x, by_frequency.actual, marker="o", color="black", label="actual")
    plain_name = backtest["chosen_variant"].split("+")[0]
    ax.plot(x, by_frequency.predicted_plain, marker="s", linestyle="--", color="#999999", label=f"{plain_name} (steady rate)")
    ax.plot(x, by_frequency.predicted, marker="^", color="#0571b0", label=f"{backtest['chosen_variant']} (used)")
    ax.set_xticks(x, labels)
    ax.set_xlabel("repeat purchase days in the calibration period")
    ax.set_ylabel(f"mean purchase days in the {backtest['holdout_days']}-day hold-out")
    ax.set_title(f"CLV backtest: hold-out {backtest['holdout_start']} to {backtest['holdout_end']}")
    ax.legend(frameon=False)
    chosen = next(row for row in backtest["variants"] if row["variant"] == backtest["chosen_variant"])
    plain = next(row for row in backtest["variants"] if row["variant"] == plain_name)
    caption = (f"Fitted on data up to {backtest['calibration_end']}, the model predicted {chosen['predicted_purchases']:,.0f} "
               f"purchase days in the hold-out against {chosen['actual_purchases']:,} actual ({chosen['aggregate_error']:+.0%}); "
               f"without the seasonal index it was {plain['aggregate_error']:+.0%}.")
    return Chart("clv_backtest", "CLV backtest", caption, _png(figure))


def top_items(items: pd.DataFrame, per_segment: int = 10) -> Chart:
    """``items``: segment, rank, item_id, description, buyers."""
    segments = ordered_segments(items.segment)
    # One segment under the other: item names need the width more than the segments need to sit side by side.
    figure, axes = plt.subplots(len(segments), 1, figsize=(9, (0.4 * per_segment + 1.2) * len(segments)), squeeze=False)
    for i, (ax, segment) in enumerate(zip(axes[:, 0], segments)):
        rows = items[items.segment == segment].sort_values("rank").head(per_segment)[::-1]
        names = [f"{(d or item_id)[:40]} ({item_id})" for item_id, d in zip(rows.item_id, rows.description)]
        ax.barh(names, rows.buyers, color=colour(segment, i))
        ax.set_title(f"{segment}", fontsize=12)
        ax.set_xlabel("customers who bought it", fontsize=11)
        ax.tick_params(labelsize=10)
    figure.suptitle("Top items per segment, by number of customers who bought them", fontsize=12)
    caption = "What each segment buys most: a starting point for the content of a segment's campaign."
    return Chart("top_items", "Top items per segment", caption, _png(figure))
