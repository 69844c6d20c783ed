"""The review page as a person uses it: headless Chromium (Selenium + Debian's chromium-driver) opens it,
presses the keys, drags a box, filters; the test then reads labels_reviewed.csv.

Skipped where selenium, chromium or chromedriver is absent (``apt-get install chromium
chromium-driver``; .ci/run installs them).  ``LESIONPROP_REVIEW_SCREENSHOT=PATH`` saves a screenshot
of the page as it opens there (docs/images/review.png is made so).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from lesionprop.annotations import read_annotations
from test_review import write_review_world
from test_review_server import Server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
IMAGE = 256                       # slice size: the page draws it at 2 screen px per slice px


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
                 "--window-size=1280,800", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _drawn(driver) -> str:
    """``item:window`` of the slice on the main canvas once drawn (the page sets it)."""
    return driver.find_element(By.ID, "key").get_attribute("data-drawn") or ""


def _wait(driver, what, timeout: float = 30):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: what(d))


def test_review_in_a_browser_keys_drag_and_filter(browser, tmp_path):
    data, labels = write_review_world(tmp_path / "world", image_size=IMAGE)
    out = tmp_path / "review"
    server = Server(data, labels, out)
    try:
        items = server.call("/api/items")[1]
        n = len(items)
        browser.get(server.url)
        _wait(browser, lambda d: _text(d, "progress") == f"item 1 of {n} · decided 0 of {n}")
        _wait(browser, lambda d: _text(d, "file-name") == items[0]["File_name"])
        assert _text(browser, "source") == items[0]["source"] and _text(browser, "decision") == "not decided"
        _wait(browser, lambda d: _drawn(d) == f"{items[0]['id']}:soft")
        if os.environ.get("LESIONPROP_REVIEW_SCREENSHOT"):          # the page as it opens, for the docs
            browser.save_screenshot(os.environ["LESIONPROP_REVIEW_SCREENSHOT"])
        body = browser.find_element(By.TAG_NAME, "body")

        body.send_keys("a")                                                     # accept item 1
        _wait(browser, lambda d: _text(d, "progress") == f"item 2 of {n} · decided 1 of {n}")
        body.send_keys("r")                                                     # reject item 2
        _wait(browser, lambda d: _text(d, "progress") == f"item 3 of {n} · decided 2 of {n}")
        body.send_keys("n")                                                     # skip item 3
        _wait(browser, lambda d: _text(d, "progress") == f"item 4 of {n} · decided 2 of {n}")
        _wait(browser, lambda d: _text(d, "file-name") == items[3]["File_name"])

        key = browser.find_element(By.ID, "key")
        assert (key.size["width"], key.size["height"]) == (512, 512)
        # the whole page in view: Selenium's offsets are from the centre of the canvas' visible part
        assert browser.execute_script("return document.documentElement.scrollHeight <= window.innerHeight")
        # offsets from the canvas centre (256, 256): from (156, 176) to (236, 236) screen px,
        # i.e. slice px / 2, + 1 for the file frame: [79, 89, 119, 119]
        ActionChains(browser).move_to_element_with_offset(key, -100, -80).click_and_hold() \
            .move_by_offset(40, 30).move_by_offset(40, 30).release().perform()
        _wait(browser, lambda d: _text(d, "decision") == "edit (box redrawn)")
        _wait(browser, lambda d: _text(d, "progress") == f"item 4 of {n} · decided 3 of {n}")

        body.send_keys("p")                                                     # back to item 3
        _wait(browser, lambda d: _text(d, "file-name") == items[2]["File_name"])
        assert _text(browser, "decision") == "not decided"
        body.send_keys("p")
        _wait(browser, lambda d: _text(d, "decision") == "reject")
        body.send_keys("2")                                                     # lung window
        lung = browser.find_element(By.CSS_SELECTOR, "[data-window=lung]")
        _wait(browser, lambda d: "active" in lung.get_attribute("class"))
        body.send_keys("n", "n")                                                # the redrawn item again
        _wait(browser, lambda d: "→" in _text(d, "box"))
        _wait(browser, lambda d: _drawn(d) == f"{items[3]['id']}:lung")
        body.send_keys("a")                                        # keeps the redrawn box, goes on
        _wait(browser, lambda d: _text(d, "file-name") == items[4]["File_name"])
        assert _text(browser, "message").endswith("redrawn box kept")
        body.send_keys("p")
        _wait(browser, lambda d: _drawn(d) == f"{items[3]['id']}:lung")
        assert _text(browser, "decision") == "edit (box redrawn)"
        shot = tmp_path / "review.png"
        browser.save_screenshot(str(shot))
        img = cv2.imread(str(shot))
        canvas = img[key.location["y"]:key.location["y"] + 512, key.location["x"]:key.location["x"] + 512]
        # the CT slice is drawn (grey levels, not one colour) and the redrawn box in its colour (#35c7ff)
        assert cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY).std() > 20
        assert (np.abs(canvas.astype(int) - [255, 199, 53]).sum(axis=2) < 40).sum() > 100

        browser.find_element(By.CSS_SELECTOR, "#sources input[value=propagated]").click()    # mined only
        n_mined = sum(it["source"] == "mined" for it in items)
        _wait(browser, lambda d: _text(d, "progress").endswith(f"of {n_mined}"))
    finally:
        code, printed, err = server.stop(signal.SIGTERM)
    assert code == 0, err

    reviewed = read_annotations(out / "labels_reviewed.csv")
    assert len(reviewed) == len(read_annotations(labels)) - 1                  # item 2 rejected
    mined = [it for it in items if it["source"] == "mined"]
    left, undecided = reviewed.source == "mined", [mined[2], *mined[4:]]       # item 3 skipped
    assert reviewed.file_name[left].tolist() == [it["File_name"] for it in undecided]
    assert reviewed.boxes[left].tolist() == [it["box"] for it in undecided]
    got = reviewed.boxes[reviewed.source == "reviewed"]
    assert got[0].tolist() == items[0]["box"]                                   # accepted: its own box
    np.testing.assert_allclose(got[1], [79, 89, 119, 119], atol=0.6)            # redrawn by the drag
    assert re.search(rf"mined\s+{len(mined)}\s+1\s+1\s+1\s+{len(mined) - 3}\s+0\.667", printed), printed
