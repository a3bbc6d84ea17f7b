"""Erasing a customer from a full pipeline run: afterwards no file under the output and neither SQLite file holds their id."""

import getpass
import json
import time
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from runtime import cli


def file_bytes(file: Path) -> bytes:
    """The file's bytes; a SQLite file's read by a child process. POSIX locks belong to a process and closing any descriptor
    of a file drops them all, so reading the app's open database here would hide the app's connections from other
    processes: the erasure job's last connection would take itself for the last one and delete the -wal and -shm under
    the app."""
    if ".sqlite" not in file.name:
        return file.read_bytes()
    return subprocess.run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())", str(file)],
                          capture_output=True, check=True).stdout


def holds(path: Path, customer_id: str) -> list[str]:
    """Where under ``path`` the id is: any Parquet cell equal to it, or the id as a token in any other file's bytes."""
    token = re.compile(rb"(?<![0-9A-Za-z.])" + re.escape(customer_id.encode()) + rb"(?![0-9A-Za-z])")
    found = []
    for table in {file.parent for file in path.rglob("*.parquet")}:
        frame = pd.read_parquet(table)
        if any((frame[column].astype(str) == customer_id).any() for column in frame.columns if frame[column].dtype == object):
            found.append(str(table))
    for file in path.rglob("*"):
        if file.is_file() and file.suffix != ".parquet" and token.search(file_bytes(file)):
            found.append(str(file))
    return found


def sqlite_holds(path: Path, customer_id: str) -> list[str]:
    """Any cell equal to the id; and, in the file's bytes (free pages and the write-ahead log included), any record that
    starts with it: a numeric id alone would match digits of other rows side by side, the id followed by a list name or
    the event's item cannot."""
    with closing(sqlite3.connect(path)) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = [table for table in tables for column in connection.execute(f'PRAGMA table_info("{table}")')
                 if connection.execute(f'SELECT 1 FROM "{table}" WHERE CAST("{column[1]}" AS TEXT) = ? LIMIT 1', (customer_id,)).fetchone()]
    raw = b"".join(file_bytes(file) for file in path.parent.glob(path.name + "*") if file.is_file())  # not the pending ids' folder
    records = [customer_id.encode() + follower for follower in (b"for_you", b"discover", b"buy_again", b"X1")]
    return found + [f"bytes {record!r}" for record in records if record in raw]


@pytest.fixture(scope="module")
def erased(spark, pipeline_run, synthetic, tmp_path_factory):
    """A copy of the full run, published, with app events for two customers; then one of them erased by an admin on the
    admin page, which erases from the app's files at once and runs ``jobs.erase`` on the output in its own process."""
    from runtime.stages.publish import publish
    from tests.webclient import SECRET_KEY, csrf, signed_in
    from webapp import create_app

    output = tmp_path_factory.mktemp("erasure") / "out"
    shutil.copytree(pipeline_run, output)
    publish(spark, str(output), str(output / "segrec.sqlite"))
    customers = pd.read_parquet(output / "segments" / "customers").sort_values("customer_id")
    victim, bystander = customers.customer_id.iloc[7], customers.customer_id.iloc[8]
    state = output / "segrec-state.sqlite"
    app = create_app({"SEGREC_DB": str(output / "segrec.sqlite"), "SEGREC_STATE_DB": str(state), "SECRET_KEY": SECRET_KEY})
    with app.app_context():
        from webapp import serving

        for customer in (victim, bystander):
            serving.record_event({"customer_id": customer, "item_id": "X1", "type": "view", "timestamp": "2011-12-11T10:00:00Z"},
                                 key_name="shop")
    assert holds(output, victim) and sqlite_holds(output / "segrec.sqlite", victim) and sqlite_holds(state, victim)
    admin = signed_in(app, "admin")
    asked = admin.post("/admin/erasure", data={"customers": f"{victim}\n", "csrf_token": csrf(admin, "/admin/erasure")})
    assert asked.status_code == 302
    runner = app.extensions["segrec_erasure"]
    assert runner.wait(timeout=600), "jobs.erase did not end"
    job, = runner.jobs()
    assert job["state"] == "done", job["outcome"]
    page = admin.get("/admin/erasure").get_data(as_text=True)
    assert victim not in page and "done" in page and "cannot delete" in page  # the job and its report, without the id
    path = job["outcome"].removeprefix("report: ").removeprefix("file:")
    report = {**json.loads(Path(path).read_text()), "report": path, "removed_now": job["removed_now"]}
    return output, victim, bystander, report


def test_nothing_of_the_customer_is_left_in_any_file(erased):
    output, victim, bystander, report = erased
    assert holds(output, victim) == []
    assert sqlite_holds(output / "segrec.sqlite", victim) == [] and sqlite_holds(output / "segrec-state.sqlite", victim) == []
    assert holds(output, bystander)  # only the one asked for, and the checks do find a customer who is there
    assert any(place.startswith("bytes") for place in sqlite_holds(output / "segrec.sqlite", bystander))
    assert any(place.startswith("bytes") for place in sqlite_holds(output / "segrec-state.sqlite", bystander))


def test_the_report_counts_what_was_removed_without_naming_anyone(erased):
    output, victim, _, report = erased
    removed = report["removed"]
    for place in ("ingest/clean", "segments/customers", "recommendations/recommendations"):
        assert removed.get(place, 0) > 0, place
    for place in ("store/customers", "store/recommendations", "state/events"):  # by the app, before the job ran
        assert report["removed_now"].get(place, 0) > 0, place
    assert any("userFactors" in place for place in removed)  # ALS factors of the customer, through the model's id mapping
    assert any(place.startswith("recommendations/model/") for place in removed)
    assert "cannot delete" in report["not_removed"][0] and str(output) not in json.dumps(removed)
    written = json.loads(Path(report["report"].removeprefix("file:")).read_text())
    assert victim not in json.dumps(written) and written["customers"] == 1
    manifest = json.loads((output / "recommendations" / "manifest.json").read_text())
    assert "refits" in manifest["stale"]["reason"]
    suppressed = json.loads((output / "erasure" / "suppressed.json").read_text())["hashes"]
    assert len(suppressed) == 1 and re.fullmatch(r"[0-9a-f]{64}", suppressed[0])
    assert oct((output / "erasure" / "key").stat().st_mode & 0o777) == "0o600"
    with closing(sqlite3.connect(output / "segrec-state.sqlite")) as connection:
        trail = connection.execute("SELECT actor, action, target, detail FROM audit WHERE action LIKE 'erase%' ORDER BY id").fetchall()
    assert [(actor, action) for actor, action, _, _ in trail] == [("admin", "erase-request"), (f"cli:{getpass.getuser()}", "erase")]
    assert victim not in str(trail)


def test_the_saved_models_still_serve_everyone_else(erased, spark):
    from routing.model import RoutedRecommender

    output, victim, bystander, _ = erased
    model = RoutedRecommender.load(str(output / "recommendations" / "model"))
    lists = model.recommend(spark.createDataFrame([(victim,), (bystander,)], "customer_id string"), 5).toPandas()
    assert set(lists.customer_id) >= {bystander}


def test_a_later_run_on_the_same_input_does_not_bring_the_customer_back(erased, synthetic, capsys):
    from jobs import pipeline
    from tests.conftest import PIPELINE_CONFIG

    output, victim, _, _ = erased
    status = cli.run(pipeline.main, ["--input", str(synthetic.root / "raw" / "transactions"), "--output", str(output),
                                     "--config", str(PIPELINE_CONFIG), "--stages", "ingest,segments"])
    assert status == 0
    summary = json.loads((output / "ingest" / "summary.json").read_text())
    assert summary["erased"] > 0 and sum(summary["places"].values()) + summary["erased"] == summary["rows_in"]
    assert "erased" in capsys.readouterr().out
    assert holds(output, victim) == []


def test_a_job_whose_worker_died_is_taken_over_by_the_next_worker_and_a_live_one_is_not(app):
    """Jobs recorded as a worker records them (a row, and the ids in a pending file) whose worker then died."""
    import fcntl
    import os

    runner = app.extensions["segrec_erasure"]

    def recorded(ids: str) -> int:
        number = runner.state.write("INSERT INTO erasure_jobs (requested_by, customers, removed_now) VALUES ('admin', 1, '{}')")
        os.makedirs(runner.pending, mode=0o700, exist_ok=True)
        Path(runner.pending, str(number)).write_text(ids)
        return number

    orphan, alive = recorded("c1\n"), recorded("c2\n")
    lost = runner.state.write("INSERT INTO erasure_jobs (requested_by, customers, removed_now) VALUES ('admin', 1, '{}')")
    with open(Path(runner.pending, str(alive))) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the worker running it is alive
        assert runner.resume() == [orphan]
        assert runner.resume() == []  # taken: the thread holds it now
        deadline = time.monotonic() + 300
        while {job["id"]: job["state"] for job in runner.jobs()}[orphan] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        states = {job["id"]: job for job in runner.jobs()}
        assert states[orphan]["state"] in ("done", "failed") and states[orphan]["outcome"]
        assert not Path(runner.pending, str(orphan)).exists()  # the ids are gone once the job ends
        assert states[alive]["state"] == "running" and Path(runner.pending, str(alive)).exists()
        assert states[lost]["state"] == "failed" and "erase these customers from it again" in states[lost]["outcome"]
