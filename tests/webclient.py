"""Helpers for tests of the web app: the app on store_data's store, signed-in clients, keys, forms (the fixtures are in conftest)."""

import csv
import io
import re

from tests import store_data
from webapp import accounts, create_app
from webapp.state import get_state

SECRET_KEY = "k3y-for-tests-only-0123456789abcdefXYZ"
PASSWORD = "correct horse battery"


def make_app(tmp_path):
    """The app on store_data's store; no exploration slots, so lists are the stored ones (test_new_items_* explore)."""
    store = store_data.build(tmp_path / "segrec.sqlite")
    return create_app({"SEGREC_DB": store, "SEGREC_STATE_DB": str(tmp_path / "state.sqlite"), "SECRET_KEY": SECRET_KEY,
                       "SEGREC_STORE_CHECK_SECONDS": 0.0, "MAX_CONTENT_LENGTH": 64 * 1024, "SEGREC_EXPLORATION_SHARE": 0.0})


def add_user(app, name, role):
    with app.app_context():
        accounts.add_user(get_state(), name, role, PASSWORD)


def make_key(app, scopes=accounts.SCOPES, name="storefront", rate=accounts.DEFAULT_RATE_PER_MINUTE) -> str:
    with app.app_context():
        return accounts.create_key(get_state(), name, scopes, rate)


def sign_in(client, name, password=PASSWORD):
    return client.post("/sign-in", data={"name": name, "password": password, "csrf_token": csrf(client, "/sign-in")})


def signed_in(app, role):
    add_user(app, role, role)
    client = app.test_client()
    assert sign_in(client, role).status_code == 302
    return client


def editor_with_key(app):
    """An editor signed in, whose requests also carry an API key with every scope."""
    client = signed_in(app, "editor")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_key(app)}"
    return client


def csrf(client, path="/campaigns/"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def error_of(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json and "Traceback" not in response.get_data(as_text=True)
    return response.get_json()["error"]["message"]


def create_campaign(client, **fields):
    form = {"name": "Winter", "segments": ["mid", "low"], "list": "discover", "n": "3", "control_share": "25", **fields}
    return client.post("/campaigns/", data={**form, "csrf_token": csrf(client)})


def read_export(client, campaign_path):
    return list(csv.DictReader(io.StringIO(client.get(f"{campaign_path}/export.csv").get_data(as_text=True))))
