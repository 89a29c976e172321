"""The live console in a real headless Chromium: the page loads, shows clusters with labels
after a short stream, and the user lookup shows a user's recommendations with reasons."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from models.engine import Engine
from models.settings import EngineSettings
from models.synthetic_shop import synthetic_shop
from streams.console import ConsoleFeed, serve_console

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "console.png"


@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm_encoder):
    shop = synthetic_shop(
        n_users=60, items_per_topic=16, events_per_user=30, n_topics=6, drift_share=0.5, seed=4
    )
    data = tmp_path_factory.mktemp("console") / "data"
    engine = Engine.build(EngineSettings(data_dir=data), encoder=minilm_encoder)
    engine.upsert_items(shop.items)
    feed = ConsoleFeed(engine)
    for start in range(0, len(shop.events), 64):
        batch = shop.events[start : start + 64]
        feed.observe(engine.process(batch), engine.pop_interest_events(), n_events=len(batch))
    server = serve_console(feed)
    yield f"http://127.0.0.1:{server.server_address[1]}", shop, feed
    server.shutdown()
    engine.close()


def test_the_json_endpoints(served):
    url, shop, _ = served
    data = json.load(urllib.request.urlopen(url + "/console/data"))
    assert data["events"] == len(shop.events)
    assert data["clusters"] and any(c["label"] for c in data["clusters"])
    assert data["history"] and data["latency_ms"]["p99"] >= data["latency_ms"]["p50"] >= 0
    user = shop.events[-1].user_id
    found = json.load(urllib.request.urlopen(f"{url}/console/user?id={user}"))
    assert (
        found["window"][0]["item_id"] == [e for e in shop.events if e.user_id == user][-1].item_id
    )
    assert len(found["recommendations"]) == 10
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + "/console/user?id=nobody")


@pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no chromium/chromedriver here (make test installs Debian's chromium and "
    "chromium-driver where apt-get can)",
)
def test_the_page_in_headless_chromium(served):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, shop, _ = served
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(url + "/console")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#clusters tr.cluster"))
        labels = [
            e.text for e in driver.find_elements(By.CSS_SELECTOR, "#clusters tr.cluster td.label")
        ]
        topics = {t for t in shop.item_topic.values()}
        assert any(topic in label for label in labels for topic in topics), labels
        assert "events/s" in driver.find_element(By.ID, "stats").text
        user = shop.events[-1].user_id
        driver.find_element(By.ID, "user-id").send_keys(user)
        driver.find_element(By.ID, "lookup").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#user-result li.rec"))
        recs = driver.find_elements(By.CSS_SELECTOR, "#user-result li.rec")
        assert len(recs) == 10
        assert any("because of" in r.text for r in recs)
        if os.environ.get("DRIFTREC_SCREENSHOT"):  # refresh the README's picture
            driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
