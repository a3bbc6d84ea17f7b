"""Customer lifetime value: BG/NBD-family purchase models and Gamma-Gamma spend, from lifetimes.

Fitting happens on the driver, but never on per-customer rows: the purchase
model is fitted on the distinct (frequency, recency, T) patterns with their
counts as ``weights``, and Gamma-Gamma on distinct (frequency, spend) pairs with
spend rounded to a few significant digits. Both tables stay small for millions
of customers. Scoring runs on the executors (``mapInPandas``) with the fitted
parameters broadcast.

Seasonality: BG/NBD assumes a steady purchase rate, so a forecast for a busy
quarter comes out low. With ``seasonal=True`` each calendar month gets an index
(repeat purchases per day in its most recent occurrence, relative to a centred
12-month moving average; see :func:`seasonal_index`). Expected purchases in a
future window are the model's increments weighted by the index of the month
they fall in. With the index off, the numbers are
exactly lifetimes' (``tests/test_clv.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import threading
import warnings
from dataclasses import dataclass, field

from segmentation import columns as C
from segmentation.rfm import PERIOD_DAYS, SegmentationError, _check_period

TRANSACTION_MODELS = ("bgnbd", "mbgnbd", "paretonbd")
DAYS_PER_MONTH = 30  # lifetimes' month in customer_lifetime_value
GAMMA_GAMMA_CORRELATION_WARNING = 0.3


@dataclass(frozen=True)
class CLVConfig:
    model: str = "bgnbd"  # bgnbd | mbgnbd | paretonbd
    seasonal: bool = True
    horizon_months: int = 12
    discount_rate: float = 0.01  # per month
    period: str = "D"  # D | W
    penalizers: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)  # tried in turn until a fit converges
    spend_significant_digits: int = 3
    min_customers: int = 20
    min_repeat_buyers: int = 5

    def __post_init__(self):
        if self.model not in TRANSACTION_MODELS:
            raise SegmentationError(f"unknown CLV model '{self.model}': choose one of {', '.join(TRANSACTION_MODELS)}")


@dataclass
class FittedCLV:
    """Everything needed to score a customer: plain numbers, saved as JSON next to the outputs."""

    model: str
    params: dict[str, float]
    spend_params: dict[str, float]
    period: str
    observation_end: str
    seasonal_index: dict[int, float] = field(default_factory=dict)  # calendar month -> index; empty = off
    penalizer: float = 0.0
    spend_penalizer: float = 0.0
    frequency_spend_correlation: float | None = None
    patterns: int = 0
    spend_patterns: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FittedCLV":
        data = json.loads(text)
        data["seasonal_index"] = {int(month): value for month, value in data["seasonal_index"].items()}
        return cls(**data)


# --------------------------------------------------------------------------- lifetimes models


def _transaction_model(name: str, penalizer: float = 0.0):
    from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter

    classes = {"bgnbd": BetaGeoFitter, "mbgnbd": ModifiedBetaGeoFitter, "paretonbd": ParetoNBDFitter}
    if name not in classes:
        raise SegmentationError(f"unknown CLV model '{name}': choose one of {', '.join(TRANSACTION_MODELS)}")
    return classes[name](penalizer_coef=penalizer)


def restore_models(fitted: FittedCLV):
    """lifetimes fitters carrying ``fitted``'s parameters, ready to predict."""
    import pandas as pd
    from lifetimes import GammaGammaFitter

    purchases = _transaction_model(fitted.model, fitted.penalizer)
    purchases.params_ = pd.Series(fitted.params)
    # lifetimes only sets this alias in fit(); its customer_lifetime_value calls it.
    purchases.predict = purchases.conditional_expected_number_of_purchases_up_to_time
    spend = GammaGammaFitter(penalizer_coef=fitted.spend_penalizer)
    spend.params_ = pd.Series(fitted.spend_params)
    return purchases, spend


_FITTING = threading.Lock()


def _silence_lifetimes() -> None:
    """lifetimes prints the optimiser's state when a fit fails; the notes say so instead. Its module's own ``print`` is
    replaced, not ``sys.stdout``: swapping that would swallow what other threads print meanwhile (validation windows
    are segmented side by side), and two threads restoring it in the wrong order would lose the job's output for good."""
    import lifetimes.fitters

    lifetimes.fitters.print = lambda *args, **kwargs: None


def _fit_with_retries(make, fit_args: tuple, penalizers: tuple[float, ...], what: str, notes: list[str], unusable=None, **fit_kwargs):
    """Fit, adding a larger penalizer each time the optimiser fails or ``unusable(fitter)`` names a problem; say so in ``notes``."""
    import numpy as np
    from lifetimes.utils import ConvergenceError

    _silence_lifetimes()
    for penalizer in penalizers:
        fitter = make(penalizer)
        try:
            # One fit at a time: catching warnings swaps the process's filters, which another thread's fit would undo.
            with _FITTING, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitter.fit(*fit_args, **fit_kwargs)
        except (ConvergenceError, ValueError, FloatingPointError, np.linalg.LinAlgError) as error:
            notes.append(f"{what} did not converge with penalizer {penalizer} ({type(error).__name__}); retrying")
            continue
        if not np.all(np.isfinite(fitter.params_.to_numpy())):
            notes.append(f"{what} gave non-finite parameters with penalizer {penalizer}; retrying")
            continue
        problem = unusable(fitter) if unusable else None
        if problem:
            notes.append(f"{what} {problem} with penalizer {penalizer}; retrying")
            continue
        if penalizer:
            notes.append(f"{what} converged with penalizer {penalizer}")
        return fitter, penalizer
    raise SegmentationError(f"{what} did not converge even with penalizer {penalizers[-1]}; see the notes: {notes}")


def _no_forecast(patterns, horizon: float):
    """A check for ``_fit_with_retries``: whether a purchase model forecasts every pattern in finite numbers.

    A short history in which nobody seems to drop out drives BG/NBD's dropout parameters to
    zero, where lifetimes' hypergeometric term has no finite value.
    """
    import numpy as np

    frequency, recency, age = (patterns[name] for name in (C.FREQUENCY, C.RECENCY, C.AGE))

    def unusable(fitter) -> str | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.asarray(fitter.conditional_expected_number_of_purchases_up_to_time(horizon, frequency, recency, age), dtype=float)
            alive = np.asarray(fitter.conditional_probability_alive(frequency, recency, age), dtype=float)
        failed = int(np.sum(~(np.isfinite(expected) & np.isfinite(alive))))
        return f"gave no finite forecast for {failed} of {len(patterns)} (frequency, recency, T) patterns" if failed else None

    return unusable


# --------------------------------------------------------------------------- fitting


def _month_offset(year: int, month: int, offset: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + offset
    return index // 12, index % 12 + 1


def seasonal_index(purchases, *, as_of: dt.date) -> tuple[dict[int, float], str | None]:
    """Index per calendar month from repeat purchase days before ``as_of`` (see the module docstring).

    Ratio to a centred 12-month moving average: a month's repeat purchases per day
    divided by the mean daily rate of the twelve months around it (six before,
    five after). Dividing by the surrounding year, not by a fixed recent year,
    keeps a growing or shrinking customer base from passing for seasonality.
    Each calendar month uses its most recent occurrence that has such a window.
    """
    import calendar

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    days = (
        purchases.where(F.col(C.TIMESTAMP) < F.lit(as_of).cast("timestamp"))
        .select(C.CUSTOMER_ID, F.to_date(C.TIMESTAMP).alias("day")).distinct()
    )
    first = F.min("day").over(Window.partitionBy(C.CUSTOMER_ID))
    repeat_days = days.withColumn("_first", first).where(F.col("day") > F.col("_first"))
    counts = {
        (row["year"], row["month"]): row["count"]
        for row in repeat_days.groupBy(F.year("day").alias("year"), F.month("day").alias("month")).count().collect()
    }
    history = days.agg(F.min("day")).first()[0]
    if history is None:
        return {}, "seasonal index off: no purchases"
    # Only whole months count: from the first whole month of history to the month before as_of.
    first_month = _month_offset(history.year, history.month, 0 if history.day == 1 else 1)
    last_month = _month_offset(as_of.year, as_of.month, -1)

    def rate(year_month: tuple[int, int]) -> float:
        return counts.get(year_month, 0) / calendar.monthrange(*year_month)[1]

    index = {}
    for month in range(1, 13):
        year = last_month[0] if month <= last_month[1] else last_month[0] - 1
        while (year, month) >= first_month:
            window = [_month_offset(year, month, k) for k in range(-6, 6)]
            if window[0] >= first_month and window[-1] <= last_month:
                average = sum(rate(m) for m in window) / len(window)
                if average > 0:
                    index[month] = round(rate((year, month)) / average, 4)
                break
            year -= 1
    if not index:
        return {}, "seasonal index off: it needs at least 12 whole months of history with repeat purchases"
    missing = sorted(set(range(1, 13)) - set(index))
    note = f"seasonal index: months {missing} have no centred 12-month window yet, index 1.0 used" if missing else None
    return {month: index.get(month, 1.0) for month in range(1, 13)}, note


def fit_clv(features, purchases, *, as_of: dt.date, config: CLVConfig = CLVConfig()) -> FittedCLV:
    """Fit the purchase and spend models on condensed patterns of ``features`` (from rfm.rfm_summary)."""
    from pyspark.sql import functions as F

    from segmentation.rfm import observation_end

    _check_period(config.period)
    notes: list[str] = []
    sizes = features.agg(
        F.count(F.lit(1)).alias("customers"),
        F.sum((F.col(C.FREQUENCY) > 0).cast("int")).alias("repeaters"),
        F.corr(F.when(F.col(C.FREQUENCY) > 0, F.col(C.FREQUENCY)), F.when(F.col(C.FREQUENCY) > 0, F.col(C.MONETARY_VALUE))).alias("corr"),
    ).first()
    if sizes["customers"] < config.min_customers:
        raise SegmentationError(
            f"CLV needs at least {config.min_customers} customers with purchases before {as_of}, found {sizes['customers']}"
        )
    if (sizes["repeaters"] or 0) < config.min_repeat_buyers:
        raise SegmentationError(
            f"CLV needs at least {config.min_repeat_buyers} repeat buyers before {as_of}, found {sizes['repeaters'] or 0}: "
            "BG/NBD and Gamma-Gamma learn from repeat purchases"
        )

    # Sorted, so that the optimiser sees the same input in the same order on every run.
    patterns = (
        features.groupBy(C.FREQUENCY, C.RECENCY, C.AGE).agg(F.count(F.lit(1)).alias("weight"))
        .orderBy(C.FREQUENCY, C.RECENCY, C.AGE).toPandas()
    )
    model, purchase_model, penalizer = _fit_purchase_model(patterns, config, notes)

    digits = config.spend_significant_digits
    exponent = F.floor(F.log10(C.MONETARY_VALUE)) - (digits - 1)
    rounded = F.round(F.col(C.MONETARY_VALUE) / F.pow(F.lit(10.0), exponent)) * F.pow(F.lit(10.0), exponent)
    spend = (
        features.where((F.col(C.FREQUENCY) > 0) & (F.col(C.MONETARY_VALUE) > 0))
        .groupBy(C.FREQUENCY, rounded.alias(C.MONETARY_VALUE)).agg(F.count(F.lit(1)).alias("weight"))
        .orderBy(C.FREQUENCY, C.MONETARY_VALUE).toPandas()
    )
    from lifetimes import GammaGammaFitter

    spend_model, spend_penalizer = _fit_with_retries(
        lambda p: GammaGammaFitter(penalizer_coef=p),
        (spend[C.FREQUENCY], spend[C.MONETARY_VALUE], spend["weight"]),
        config.penalizers, "Gamma-Gamma", notes,
    )
    correlation = sizes["corr"]
    if correlation is not None and abs(correlation) > GAMMA_GAMMA_CORRELATION_WARNING:
        notes.append(f"Gamma-Gamma assumes spend per purchase is independent of frequency, but their correlation is {correlation:.2f}")

    index: dict[int, float] = {}
    if config.seasonal:
        index, note = seasonal_index(purchases, as_of=as_of)
        if note:
            notes.append(note)
    return FittedCLV(
        model=model,
        params={k: float(v) for k, v in purchase_model.params_.items()},
        spend_params={k: float(v) for k, v in spend_model.params_.items()},
        period=config.period,
        observation_end=observation_end(as_of, config.period).isoformat(),
        seasonal_index=index,
        penalizer=penalizer,
        spend_penalizer=spend_penalizer,
        frequency_spend_correlation=None if correlation is None or math.isnan(correlation) else round(float(correlation), 4),
        patterns=len(patterns),
        spend_patterns=len(spend),
        notes=notes,
    )


def _fit_purchase_model(patterns, config: CLVConfig, notes: list[str]):
    """(model name, fitter, penalizer): ``config.model`` when it fits and forecasts every pattern, else the next model that does."""
    fit_args = (patterns[C.FREQUENCY], patterns[C.RECENCY], patterns[C.AGE], patterns["weight"])
    unusable = _no_forecast(patterns, config.horizon_months * DAYS_PER_MONTH / PERIOD_DAYS[config.period])
    candidates = list(dict.fromkeys((config.model, *TRANSACTION_MODELS)))
    for position, model in enumerate(candidates):
        try:
            fitter, penalizer = _fit_with_retries(
                lambda p: _transaction_model(model, p), fit_args, config.penalizers, model, notes, unusable,
                # Pareto/NBD starts from a random point unless given one; fix it so reruns agree.
                **({"initial_params": [1.0, 1.0, 1.0, 1.0]} if model == "paretonbd" else {}),
            )
        except SegmentationError:
            if position + 1 == len(candidates):
                raise
            notes.append(f"{model} failed with every penalizer: fitting {candidates[position + 1]} instead")
            continue
        return model, fitter, penalizer


# --------------------------------------------------------------------------- scoring


def horizon_pieces(fitted: FittedCLV, horizon_days: int, discount_rate: float) -> list[tuple[float, float, float, float]]:
    """(start, end, seasonal weight, discount factor) over the horizon, in the model's period units.

    Pieces break at 30-day steps (lifetimes discounts per step) and at calendar
    months (each has its own seasonal index). With no index and whole steps the
    weighted sum telescopes to lifetimes' customer_lifetime_value.
    """
    period_days = PERIOD_DAYS[fitted.period]
    # Offset 0 is the last observed day; offset k is the k-th day after it.
    last_observed_day = dt.date.fromisoformat(fitted.observation_end) + dt.timedelta(days=period_days - 1)

    def day_at(offset: int) -> dt.date:
        return last_observed_day + dt.timedelta(days=offset)

    cuts = {0, horizon_days}
    cuts.update(range(DAYS_PER_MONTH, horizon_days, DAYS_PER_MONTH))
    if fitted.seasonal_index:
        # A piece (start, end] holds days start+1..end: cut before every first of a month.
        cuts.update(offset for offset in range(1, horizon_days) if day_at(offset + 1).day == 1)
    bounds = sorted(cuts)
    pieces = []
    for start, end in zip(bounds, bounds[1:]):
        month = day_at(start + 1).month
        weight = fitted.seasonal_index.get(month, 1.0) if fitted.seasonal_index else 1.0
        step = math.ceil(end / DAYS_PER_MONTH)
        pieces.append((start / period_days, end / period_days, weight, 1.0 / (1.0 + discount_rate) ** step))
    return pieces


def score_frame(frame, fitted: FittedCLV, pieces, purchase_pieces):
    """Scores for a pandas batch of RFM rows (runs on executors; also used directly in tests)."""
    import numpy as np

    purchase_model, spend_model = restore_models(fitted)
    f, r, t = (frame[c].to_numpy(dtype=float) for c in (C.FREQUENCY, C.RECENCY, C.AGE))
    cumulative: dict[float, np.ndarray] = {0.0: np.zeros(len(frame))}

    def expected_up_to(point: float):
        if point not in cumulative:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cumulative[point] = np.asarray(purchase_model.conditional_expected_number_of_purchases_up_to_time(point, f, r, t), dtype=float)
        return cumulative[point]

    def weighted(selected_pieces, discounted: bool):
        total = np.zeros(len(frame))
        for start, end, weight, discount in selected_pieces:
            total += weight * (discount if discounted else 1.0) * (expected_up_to(end) - expected_up_to(start))
        return total

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_alive = np.asarray(purchase_model.conditional_probability_alive(f, r, t), dtype=float)
        spend = np.asarray(spend_model.conditional_expected_average_profit(frame[C.FREQUENCY], frame[C.MONETARY_VALUE]), dtype=float)
    out = frame.copy()
    out[C.P_ALIVE] = p_alive
    out[C.EXPECTED_PURCHASES] = weighted(purchase_pieces, discounted=False)
    out[C.EXPECTED_SPEND] = spend
    out[C.CLV] = spend * weighted(pieces, discounted=True)
    return out


def score_clv(features, fitted: FittedCLV, *, horizon_days: int, discount_rate: float = 0.01, purchase_horizon_days: int | None = None):
    """Add p_alive, expected_purchases (over ``purchase_horizon_days``), expected_avg_spend and clv to ``features``."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    spark = features.sparkSession
    payload = spark.sparkContext.broadcast((
        fitted,
        horizon_pieces(fitted, horizon_days, discount_rate),
        horizon_pieces(fitted, purchase_horizon_days or horizon_days, 0.0),
    ))
    score_columns = (C.P_ALIVE, C.EXPECTED_PURCHASES, C.EXPECTED_SPEND, C.CLV)
    schema = StructType(list(features.schema.fields) + [StructField(name, DoubleType()) for name in score_columns])

    def score_batches(batches):
        model, pieces, purchase_pieces = payload.value
        for batch in batches:
            yield score_frame(batch, model, pieces, purchase_pieces)

    return features.mapInPandas(score_batches, schema=schema)
