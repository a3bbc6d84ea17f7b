"""A/B campaign arithmetic: hashed assignment, purchase uploads, uplift with intervals and p-values, and test planning.

Plain Python (no Flask, no Spark), so it is tested on its own.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
from dataclasses import dataclass

TREATMENT, CONTROL = "personalised", "control"
Z_95 = 1.959963984540054
MAX_ERRORS_SHOWN = 20


def variant(customer_id: str, salt: str, control_share: float) -> str:
    """Deterministic: the same customer, salt and share always give the same variant."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return CONTROL if position < control_share else TREATMENT


@dataclass
class Upload:
    purchases: list[tuple[str, dt.date | None, float]]  # customer_id, date, revenue
    errors: list[str]
    rows: int


def parse_purchases(text: str, *, max_rows: int = 200_000) -> Upload:
    """Rows of customer_id, revenue and an optional date (YYYY-MM-DD); each bad row is reported with its line number."""
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in ("customer_id", "revenue") if name not in header]
    if missing:
        return Upload([], [f"the header must name the columns customer_id and revenue (optional: date); missing {', '.join(missing)}"], 0)
    reader.fieldnames = header
    purchases, errors, rows = [], [], 0
    for line, row in enumerate(reader, start=2):
        rows += 1
        if rows > max_rows:
            errors.append(f"more than {max_rows:,} rows: split the file")
            break
        customer_id = (row.get("customer_id") or "").strip()
        revenue_text = (row.get("revenue") or "").strip()
        date_text = (row.get("date") or "").strip()
        problem = None
        if not customer_id:
            problem = "customer_id is empty"
        try:
            revenue = float(revenue_text)
            if not math.isfinite(revenue) or revenue < 0:
                problem = problem or f"revenue must be a number of 0 or more, got '{revenue_text[:20]}'"
        except ValueError:
            problem = problem or f"revenue must be a number, got '{revenue_text[:20]}'"
        day = None
        if date_text and not problem:
            try:
                day = dt.date.fromisoformat(date_text[:10])
            except ValueError:
                problem = f"date must be YYYY-MM-DD, got '{date_text[:20]}'"
        if problem:
            errors.append(f"line {line}: {problem}")
        else:
            purchases.append((customer_id, day, revenue))
    return Upload(purchases, errors, rows)


def results(audience: dict[str, str], purchases: list[tuple[str, dt.date | None, float]], since: dt.date | None = None) -> dict:
    """Conversion and revenue per customer by variant, and the personalised-minus-control uplift with 95% intervals.

    ``audience``: customer_id -> variant. Purchases by customers outside the audience, or before ``since``, are ignored.
    """
    revenue: dict[str, float] = {}
    counted = 0
    for customer_id, day, amount in purchases:
        if customer_id in audience and (since is None or day is None or day >= since):
            revenue[customer_id] = revenue.get(customer_id, 0.0) + amount
            counted += 1
    variants = {}
    for name in (TREATMENT, CONTROL):
        members = [customer for customer, assigned in audience.items() if assigned == name]
        values = [revenue.get(customer, 0.0) for customer in members]
        size = len(values)
        converted = sum(1 for value in values if value > 0)
        mean = sum(values) / size if size else 0.0
        variance = sum((value - mean) ** 2 for value in values) / (size - 1) if size > 1 else 0.0
        variants[name] = {"customers": size, "converted": converted, "conversion": converted / size if size else 0.0,
                          "revenue": round(sum(values), 2), "revenue_per_customer": mean, "_variance": variance}
    treated, control = variants[TREATMENT], variants[CONTROL]
    uplift = _uplift(treated, control, revenue, audience) if treated["customers"] > 1 and control["customers"] > 1 else None
    for values in variants.values():
        values.pop("_variance")
    return {"variants": variants, "uplift": uplift, "purchases_counted": counted}


def _uplift(treated: dict, control: dict, revenue: dict[str, float], audience: dict[str, str]) -> dict:
    """Personalised against control: conversion in percentage points and relative, revenue per customer in money and relative,
    each with its 95% interval and two-sided p-value (statsmodels' two-proportion tests, scipy's Welch t-test)."""
    import numpy as np
    from scipy import stats
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    counts = (treated["converted"], treated["customers"], control["converted"], control["customers"])
    conversion_diff = treated["conversion"] - control["conversion"]
    with np.errstate(divide="ignore", invalid="ignore"):  # it also works out ratios, which a group without buyers leaves undefined
        diff_test = test_proportions_2indep(*counts, compare="diff", method="wald")
    diff_interval = confint_proportions_2indep(*counts, compare="diff", method="wald")
    relative, relative_interval = None, None
    if control["converted"] > 0 and treated["converted"] > 0:  # a ratio needs conversions on both sides
        relative = treated["conversion"] / control["conversion"] - 1
        relative_interval = [float(bound) - 1 for bound in confint_proportions_2indep(*counts, compare="ratio", method="log")]
    values = {name: [revenue.get(customer, 0.0) for customer, assigned in audience.items() if assigned == name] for name in (TREATMENT, CONTROL)}
    revenue_diff = treated["revenue_per_customer"] - control["revenue_per_customer"]
    if treated["_variance"] + control["_variance"] > 0:
        welch = stats.ttest_ind(values[TREATMENT], values[CONTROL], equal_var=False)
        revenue_p, revenue_interval = float(welch.pvalue), [float(bound) for bound in welch.confidence_interval(0.95)]
    else:  # every customer spent the same: there is no spread to test against
        revenue_p, revenue_interval = None, [revenue_diff, revenue_diff]
    conversion_p = float(diff_test.pvalue) if math.isfinite(diff_test.pvalue) else None
    return {
        "conversion": conversion_diff, "conversion_ci95": [float(bound) for bound in diff_interval], "conversion_p_value": conversion_p,
        "relative_conversion": relative, "relative_conversion_ci95": relative_interval,
        "revenue_per_customer": revenue_diff, "revenue_per_customer_ci95": revenue_interval, "revenue_p_value": revenue_p,
        "relative_revenue": revenue_diff / control["revenue_per_customer"] if control["revenue_per_customer"] > 0 else None,
        "significant": conversion_p is not None and conversion_p < 0.05,
    }


@dataclass(frozen=True)
class TestPlan:
    """How many customers an A/B test needs, and what it can detect (two-sided 5% test, 80% power by default)."""

    baseline: float  # the control's expected conversion
    relative_uplift: float  # the uplift hoped for, relative to the baseline (0.1: 10% more customers buy)
    control_share: float
    audience: int  # the customers the campaign reaches
    alpha: float = 0.05
    power: float = 0.8

    def __post_init__(self):
        if not 0 < self.baseline < 1:
            raise ValueError("the expected conversion must be above 0% and below 100%")
        if not (self.relative_uplift > 0 and self.baseline * (1 + self.relative_uplift) < 1):
            raise ValueError("the uplift hoped for must be above 0% and keep the conversion below 100%")
        if not 0 < self.control_share < 1:
            raise ValueError("the control share must be above 0% and below 100%")

    def needed(self) -> dict[str, int]:
        """Customers needed in each variant and in all, to detect ``relative_uplift`` with ``power``."""
        from statsmodels.stats.power import NormalIndPower
        from statsmodels.stats.proportion import proportion_effectsize

        effect = proportion_effectsize(self.baseline * (1 + self.relative_uplift), self.baseline)
        ratio = self.control_share / (1 - self.control_share)  # control customers per personalised one
        treated = NormalIndPower().solve_power(effect_size=effect, alpha=self.alpha, power=self.power, ratio=ratio)
        return {TREATMENT: math.ceil(treated), CONTROL: math.ceil(treated * ratio), "total": math.ceil(treated) + math.ceil(treated * ratio)}

    def detectable(self) -> float | None:
        """The smallest relative uplift this audience detects with ``power`` (None: too few customers for any)."""
        from statsmodels.stats.power import NormalIndPower

        treated = self.audience * (1 - self.control_share)
        if treated < 2 or self.audience * self.control_share < 2:
            return None
        effect = NormalIndPower().solve_power(nobs1=treated, alpha=self.alpha, power=self.power,
                                              ratio=self.control_share / (1 - self.control_share))
        # Cohen's h back to a rate: h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p0))
        angle = math.asin(math.sqrt(self.baseline)) + effect / 2
        return None if angle >= math.pi / 2 else math.sin(angle) ** 2 / self.baseline - 1


def chart_png(summary: dict) -> bytes:
    """Conversion by variant with 95% intervals, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [TREATMENT, CONTROL]
    rates, errors = [], []
    for name in names:
        values = summary["variants"][name]
        p, size = values["conversion"], max(values["customers"], 1)
        rates.append(100 * p)
        errors.append(100 * Z_95 * math.sqrt(p * (1 - p) / size))
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    axis.bar(names, rates, yerr=errors, capsize=8, color=["#2f6f9f", "#a0a0a0"])
    axis.set_ylabel("customers who bought (%)")
    axis.set_title("Conversion by variant (95% interval)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
