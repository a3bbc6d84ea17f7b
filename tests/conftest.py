"""One local SparkSession for the whole test run (small shuffles, no UI)."""

import pytest

from jobs.spark import SparkSettings, build_session


@pytest.fixture(scope="session")
def spark():
    session = build_session(
        SparkSettings(app_name="segrec-tests", master="local[2]", shuffle_partitions=2, driver_memory="2g", quiet=True)
    )
    yield session
    session.stop()
