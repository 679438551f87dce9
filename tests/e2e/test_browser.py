"""The pages in a real headless Chromium (Selenium + Debian's chromium and chromedriver),
offline: the demo page (keyboard, samples, checks before upload, "not sure"), the model card
page with its figures, Swagger's "Try it out" with file pickers. Each test leaves a screenshot
of the page when it fails (the path is printed)."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest

from tests.helpers import ROOT, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SHIPPED = ROOT / "models" / "cifar10-resnet50"

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(request, tmp_path):
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shot = tmp_path / f"{request.node.name}.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of the failing page: {shot}")
    driver.quit()


@pytest.fixture(scope="module")
def shipped():
    """The model in models/, as `make serve` serves it."""
    s = Server(SHIPPED)
    s.wait_ready()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def unsure(tiny_model_root, tmp_path_factory):
    """The tiny model (its answers near 10 % each) with a card that sets the page's threshold,
    a 100 KB upload limit and a 1-megapixel image limit."""
    root = tmp_path_factory.mktemp("unsure") / "tiny"
    shutil.copytree(tiny_model_root, root)
    card_path = root / "1" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["not_sure_below"] = 0.6
    card_path.write_text(json.dumps(card))
    s = Server(root, max_upload_bytes=100_000, max_image_pixels=1_000_000)
    s.wait_ready()
    yield s
    s.stop()


def _wait(browser, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds)


def _by():
    from selenium.webdriver.common.by import By

    return By


def _predict_requests(server) -> float:
    """``POST /predict`` requests the server has counted (its own metrics)."""
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and 'route="/predict"' in line
    )


def _severe(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_a_sample_clicked_is_answered_with_latency_version_and_request_id(shipped, browser):
    by = _by()
    expected = httpx.post(
        f"{shipped.base}/predict?top_k=10",
        files={"file": ("ship.png", (ROOT / "samples" / "ship.png").read_bytes(), "image/png")},
        timeout=30,
    ).json()
    browser.get(f"{shipped.base}/")
    assert "CIFAR-10 classifier" in browser.title
    thumbs = browser.find_elements(by.CSS_SELECTOR, "#samples button")
    assert [t.get_attribute("data-name") for t in thumbs] == sorted(
        p.name for p in (ROOT / "samples").glob("*.png")
    )
    _wait(browser).until(
        lambda b: b.execute_script(
            "return [...document.querySelectorAll('#samples img')]"
            ".every(i => i.complete && i.naturalWidth === 32)"
        )
    )
    browser.find_element(by.CSS_SELECTOR, "#samples button[data-name='ship.png']").click()
    _wait(browser).until(lambda b: b.find_element(by.ID, "answer").is_displayed())
    top = expected["top_k"][0]
    assert browser.find_element(by.ID, "label").text == (
        f"{top['label']} ({100 * top['probability']:.1f} %)"
    )
    assert top["label"] == "ship" and top["probability"] >= 0.5
    assert not browser.find_element(by.ID, "not-sure").is_displayed()
    threshold = browser.find_element(by.ID, "threshold").text  # the v4 card sets none
    assert "Below 50.0 %" in threshold and "(the threshold is this page's default)" in threshold
    rows = browser.find_elements(by.CSS_SELECTOR, "#bars .row")
    assert [r.get_attribute("data-label") for r in rows] == [
        t["label"] for t in expected["top_k"][:3]
    ]
    browser.find_element(by.ID, "all").click()  # all ten classes
    rows = browser.find_elements(by.CSS_SELECTOR, "#bars .row")
    assert len(rows) == 10
    meta = browser.find_element(by.ID, "meta").text
    assert "answered in" in meta and " ms" in meta
    assert "cifar10-resnet50 version 4" in meta and "request id " in meta
    # the image large, beside the 32 x 32 the model sees, drawn without smoothing
    preview = browser.find_element(by.ID, "preview")
    assert preview.size["width"] >= 200
    seen = browser.find_element(by.ID, "seen")
    assert (
        seen.size["width"] >= 160 and seen.value_of_css_property("image-rendering") == "pixelated"
    )
    assert browser.execute_script(
        "const c = document.getElementById('seen').getContext('2d');"
        "return new Set(c.getImageData(0, 0, 32, 32).data).size > 16"  # a picture, not blank
    )
    # nothing left the page for anything but this server (no CDN), and no error in the console
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(url.startswith(shipped.base) or url.startswith("blob:") for url in resources)
    assert _severe(browser) == []


def test_the_picker_is_reachable_and_opened_from_the_keyboard(unsure, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    by = _by()
    browser.get(f"{unsure.base}/")
    # the file dialog cannot open headless: count the picker's openings instead
    browser.execute_script(
        "window.opened = 0; document.getElementById('file').addEventListener('click',"
        " (e) => { window.opened++; e.preventDefault(); });"
    )
    focused = []
    for _ in range(20):  # Tab through the page until the drop area has the focus
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused.append(browser.switch_to.active_element.get_attribute("id"))
        if focused[-1] == "drop":
            break
    assert focused[-1] == "drop", focused
    assert browser.switch_to.active_element.get_attribute("role") == "button"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    ActionChains(browser).send_keys(Keys.SPACE).perform()
    assert browser.execute_script("return window.opened") == 2
    browser.find_element(by.CSS_SELECTOR, "#drop .link").click()  # a click on its text, too
    assert browser.execute_script("return window.opened") == 3
    # the file the dialog would give: answered
    browser.find_element(by.ID, "file").send_keys(str(ROOT / "samples" / "frog.png"))
    _wait(browser).until(lambda b: b.find_element(by.ID, "answer").is_displayed())
    assert len(browser.find_elements(by.CSS_SELECTOR, "#bars .row")) == 3


def test_the_not_sure_state_and_its_stated_threshold(unsure, browser):
    by = _by()
    browser.get(f"{unsure.base}/")
    browser.find_element(by.ID, "file").send_keys(str(ROOT / "samples" / "ship.png"))
    _wait(browser).until(lambda b: b.find_element(by.ID, "answer").is_displayed())
    badge = browser.find_element(by.ID, "not-sure")
    assert badge.is_displayed() and badge.text == "not sure"
    assert browser.find_element(by.ID, "label").text.startswith("perhaps ")
    threshold = browser.find_element(by.ID, "threshold").text
    assert "Below 60.0 %" in threshold and "(the threshold is set by the model card)" in threshold
    assert "always answers one of its ten classes" in browser.find_element(by.TAG_NAME, "p").text


def test_files_over_the_limits_or_of_other_types_are_refused_before_upload(
    unsure, browser, tmp_path
):
    from PIL import Image

    by = _by()
    big = tmp_path / "big.bmp"  # 300 KB of pixels: over the server's 100 KB (97.7 KiB) limit
    Image.new("RGB", (320, 320), (120, 30, 200)).save(big)
    wide = tmp_path / "wide.png"  # a few KB, but 1.2 megapixels: over the 1-megapixel limit
    Image.new("RGB", (1200, 1000), (20, 160, 90)).save(wide)
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    browser.get(f"{unsure.base}/")
    limits = browser.find_element(by.ID, "limits").text
    assert "up to 97.7 KiB and 1 megapixels" in limits, limits
    before = _predict_requests(unsure)
    for path, words in [
        (big, ["big.bmp is 300", "KiB; the limit is 97.7 KiB", "Nothing was uploaded"]),
        (svg, ["SVG+XML images are not supported"]),
        (wide, ["wide.png is 1.2 megapixels; the limit is 1 megapixels", "Nothing was uploaded"]),
        (text, ["notes.txt is text/plain, not an image"]),
    ]:
        browser.find_element(by.ID, "file").send_keys(str(path))
        _wait(browser, 10).until(lambda b: b.find_element(by.ID, "error").text)
        message = browser.find_element(by.ID, "error").text
        assert all(w in message for w in words), message
        assert not browser.find_element(by.ID, "answer").is_displayed()
        # no broken-image icon: the preview never got the refused file
        assert browser.find_element(by.ID, "preview").get_attribute("src") in (None, "")
        browser.execute_script("document.getElementById('error').textContent = ''")
    assert _predict_requests(unsure) == before  # nothing reached the server


def test_model_card_page_renders_with_its_figures(shipped, browser):
    by = _by()
    browser.get(f"{shipped.base}/")
    browser.find_element(by.LINK_TEXT, "Model card").click()
    _wait(browser).until(lambda b: b.find_elements(by.TAG_NAME, "h1"))
    assert browser.find_element(by.TAG_NAME, "h1").text == "cifar10-resnet50, version 4"
    meta = browser.find_element(by.CSS_SELECTOR, "table.meta").text
    assert "apache-2.0" in meta and "92.63" in meta
    _wait(browser).until(
        lambda b: b.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    images = browser.execute_script("return [...document.images].map(i => i.src)")
    assert {u.rsplit("/", 1)[1] for u in images} == {
        "learning_curves.png",
        "confusion_matrix_test.png",
        "reliability_diagram.png",
    }
    assert "---" not in browser.find_element(by.TAG_NAME, "main").text.splitlines()[0]
    assert _severe(browser) == []  # no 404 (or any error) in the browser's log
    browser.find_element(by.LINK_TEXT, "model_card.json").click()
    _wait(browser).until(lambda b: '"class_names"' in b.page_source)
    assert _severe(browser) == []
    browser.back()
    browser.find_element(by.LINK_TEXT, "Markdown").click()  # the card as its Markdown text
    _wait(browser).until(lambda b: "license: apache-2.0" in b.page_source)
    assert "# cifar10-resnet50, version 4" in browser.page_source


def test_swagger_try_it_out_uploads_through_file_pickers(shipped, browser):
    from selenium.webdriver.support import expected_conditions as ec

    by = _by()
    wait = _wait(browser)
    selector = "[id^='operations-prediction-predict']"

    def op():  # Swagger re-renders the operation: look it up each time
        return browser.find_element(by.CSS_SELECTOR, selector)

    def try_it_out() -> None:
        browser.get(f"{shipped.base}/docs")
        wait.until(ec.element_to_be_clickable((by.CSS_SELECTOR, selector)))
        op().find_element(by.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(ec.element_to_be_clickable((by.CSS_SELECTOR, ".try-out__btn"))).click()

    try_it_out()
    top_k = wait.until(lambda _: op().find_element(by.CSS_SELECTOR, "input[placeholder='top_k']"))
    assert top_k.get_attribute("value") == "3"  # the server's default, as a value
    texts = op().find_elements(by.CSS_SELECTOR, "input[type='text'], textarea")
    assert [t.get_attribute("value") for t in texts] == ["3"]  # nothing else pre-filled

    def pickers():
        return op().find_elements(by.CSS_SELECTOR, "input[type='file']")

    def execute() -> tuple[str, dict]:
        browser.find_element(by.CSS_SELECTOR, ".execute").click()
        cells = ".live-responses-table .response-col_description pre"
        wait.until(lambda _: op().find_element(by.CSS_SELECTOR, cells).text.strip()[:1] == "{")
        answer = json.loads(op().find_element(by.CSS_SELECTOR, cells).text)
        statuses = op().find_elements(by.CSS_SELECTOR, ".live-responses-table .response-col_status")
        status = statuses[-1].text.strip()
        browser.find_element(by.CSS_SELECTOR, ".btn-clear").click()
        return status, answer

    status, answer = execute()  # no file chosen
    assert status == "422" and answer["error"]["code"] == "missing_file", answer
    (single,) = pickers()  # 'file'
    single.send_keys(str(ROOT / "samples" / "ship.png"))
    status, answer = execute()
    assert status == "200" and answer["label"] == "ship" and len(answer["top_k"]) == 3
    try_it_out()  # afresh: several files in 'files'
    for _ in range(2):
        next(b for b in op().find_elements(by.CSS_SELECTOR, "button") if "Add" in b.text).click()
    assert len(pickers()) == 3  # 'file' and two items of 'files'
    pickers()[1].send_keys(str(ROOT / "samples" / "frog.png"))
    pickers()[2].send_keys(str(ROOT / "samples" / "truck.png"))
    status, answer = execute()
    assert status == "200", answer
    assert [r["filename"] for r in answer["results"]] == ["frog.png", "truck.png"]
    assert [r["label"] for r in answer["results"]] == ["frog", "truck"]


def test_swagger_and_redoc_show_the_error_examples(unsure, browser):
    by = _by()
    browser.get(f"{unsure.base}/docs")
    op = _wait(browser).until(
        lambda b: b.find_element(by.CSS_SELECTOR, "[id^='operations-prediction-predict']")
    )
    op.find_element(by.CSS_SELECTOR, ".opblock-summary").click()
    rows = _wait(browser).until(lambda b: b.find_elements(by.CSS_SELECTOR, "tr.response"))
    codes = [r.get_attribute("data-code") for r in rows]
    assert codes == ["200", "400", "408", "413", "415", "422", "500", "503", "504"]
    shown = {r.get_attribute("data-code"): r.text for r in rows}
    assert '"code": "unsupported_image_type"' in shown["415"]
    assert '"code": "missing_file"' in shown["422"]
    assert '"code": "overloaded"' in shown["503"] and "Retry-After" in shown["503"]
    browser.get(f"{unsure.base}/redoc")
    tabs = _wait(browser).until(lambda b: b.find_elements(by.CSS_SELECTOR, "[role=tab]"))
    first_415 = next(t for t in tabs if t.text.strip() == "415")  # /predict's, the first operation
    browser.execute_script("arguments[0].scrollIntoView()", first_415)
    first_415.click()
    _wait(browser).until(lambda b: "unsupported_image_type" in b.page_source)
    assert _severe(browser) == []
