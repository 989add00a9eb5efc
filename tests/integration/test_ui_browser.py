"""The page in a real browser: Debian's headless Chromium, driven by Selenium.

A real ``inference-gateway serve`` with a model repository of four models (the
built-in network under its own name, the default; ``profiled``, the same network with a
model-quality reference made by ``inference-gateway profile``; ``tench``, which always
answers "tench"; ``broken``, whose file cannot load) serves the page. The browser uploads real
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
import math
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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

from inference_gateway import cli
from inference_gateway.api.keys import add_key
from inference_gateway.config import Settings
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
from tests.photo_variants import PHOTOS, darkened, variants, write_set
from tests.servers import GatewayProcess, gateway_process
from tests.tools import unavailable

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
#: What Chromium logs for one of the page's API calls (the model list, an upload)
#: answered with an error status or not answered at all; expected for calls the test
#: makes fail on purpose, an error anywhere else.
FAILED_CALL = re.compile(
    r"/models(/[^/ ]+(?:/versions/[^/ ]+)?/predict\?top_k=\d+&quality=true)? - Failed to load "
    r"resource: "
    r"(?:the server responded with a status of (\d{3})|net::(ERR_[A-Z_]+))"
)
#: The PNG committed as the README's picture stays under this.
SCREENSHOT_MAX_BYTES = 150_000


#: The default model: the built-in network, named as `make run` serves it.
DEFAULT = "efficientnet-lite0"
#: The built-in network again, with a reference (``reference.json``) profiled from
#: `REFERENCE_IMAGES` variants of the cat photo only: its answers carry ``quality``.
PROFILED = "profiled"
REFERENCE_IMAGES = 60
CAT_PHOTO = PHOTOS.index(CAT_PNG.name)


def _write_models(root: Path) -> None:
    """The default model, `PROFILED` (without its reference yet), ``tench`` and
    ``broken`` (its only version's file is not ONNX: listed, never serving, 503)."""
    builtin = builtin_onnx()
    write_yaml_model(root, DEFAULT, {1: builtin}, BUILTIN_YAML)
    write_yaml_model(root, PROFILED, {1: builtin}, BUILTIN_YAML)
    write_yaml_model(root, "tench", {1: shifted_variant(builtin, TENCH, 50.0)}, BUILTIN_YAML)
    version = root / "broken" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"not an ONNX file")
    (root / "broken" / "labels.txt").write_text("a\nb\n")


def _model_states(url: str) -> dict[str, str]:
    models = httpx.get(f"{url}/models", timeout=5).json()["models"]
    return {m["name"]: m["state"] for m in models}


@pytest.fixture(scope="module")
def reference_set(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The images `PROFILED`'s reference is made from: JPEGs of the cat photo, cropped,
    turned and colour-jittered (tests/photo_variants.py)."""
    directory = tmp_path_factory.mktemp("reference")
    return write_set(directory, variants(REFERENCE_IMAGES, seed=1, photos=(CAT_PHOTO,)))


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, reference_set: list[Path]
) -> Iterator[GatewayProcess]:
    """A real gateway serving the default model, `PROFILED`, ``tench`` and ``broken``."""
    root = tmp_path_factory.mktemp("ui-models")
    _write_models(root)
    images = str(reference_set[0].parent)
    assert cli.main(["profile", PROFILED, "--images", images, "--repository", str(root)]) == 0
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
        expected = {DEFAULT: "READY", PROFILED: "READY", "tench": "READY", "broken": "UNAVAILABLE"}
        wait_until(lambda: _model_states(gw.url) == expected, what="the four models")
        yield gw


def _major_version(binary: str) -> str:
    """The major version a Chromium or ChromeDriver binary reports (``Chromium 156.0...``)."""
    said = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    found = re.search(r"\b(\d+)\.\d+\.\d+", said)
    return found.group(1) if found else f"unknown ({said.strip()[:80]!r})"


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    """Headless Chromium, logging the console and every network request."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail(
            "chromium and chromedriver are not installed: "
            "run scripts/ensure_tools.sh chromium chromium-driver (make test does)"
        )
    versions = {_major_version(CHROMIUM), _major_version(CHROMEDRIVER)}
    if len(versions) != 1:
        unavailable(f"chromium and chromedriver are of different releases: {versions}")
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
        unavailable(f"Chromium cannot start here: {(exc.msg or str(exc)).splitlines()[0]}")
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
    #: Each request's URL and headers, in the order sent.
    sent: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def open(self) -> Page:
        self.load()
        self.wait(lambda d: d.find_element(By.ID, "model").is_enabled(), "the model list")
        return self

    def load(self) -> Page:
        """Load the page; return once it has said what became of the model list."""
        self.driver.get(self.origin + "/")
        self.wait(
            lambda d: d.find_element(By.ID, "models-status").text != "Loading the models…",
            "what became of the model list",
        )
        return self

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)

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
                request = message["params"]["request"]
                self.requests.append(request["url"])
                headers = {name.lower(): value for name, value in request["headers"].items()}
                self.sent.append((request["url"], headers))
            elif message["method"] == "Network.responseReceived":
                headers = message["params"]["response"]["headers"]
                headers = {name.lower(): value for name, value in headers.items()}
                if "x-request-id" in headers:
                    self.answers[headers["x-request-id"]] = headers

    def drop_console(self, pattern: str) -> int:
        """Remove the console lines a test caused on purpose (matching ``pattern``);
        how many there were."""
        self.read_logs()
        kept = [e for e in self.console if not re.search(pattern, str(e["message"]))]
        dropped = len(self.console) - len(kept)
        self.console = kept
        return dropped

    def assert_clean(
        self,
        failed_uploads: tuple[int | str, ...] = (),
        failed_lists: tuple[int | str, ...] = (),
    ) -> None:
        """Nothing requested outside the gateway, no CSP violation, no console error
        but the network lines of the uploads and model lists expected to fail (their
        statuses, or Chromium's ``ERR_...`` for no answer)."""
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
        uploads: list[int | str] = []
        lists: list[int | str] = []
        for entry in self.console:
            match = FAILED_CALL.search(str(entry["message"]))
            if entry.get("source") == "network" and match:
                outcome = int(match.group(2)) if match.group(2) else match.group(3)
                (uploads if match.group(1) else lists).append(outcome)
            elif entry["level"] in ("SEVERE", "WARNING"):
                unexpected.append(entry)
        assert unexpected == []
        assert sorted(uploads, key=str) == sorted(failed_uploads, key=str)
        assert sorted(lists, key=str) == sorted(failed_lists, key=str)


def _page_of(driver: WebDriver, origin: str) -> Page:
    """The page of the server at ``origin``, not loaded yet."""
    driver.set_window_size(*WINDOW)
    driver.get_log("browser")  # drop what earlier tests left
    driver.get_log("performance")
    return Page(driver, origin)


@pytest.fixture
def page(driver: WebDriver, gateway: GatewayProcess) -> Page:
    """The page, freshly loaded; checked for outside requests and errors by each test."""
    return _page_of(driver, gateway.url).open()


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
        # As rounded to 0.1 ms: at most 0.05 apart, plus the binary fraction's error (a
        # total of 26.550 ms is shown as 26.6, 0.05000000000000071 away).
        assert shown[stage] == pytest.approx(ms, abs=0.05 + 1e-9), (stage, header)
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
        # The default model's version has no reference: nothing is said about one.
        assert card.element.find_elements(By.CSS_SELECTOR, ".quality") == []
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
    assert sorted(names) == ["broken", DEFAULT, PROFILED, "tench"]
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


# --- how typical an answer is of its version's reference (the answer's `quality`)


def _quality(url: str, path: Path) -> dict[str, Any]:
    """The ``quality`` object of `PROFILED`'s answer to the image at ``path``."""
    answer = httpx.post(
        f"{url}/models/{PROFILED}/predict",
        params={"quality": "true"},
        files={"file": (path.name, path.read_bytes())},
        timeout=WAIT_SECONDS,
    )
    assert answer.status_code == 200, answer.text
    quality: dict[str, Any] = answer.json()["quality"]
    return quality


def _typical(quality: dict[str, Any]) -> bool:
    """Whether the page should call this answer typical: every percentile in (5, 95)."""
    percentiles = [s["reference_percentile"] for s in quality["signals"].values()]
    return (
        quality["class_in_reference"]
        and not quality["low_confidence"]
        and all(5 < p < 95 for p in percentiles)
    )


def test_answers_say_how_typical_they_are_of_the_reference(
    page: Page, gateway: GatewayProcess, reference_set: list[Path], tmp_path: Path
) -> None:
    # Among the reference's own images, one the gateway finds typical in every signal
    # and one it finds less confident than the reference's 5th percentile.
    answers = {path: _quality(gateway.url, path) for path in reference_set}
    typical = next(path for path, quality in answers.items() if _typical(quality))
    unconfident = next(path for path, quality in answers.items() if quality["low_confidence"])
    # The cat photo darkened (x0.4): an underexposed camera.
    (dark,) = write_set(tmp_path / "dark", variants(1, seed=2, photos=(CAT_PHOTO,)), darkened)
    dark_luminance = _quality(gateway.url, dark)["signals"]["luminance"]["reference_percentile"]
    assert dark_luminance <= 5
    # The reference never saw a cup of coffee.
    assert _quality(gateway.url, COFFEE_PNG)["class_in_reference"] is False
    confidence = answers[unconfident]["signals"]["confidence"]["reference_percentile"]

    page.model.select_by_value(PROFILED)
    dark_card, typical_card, unconfident_card, coffee_card = page.upload(
        dark, typical, unconfident, COFFEE_PNG
    )

    caption = f"Unusual for the reference ({REFERENCE_IMAGES} images):"
    assert dark_card.text(".quality-title") == caption
    luminance = dark_card.element.find_element(By.CSS_SELECTOR, '[data-signal="luminance"]')
    assert (
        luminance.text == f"darker than {math.floor(100 - dark_luminance)}% of the reference images"
    )

    assert typical_card.text(".quality") == f"Typical of the reference ({REFERENCE_IMAGES} images)"
    assert typical_card.texts(".quality-line") == []
    assert "unusual" not in str(
        typical_card.element.find_element(By.CSS_SELECTOR, ".quality").get_attribute("class")
    )

    # Below the reference's 5th percentile of confidence: the trace is kept, and said so.
    share = math.floor(100 - confidence) if confidence <= 5 else 95
    assert unconfident_card.texts(".quality-line")[0] == (
        f"less confident than {share}% of the reference's answers: its trace is kept"
    )
    assert unconfident_card.text(".trace-kept") == "kept"

    assert coffee_card.top_label == LABELS[ESPRESSO]
    assert coffee_card.texts(".quality-line")[0] == (
        f"a class the reference never saw ({LABELS[ESPRESSO]})"
    )
    for card in (dark_card, typical_card, unconfident_card, coffee_card):
        assert f"{PROFILED} v1" in card.text(".meta")
        # Under the classes, above the waterfall.
        assert card.element.find_elements(By.CSS_SELECTOR, ".predictions + .quality + .waterfall")
    page.assert_clean()


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


# --- what goes wrong between the page and the gateway: a proxy in front of it


@dataclass(frozen=True)
class Fault:
    """What the proxy answers instead of the gateway: ``status`` with ``body``, or, with
    no status, nothing at all (the connection closes: a network error to the page)."""

    status: int | None
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"


#: A proxy's own error page: what a person behind nginx or HAProxy gets when the
#: gateway is down.
PROXY_ERROR_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
#: Not passed on by the proxy: hop-by-hop, recomputed, or its own.
_NOT_FORWARDED = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}
    | {"accept-encoding", "content-encoding", "server", "date"}
)


class FaultyProxy(ThreadingHTTPServer):
    """A reverse proxy in front of the gateway, as deployments have, which answers the
    page's model list (``models``) or predictions (``predict``) with a `Fault` when told."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.faults: dict[str, Fault] = {}
        self.client = httpx.Client(timeout=WAIT_SECONDS)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyProxy

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the browser's logs, not the proxy's."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        route = "models" if path == "/models" else "predict" if path.endswith("/predict") else ""
        fault = self.server.faults.get(route)
        if fault is None:
            headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED]
            answer = self.server.client.request(
                self.command, self.server.upstream + self.path, headers=headers, content=body
            )
            kept = [(k, v) for k, v in answer.headers.multi_items() if k not in _NOT_FORWARDED]
            self._send(answer.status_code, kept, answer.content)
        elif fault.status is None:
            self.close_connection = True  # no answer at all
        else:
            self._send(fault.status, [("Content-Type", fault.content_type)], fault.body)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def proxy(gateway: GatewayProcess) -> Iterator[FaultyProxy]:
    """The proxy in front of the module's gateway, passing everything on."""
    server = FaultyProxy(gateway.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        server.client.close()
        thread.join(timeout=WAIT_SECONDS)


@pytest.fixture
def proxied(driver: WebDriver, proxy: FaultyProxy) -> Iterator[tuple[Page, FaultyProxy]]:
    """The page through the proxy, not loaded yet (the test sets its faults first)."""
    proxy.faults.clear()
    try:
        yield _page_of(driver, proxy.url), proxy
    finally:
        proxy.faults.clear()


NOT_THE_GATEWAYS_JSON = (
    "The answer was not the gateway's JSON (text/html): something between this page and "
    "the gateway may have answered."
)


def test_model_list_errors_are_said_in_words(proxied: tuple[Page, FaultyProxy]) -> None:
    page, proxy = proxied
    said = {}
    for name, fault in {
        "error page": Fault(502, PROXY_ERROR_PAGE),
        "no answer": Fault(None),
        "200 but not JSON": Fault(200, b"<html><body>Sign in to the network</body></html>"),
    }.items():
        proxy.faults["models"] = fault
        page.load()
        said[name] = page.text("models-status")
        assert not page.driver.find_element(By.ID, "model").is_enabled(), name
    assert said == {
        "error page": f"Could not list the models: Bad Gateway (502). {NOT_THE_GATEWAYS_JSON}",
        "no answer": "Could not reach the gateway to list the models.",
        "200 but not JSON": "Could not list the models: the answer was not JSON (text/html).",
    }
    page.assert_clean(failed_lists=(502, "ERR_EMPTY_RESPONSE"))


def test_prediction_network_errors_and_non_json_answers_are_said_in_words(
    proxied: tuple[Page, FaultyProxy],
) -> None:
    page, proxy = proxied
    page.open()
    cards = {}
    for name, fault in {
        "no answer": Fault(None),
        "error page": Fault(502, PROXY_ERROR_PAGE),
        "200 but not JSON": Fault(200, b"<html><body>Sign in to the network</body></html>"),
    }.items():
        proxy.faults["predict"] = fault
        (cards[name],) = page.upload(CAT_PNG)
    shown = {
        name: (card.text(".problem-title"), card.text(".problem-detail"))
        for name, card in cards.items()
    }
    assert shown == {
        "no answer": (
            "The gateway could not be reached",
            "The request did not get an answer; check that the gateway is running.",
        ),
        "error page": ("Bad Gateway (502)", NOT_THE_GATEWAYS_JSON),
        "200 but not JSON": ("Unreadable answer (200)", NOT_THE_GATEWAYS_JSON),
    }
    for card in cards.values():
        assert "failed" in str(card.element.get_attribute("class"))
        assert not card.element.find_elements(By.CSS_SELECTOR, ".prediction")
    # The same image through the proxy once it passes the answers on again.
    proxy.faults.clear()
    (card,) = page.upload(CAT_PNG)
    assert card.top_label in {LABELS[c] for c in CAT_CLASSES}
    page.assert_clean(failed_uploads=("ERR_EMPTY_RESPONSE", 502))


#: Every continuous signal of an answer's ``quality`` (`quality.CONTINUOUS`).
SIGNALS = (
    "confidence", "margin", "entropy", "luminance", "contrast", "pixels", "aspect_ratio",
    "saturation", "sharpness", "jpeg_quality",
)  # fmt: skip
#: A quality object that leaves the ``quality`` key out of the answer altogether.
ABSENT = object()


def _faked_answer(quality: object, *, label: str = "tabby", trace: bool = True) -> Fault:
    """A prediction the way the gateway answers one, with ``quality`` as given."""
    body: dict[str, object] = {
        "model": {"name": PROFILED, "version": "1", "backend": "onnxruntime"},
        "predictions": [{"class_id": 281, "label": label, "confidence": 0.41}],
        "image": {"format": "png", "width": 451, "height": 300, "size_bytes": 4096},
        "request_id": "7f1c7a5e-3d1b-4b8e-9a55-0c1b2f3e4d5a",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736" if trace else None,
    }
    if quality is not ABSENT:
        body["quality"] = quality
    return Fault(200, json.dumps(body).encode(), "application/json")


def _quality_of(
    percentiles: dict[str, object] | object, *, seen: object = True, low: object = False
) -> dict[str, object]:
    signals = (
        {name: {"value": 1.5, "reference_percentile": p} for name, p in percentiles.items()}
        if isinstance(percentiles, dict)
        else percentiles
    )
    return {
        "reference_images": 800,
        "class_in_reference": seen,
        "low_confidence": low,
        "signals": signals,
    }


#: Faked answers, and what the page says of each: its caption and lines, or its one
#: typical line, or None for nothing at all.
FAKED_QUALITY: dict[str, tuple[Fault, str | None, list[str]]] = {
    "below": (
        _faked_answer(
            _quality_of(
                dict(zip(SIGNALS, (2.5, 0.0, 5.0, 4.0, 4.1, 2.0, 3, 0, 1, 5), strict=True)),
                seen=False,
                low=True,
            ),
            label="<b>tabby</b>",  # a label is text, never markup
        ),
        "Unusual for the reference (800 images):",
        [
            "a class the reference never saw (<b>tabby</b>)",
            "less confident than 97% of the reference's answers: its trace is kept",
            "a closer call between its top two classes than 100% of the reference's answers",
            "less spread over the classes than 95% of the reference's answers",
            "darker than 96% of the reference images",
            "lower contrast than 95% of the reference images",
            "less sharp than 99% of the reference images",
            "less colourful than 100% of the reference images",
            "more compressed than 95% of the reference images",
            "smaller than 98% of the reference images",
            "taller in proportion than 97% of the reference images",
        ],
    ),
    "above": (
        _faked_answer(
            _quality_of(
                dict(zip(SIGNALS, (99.5, 100, 95, 97, 96, 98, 99.9, 95.0, 98.2, 100), strict=True))
            )
        ),
        "Unusual for the reference (800 images):",
        [
            "more confident than 99% of the reference's answers",
            "a clearer lead over its second class than 100% of the reference's answers",
            "more spread over the classes than 95% of the reference's answers",
            "brighter than 97% of the reference images",
            "higher contrast than 96% of the reference images",
            "sharper than 98% of the reference images",
            "more colourful than 95% of the reference images",
            "less compressed than 100% of the reference images",
            "larger than 98% of the reference images",
            "wider in proportion than 99% of the reference images",
        ],
    ),
    "typical, up to the bounds": (
        _faked_answer(_quality_of(dict.fromkeys(SIGNALS, 50.0) | {"margin": 5.1, "pixels": 94.9})),
        None,
        ["Typical of the reference (800 images)"],
    ),
    "odd values": (
        _faked_answer(
            {
                "reference_images": "800",  # not a count: said without one
                "class_in_reference": "no",  # not false
                "low_confidence": 1,  # not true
                "signals": {
                    "confidence": {"value": 0.1, "reference_percentile": "4"},
                    "margin": None,
                    "entropy": [1, 2],
                    "luminance": {"value": "dark", "reference_percentile": 4.0},
                    "contrast": {"value": 1.0, "reference_percentile": -1},
                    "pixels": {"value": 1.0, "reference_percentile": 101},
                    "aspect_ratio": {},
                    "saturation": {"value": 1.0, "reference_percentile": None},
                    "sharpness": "blurred",
                    "fog": {"value": 1.0, "reference_percentile": 1.0},  # no words for it
                },
            }
        ),
        "Unusual for the reference:",
        ["darker than 96% of the reference images"],
    ),
    "low confidence by the flag, no trace": (
        _faked_answer(_quality_of({"confidence": 30.0}, low=True), trace=False),
        "Unusual for the reference (800 images):",
        ["less confident than 95% of the reference's answers"],
    ),
    "no signal to read": (_faked_answer(_quality_of([1, 2])), None, []),
    "null": (_faked_answer(None), None, []),
    "absent": (_faked_answer(ABSENT), None, []),
    "not an object": (_faked_answer("typical"), None, []),
}


def test_quality_is_said_in_words_and_odd_values_are_skipped(
    proxied: tuple[Page, FaultyProxy],
) -> None:
    page, proxy = proxied
    page.open()
    said: dict[str, tuple[str | None, list[str]]] = {}
    for name, (fault, _, _) in FAKED_QUALITY.items():
        proxy.faults["predict"] = fault
        (card,) = page.upload(CAT_PNG)
        assert "ok" in str(card.element.get_attribute("class")), name
        blocks = card.element.find_elements(By.CSS_SELECTOR, ".quality")
        if not blocks:
            said[name] = (None, [])
        elif card.element.find_elements(By.CSS_SELECTOR, ".quality-title"):
            said[name] = (card.text(".quality-title"), card.texts(".quality-line"))
        else:
            said[name] = (None, [card.text(".quality")])
    assert said == {name: (caption, lines) for name, (_, caption, lines) in FAKED_QUALITY.items()}
    # The numbers behind a line are in its title.
    proxy.faults["predict"] = FAKED_QUALITY["below"][0]
    (card,) = page.upload(CAT_PNG)
    luminance = card.element.find_element(By.CSS_SELECTOR, '[data-signal="luminance"]')
    assert luminance.get_attribute("title") == "luminance 1.5: reference percentile 4"
    page.assert_clean()


# --- the page's own state


#: Records every object URL the page makes and releases (the browser's own calls do it).
RECORD_OBJECT_URLS = """
window.__objectUrls = { created: [], revoked: [] };
const create = URL.createObjectURL.bind(URL);
const revoke = URL.revokeObjectURL.bind(URL);
URL.createObjectURL = (blob) => {
  const url = create(blob);
  window.__objectUrls.created.push(url);
  return url;
};
URL.revokeObjectURL = (url) => {
  window.__objectUrls.revoked.push(url);
  revoke(url);
};
"""
#: Whether each image URL in ``arguments[0]`` still loads (a revoked one does not). An
#: image, since the page's policy lets it load ``blob:`` images and fetch nothing else.
LOADS = """
const done = arguments[arguments.length - 1];
const loads = (url) => new Promise((resolve) => {
  const image = new Image();
  image.onload = () => resolve(true);
  image.onerror = () => resolve(false);
  image.src = url;
});
Promise.all(arguments[0].map(loads)).then(done);
"""


def test_clear_releases_every_object_url(page: Page, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"  # a thumbnail tried, then given up: its URL too
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    driver = page.driver
    driver.execute_script(RECORD_OBJECT_URLS)
    page.upload(CAT_PNG, COFFEE_PNG, corrupt)
    page.wait(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".thumb .no-preview")) == 1,
        "no preview of the corrupt file",
    )
    made = driver.execute_script("return window.__objectUrls")
    created = made["created"]
    assert len(created) == 3 and all(u.startswith(f"blob:{page.origin}/") for u in created)
    assert made["revoked"] == []
    photos = [  # in the cards' order: newest first
        img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, ".thumb img")
    ]
    assert len(photos) == 2 and set(photos) < set(created)
    assert driver.execute_async_script(LOADS, photos) == [True, True]

    driver.find_element(By.ID, "clear").click()

    assert driver.find_elements(By.CSS_SELECTOR, "#results > li") == []
    released = driver.execute_script("return window.__objectUrls.revoked")
    assert sorted(released) == sorted(created)  # the corrupt file's too
    assert driver.execute_async_script(LOADS, photos) == [False, False]
    # Loading a released URL is an error the browser logs: the test's own, one a photo.
    assert page.drop_console(r"^blob:.* - Failed to load resource: net::ERR_FILE_NOT_FOUND") == 2
    page.assert_clean(failed_uploads=(400,))


# --- a gateway at its defaults: trace sampling, the number of classes


#: The default number of classes on the second gateway: not the page's own fallback (5).
TOP_K_DEFAULT = 3


@pytest.fixture(scope="module")
def sampled_gateway() -> Iterator[GatewayProcess]:
    """The built-in model with ``TRACE_SAMPLE_RATIO`` at its default (1 trace in 100 kept
    by chance; none kept as slow: the threshold is far away) and ``TOP_K_DEFAULT=3``."""
    env = {
        "WORKERS": "1",
        "TRACE_SAMPLE_RATIO": str(Settings.model_fields["trace_sample_ratio"].default),
        "TRACE_SLOW_MS": "600000",
        "TRACE_UI_URL": TRACE_UI_URL,
        "TOP_K_DEFAULT": str(TOP_K_DEFAULT),
        "LOG_LEVEL": "WARNING",
    }
    with gateway_process(env) as gw:
        yield gw


@pytest.fixture
def sampled_page(driver: WebDriver, sampled_gateway: GatewayProcess) -> Page:
    return _page_of(driver, sampled_gateway.url).open()


def test_top_k_is_kept_within_its_bounds(sampled_page: Page) -> None:
    page = sampled_page
    top_k = page.driver.find_element(By.ID, "top-k")
    assert top_k.get_attribute("value") == str(TOP_K_DEFAULT)
    asked = {}
    for typed in ("0", "25", "-3", "", "2.6", "7"):
        top_k.clear()
        if typed:
            top_k.send_keys(typed)
        (card,) = page.upload(CAT_PNG)
        page.read_logs()
        predict_url = [url for url, _ in page.sent if "/predict?" in url][-1]
        shown = len(card.texts(".prediction"))
        query = parse_qs(urlsplit(predict_url).query)
        assert query["quality"] == ["true"]  # the page shows how typical an answer is
        asked[typed] = (query["top_k"][0], shown, top_k.get_attribute("value"))
    # Into 1..20, rounded; an empty field asks for the gateway's default, not the page's.
    assert asked == {
        "0": ("1", 1, "1"),
        "25": ("20", 20, "20"),
        "-3": ("1", 1, "1"),
        "": (str(TOP_K_DEFAULT), TOP_K_DEFAULT, str(TOP_K_DEFAULT)),
        "2.6": ("3", 3, "3"),
        "7": ("7", 7, "7"),
    }
    page.assert_clean()


def test_a_trace_not_kept_is_said_and_not_linked(sampled_page: Page) -> None:
    page = sampled_page
    outcomes = []
    # One trace in 100 is kept by chance: uploads until one is not (8 kept in a row: 1e-16).
    for _ in range(8):
        (card,) = page.upload(CAT_PNG)
        page.read_logs()
        flags = page.answers[card.text(".request-id")]["traceparent"].split("-")[3]
        trace_id = card.text(".trace-id")
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
        links = card.element.find_elements(By.CSS_SELECTOR, "a")
        if int(flags, 16) & 0x01:  # kept: linked
            assert [a.get_attribute("href") for a in links] == [
                TRACE_UI_URL.format(trace_id=trace_id)
            ]
            assert card.text(".trace-kept") == "kept"
            outcomes.append("kept")
            continue
        assert links == []  # no link to a trace the trace store never got
        assert card.element.find_element(By.CSS_SELECTOR, ".trace-id").tag_name == "code"
        assert card.text(".trace-dropped") == "not kept (sampled out)"
        outcomes.append("not kept")
        break
    assert outcomes[-1] == "not kept", outcomes
    page.assert_clean()


# --- a gateway with API keys, and a trace URL that is not http(s)


#: TRACE_UI_URL as a careless or hostile operator might set it: never a link.
SCRIPT_TRACE_URL = "javascript:alert(document.domain)//{trace_id}"


@pytest.fixture(scope="module")
def api_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A keys file with one key (as `inference-gateway keys add` writes it), and the key."""
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return path, add_key(path, "browser")


@pytest.fixture(scope="module")
def guarded_gateway(api_key: tuple[Path, str]) -> Iterator[GatewayProcess]:
    """The built-in model behind ``API_KEYS_FILE``, every trace kept, a script trace URL."""
    env = {
        "WORKERS": "1",
        "API_KEYS_FILE": str(api_key[0]),
        "TRACE_UI_URL": SCRIPT_TRACE_URL,
        "LOG_LEVEL": "WARNING",
    }
    with gateway_process(env) as gw:
        yield gw


@pytest.fixture
def guarded_page(driver: WebDriver, guarded_gateway: GatewayProcess) -> Page:
    return _page_of(driver, guarded_gateway.url).load()


def _use_key(page: Page, key: str, *, press_enter: bool = False) -> None:
    field = page.driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key + (Keys.ENTER if press_enter else ""))
    if not press_enter:
        page.driver.find_element(By.ID, "use-key").click()


#: Everywhere a page could keep something: web storage, cookies, IndexedDB, caches.
STORED = """
const done = arguments[arguments.length - 1];
const databases = indexedDB.databases ? indexedDB.databases() : Promise.resolve([]);
Promise.all([databases, caches.keys()]).then(([dbs, cacheNames]) => done({
  local: Object.keys(localStorage).map((k) => k + "=" + localStorage.getItem(k)),
  session: Object.keys(sessionStorage).map((k) => k + "=" + sessionStorage.getItem(k)),
  cookie: document.cookie,
  databases: dbs.map((d) => d.name),
  caches: cacheNames,
}));
"""


def test_a_pasted_key_lists_the_models_and_predicts_and_is_kept_nowhere(
    guarded_page: Page, api_key: tuple[Path, str]
) -> None:
    page, (_, key) = guarded_page, api_key
    driver = page.driver
    # The page says it needs a key, and where the key goes, before asking the gateway.
    assert driver.find_element(By.ID, "key").is_displayed()
    assert page.text("key-status") == "This gateway needs an API key: paste one to list its models."
    note = page.text("key-note")
    assert "this tab's memory only" in note and "sent only to this server" in note
    assert not driver.find_element(By.ID, "model").is_enabled()
    page.read_logs()
    assert not [url for url in page.requests if url.endswith("/models")]

    # An image before any key: the person is led to the key field.
    (card,) = page.upload(CAT_PNG)
    assert card.text(".problem-title") == "API key needed"
    assert driver.switch_to.active_element.get_attribute("id") == "api-key"

    # A wrong key: the gateway's 401 is said, and the focus is on the field again.
    _use_key(page, "not-" + key, press_enter=True)
    page.wait(lambda _: "refused" in page.text("key-status"), "the refused key")
    assert page.text("key-status") == (
        "The gateway refused this key (401). The API key is not valid. "
        "Paste a valid key and choose Use key."
    )
    assert driver.switch_to.active_element.get_attribute("id") == "api-key"
    assert driver.find_element(By.ID, "api-key").get_attribute("aria-invalid") == "true"

    # The key: the models are listed and an image classified with it.
    _use_key(page, key)
    page.wait(lambda d: d.find_element(By.ID, "model").is_enabled(), "the model list")
    assert page.text("key-status") == "Key in use."
    assert driver.find_element(By.ID, "api-key").get_attribute("value") == ""
    (card,) = page.upload(CAT_PNG)
    assert card.top_label in {LABELS[c] for c in CAT_CLASSES}

    # Sent as X-API-Key on the page's calls to this gateway, and in no URL.
    page.read_logs()
    api_calls = [(u, h) for u, h in page.sent if urlsplit(u).path.startswith("/models")]
    assert [h.get("x-api-key") for u, h in api_calls if "/predict" in u] == [key]
    assert [h.get("x-api-key") for u, h in api_calls if u.endswith("/models")] == [
        "not-" + key,
        key,
    ]
    assert not [url for url in page.requests if key in url]
    assert all(u.startswith(page.origin + "/models") for u, h in page.sent if "x-api-key" in h)

    # Kept nowhere: no storage, no cookie, not in the page; a reload forgets it.
    assert driver.execute_async_script(STORED) == {
        "local": [],
        "session": [],
        "cookie": "",
        "databases": [],
        "caches": [],
    }
    assert driver.execute_cdp_cmd("Network.getCookies", {"urls": [page.origin]}) == {"cookies": []}
    assert key not in driver.page_source

    # Forgotten: the next image goes without it, and its 401 leads back to the field.
    driver.find_element(By.ID, "forget-key").click()
    assert page.text("key-status") == "The key is forgotten: paste one to ask the gateway again."
    (card,) = page.upload(CAT_PNG)
    assert card.text(".problem-title") == "Authentication required (401)"
    assert page.text("key-status").startswith("The gateway needs an API key (401).")
    assert driver.switch_to.active_element.get_attribute("id") == "api-key"

    page.load()  # a new page knows no key
    assert page.text("key-status") == "This gateway needs an API key: paste one to list its models."
    page.assert_clean(failed_uploads=(401,), failed_lists=(401,))


def test_a_trace_url_that_is_not_http_is_never_a_link(
    guarded_page: Page, api_key: tuple[Path, str]
) -> None:
    page = guarded_page
    _use_key(page, api_key[1])
    page.wait(lambda d: d.find_element(By.ID, "model").is_enabled(), "the model list")
    (card,) = page.upload(CAT_PNG)
    assert re.fullmatch(r"[0-9a-f]{32}", card.text(".trace-id"))
    assert card.text(".trace-kept") == "kept"  # kept, yet not linked: the URL is a script
    assert card.element.find_element(By.CSS_SELECTOR, ".trace-id").tag_name == "code"
    hrefs = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('[href]'), (e) => e.getAttribute('href'))"
    )
    assert not [h for h in hrefs if not h.startswith("/ui/")]
    page.assert_clean()
