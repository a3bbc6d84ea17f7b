import datetime as dt
import json

import pandas as pd
import pytest

from jobs import ingest
from runtime import cli, storage
from runtime.stages.ingest import run_ingest
from segmentation import columns as C
from transactions.ingest import PLACES, IngestConfig
from tests import dirty_data


def read_place(output, place):
    return pd.read_parquet(f"{output}/ingest/{place}")


def sorted_rows(frame):
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.fixture(scope="module", params=["csv", "parquet"])
def ingested(request, spark, tmp_path_factory):
    """The dirty rows written as CSV or Parquet and ingested once: the ingest's summary and its output directory."""
    root = tmp_path_factory.mktemp(f"dirty-{request.param}")
    write = dirty_data.write_csv if request.param == "csv" else dirty_data.write_parquet
    output = root / "out"
    return run_ingest(spark, write(root / f"dirty.{request.param}"), str(output), IngestConfig()), output


def test_every_row_lands_in_exactly_one_place(ingested):
    summary, output = ingested

    assert summary["rows_in"] == len(dirty_data.ROWS)
    assert summary["places"] == dirty_data.EXPECTED_PLACES
    assert summary["quarantine_reasons"] == dirty_data.EXPECTED_REASONS
    written = {place: len(read_place(output, place)) for place in PLACES}
    assert written == dirty_data.EXPECTED_PLACES
    assert json.loads((output / "ingest" / "summary.json").read_text())["places"] == written


def test_clean_rows_are_canonical(ingested):
    clean = read_place(ingested[1], "clean")

    assert list(clean.columns) == list(C.TRANSACTION_COLUMNS)
    assert set(clean.customer_id) == {"13085", "13086", "13087"}
    assert set(clean.item_id) == {"85048", "79323P", "22041", "21232"}
    first = clean[(clean.order_id == "489434") & (clean.item_id == "85048")].iloc[0]
    assert first.timestamp == pd.Timestamp("2010-01-04 07:45:00")
    assert first.quantity == 12 and first.unit_price == pytest.approx(6.95) and first.amount == pytest.approx(83.40)


def test_returns_carry_negative_quantities_and_amounts(ingested):
    returns = read_place(ingested[1], "returns").set_index("order_id")

    assert set(returns.index) == {"C489439", "489440"}
    assert (returns.quantity < 0).all() and (returns.amount < 0).all() and (returns.unit_price > 0).all()
    assert returns.loc["C489439", "amount"] == pytest.approx(-13.90)


def test_quarantine_keeps_source_columns_with_reason_and_detail(ingested):
    quarantine = read_place(ingested[1], "quarantine")

    assert list(quarantine.columns) == dirty_data.COLUMNS + ["reason", "detail"]
    by_invoice = quarantine.set_index("Invoice")
    assert by_invoice.loc["489442", "reason"] == "non_product"
    assert "POST is a service code" in by_invoice.loc["489442", "detail"]
    assert by_invoice.loc["489445", "reason"] == "non_positive_price"
    assert by_invoice.loc["489449", "detail"] == "missing item id"
    assert by_invoice.loc["489450", "detail"] == "quantity is zero"
    assert by_invoice.loc["489438", "reason"] == "duplicate"
    assert by_invoice.loc["489447", "detail"].startswith("unparseable timestamp")


@pytest.mark.parametrize("ingested", ["csv"], indirect=True)  # Parquet's typed columns hold no text to quote
def test_unparseable_text_is_quoted_in_the_detail(ingested):
    details = set(read_place(ingested[1], "quarantine").detail)

    assert "unparseable timestamp 'not a date'" in details
    assert "unparseable quantity 'two'" in details


def test_as_of_sets_later_rows_aside_without_counting_them_as_bad(spark, tmp_path):
    source = dirty_data.write_csv(tmp_path / "dirty.csv")
    summary = run_ingest(spark, source, str(tmp_path / "out"), IngestConfig(strict=True, max_quarantine_share=0.6),
                         as_of=dt.date(2011, 1, 1))

    assert summary["quarantine_reasons"]["after_as_of"] == 1  # the 2011-06-01 purchase
    assert summary["places"]["clean"] == 5
    clean = read_place(tmp_path / "out", "clean")
    assert clean.timestamp.max() < pd.Timestamp("2011-01-01")
    considered = len(dirty_data.ROWS) - 1
    assert summary["quarantine_share"] == pytest.approx(10 / considered)


def test_a_different_shops_file_needs_only_a_column_mapping(spark, tmp_path):
    shop = pd.DataFrame({
        "cust": ["a1", "a1", "b2", "b2", None],
        "sku": ["x-1", "x-2", "x-1", "POST", "x-2"],
        "when": ["2024-03-01 10:00", "2024-03-01 10:00", "2024-03-02 12:30", "2024-03-02 12:30", "2024-03-03 09:00"],
        "qty": [2, 1, 3, 1, 1],
        "total": [20.0, 5.0, 30.0, 4.5, 5.0],
    })
    shop.to_csv(tmp_path / "shop.csv", index=False)
    config = IngestConfig(columns={"customer_id": "cust", "item_id": "sku", "timestamp": "when", "quantity": "qty", "amount": "total"})

    summary = run_ingest(spark, str(tmp_path / "shop.csv"), str(tmp_path / "out"), config)

    assert summary["places"] == {"clean": 3, "returns": 0, "anonymous": 1, "quarantine": 1}
    clean = read_place(tmp_path / "out", "clean").set_index("item_id").sort_index()
    assert list(clean.loc["X-1", "unit_price"]) == [10.0, 10.0]
    # No order id column: a customer's lines at one moment form one order.
    assert clean.order_id.nunique() == 2
    assert clean[clean.customer_id == "a1"].order_id.iloc[0] == "a1|2024-03-01T10:00:00"


def test_excel_input_reads_every_sheet(spark, tmp_path):
    frame = dirty_data.dirty_frame()
    path = tmp_path / "retail.xlsx"
    with pd.ExcelWriter(path) as writer:
        frame.iloc[:10].to_excel(writer, sheet_name="Year 2009-2010", index=False)
        frame.iloc[10:].to_excel(writer, sheet_name="Year 2010-2011", index=False)

    summary = run_ingest(spark, str(path), str(tmp_path / "out"), IngestConfig())

    assert summary["format"] == "excel"
    assert summary["places"] == dirty_data.EXPECTED_PLACES


def test_rerun_gives_the_same_output(spark, tmp_path):
    source = dirty_data.write_parquet(tmp_path / "dirty.parquet")
    first, second = tmp_path / "first", tmp_path / "second"
    run_ingest(spark, source, str(first), IngestConfig())
    run_ingest(spark, source, str(second), IngestConfig())
    run_ingest(spark, source, str(second), IngestConfig())  # over its own previous output

    for place in PLACES:
        pd.testing.assert_frame_equal(sorted_rows(read_place(first, place)), sorted_rows(read_place(second, place)))


def test_a_failure_mid_write_leaves_the_previous_output(spark, tmp_path, monkeypatch):
    output = tmp_path / "out"
    run_ingest(spark, dirty_data.write_csv(tmp_path / "old.csv"), str(output), IngestConfig())
    before = sorted_rows(read_place(output, "clean"))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    # Tables are already written to staging when the summary write fails.
    monkeypatch.setattr(storage, "write_json", crash)
    shop = dirty_data.dirty_frame().iloc[:3]
    shop.to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(OSError, match="disk full"):
        run_ingest(spark, str(tmp_path / "new.csv"), str(output), IngestConfig())

    pd.testing.assert_frame_equal(sorted_rows(read_place(output, "clean")), before)
    assert sorted(p.name for p in output.iterdir()) == ["ingest"]  # no staging left behind


def run_cli(argv, capsys):
    status = cli.run(ingest.main, argv)
    return status, capsys.readouterr().err


def test_missing_input_is_a_clear_error(spark, tmp_path, capsys):
    status, err = run_cli(["--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "out")], capsys)
    assert status == 2
    assert err.strip() == f"error: input {tmp_path / 'nope.csv'} does not exist"


def test_empty_file_is_a_clear_error(spark, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    status, err = run_cli(["--input", str(tmp_path / "empty.csv"), "--output", str(tmp_path / "out")], capsys)
    assert status == 2
    assert "is empty (0 bytes)" in err


def test_header_without_rows_is_a_clear_error(spark, tmp_path, capsys):
    (tmp_path / "header.csv").write_text(",".join(dirty_data.COLUMNS) + "\n")
    status, err = run_cli(["--input", str(tmp_path / "header.csv"), "--output", str(tmp_path / "out")], capsys)
    assert status == 2
    assert "has a header but no rows" in err


def test_missing_columns_are_listed_with_the_available_ones(spark, tmp_path, capsys):
    pd.DataFrame({"Invoice": ["1"], "StockCode": ["A"], "Qty": [1]}).to_csv(tmp_path / "few.csv", index=False)
    status, err = run_cli(["--input", str(tmp_path / "few.csv"), "--output", str(tmp_path / "out")], capsys)
    assert status == 2
    assert "required column(s) missing: customer_id (from 'Customer ID'), timestamp (from 'InvoiceDate'), " \
           "quantity (from 'Quantity'), unit_price or amount" in err
    assert "Available columns: Invoice, StockCode, Qty" in err


def test_unknown_format_is_a_clear_error(spark, tmp_path, capsys):
    (tmp_path / "data.json").write_text('{"a": 1}\n')
    status, err = run_cli(["--input", str(tmp_path / "data.json"), "--output", str(tmp_path / "out")], capsys)
    assert status == 2
    assert "unknown input format" in err and ".parquet" in err


def test_unknown_canonical_column_in_mapping_is_a_clear_error(spark, tmp_path, capsys):
    source = dirty_data.write_csv(tmp_path / "dirty.csv")
    status, err = run_cli(["--input", source, "--output", str(tmp_path / "out"), "--columns", "shopper=Customer ID"], capsys)
    assert status == 2
    assert "unknown canonical column(s) in the mapping: shopper" in err


def test_strict_fails_above_the_quarantine_threshold_and_writes_nothing(spark, tmp_path, capsys):
    source = dirty_data.write_csv(tmp_path / "dirty.csv")
    status, err = run_cli(["--input", source, "--output", str(tmp_path / "out"), "--strict", "--max-quarantine-share", "0.2"], capsys)
    assert status == 2
    assert "--strict: 50.0% of rows were quarantined" in err and "malformed=4" in err
    assert not (tmp_path / "out" / "ingest").exists()


def test_strict_passes_under_the_threshold(spark, tmp_path, capsys):
    source = dirty_data.write_csv(tmp_path / "dirty.csv")
    status, _ = run_cli(["--input", source, "--output", str(tmp_path / "out"), "--strict", "--max-quarantine-share", "0.6"], capsys)
    assert status == 0
    assert (tmp_path / "out" / "ingest" / "clean").is_dir()


def write_events(path, rows) -> str:
    from webapp import events

    pd.DataFrame(rows, columns=events.COLUMNS).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_purchases_the_web_app_recorded_are_taken_in_with_the_log(spark, tmp_path, kind):
    events = write_events(tmp_path / "events.csv", [
        ("session-s1", "13085", "85048", "2011-12-01 10:00:00", 2.0, 6.95, "United Kingdom"),
        ("event-7", "13999", "22041", "2011-12-02 11:00:00", 1.0, None, None),  # no price in the event nor the store
    ])
    write = dirty_data.write_csv if kind == "csv" else dirty_data.write_parquet
    summary = run_ingest(spark, write(tmp_path / f"log.{kind}"), str(tmp_path / "out"), IngestConfig(), events_uri=events)
    assert summary["rows_in"] == len(dirty_data.ROWS) + 2 and summary["events_in"] == 2
    assert summary["places"] == {**dirty_data.EXPECTED_PLACES, "clean": dirty_data.EXPECTED_PLACES["clean"] + 1,
                                 "quarantine": dirty_data.EXPECTED_PLACES["quarantine"] + 1}  # every row accounted for
    clean = read_place(tmp_path / "out", "clean")
    taken = clean[clean.order_id == "session-s1"].iloc[0]
    assert (taken.customer_id, taken.item_id, taken.quantity, taken.unit_price, taken.amount, taken.country) == (
        "13085", "85048", 2.0, 6.95, 13.9, "United Kingdom")
    assert taken.timestamp == pd.Timestamp("2011-12-01 10:00:00")
    quarantined = read_place(tmp_path / "out", "quarantine")
    assert "unparseable unit_price" in quarantined[quarantined["Invoice"] == "event-7"].iloc[0]["detail"]


def test_events_join_a_log_of_line_totals_and_a_bad_events_file_is_one_clear_line(spark, tmp_path, capsys):
    pd.DataFrame({"cust": ["a1"], "sku": ["x-1"], "when": ["2024-03-01 10:00"], "qty": [2], "total": [20.0]}).to_csv(
        tmp_path / "shop.csv", index=False)
    events = write_events(tmp_path / "events.csv", [("event-1", "a1", "X-2", "2024-03-02 09:00:00", 3.0, 1.5, None)])
    config = IngestConfig(columns={"customer_id": "cust", "item_id": "sku", "timestamp": "when", "quantity": "qty", "amount": "total"})
    run_ingest(spark, str(tmp_path / "shop.csv"), str(tmp_path / "out"), config, events_uri=events)
    clean = read_place(tmp_path / "out", "clean").set_index("item_id")
    assert (clean.loc["X-2", "amount"], clean.loc["X-2", "unit_price"]) == (4.5, 1.5)
    pd.DataFrame({"customer_id": ["a1"]}).to_csv(tmp_path / "bad.csv", index=False)
    status = cli.run(ingest.main, ["--input", str(tmp_path / "shop.csv"), "--output", str(tmp_path / "out2"), "--events",
                                   str(tmp_path / "bad.csv"), "--columns", "customer_id=cust,item_id=sku,timestamp=when,quantity=qty,amount=total"])
    assert status == 2 and "the events file lacks column(s) order_id, item_id" in capsys.readouterr().err
