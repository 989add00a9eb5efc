"""The page in a real browser: Debian's headless Chromium, driven by Selenium.

A real ``inference-gateway serve`` with a model repository of three models (the
built-in network under its own name, the default; ``tench``, which always answers
"tench"; ``broken``, whose file cannot load) serves the page. The browser uploads real
photos through the file input, drops and pastes one, uploads a corrupt file and a
too-large image, switches models; after each test the page must have requested nothing
outside the gateway and logged no console error or Content-Security-Policy violation
(the failed uploads' own network lines aside).

Chromium and chromedriver come from Debian's ``chromium`` and ``chromium-driver``
packages; ``make test`` installs them (scripts/ensure_tools.sh). Without them the tests
fail; where Chromium is installed but cannot start (no sandbox support, no shared
memory), they are skipped with Chromium's own message.

``UI_SCREENSHOT=docs/images/ui.png`` makes the photo test save its screenshot there
(the README's picture); otherwise it goes to the test's temporary directory.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from inference_gateway.inference.labels import imagenet_labels
from tests.helpers import wait_until
from tests.images import CAT_CLASSES, CAT_PNG, COFFEE_PNG, ESPRESSO, cat_jpeg, encode, gradient
from tests.model_repository import (
    BUILTIN_YAML,
    TENCH,
    builtin_onnx,
    shifted_variant,
    write_yaml_model,
)
from tests.servers import GatewayProcess, gateway_process

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
#: The longest wait for anything the page does (a prediction takes well under a second).
WAIT_SECONDS = 60
#: Only linked from the page, never requested by it.
TRACE_UI_URL = "http://127.0.0.1:16686/trace/{trace_id}"
MAX_IMAGE_SIDE = 2000
WINDOW = (1000, 1200)
#: Runs before the page's own scripts on every load: records CSP violations.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""
#: What Chromium logs for a fetch answered with an error status; expected for uploads
#: the test makes fail on purpose, an error anywhere else.
FAILED_UPLOAD = re.compile(
    r"/models/[^/ ]+(?:/versions/[^/ ]+)?/predict\?top_k=\d+ - Failed to load resource: "
    r"the server responded with a status of (\d{3})"
)
#: The PNG committed as the README's picture stays under this.
SCREENSHOT_MAX_BYTES = 150_000


#: The default model: the built-in network, named as `make run` serves it.
DEFAULT = "efficientnet-lite0"


def _write_models(root: Path) -> None:
    """The default model, ``tench`` and ``broken`` (its only version's file is not
    ONNX: listed, never serving, 503)."""
    builtin = builtin_onnx()
    write_yaml_model(root, DEFAULT, {1: builtin}, BUILTIN_YAML)
    write_yaml_model(root, "tench", {1: shifted_variant(builtin, TENCH, 50.0)}, BUILTIN_YAML)
    version = root / "broken" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"not an ONNX file")
    (root / "broken" / "labels.txt").write_text("a\nb\n")


def _model_states(url: str) -> dict[str, str]:
    models = httpx.get(f"{url}/models", timeout=5).json()["models"]
    return {m["name"]: m["state"] for m in models}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A real gateway serving the default model, ``tench`` and ``broken``."""
    root = tmp_path_factory.mktemp("ui-models")
    _write_models(root)
    env = {
        "MODEL_REPOSITORY": str(root),
        "DEFAULT_MODEL": DEFAULT,
        "WORKERS": "1",
        "TRACE_UI_URL": TRACE_UI_URL,
        "MAX_IMAGE_SIDE": str(MAX_IMAGE_SIDE),
        "LOG_LEVEL": "WARNING",
    }
    # /ready stays 503 while `broken` cannot load: wait for the models themselves.
    with gateway_process(env, wait_for="/health") as gw:
        expected = {DEFAULT: "READY", "tench": "READY", "broken": "UNAVAILABLE"}
        wait_until(lambda: _model_states(gw.url) == expected, what="the three models")
        yield gw


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    """Headless Chromium, logging the console and every network request."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail(
            "chromium and chromedriver are not installed: "
            "run scripts/ensure_tools.sh chromium chromium-driver (make test does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--lang=en-US",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium cannot start here: {(exc.msg or str(exc)).splitlines()[0]}")
    browser.set_page_load_timeout(WAIT_SECONDS)
    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP_VIOLATIONS}
    )
    try:
        yield browser
    finally:
        browser.quit()


@dataclass
class Card:
    """One result on the page, as a person reads it."""

    element: WebElement

    def text(self, selector: str) -> str:
        return str(self.element.find_element(By.CSS_SELECTOR, selector).text)

    def texts(self, selector: str) -> list[str]:
        return [str(e.text) for e in self.element.find_elements(By.CSS_SELECTOR, selector)]

    @property
    def top_label(self) -> str:
        return self.text(".prediction.top .label")


@dataclass
class Page:
    """The gateway's page in the browser, and what the browser logged while on it."""

    driver: WebDriver
    origin: str
    requests: list[str] = field(default_factory=list)
    console: list[dict[str, object]] = field(default_factory=list)
    #: The headers of each answer the gateway gave, by its X-Request-ID.
    answers: dict[str, dict[str, str]] = field(default_factory=dict)

    def open(self) -> Page:
        self.driver.get(self.origin + "/")
        self.wait(lambda d: d.find_element(By.ID, "model").is_enabled(), "the model list")
        return self

    def wait(self, condition: Callable[[WebDriver], object], what: str) -> None:
        try:
            WebDriverWait(self.driver, WAIT_SECONDS).until(condition)
        except TimeoutException:
            self.read_logs()
            pytest.fail(f"the page never showed {what}; console: {self.console}")

    @property
    def model(self) -> Select:
        return Select(self.driver.find_element(By.ID, "model"))

    @property
    def version(self) -> Select:
        return Select(self.driver.find_element(By.ID, "version"))

    def upload(self, *paths: Path) -> list[Card]:
        """Choose ``paths`` in the file input; the cards once all are answered, in order."""
        before = len(self.driver.find_elements(By.CSS_SELECTOR, "#results > li"))
        self.driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
        total = before + len(paths)

        def answered(d: WebDriver) -> bool:
            cards = d.find_elements(By.CSS_SELECTOR, "#results > li")
            return len(cards) == total and not d.find_elements(
                By.CSS_SELECTOR, "#results > li[aria-busy]"
            )

        self.wait(answered, f"{len(paths)} answered images")
        # The newest batch is first, in the order chosen.
        cards = self.driver.find_elements(By.CSS_SELECTOR, "#results > li")
        return [Card(e) for e in cards[: len(paths)]]

    def read_logs(self) -> None:
        """Collect the console, the URLs requested and the answers' headers since the
        last read."""
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            elif message["method"] == "Network.responseReceived":
                headers = message["params"]["response"]["headers"]
                headers = {name.lower(): value for name, value in headers.items()}
                if "x-request-id" in headers:
                    self.answers[headers["x-request-id"]] = headers

    def assert_clean(self, failed_uploads: tuple[int, ...] = ()) -> None:
        """Nothing requested outside the gateway, no CSP violation, no console error
        but the network lines of the uploads expected to fail (their statuses)."""
        violations = self.driver.execute_script("return window.__cspViolations")
        self.read_logs()
        assert violations == []
        assert self.requests, "the performance log recorded no request"
        outside = [
            url
            for url in self.requests
            if not url.startswith((self.origin + "/", "data:", f"blob:{self.origin}/"))
        ]
        assert outside == []
        unexpected = []
        statuses = []
        for entry in self.console:
            match = FAILED_UPLOAD.search(str(entry["message"]))
            if entry.get("source") == "network" and match:
                statuses.append(int(match.group(1)))
            elif entry["level"] in ("SEVERE", "WARNING"):
                unexpected.append(entry)
        assert unexpected == []
        assert sorted(statuses) == sorted(failed_uploads)


@pytest.fixture
def page(driver: WebDriver, gateway: GatewayProcess) -> Page:
    """The page, freshly loaded; checked for outside requests and errors by each test."""
    driver.set_window_size(*WINDOW)
    driver.get_log("browser")  # drop what earlier tests left
    driver.get_log("performance")
    return Page(driver, gateway.url).open()


LABELS = imagenet_labels()


def _percent(text: str) -> float:
    return float(text.rstrip("%"))


def _assert_shows_a_prediction(card: Card, page: Page) -> None:
    """Bars for the top classes, the waterfall of its answer's ``Server-Timing``, the
    image's facts, its ids and the trace's link."""
    percents = [_percent(t) for t in card.texts(".prediction .pct")]
    assert len(percents) == 5 and percents == sorted(percents, reverse=True)
    bar = card.element.find_element(By.CSS_SELECTOR, ".prediction.top .bar")
    fill = bar.find_element(By.CSS_SELECTOR, ".fill")
    drawn = 100 * fill.size["width"] / bar.size["width"]
    assert abs(drawn - percents[0]) < 2, (drawn, percents[0])

    stages = card.element.find_elements(By.CSS_SELECTOR, ".waterfall .stage")
    names = [s.get_attribute("data-stage") for s in stages]
    assert names == ["preprocess", "queue", "inference", "total", "round trip"]
    shown = {}
    for stage in stages:
        ms = re.fullmatch(r"(\d+\.\d+) ms", stage.find_element(By.CLASS_NAME, "stage-ms").text)
        assert ms is not None
        shown[stage.get_attribute("data-stage")] = float(ms.group(1))
        assert stage.find_element(By.CLASS_NAME, "segment").size["width"] > 0

    assert re.match(r"PNG · \d+ × \d+ px · [\d.]+ KB · ", card.text(".meta"))
    request_id = card.text(".request-id")
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    page.read_logs()
    header = page.answers[request_id]["server-timing"]
    sent = {name: float(ms) for name, ms in re.findall(r"(\w+);dur=([\d.]+)", header)}
    assert sent.keys() == {"preprocess", "queue", "inference", "total"}
    for stage, ms in sent.items():
        assert shown[stage] == pytest.approx(ms, abs=0.05), (stage, header)  # as rounded
    link = card.element.find_element(By.CSS_SELECTOR, "a.trace-id")
    trace_id = str(link.text)
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert link.get_attribute("href") == TRACE_UI_URL.format(trace_id=trace_id)
    # Every trace is kept in these tests; the page reads it from the traceparent header.
    _, sent_trace_id, _, flags = page.answers[request_id]["traceparent"].split("-")
    assert sent_trace_id == trace_id and int(flags, 16) & 0x01  # the sampled flag
    assert card.text(".trace-kept") == "kept"


def _save_screenshot(driver: WebDriver, path: Path) -> int:
    """The whole page as it is now, as a small PNG at ``path``; its size in bytes."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WINDOW[0], "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    raw = path.with_suffix(".raw.png")
    try:
        assert driver.save_screenshot(str(raw))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    with Image.open(raw) as shot:
        # A palette of 96 colours keeps text crisp and the photos recognisable.
        shot.convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True
        )
    raw.unlink()
    return path.stat().st_size


def test_photos_show_their_top_class_bars_and_waterfall(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    assert page.model.first_selected_option.get_attribute("value") == DEFAULT
    assert page.version.first_selected_option.text == "Latest serving (1)"

    cat, coffee = page.upload(CAT_PNG, COFFEE_PNG)

    assert cat.text("h3") == CAT_PNG.name
    assert cat.top_label in {LABELS[c] for c in CAT_CLASSES}
    assert coffee.top_label == LABELS[ESPRESSO]
    for card in (cat, coffee):
        _assert_shows_a_prediction(card, page)
        assert (
            card.element.find_element(By.CSS_SELECTOR, ".thumb img")
            .get_attribute("src")
            .startswith("blob:")
        )
    page.assert_clean()

    target = Path(os.environ.get("UI_SCREENSHOT") or tmp_path / "ui.png")
    assert _save_screenshot(page.driver, target) < SCREENSHOT_MAX_BYTES


def test_a_corrupt_file_and_a_too_large_image_show_the_problem(page: Page, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    wide = tmp_path / "wide.png"
    wide.write_bytes(encode(gradient(MAX_IMAGE_SIDE + 1, 8), "PNG"))

    corrupt_card, wide_card = page.upload(corrupt, wide)

    page.wait(
        lambda _: corrupt_card.text(".thumb") == "No preview", "no preview of the corrupt file"
    )
    assert corrupt_card.text(".problem-title") == "Invalid image (400)"
    assert corrupt_card.text(".problem-detail")
    assert wide_card.text(".problem-title") == "Image too large (400)"
    assert str(MAX_IMAGE_SIDE) in wide_card.text(".problem-detail")
    for card in (corrupt_card, wide_card):
        assert "failed" in str(card.element.get_attribute("class"))
        assert re.fullmatch(r"[0-9a-f-]{36}", card.text(".request-id"))
        assert not card.element.find_elements(By.CSS_SELECTOR, ".prediction")
    page.assert_clean(failed_uploads=(400, 400))


def test_switching_model_asks_that_model(page: Page) -> None:
    names = [o.get_attribute("value") for o in page.model.options]
    assert sorted(names) == ["broken", DEFAULT, "tench"]
    assert "broken (unavailable)" in [o.text for o in page.model.options]

    page.model.select_by_value("tench")
    assert [o.text for o in page.version.options] == ["Latest serving (1)", "1"]
    page.version.select_by_value("1")
    (card,) = page.upload(CAT_PNG)
    assert card.top_label == "tench"
    assert "tench v1" in card.text(".meta")

    # A model that cannot load: 503 with the retry hint, as the problem says it.
    page.model.select_by_value("broken")
    (card,) = page.upload(CAT_PNG)
    assert card.text(".problem-title") == "Model not ready (503)"
    assert card.text(".problem-retry") == "The gateway asks to try again in 5 s."
    page.assert_clean(failed_uploads=(503,))


#: Hands the page a JPEG (base64 in ``arguments[1]``) the way a person's drop or paste
#: does: a ``drop`` event on the drop zone, or a ``paste`` event on the document.
DROP_OR_PASTE = """
const bytes = Uint8Array.from(atob(arguments[1]), (c) => c.charCodeAt(0));
const files = new DataTransfer();
files.items.add(new File([bytes], arguments[2], { type: "image/jpeg" }));
if (arguments[0] === "drop") {
  const event = new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true });
  document.getElementById("drop").dispatchEvent(event);
} else {
  const event = new ClipboardEvent("paste", { clipboardData: files, bubbles: true, cancelable: true });
  document.body.dispatchEvent(event);
}
"""


def test_dropped_and_pasted_images_are_classified(page: Page) -> None:
    photo = base64.b64encode(cat_jpeg()).decode()
    for gesture in ("drop", "paste"):
        page.driver.execute_script(DROP_OR_PASTE, gesture, photo, f"{gesture}.jpg")
    page.wait(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results > li.ok")) == 2,
        "two answered images",
    )
    cards = [Card(e) for e in page.driver.find_elements(By.CSS_SELECTOR, "#results > li")]
    assert [c.text("h3") for c in cards] == ["paste.jpg", "drop.jpg"]  # newest first
    for card in cards:
        assert card.top_label in {LABELS[c] for c in CAT_CLASSES}
        assert card.text(".meta").startswith("JPEG · 451 × 300 px")

    page.driver.find_element(By.ID, "clear").click()
    assert page.driver.find_elements(By.CSS_SELECTOR, "#results > li") == []
    assert page.driver.switch_to.active_element.get_attribute("id") == "files"
    page.assert_clean()


def test_the_controls_are_labelled_and_reached_by_keyboard_in_order(page: Page) -> None:
    driver = page.driver
    controls = ["model", "version", "top-k", "files"]
    for control in controls:
        labels = driver.execute_script(
            "return Array.from(arguments[0].labels).map(l => l.textContent.trim())",
            driver.find_element(By.ID, control),
        )
        assert labels and all(labels), control
    results = driver.find_element(By.ID, "results")
    assert results.get_attribute("aria-live") == "polite"

    reached = []  # from the freshly loaded page's start
    for _ in controls:
        ActionChains(driver).send_keys(Keys.TAB).perform()
        reached.append(driver.switch_to.active_element.get_attribute("id"))
    assert reached == controls
    page.assert_clean()


def test_the_page_fits_a_phone_and_follows_the_dark_setting(page: Page) -> None:
    driver = page.driver
    background = "return getComputedStyle(document.body).backgroundColor"
    light = driver.execute_script(background)
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        assert driver.execute_script(background) != light
        (card,) = page.upload(CAT_PNG)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 375
        thumb = card.element.find_element(By.CSS_SELECTOR, ".thumb")
        body = card.element.find_element(By.CSS_SELECTOR, ".card-body")
        assert body.location["y"] > thumb.location["y"]  # one column: text below the image
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    page.assert_clean()
