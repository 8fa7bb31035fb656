"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Env

CHROMIUM = os.environ.get("TCACHE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: `make deps` installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def tile(page: Page, id_: str) -> str:
    return page.locator(f"#{id_}").inner_text()


def test_dashboard_loads_charts_the_race_and_shows_a_reset(env: Env, http: httpx.Client, browser: Browser) -> None:
    store = 13
    # some history to draw: a few races on two stores, one of them before its report exists
    http.get(f"{env.a.url}/reports/{store}/race")
    for s in (store, 1):
        assert http.get(f"{env.a.url}/reports/{s}").status_code == 200
    for _ in range(10):
        for s in (store, 1):
            assert http.get(f"{env.b.url}/reports/{s}/race").status_code == 200
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(env.a.url + "/")
    expect(page).to_have_title("tcache reference app: live dashboard")
    expect(page.locator("#status")).to_contain_text("live", timeout=20_000)
    # the chart drew every point it was given, and pixels are really on the canvas
    expect(page.locator("#race-chart")).not_to_have_attribute("data-points", "0", timeout=20_000)
    points = int(page.locator("#race-chart").get_attribute("data-points") or 0)
    assert points >= 40
    coloured = page.evaluate("""() => {
        const c = document.getElementById('race-chart');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2])) n++;
        return n;
    }""")
    assert coloured > 200, "the chart has no coloured pixels"
    expect(page.locator("#races tr")).not_to_have_count(0)
    expect(page.locator("#t-hit-rate")).to_contain_text("%")
    entries = int(tile(page, "t-entries").replace(",", ""))
    assert entries >= 1
    invals_before = int(tile(page, "t-invalidations").replace(",", ""))

    # a reset through the API (on the other worker) shows up on the page
    r = http.post(f"{env.b.url}/reports/{store}/reset")
    assert r.status_code == 200, r.text
    row = page.locator(f'#events tr[data-kind="reset"][data-subject="store:{store}"]')
    expect(row).to_have_count(1, timeout=20_000)
    expect(row).to_contain_text("1 cache entries dropped")
    expect(page.locator("#t-invalidations")).not_to_have_text(str(invals_before), timeout=20_000)
    assert int(tile(page, "t-invalidations").replace(",", "")) > invals_before
    # and a race after it: the cache misses, PostgreSQL has nothing either
    race = http.get(f"{env.a.url}/reports/{store}/race").json()
    assert race["winner"] == "none"
    expect(page.locator("#races tr").first).to_contain_text("miss", timeout=20_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert not errors, errors
    page.close()
