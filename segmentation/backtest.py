"""CLV backtest on a temporal hold-out: fit on the calibration period, score the hold-out.

For every purchase model (BG/NBD, MBG/NBD, Pareto/NBD), with and without the
seasonal index, it reports: predicted vs actual repeat purchases in the
hold-out (aggregate error), per-customer MAE and Pearson correlation, Spearman
correlation of predicted CLV with actual hold-out revenue, and the share of
hold-out revenue captured by the top 20% of customers. The naive ranker (past
spend) is scored the same way, next to them. Value segments fitted on the
calibration period are checked against hold-out revenue per customer.

Everything per customer stays in Spark; only metrics come back to the driver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from segmentation import clv, rfm
from segmentation import columns as C
from segmentation.clv import TRANSACTION_MODELS, CLVConfig
from segmentation.customers import check_as_of, segment_customers
from segmentation.rfm import _TRUNC_UNIT, SegmentationError
from segmentation.segments import SegmentConfig, segment_labels
from segmentation.windows import History, Window, WindowError, WindowRule, choose_window

@dataclass(frozen=True)
class BacktestConfig:
    calibration_end: dt.date | None = None  # default: the hold-out is the last holdout_days before the as-of date
    holdout_days: int | None = None  # None: holdout_share of the history before the as-of date, at most max_holdout_days
    holdout_share: float = 0.25
    max_holdout_days: int = 92
    min_holdout_days: int = 14  # a shorter hold-out is skipped: the backtest is a report, nothing depends on it
    models: tuple[str, ...] = TRANSACTION_MODELS
    top_share: float = 0.2

    def rule(self) -> WindowRule:
        return WindowRule(name="backtest hold-out", flag="--holdout-days", share=self.holdout_share,
                          max_days=self.max_holdout_days, min_days=self.min_holdout_days)


def holdout_window(history: History, config: BacktestConfig) -> Window:
    """The backtest's hold-out: what ``--calibration-end`` or ``--holdout-days`` say, else chosen from the history."""
    rule = config.rule()
    if config.calibration_end is None:
        return choose_window(history, rule, days=config.holdout_days)
    days = (history.as_of - config.calibration_end).days - 1
    if days < 1:
        raise WindowError(f"--calibration-end {config.calibration_end} leaves no hold-out before {history.describe_as_of()}: "
                          "give an earlier --calibration-end")
    if config.calibration_end < history.first_purchase:
        raise WindowError(f"--calibration-end {config.calibration_end} is before the first purchase ({history.first_purchase}): "
                          "give a later one, or leave it out and segrec chooses a hold-out from the history")
    return Window(rule.name, history.as_of, days, "set by --calibration-end")


NAIVE = "past spend"
FREQUENCY_CAP = 10  # calibration frequencies above this are pooled in the by-frequency table


def backtest_history(purchases, returns, *, history: History, config: BacktestConfig, clv_config: CLVConfig,
                     segment_config: SegmentConfig) -> dict:
    """``run_backtest`` on the hold-out ``config`` asks for (``holdout_window``), with ``skipped`` False and its ``window``;
    or ``skipped`` True and the window's reason when the history is too short for it or its calibration period cannot be modelled.
    """
    window = holdout_window(history, config)
    result = {"skipped": True, "notes": []}
    if not window.skipped:
        calibration_end = window.start - dt.timedelta(days=1)
        try:
            result = {"skipped": False, **run_backtest(
                purchases, returns, calibration_end=calibration_end, holdout_end=window.end,
                clv_config=clv_config, segment_config=segment_config, models=config.models, top_share=config.top_share,
            )}
        except SegmentationError as error:
            # The calibration period is shorter than the history the segments learn from: it may lack what they need.
            window = Window(window.name, window.end, None,
                            f"{window.reason}, but the calibration period up to {calibration_end} cannot be modelled: {error}")
    result["window"] = window.as_dict()
    return result


def variant_name(model: str, seasonal: bool) -> str:
    return f"{model}+seasonal" if seasonal else model


def _column(kind: str, variant: str) -> str:
    return f"{kind}_{variant.replace('+', '_')}"


def _holdout_actuals(purchases, *, start: dt.date, end: dt.date, period: str):
    from pyspark.sql import functions as F

    window = (F.col(C.TIMESTAMP) >= F.lit(start).cast("timestamp")) & (F.col(C.TIMESTAMP) < F.lit(end).cast("timestamp"))
    return purchases.where(window).groupBy(C.CUSTOMER_ID).agg(
        F.count_distinct(F.date_trunc(_TRUNC_UNIT[period], C.TIMESTAMP)).cast("double").alias("actual_purchases"),
        F.sum(C.AMOUNT).alias("holdout_revenue"),
    )


def _past_spend(purchases, *, before: dt.date):
    from pyspark.sql import functions as F

    return purchases.where(F.col(C.TIMESTAMP) < F.lit(before).cast("timestamp")).groupBy(C.CUSTOMER_ID).agg(
        F.sum(C.AMOUNT).alias("past_spend")
    )


def _average_rank(column: str):
    """Rank with ties given their average rank (what Spearman's correlation needs)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # One global ordering: a single sorted partition of one number per customer, fine for millions.
    lowest = F.rank().over(Window.orderBy(column))
    ties = F.count(F.lit(1)).over(Window.partitionBy(column))
    return lowest + (ties - 1) / 2.0


def ranking_metrics(frame, score: str, target: str, top_share: float, rows: int | None = None) -> dict:
    """Spearman correlation of ``score`` with ``target``, and the share of ``target`` held by the top ``top_share`` by score.

    ``rows``: the number of rows of ``frame`` when the caller knows it already (saves a count).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ranked = frame.select(
        _average_rank(score).alias("_score_rank"),
        _average_rank(target).alias("_target_rank"),
        F.row_number().over(Window.orderBy(F.desc(score), C.CUSTOMER_ID)).alias("_position"),
        F.col(target).alias("_target"),
    )
    n = frame.count() if rows is None else rows
    top = max(1, round(top_share * n))
    row = ranked.agg(
        F.corr("_score_rank", "_target_rank").alias("spearman"),
        (F.sum(F.when(F.col("_position") <= top, F.col("_target")).otherwise(0.0)) / F.sum("_target")).alias("capture"),
    ).first()
    return {"spearman": row["spearman"], f"top_{round(top_share * 100)}_capture": row["capture"]}


def run_backtest(purchases, returns, *, calibration_end: dt.date, holdout_end: dt.date,
                 clv_config: CLVConfig = CLVConfig(), segment_config: SegmentConfig = SegmentConfig(),
                 models: tuple[str, ...] = TRANSACTION_MODELS, top_share: float = 0.2) -> dict:
    """Backtest with calibration up to and including ``calibration_end`` and hold-out until ``holdout_end`` (exclusive)."""
    from pyspark.sql import functions as F

    holdout_start = calibration_end + dt.timedelta(days=1)
    holdout_days = (holdout_end - holdout_start).days
    if holdout_days < 1:
        raise SegmentationError(f"the hold-out after {calibration_end} is empty: the data ends on {holdout_end - dt.timedelta(days=1)}")
    check_as_of(purchases, holdout_start)

    # Cached: every model is fitted on these calibration features.
    calibration = (
        rfm.rfm_summary(purchases, as_of=holdout_start, period=clv_config.period)
        .join(_holdout_actuals(purchases, start=holdout_start, end=holdout_end, period=clv_config.period), C.CUSTOMER_ID, "left")
        .join(_past_spend(purchases, before=holdout_start), C.CUSTOMER_ID, "left")
        .fillna({"actual_purchases": 0.0, "holdout_revenue": 0.0})
        .cache()
    )
    notes: list[str] = []
    variants = []
    # The model the segments use is always among those backtested.
    models = tuple(dict.fromkeys((clv_config.model, *models)))
    fits = {}  # by the model really fitted: one that cannot forecast this data is replaced by another (see clv.fit_clv)
    fitted_for = {}  # the model asked for -> the model fitted for it
    frame = calibration
    for model in models:
        if model in fits:
            continue
        fitted = clv.fit_clv(calibration, purchases, as_of=holdout_start, config=dataclasses.replace(clv_config, model=model, seasonal=True))
        notes += [f"{model}: {note}" for note in fitted.notes]
        fitted_for[model] = fitted.model
        if fitted.model in fits:
            continue
        fits[fitted.model] = fitted
        for seasonal in (False, True):
            if seasonal and not fitted.seasonal_index:
                continue
            name = variant_name(fitted.model, seasonal)
            variant_fit = fitted if seasonal else dataclasses.replace(fitted, seasonal_index={})
            scored = clv.score_clv(frame, variant_fit, horizon_days=holdout_days, discount_rate=clv_config.discount_rate)
            frame = scored.withColumnsRenamed({C.EXPECTED_PURCHASES: _column("pred", name), C.CLV: _column("clv", name)}).drop(C.P_ALIVE, C.EXPECTED_SPEND)
            variants.append(name)
    # Cached once every variant has scored it: each metric below reads it again.
    frame = frame.cache()

    totals = frame.agg(
        F.count(F.lit(1)).alias("customers"),
        F.sum("actual_purchases").alias("actual"),
        *(F.sum(_column("pred", v)).alias(_column("predicted", v)) for v in variants),
        *(F.avg(F.abs(F.col(_column("pred", v)) - F.col("actual_purchases"))).alias(_column("mae", v)) for v in variants),
        *(F.corr(_column("pred", v), "actual_purchases").alias(_column("pearson", v)) for v in variants),
    ).first()
    rows = []
    for name in variants:
        predicted = totals[_column("predicted", name)]
        rows.append({
            "variant": name,
            "predicted_purchases": round(predicted, 1),
            "actual_purchases": int(totals["actual"]),
            "aggregate_error": predicted / totals["actual"] - 1 if totals["actual"] else None,
            "mae": totals[_column("mae", name)],
            "pearson": totals[_column("pearson", name)],
            **ranking_metrics(frame, _column("clv", name), "holdout_revenue", top_share, rows=totals["customers"]),
        })
    rows.append({"variant": NAIVE, **ranking_metrics(frame.fillna({"past_spend": 0.0}), "past_spend", "holdout_revenue", top_share,
                                                     rows=totals["customers"])})

    own_model = fitted_for[clv_config.model]
    chosen = variant_name(own_model, clv_config.seasonal and variant_name(own_model, True) in variants)
    plain = variant_name(own_model, False)
    by_frequency = (
        frame.groupBy(F.least(F.col(C.FREQUENCY), F.lit(float(FREQUENCY_CAP))).alias("calibration_frequency"))
        .agg(F.count(F.lit(1)).alias("customers"), F.avg("actual_purchases").alias("actual"),
             F.avg(_column("pred", plain)).alias("predicted_plain"), F.avg(_column("pred", chosen)).alias("predicted"))
        .orderBy("calibration_frequency").toPandas()
    )
    # The segments' CLV model is the chosen variant, fitted above on the same calibration features.
    own = fits[own_model] if clv_config.seasonal else dataclasses.replace(fits[own_model], seasonal_index={})
    segments = segment_holdout_check(purchases, returns, frame, holdout_start=holdout_start, clv_config=clv_config,
                                     segment_config=segment_config, fitted=own)
    frame.unpersist()
    calibration.unpersist()
    return {
        "calibration_end": calibration_end.isoformat(),
        "holdout_start": holdout_start.isoformat(),
        "holdout_end": (holdout_end - dt.timedelta(days=1)).isoformat(),
        "holdout_days": holdout_days,
        "period": clv_config.period,
        "customers": totals["customers"],
        "chosen_variant": chosen,
        "variants": rows,
        "by_frequency": by_frequency.to_dict(orient="records"),
        "segments": segments,
        "notes": notes,
    }


def segment_holdout_check(purchases, returns, frame, *, holdout_start, clv_config, segment_config, fitted) -> dict:
    """Segments fitted on the calibration period (CLV model ``fitted``), against each customer's hold-out revenue."""
    from pyspark.sql import functions as F

    segmented = segment_customers(purchases, returns, as_of=holdout_start, clv_config=clv_config, segment_config=segment_config,
                                  fitted=fitted)
    per_segment = (
        segmented.customers.select(C.CUSTOMER_ID, C.SEGMENT).join(frame.select(C.CUSTOMER_ID, "holdout_revenue"), C.CUSTOMER_ID)
        .groupBy(C.SEGMENT).agg(F.count(F.lit(1)).alias("customers"), F.avg("holdout_revenue").alias("holdout_revenue_per_customer"))
        .collect()
    )
    by_label = {row[C.SEGMENT]: {"customers": row["customers"], "holdout_revenue_per_customer": row["holdout_revenue_per_customer"]}
                for row in per_segment}
    labels = [label for label in segment_labels(segment_config.k) if label in by_label]
    ratios = {
        f"{upper}/{lower}": by_label[upper]["holdout_revenue_per_customer"] / by_label[lower]["holdout_revenue_per_customer"]
        if by_label[lower]["holdout_revenue_per_customer"] else None
        for upper, lower in zip(labels, labels[1:])
    }
    return {"by_segment": by_label, "ratios": ratios, "silhouette": segmented.model.silhouette}


def format_backtest(result: dict) -> str:
    lines = [
        f"CLV backtest: calibration to {result['calibration_end']}, hold-out {result['holdout_start']}..{result['holdout_end']} "
        f"({result['holdout_days']} days), {result['customers']:,} customers",
        f"{'variant':<20} {'predicted':>10} {'actual':>8} {'error':>8} {'MAE':>6} {'pearson':>8} {'spearman':>9} {'top20%':>7}",
    ]
    for row in result["variants"]:
        if row["variant"] == NAIVE:
            lines.append(f"{NAIVE:<20} {'':>10} {'':>8} {'':>8} {'':>6} {'':>8} {row['spearman']:>9.3f} {row['top_20_capture']:>7.3f}")
            continue
        lines.append(
            f"{row['variant']:<20} {row['predicted_purchases']:>10,.0f} {row['actual_purchases']:>8,} {row['aggregate_error']:>+8.1%} "
            f"{row['mae']:>6.2f} {row['pearson']:>8.3f} {row['spearman']:>9.3f} {row['top_20_capture']:>7.3f}"
        )
    segments = result["segments"]
    per_customer = ", ".join(f"{label} {values['holdout_revenue_per_customer']:,.0f}" for label, values in segments["by_segment"].items())
    ratios = ", ".join(f"{pair} {ratio:.1f}x" for pair, ratio in segments["ratios"].items() if ratio is not None)
    lines.append(f"hold-out revenue per customer by calibration segment: {per_customer} ({ratios})")
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)
