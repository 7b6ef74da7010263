"""The web console in a real browser (Debian's chromium, driven by Playwright) against the local stack:
enter the key, build a heatmap job from the command's form, upload its input straight to the local S3
(which answers the browser from the bucket's CORS rules, as S3 does), follow the job live over the
WebSocket to succeeded, and see the picture it drew. Screenshots go to artifacts/console/."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobgate_local.testing import DevProcess
from playwright.sync_api import Browser, ConsoleMessage, Page, WebSocketRoute, expect, sync_playwright

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "console"
SCHEMA = {
    "fields": [
        {"name": "id", "type": "int", "unique": True, "min": 1, "max": 100_000_000},
        {"name": "who", "type": "name"},
        {"name": "score", "type": "float", "min": 0, "max": 100},
    ]
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # No skip: `make test` needs the browser (.ci/run installs Debian's chromium).
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def problems(page: Page) -> list[str]:
    """What the page logged as an error or a warning, and what it threw: none is expected."""
    logged: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            logged.append(f"{message.type}: {message.text}")

    page.on("console", note)
    page.on("pageerror", lambda error: logged.append(f"uncaught: {error}"))
    return logged


def sign_in(page: Page, stack: DevProcess) -> None:
    key = page.get_by_role("textbox", name="API key")
    expect(key).to_be_focused()
    key.fill(stack.api_key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()


def test_a_heatmap_from_the_form_runs_live_to_its_picture(
    local_stack: DevProcess, page: Page, npy_file: Path, problems: list[str]
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    answer = page.goto(local_stack.state["console_url"])  # as `make dev` prints it
    assert answer is not None and answer.ok
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "default-src 'none'" in policy
    ws_origin = local_stack.websocket_url.rsplit("/", 1)[0]
    connect = next(d for d in policy.split(";") if d.strip().startswith("connect-src")).split()
    assert ws_origin in connect and local_stack.aws_endpoint_url in connect

    sign_in(page, local_stack)
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()

    page.get_by_role("link", name="New job").click()
    page.get_by_role("link", name="heatmap", exact=True).click()
    expect(page.get_by_role("heading", name="New job: visualize heatmap")).to_be_visible()
    page.get_by_label("--input", exact=True).set_input_files(npy_file)
    page.get_by_label("--output", exact=True).fill("map.png")
    for flag in ("--no-coastline", "--no-borders", "--no-gridlines"):
        page.get_by_label(flag, exact=True).check()
    page.screenshot(path=ARTIFACTS / "1-form.png")
    page.get_by_role("button", name="Submit job").click()

    expect(page.get_by_role("heading", name=re.compile(r"^Job [0-9A-Z]{26}$"))).to_be_visible()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    stderr = page.locator("#log-stderr")
    expect(stderr).to_contain_text("map.png")
    assert stderr.get_attribute("data-source") == "events"  # the lines came as events, not the record
    expect(page.locator("#job-transport")).to_have_text("ended (followed live over WebSocket)")
    expect(page.get_by_role("progressbar")).to_have_attribute("value", "1")
    expect(page.locator("#job-exit")).to_have_text("0")

    picture = page.get_by_role("img", name="Preview of map.png")
    expect(picture).to_be_visible(timeout=20_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    assert picture.evaluate("img => img.naturalWidth") == 1024  # heatmap's default width
    download = page.get_by_role("link", name="Download map.png")
    assert download.get_attribute("href").startswith(local_stack.aws_endpoint_url)  # type: ignore[union-attr]
    page.screenshot(path=ARTIFACTS / "2-job.png", full_page=True)

    page.get_by_role("link", name="Jobs").click()
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("table")).to_contain_text("visualize heatmap")
    page.screenshot(path=ARTIFACTS / "3-jobs.png")

    assert problems == []


def test_without_a_websocket_the_job_page_follows_by_long_poll_and_previews_a_csv(
    local_stack: DevProcess, page: Page, tmp_path: Path, problems: list[str]
) -> None:
    """The WebSocket answers nothing and closes (a proxy that drops it): the page goes on with the long
    poll to the end; the job's CSV, larger than the preview reads, shows its first rows."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    closed: list[str] = []

    def refuse(socket: WebSocketRoute) -> None:
        closed.append(socket.url)
        socket.close()

    page.route_web_socket(re.compile(r"^ws://"), refuse)
    page.goto(f"{local_stack.http_url}/console")
    key = page.get_by_role("textbox", name="API key")
    key.fill("not-a-key-of-this-stack")
    key.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("That key is not valid.")
    expect(key).to_be_focused()
    key.fill("")
    sign_in(page, local_stack)
    # Keyboard: the first Tab reaches the skip link, which moves focus to the page's content.
    page.reload()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("main")).to_be_focused()
    page.goto(f"{local_stack.http_url}/console#/new/synth/generate")
    page.get_by_label("--schema (required)", exact=True).set_input_files(schema)
    page.get_by_label("--rows (required)", exact=True).fill("20000")
    page.get_by_label("--output (required)", exact=True).fill("rows.csv")
    page.get_by_role("button", name="Submit job").click()

    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#job-transport")).to_have_text("ended (followed live over long poll)")
    assert closed, "the page never tried the WebSocket"
    preview = page.get_by_role("table", name=re.compile("^Preview of rows.csv"))
    expect(preview).to_be_visible()
    expect(preview.locator("thead th")).to_have_text(["id", "who", "score"])
    expect(preview.locator("tbody tr")).to_have_count(20)
    page.screenshot(path=ARTIFACTS / "4-csv.png", full_page=True)

    page.get_by_role("link", name="Uploads").click()
    expect(page.get_by_role("table", name="Uploaded files, newest first")).to_contain_text("schema.json")
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    page.get_by_label("File", exact=True).set_input_files(notes)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text(re.compile(r"Uploaded notes.csv: asset://\w{26}"))

    page.get_by_role("link", name="Pipelines").click()
    expect(page.get_by_role("heading", name="Pipelines")).to_be_visible()
    page.get_by_role("link", name="Maps").click()
    page.get_by_label("Map id").fill("no-such-map")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Not found — No map 'no-such-map'.")

    # The errors expected: chromium's own lines for the key refused and the map that is not there.
    assert [p for p in problems if "status of 401" not in p and "status of 404" not in p] == [], problems
