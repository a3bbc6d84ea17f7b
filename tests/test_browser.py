"""A real browser (headless Chromium through Playwright) against the production server.

Signs in as each role and checks what each sees; as an editor, opens the dashboard,
builds a campaign, downloads its export and checks the rows; screenshots go to
build/screenshots/. Chromium comes from the system
(``make chromium`` installs the Debian package); without it the test is skipped
and says why.
"""

import csv
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import store_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed and `make chromium` could not install it "
                                                          "(needs root and apt-get)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PASSWORD = "browser test password"
ROLES = ("viewer", "editor", "admin")


@pytest.fixture(scope="module")
def server_environment(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    return root, {**os.environ, "SEGREC_DB": store_data.build(root / "segrec.sqlite"), "SEGREC_STATE_DB": str(root / "state.sqlite"),
                  "SECRET_KEY": secrets.token_hex(32)}


@pytest.fixture(scope="module")
def server(server_environment):
    root, env = server_environment
    port = free_port()
    (root / "password").write_text(PASSWORD + "\n")
    for role in ROLES:  # as an operator would, before the first start
        subprocess.run([sys.executable, "-m", "webapp.users", "add", role, "--role", role, "--password-file", str(root / "password")],
                       env=env, check=True, capture_output=True)
    process = subprocess.Popen([sys.executable, "-m", "webapp.serve", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/v1/healthz", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the server did not start: {process.stdout.read()}")
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def signed_in_page(browser, server, role):
    """A fresh browser context (its own cookies) signed in as ``role``."""
    page = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900}).new_page()
    page.goto(server)
    assert "/sign-in" in page.url  # signed out, every page leads to sign-in
    page.fill("#name", role)
    page.fill("#password", PASSWORD)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#signed-in-as")
    return page


@pytest.fixture(scope="module")
def page(browser, server):
    return signed_in_page(browser, server, "editor")


def downloaded_export(page, tmp_path) -> list[dict]:
    """The rows of the campaign export the page's download button gives."""
    with page.expect_download() as download_info:
        page.click("#export")
    path = tmp_path / "export.csv"
    download_info.value.save_as(path)
    return list(csv.DictReader(path.open()))


def test_each_role_sees_what_it_may_use(browser, server):
    for role in ROLES:
        page = signed_in_page(browser, server, role)
        assert page.inner_text("#signed-in-as") == f"{role} ({role})"
        assert page.locator("#segments tbody tr").count() == 3
        admin_links = page.locator("nav a", has_text="Audit").count()
        page.click("text=Campaigns")
        builder = page.locator("#builder").count()
        assert (admin_links, builder) == {"viewer": (0, 0), "editor": (0, 1), "admin": (1, 1)}[role], role
        if role == "admin":
            page.click("nav >> text=Audit")
            page.wait_for_selector("#audit")
            assert page.locator("#audit tbody tr", has_text="sign-in").count() >= 3  # the three sign-ins above
            page.screenshot(path=str(SCREENSHOTS / "audit.png"), full_page=True)
            page.click("nav >> text=Erasure")
            page.wait_for_selector("#erase textarea")
            assert "none" in page.inner_text("#erasure-jobs")
        page.click("text=Sign out")
        page.wait_for_selector("#sign-in")
        page.goto(f"{server}/campaigns/")
        assert "/sign-in" in page.url
        page.context.close()


def test_a_marketer_builds_a_campaign_and_downloads_its_export(server, page, tmp_path):
    page.goto(server)
    assert page.locator("#segments tbody tr").count() == 3
    assert page.locator("img[alt='Customers and revenue per segment']").count() == 1
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

    page.click("text=Campaigns")
    page.fill("#name", "Browser winter campaign")
    page.check("input[name=segments][value=mid]")
    page.check("input[name=segments][value=low]")
    page.select_option("#list", "discover")
    page.fill("#n", "4")
    page.fill("#control_share", "20")
    page.screenshot(path=str(SCREENSHOTS / "campaign_builder.png"), full_page=True)
    page.click("#builder button[type=submit]")
    page.wait_for_selector("#preview")
    assert "Browser winter campaign" in page.inner_text("h1")
    page.screenshot(path=str(SCREENSHOTS / "campaign.png"), full_page=True)

    rows = downloaded_export(page, tmp_path)
    assert {row["customer_id"] for row in rows} == set(store_data.SEGMENTS["mid"] + store_data.SEGMENTS["low"])
    assert {row["variant"] for row in rows} == {"personalised", "control"}
    assert all(row["item_4"] and row["item_4_description"].startswith("Item number") for row in rows)


def test_customer_lookup_in_the_browser(server, page):
    page.goto(f"{server}/customers")
    page.fill("#id", "c5")
    page.click("#lookup button[type=submit]")
    page.wait_for_selector(".lists")
    assert "mid" in page.inner_text("h2")
    assert page.locator(".lists ol").first.locator("li").count() == 10
    page.screenshot(path=str(SCREENSHOTS / "customer.png"), full_page=True)


def test_the_customer_page_follows_the_shoppers_events(server, server_environment, page):
    _, env = server_environment
    made = subprocess.run([sys.executable, "-m", "webapp.keys", "create", "--name", "storefront", "--scopes", "events:write"],
                          env=env, check=True, capture_output=True, text=True)
    key = made.stdout.strip().splitlines()[-1]
    page.goto(f"{server}/customers?id=c6")
    assert page.locator(".from-events").count() == 0 and "no events recorded" in page.inner_text("#events")
    event = json.dumps({"customer_id": "c6", "item_id": "I045", "type": "cart",
                        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat()}).encode()
    posted = urllib.request.urlopen(urllib.request.Request(f"{server}/api/v1/events", data=event, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"}), timeout=10)
    assert posted.status == 201
    page.reload()
    assert "cart" in page.inner_text("#events") and "I045" in page.inner_text("#events")
    first = page.locator(".lists section").first.locator("li").first
    assert "I045" in first.inner_text() and first.get_attribute("class") == "from-events"
    page.screenshot(path=str(SCREENSHOTS / "customer-after-event.png"), full_page=True)


def test_an_editor_blocks_and_promotes_items_and_the_customer_page_follows(server, page):
    page.goto(f"{server}/customers?id=c7")
    assert "I007" in page.locator(".lists section").first.locator("li").first.inner_text()  # c7's for_you starts with I007
    page.click("nav >> text=Merchandising")
    for item, rule, note in (("I007", "block", "recalled"), ("I050", "promote", "")):
        page.fill("#item_id", item)
        page.select_option("#rule", rule)
        page.fill("#note", note)
        page.click("#new-rule button[type=submit]")
        page.wait_for_selector(f"#rules tr.rule-{rule}")
    assert "recalled" in page.inner_text("#rules") and page.locator("#groups tbody tr").count() == len(store_data.GROUPS)
    page.screenshot(path=str(SCREENSHOTS / "merchandising.png"), full_page=True)
    page.goto(f"{server}/customers?id=c7")
    for_you = page.locator(".lists section").first
    assert "I007" not in page.inner_text(".lists"), page.inner_text(".lists")
    assert "I050" in for_you.locator("li").nth(2).inner_text() and for_you.locator("li").nth(2).get_attribute("class") == "promoted"
    page.goto(f"{server}/merchandising/")
    for _ in range(2):  # the other tests see the store without rules
        page.locator("#rules button", has_text="Remove").first.click()
        page.wait_for_load_state()
    assert "No item is blocked or promoted" in page.inner_text("main")


def test_a_marketer_builds_an_audience_and_takes_a_campaign_from_draft_to_two_results(server, page, tmp_path):
    # The dashboard's charts are shown one per row at a legible size, each a link to the full-size image.
    page.goto(server)
    for chart in page.locator(".charts img").all():
        natural, shown = chart.evaluate("image => [image.naturalWidth, image.getBoundingClientRect().width]")
        assert natural >= 700 and shown >= 700, (chart.get_attribute("alt"), natural, shown)
    assert page.locator(".charts a[title='Open full size']").count() == page.locator(".charts img").count() == 3
    assert "Lapsed" in page.inner_text("#lifecycle")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-charts.png"), full_page=True)

    # Two rules and an affinity rule: slipping or lapsed customers, of 1,000 or more spent, among the 30 likeliest to buy I005
    page.click("nav >> text=Audiences")
    page.check("input[name=lifecycle][value=at_risk]")
    page.check("input[name=lifecycle][value=lapsed]")
    page.fill("input[name=total_spend_min]", "1000")
    page.fill("input[name=affinity_amount]", "30")
    page.fill("input[name=affinity_target]", "I005")
    members = {f"c{k}" for k in range(10, 40) if k % 4 in (2, 3)}  # store_data: c39, c38, .. likeliest; c<k> spent 100 k
    page.locator("#live-count", has_text=f"{len(members)} customers, who have spent").wait_for()  # counted as the rules change
    page.click("#builder button[type=submit]")
    page.wait_for_selector("#count")
    assert page.inner_text("#count").startswith(f"{len(members)} customers")
    assert {cell.inner_text() for cell in page.locator("#sample tbody tr td:first-child").all()} == members
    page.screenshot(path=str(SCREENSHOTS / "audience-builder.png"), full_page=True)
    page.fill("#save #name", "Slipping big spenders who like I005")
    page.click("#save button[type=submit]")
    page.wait_for_selector("#described")
    assert "top 30 customers most likely to buy item I005" in page.inner_text("#described")

    # A campaign from it: created as a draft, changed, exported (no longer a draft), then two results uploads
    page.click("#new-campaign")
    page.fill("#builder #name", "Win back I005 fans")
    page.select_option("#builder #list", "for_you")
    page.fill("#builder #n", "3")
    page.fill("#builder #control_share", "50")
    page.click("#builder button[type=submit]")
    page.wait_for_selector("#preview")
    assert page.inner_text("#status") == "draft"
    page.click("#edit-campaign summary")
    page.fill("#edit #name", "Win back I005 fans, November")
    page.fill("#edit #n", "4")
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#preview")
    assert "November" in page.inner_text("h1") and page.locator("#preview thead th").count() == 3 + 2 * 4
    page.screenshot(path=str(SCREENSHOTS / "campaign-draft.png"), full_page=True)
    rows = downloaded_export(page, tmp_path)
    assert {row["customer_id"] for row in rows} == members
    page.reload()
    assert page.inner_text("#status") == "exported" and page.locator("#edit-campaign").count() == 0

    for number, buyers in ((1, sorted(members)[:2]), (2, sorted(members)[:4])):
        upload = tmp_path / f"results-{number}.csv"
        upload.write_text("customer_id,date,revenue\n" + "".join(f"{customer},2011-12-20,{10 * number}\n" for customer in buyers))
        page.set_input_files("#purchases", str(upload))
        page.click("#upload button[type=submit]")
        page.wait_for_selector(f"#results-source >> text=results-{number}.csv")
    assert page.inner_text("#status") == "results"
    assert page.locator("#history tbody tr").count() == 1 and "results-1.csv" in page.inner_text("#history")
    assert "upload results-2.csv" in page.inner_text("#results-source")
    # An uplift needs two customers on each side; the salted split of 16 customers at 50% has them but once in 2,000 campaigns
    if min(sum(row["variant"] == variant for row in rows) for variant in ("personalised", "control")) > 1:
        assert "pp" in page.inner_text("#uplift") and "p-value" in page.inner_text("#uplift")
    page.screenshot(path=str(SCREENSHOTS / "campaign-results.png"), full_page=True)
