"""A/B campaign arithmetic: hashed assignment, purchase uploads, conversion and revenue uplift with 95% intervals.

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


def _interval(difference: float, standard_error: float) -> list[float]:
    return [difference - Z_95 * standard_error, difference + Z_95 * standard_error]


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
    uplift = None
    if treated["customers"] > 1 and control["customers"] > 1:
        p1, p0 = treated["conversion"], control["conversion"]
        conversion_se = math.sqrt(p1 * (1 - p1) / treated["customers"] + p0 * (1 - p0) / control["customers"])
        revenue_se = math.sqrt(treated["_variance"] / treated["customers"] + control["_variance"] / control["customers"])
        conversion_diff = p1 - p0
        revenue_diff = treated["revenue_per_customer"] - control["revenue_per_customer"]
        uplift = {
            "conversion": conversion_diff, "conversion_ci95": _interval(conversion_diff, conversion_se),
            "revenue_per_customer": revenue_diff, "revenue_per_customer_ci95": _interval(revenue_diff, revenue_se),
        }
        uplift["significant"] = uplift["conversion_ci95"][0] > 0 or uplift["conversion_ci95"][1] < 0
    for values in variants.values():
        values.pop("_variance")
    return {"variants": variants, "uplift": uplift, "purchases_counted": counted}


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
