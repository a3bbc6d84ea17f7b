"""Any shop: the whole pipeline, with its default windows, on synthetic shops unlike Online Retail II.

Each shop is run as ``python -m jobs.pipeline --input … --output …`` runs it (no window flags) and its
output is checked for sense: segments ordered by CLV, every list as long as asked, a report, and
run.json saying which windows were used and why. What cannot work fails with one clear line.
"""

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from jobs import pipeline, synth
from runtime import cli
from jobs.synth import DEFAULT_TIERS, SynthConfig

# Short and small, so that the matrix fits in the suite: about 200 days of history (the windows are then chosen
# from the history, not capped) and 200 customers. Every model is fitted, as by default; to save time the backtest
# fits one CLV model, ALS keeps its first settings (the search is tested on its own in test_tuning.py) and routes are
# chosen on one validation window (rolling origin runs in the pipeline_run fixture and test_routing.py).
SHOP = SynthConfig(customers=200, items=150, days=200, seed=11)
MATRIX_CONFIG = """
[backtest]
models = ["bgnbd"]

[routing]
validation_windows = 1

[tuning]
budget_seconds = 0
"""


def tiers(**changes) -> dict:
    return {name: dataclasses.replace(profile, **changes) for name, profile in DEFAULT_TIERS.items()}


# The eight conditions of the matrix, in two shops (each whole pipeline run costs over a minute). The first is the
# grocery log that failed with the old fixed windows (four months, one country, no returns, no anonymous rows,
# line totals instead of unit prices), made harder: most of its customers bought once.
SHOPS = {
    "100 days of history, a single country, no returns or anonymous rows, prices given as line totals, most customers "
    "bought once": dataclasses.replace(SHOP, days=100, customers=500, countries=(("France", 1.0),), cancellation_rate=0.0,
                                       anonymous_rate=0.0, line_totals=True, tiers=tiers(dropout=0.85)),
    "no country column, weekly shoppers and a catalogue of 50,000 items": dataclasses.replace(
        SHOP, items=50_000, country_column=False, tiers=tiers(orders_per_year=52.0, dropout=0.02)),
}
FLAGS = {name: ("--columns", "amount=LineTotal") for name in SHOPS if "line totals" in name}


def run_pipeline(spark, shop: SynthConfig | pd.DataFrame, root: Path, *flags: str) -> tuple[int, str, str]:
    """Write ``shop`` (a synthetic shop, or rows in Online Retail II's schema) and run the pipeline on it with ``flags``
    and no others: exit status, what it printed and what it said on stderr."""
    if isinstance(shop, SynthConfig):
        synth.write(spark, synth.generate(spark, shop), str(root / "raw"))
        source = root / "raw" / "transactions"
    else:
        source = root / "raw.csv"
        shop.to_csv(source, index=False)
    return run_again(root, source, *flags)


def run_again(root: Path, source: Path, *flags: str) -> tuple[int, str, str]:
    config = root / "matrix.toml"
    config.write_text(MATRIX_CONFIG)
    argv = ["--input", str(source), "--output", str(root / "out"), "--config", str(config), *flags]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.run(pipeline.main, argv)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", SHOPS)
def test_the_pipeline_runs_with_its_defaults_on_a_shop_with(spark, tmp_path, name):
    status, printed, errors = run_pipeline(spark, SHOPS[name], tmp_path, *FLAGS.get(name, ()))
    assert status == 0, errors
    out = tmp_path / "out"

    # Segments ordered by CLV: each bucket's mean CLV above the next one's.
    customers = pd.read_parquet(out / "segments" / "customers")
    mean_clv = customers.groupby("segment")["clv"].mean()
    assert list(mean_clv.sort_values(ascending=False).index) == ["high", "mid", "low"]

    # Every customer gets every list: discover and for_you at full length (30 rows, the catalogue being larger),
    # buy_again as many of their own items as they bought, up to 30.
    lists = pd.read_parquet(out / "recommendations" / "recommendations")
    clean = pd.read_parquet(out / "ingest" / "clean")
    assert lists.groupby("list")["customer_id"].nunique().to_dict() == {name: customers.shape[0] for name in ("discover", "for_you", "buy_again")}
    lengths = lists.groupby(["list", "customer_id"]).size()
    assert lengths["discover"].min() == lengths["for_you"].min() == lengths.max() == 30
    bought = clean.groupby("customer_id")["item_id"].nunique().clip(upper=30)
    assert lengths["buy_again"].sort_index().equals(bought.sort_index().rename(None))
    assert not lists.duplicated(["customer_id", "list", "item_id"]).any()
    assert lists[lists["list"] == "discover"].merge(clean[["customer_id", "item_id"]]).empty  # never what the customer bought
    trending = pd.read_parquet(out / "recommendations" / "trending")
    assert (trending[trending["country"].isna()]["rank"].sort_values().tolist()) == list(range(1, 31))

    # Each condition really held in the data the pipeline ran on.
    places = json.loads((out / "ingest" / "summary.json").read_text())["places"]
    if "no returns" in name:
        assert places["returns"] == places["anonymous"] == 0 and set(clean["country"]) == {"France"}
    if "line totals" in name:
        assert ((clean["unit_price"] * clean["quantity"] - clean["amount"]).abs() < 1e-6).all()
    if "no country" in name:
        assert clean["country"].isna().all() and trending["country"].isna().all()
    if "50,000" in name:
        assert clean["item_id"].nunique() > 2_000
    if "bought once" in name:
        assert (customers["frequency"] == 0).mean() > 0.5

    report = (out / "report" / "index.html").read_text()
    assert "How good is the CLV forecast?" in report

    # The windows are a quarter of the history before the as-of date, and run.json and the printout say so.
    run = json.loads((out / "run.json").read_text())
    assert not run["as_of_given"]
    history = (pd.Timestamp(run["as_of"]) - clean["timestamp"].min().normalize()).days
    assert set(run["windows"]) == {"backtest", "recommendations"}
    for window in run["windows"].values():
        assert not window["skipped"] and window["days"] == history // 4 and window["end"] < run["as_of"]
        assert window["reason"] == f"25% of the {history} days of history before the as-of date"
        assert f"({history // 4} days: 25% of the {history} days of history before the as-of date)" in printed
    backtest = json.loads((out / "backtest" / "backtest.json").read_text())
    assert backtest["holdout_days"] == history // 4 and not backtest["skipped"]
    manifest = json.loads((out / "recommendations" / "manifest.json").read_text())
    assert manifest["routes"]["discover"]["all"]["chosen_on"] == "all"  # chosen on the validation window


def test_too_short_a_history_skips_the_backtest_and_validation_with_a_note(spark, tmp_path):
    """40 days: too short for 14-day windows (they need 56), long enough to segment and recommend."""
    shop = dataclasses.replace(SHOP, days=40, customers=300, tiers=tiers(orders_per_year=40.0))
    status, printed, errors = run_pipeline(spark, shop, tmp_path)
    assert status == 0, errors
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    for window in run["windows"].values():
        assert window["skipped"] and window["days"] is None
        assert "needs 56" in window["reason"] and "days of history before the as-of date" in window["reason"]
    assert "backtest hold-out skipped:" in printed and "validation window skipped:" in printed
    assert "The backtest was skipped" in (tmp_path / "out" / "report" / "index.html").read_text()
    manifest = json.loads((tmp_path / "out" / "recommendations" / "manifest.json").read_text())
    assert {name: routes["all"]["source"] for name, routes in manifest["routes"].items()} == {
        "discover": "popularity", "for_you": "buy_again", "cold": "popularity_by_country"}
    assert all(routes["all"]["chosen_on"] == "unvalidated" for routes in manifest["routes"].values())
    lists = pd.read_parquet(tmp_path / "out" / "recommendations" / "recommendations")
    assert lists[lists["list"] != "buy_again"].groupby(["customer_id", "list"]).size().min() == 30

    # A window set by hand wins; one the history cannot hold is one line naming the flag and the as-of date given.
    as_of = run["as_of"]
    status, printed, errors = run_again(tmp_path, tmp_path / "raw" / "transactions", "--stages", "backtest", "--as-of", as_of,
                                        "--holdout-days", "30")
    assert status == 2
    assert errors.startswith("error: --holdout-days 30 leaves ") and f"the as-of date {as_of} you gave (--as-of)" in errors
    assert "give --holdout-days at most" in errors and len(errors.strip().splitlines()) == 1
    status, printed, errors = run_again(tmp_path, tmp_path / "raw" / "transactions", "--stages", "backtest", "--holdout-days", "20")
    assert status == 0, errors
    assert json.loads((tmp_path / "out" / "backtest" / "backtest.json").read_text())["window"]["reason"].startswith("set by --holdout-days")


def log(customers: int, days: int) -> pd.DataFrame:
    """Each of ``customers`` buys two items on each of ``days`` days from 2011-03-01."""
    return pd.DataFrame([
        (f"{customer}-{day}", f"{item}", "ITEM", 1, f"2011-03-{day + 1:02d} 10:00:00", 2.5, f"{13000 + customer}", "France")
        for customer in range(customers) for day in range(days) for item in (85048 + day, 22041 + customer)
    ], columns=["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"])


@pytest.mark.parametrize("shop, message", [
    (log(customers=1, days=20), "error: CLV needs at least 20 customers with purchases before 2011-03-21, found 1 (segmenting as of "
                                "the as-of date 2011-03-21 (the day after the last purchase; --as-of sets another))"),
    (log(customers=50, days=1),
     "error: the purchases before the as-of date 2011-03-02 (the day after the last purchase; --as-of sets another) are all on "
     "one day (2011-03-01): segrec learns from customers coming back, so it needs purchases on more than one day"),
])
def test_what_cannot_work_fails_with_one_clear_line(spark, tmp_path, shop, message):
    status, printed, errors = run_pipeline(spark, shop, tmp_path)
    assert status == 2
    assert errors.strip() == message
    assert "[1/5] ingest:" in printed and not (tmp_path / "out" / "segments").exists()
