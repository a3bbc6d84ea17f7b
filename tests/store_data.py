"""A small published store with known rows, written straight to SQLite (no Spark) for the web app tests."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

from webapp import schema

SEGMENTS = {"high": ["c1", "c2", "c3"], "mid": ["c4", "c5", "c6", "c7"], "low": [f"c{i}" for i in range(8, 40)]}
ITEMS = [f"I{i:03d}" for i in range(60)]  # I<k> costs k + 1, is in GROUPS[k % 3]; the last five were first sold in the as-of month
GROUPS = ("red", "blue", "green")
NEW = ITEMS[-5:]  # first sold in the as-of month
LIFECYCLE = ("new", "active", "at_risk", "lapsed")  # c<k> is in LIFECYCLE[k % 4]


def _customer(customer_id: str, segment: str) -> dict:
    number = int(customer_id[1:])
    return {"customer_id": customer_id, "segment": segment, "country": "France" if number % 2 else "United Kingdom",
            "frequency": float(number % 7), "recency": 30.0 * (number % 5), "T": 400.0, "monetary_value": 20.0 + number,
            "orders": number % 7 + 1, "total_spend": 100.0 * number, "first_purchase": "2010-01-05", "last_purchase": "2011-11-30",
            "days_since_last": number, "p_alive": 0.9, "expected_purchases": 2.5, "expected_avg_spend": 40.0, "clv": 500.0 - number,
            "lifecycle": LIFECYCLE[number % len(LIFECYCLE)], "usual_gap_days": 10.0}


def build(path, *, as_of: str = "2011-12-10", run_id: str = "run-a", drop_table: str | None = None) -> str:
    """Customer c<k> bought I<k> and is recommended items I<k>.. in order (discover skips I<k>; buy_again is I<k>..I<k+2>)."""
    rows = {
        "meta": [{"key": "run_id", "value": run_id}, {"key": "as_of", "value": as_of},
                 {"key": "created_at", "value": "2026-11-22T10:00:00+00:00"}, {"key": "schema_version", "value": str(schema.VERSION)},
                 {"key": "currency", "value": "€"}, {"key": "previous_run_id", "value": "run-before"},
                 {"key": "previous_as_of", "value": "2011-11-10"}, {"key": "lifecycle_explained", "value": json.dumps({state: f"{state} explained." for state in LIFECYCLE})}],
        "customers": [_customer(c, segment) for segment, members in SEGMENTS.items() for c in members],
        "segments": [{"segment": segment, "customers": len(members), "share_of_customers": len(members) / 39, "revenue": 1000.0,
                      "share_of_revenue": 0.3, "mean_frequency": 2.0, "mean_recency": 100.0, "mean_total_spend": 500.0,
                      "mean_days_since_last": 50.0, "mean_p_alive": 0.9, "mean_clv": {"high": 900.0, "mid": 400.0, "low": 100.0}[segment],
                      "median_clv": 300.0} for segment, members in SEGMENTS.items()],
        "lifecycle": [],
        "recommendations": [],
        "trending": [{"country": country, "rank": rank, "item_id": ITEMS[offset + rank], "score": 1.0 / rank, "source": "trending"}
                     for country, offset in ((schema.EVERY_COUNTRY, 0), ("France", 20)) for rank in range(1, 21)],
        "similar_items": [{"item_id": item, "rank": rank, "similar_item_id": ITEMS[(i + rank) % len(ITEMS)], "score": 1.0 / rank,
                           "source": "also_bought"} for i, item in enumerate(ITEMS) for rank in range(1, 21)],
        # the new items (NEW) nearest each item in words: I<k>'s nearest is NEW[k % 5]
        "new_item_neighbours": [{"item_id": item, "rank": rank, "new_item_id": NEW[(i + rank - 1) % len(NEW)], "score": 1.0 / rank}
                                for i, item in enumerate(ITEMS) for rank in range(1, 4) if NEW[(i + rank - 1) % len(NEW)] != item],
        "new_arrivals": [{"country": country, "rank": rank, "item_id": item, "score": 10.0 - rank}
                         for country, ordered in ((schema.EVERY_COUNTRY, NEW), ("France", NEW[::-1][:2])) for rank, item in enumerate(ordered, 1)],
        "items": [{"item_id": item, "description": f"Item number {item[1:]} <b>bold</b>", "price": 1.0 + i, "buyers": 100 - i,
                   "first_sold": "2011-11-20" if i >= len(ITEMS) - 5 else "2010-01-04", "item_group": GROUPS[i % len(GROUPS)]}
                  for i, item in enumerate(ITEMS)],
        "bought": [{"customer_id": f"c{k}", "item_id": ITEMS[k]} for k in range(1, 40)],
        "customer_days": [{"customer_id": c, "day": day, "revenue": 10.0}
                          for c in ("c1", "c8", "c9") for day in ("2011-11-01", "2011-12-15")],
        "charts": [],  # drawn below, as the report stage draws them
        "runs": [{"run_id": "run-before", "as_of": "2011-11-10", "started_at": "2026-10-22T10:00:00+00:00", "customers": 35, "current": 0},
                 {"run_id": run_id, "as_of": as_of, "started_at": "2026-11-22T10:00:00+00:00", "customers": 39, "current": 1}],
        # two high customers fell to mid, four new customers came in as low
        "migration": [{"from_segment": "high", "to_segment": "high", "customers": 3, "revenue": 600.0},
                      {"from_segment": "high", "to_segment": "mid", "customers": 2, "revenue": 900.0},
                      {"from_segment": "mid", "to_segment": "mid", "customers": 2, "revenue": 1100.0},
                      {"from_segment": "low", "to_segment": "low", "customers": 28, "revenue": 20000.0},
                      {"from_segment": "(new)", "to_segment": "low", "customers": 4, "revenue": 1000.0}],
        # c<k> bought I<k> on 2011-0<k % 9 + 1>-15 (and I<k+1> on 2011-11-15)
        "purchases_by_day": [{"item_id": ITEMS[k], "day": f"2011-0{k % 9 + 1}-15", "customer_id": f"c{k}"} for k in range(1, 40)]
        + [{"item_id": ITEMS[k + 1], "day": "2011-11-15", "customer_id": f"c{k}"} for k in range(1, 40)],
        # the customers most likely to buy I005: c39, c38, .. (rank 1 is c39); for group red: c1, c2, ..
        "affinity": [{"kind": "item", "key": "I005", "rank": rank, "customer_id": f"c{40 - rank}", "score": 1.0 / rank} for rank in range(1, 40)]
        + [{"kind": "group", "key": "red", "rank": rank, "customer_id": f"c{rank}", "score": 1.0 / rank} for rank in range(1, 40)],
    }
    for segment, members in SEGMENTS.items():
        for state in LIFECYCLE:
            here = [_customer(c, segment) for c in members if LIFECYCLE[int(c[1:]) % len(LIFECYCLE)] == state]
            if here:
                rows["lifecycle"].append({"lifecycle": state, "segment": segment, "customers": len(here),
                                          "revenue": sum(row["total_spend"] for row in here)})
        for c in members:
            k = int(c[1:])
            for list_name, items in (("for_you", ITEMS[k:k + 30]), ("discover", ITEMS[k + 1:k + 31]), ("buy_again", ITEMS[k:k + 3])):
                source = "segment_als" if list_name == "discover" else list_name
                rows["recommendations"] += [{"customer_id": c, "list": list_name, "rank": r, "item_id": item, "score": 1.0 / r, "source": source}
                                            for r, item in enumerate(items, start=1)]
    rows["charts"] = [{"name": name, "png": png} for name, png in charts(rows)]
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(schema.DDL)
        for table, values in rows.items():
            if table == drop_table:
                connection.execute(f"DROP TABLE {table}")
                continue
            columns = schema.columns(table)
            connection.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                                   [tuple(row[c] for c in columns) for row in values])
        connection.commit()
    return str(path)


_DRAWN: list[tuple[str, bytes]] = []


def charts(rows: dict) -> list[tuple[str, bytes]]:
    """The report's charts of the store's rows, drawn by segmentation.charts as the report stage draws them (real PNGs to look at);
    drawn once per test run, the rows they show being the same in every store."""
    import pandas as pd

    from segmentation import charts as drawing

    if _DRAWN:
        return _DRAWN
    customers = pd.DataFrame(rows["customers"])
    stats = [{"segment": segment, "measure": measure, **{f"p{q:02d}": values[measure].quantile(q / 100) for q in (5, 25, 50, 75, 95)}}
             for segment, values in customers.groupby("segment") for measure in drawing.DISTRIBUTION_MEASURES]
    bought = pd.DataFrame(rows["purchases_by_day"]).merge(customers[["customer_id", "segment"]]).merge(
        pd.DataFrame(rows["items"])[["item_id", "description"]])
    top = bought.groupby(["segment", "item_id", "description"])["customer_id"].nunique().rename("buyers").reset_index()
    top["rank"] = top.sort_values(["buyers", "item_id"], ascending=[False, True]).groupby("segment").cumcount() + 1
    _DRAWN.extend((chart.name, chart.png) for chart in (drawing.segment_sizes(pd.DataFrame(rows["segments"])),
                                                        drawing.distributions(pd.DataFrame(stats), "€"), drawing.top_items(top[top["rank"] <= 10])))
    return _DRAWN
