import pytest

from runtime import storage


def publish(spark, target, text):
    with storage.atomic_output(spark, str(target)) as staging:
        storage.FileSystem(spark).write_text(storage.join(staging, "table.txt"), text)


def test_publish_replaces_the_previous_output(spark, tmp_path):
    target = tmp_path / "stage"
    publish(spark, target, "one")
    publish(spark, target, "two")
    assert (target / "table.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_an_error_inside_the_block_keeps_the_previous_output(spark, tmp_path):
    target = tmp_path / "stage"
    publish(spark, target, "good")
    with pytest.raises(RuntimeError):
        with storage.atomic_output(spark, str(target)) as staging:
            storage.FileSystem(spark).write_text(storage.join(staging, "table.txt"), "half")
            raise RuntimeError("executor lost")
    assert (target / "table.txt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_a_crash_between_the_two_renames_is_recovered(spark, tmp_path):
    target = tmp_path / "stage"
    publish(spark, target, "good")
    # What a process killed right after moving the old output aside leaves behind.
    target.rename(tmp_path / ".stage.previous")
    (tmp_path / ".stage.staging-dead").mkdir()

    assert storage.open_stage(spark, str(target), produced_by="the test") == str(target)
    assert (target / "table.txt").read_text() == "good"
    publish(spark, target, "next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_open_stage_says_which_job_to_run_first(spark, tmp_path):
    with pytest.raises(storage.StorageError, match="does not exist: run jobs.ingest first"):
        storage.open_stage(spark, str(tmp_path / "ingest"), produced_by="jobs.ingest")


def test_file_uris_work_like_paths(spark, tmp_path):
    target = f"file://{tmp_path}/stage"
    publish(spark, target, "uri")
    assert storage.FileSystem(spark).read_text(f"{target}/table.txt") == "uri"
