"""Swagger UI in a real headless Chromium, offline: open /docs, upload an image, read the answer."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(
                "Chromium and chromedriver are required (apt-get install chromium chromium-driver)"
            )
        pytest.skip("Chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1400,2000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_swagger_try_it_out_uploads_an_image(server, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    try:
        _swagger_upload(server, browser, wait)
    except BaseException:
        shot = tmp_path / "swagger-failure.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the failing page: {shot}")
        raise
    browser.save_screenshot(str(tmp_path / "swagger.png"))


def _swagger_upload(server, browser, wait) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(f"{server.base}/docs")
    op = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "[id^='operations-prediction-predict']"))
    )
    op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".try-out__btn"))).click()
    file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
    file_input.send_keys(str(ROOT / "samples" / "cat.png"))
    browser.find_element(By.CSS_SELECTOR, ".execute").click()
    body = wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, ".live-responses-table .response-col_description pre")
        )
    )
    wait.until(lambda _: '"label"' in body.text)
    statuses = browser.find_elements(By.CSS_SELECTOR, ".live-responses-table .response-col_status")
    assert statuses[-1].text.strip() == "200"  # the first cell is the table's "Code" header
    assert '"probabilities"' in body.text and '"model"' in body.text


def test_demo_page_classifies_a_chosen_image(server, browser, tmp_path):
    """The page at / : choose samples/ship.png, see the image and the top classes as bars; the
    top label is the one /predict gives for the same file. A screenshot is kept on failure."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    sample = ROOT / "samples" / "ship.png"
    expected = httpx.post(
        f"{server.base}/predict?top_k=5",
        files={"file": ("ship.png", sample.read_bytes(), "image/png")},
        timeout=30,
    ).json()
    shot = tmp_path / "demo.png"
    try:
        browser.get(f"{server.base}/")
        wait = WebDriverWait(browser, 60)
        assert "CIFAR-10 classifier" in browser.title
        file_input = wait.until(ec.presence_of_element_located((By.ID, "file")))
        file_input.send_keys(str(sample))
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#bars .row")) == 5)
        assert browser.find_element(By.ID, "label").text == expected["label"]
        rows = browser.find_elements(By.CSS_SELECTOR, "#bars .row")
        assert [r.get_attribute("data-label") for r in rows] == [
            t["label"] for t in expected["top_k"]
        ]
        first = rows[0].find_element(By.CSS_SELECTOR, ".pct").text
        assert first == f"{100 * expected['top_k'][0]['probability']:.1f} %"
        assert browser.find_element(By.ID, "preview").is_displayed()
        assert browser.find_element(By.ID, "error").text == ""
        # no request left the page for anything but this server (no CDN)
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert all(url.startswith(server.base) or url.startswith("blob:") for url in resources)
    except BaseException:
        browser.save_screenshot(str(shot))
        print(f"screenshot of the failing page: {shot}")
        raise
