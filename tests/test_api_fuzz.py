"""The API fuzzed from its own OpenAPI document (schemathesis): no 5xx, and every response as the document says.

Bounded: a few examples per operation, with a key of every scope, so the suite stays quick;
``SEGREC_FUZZ_EXAMPLES`` raises the count for a longer hunt.
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests import store_data
from webapp import accounts, create_app
from webapp.state import get_state

EXAMPLES = int(os.environ.get("SEGREC_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    app = create_app({"SEGREC_DB": store_data.build(root / "segrec.sqlite"), "SEGREC_STATE_DB": str(root / "state.sqlite"),
                      "SECRET_KEY": "fuzz-" + "0123456789abcdef" * 3, "SEGREC_STORE_CHECK_SECONDS": 60.0})
    with app.app_context():
        app.config["FUZZ_KEY"] = accounts.create_key(get_state(), "fuzz", accounts.SCOPES, rate_per_minute=1_000_000)
    return app


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzzed_app,
                                          headers={"Authorization": f"Bearer {fuzzed_app.config['FUZZ_KEY']}"})


def operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def test_the_api_answers_every_generated_request_as_documented(api_schema, fuzzed_app):
    headers = {"Authorization": f"Bearer {fuzzed_app.config['FUZZ_KEY']}"}
    tested = []
    for operation in operations(api_schema):

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_as_documented(case):
            case.call_and_validate(headers=headers)

        answers_as_documented()
        tested.append(operation.label)
    assert len(tested) == 6, tested  # every operation but the document itself
