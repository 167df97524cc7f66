"""The web page in a real headless Chromium: upload a photo, read the result it shows.

Needs Debian's ``chromium`` and ``chromium-driver`` (.ci/run installs them);
selenium is pointed at /usr/bin/chromedriver so selenium-manager never downloads.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [pytest.mark.slow,  # a real browser: `make test-slow`
              pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                                 reason="needs /usr/bin/chromium and /usr/bin/chromedriver "
                                        "(apt-get install -y chromium chromium-driver)")]
pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1000,900"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    """The service on a free loopback port, in a thread of this process."""
    import uvicorn

    from maskcls.serve.app import create_app
    from maskcls.serve.service import ServeSettings

    app = create_app([tiny_run], settings=ServeSettings(threads=1))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/", app
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=opts)
    yield driver
    driver.quit()


def result_text(driver, timeout: float = 30) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.ID, "result").text.strip())
    return driver.find_element(By.ID, "result").text


def test_upload_shows_result_and_drawing(server, browser, demo_root, tmp_path):
    from fastapi.testclient import TestClient
    from selenium.webdriver.common.by import By

    url, app = server
    photo = sorted((demo_root / "eval" / "images").iterdir())[0]
    expected = TestClient(app).post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    browser.get(url)
    assert "Mask, gender and age" in browser.title + browser.page_source
    browser.find_element(By.ID, "file").send_keys(str(photo))
    text = result_text(browser)
    label = f"{expected['mask'].replace('_', ' ')} · {expected['gender']} · {expected['age']}"
    assert label in text and f"class {expected['class_id']}" in text and "whole photo" in text
    # the photo with its label was drawn on the canvas at the photo's size
    canvas = browser.execute_script(
        "const c = document.getElementById('view');"
        "const px = c.getContext('2d').getImageData(6, 6, 1, 1).data;"
        "return [c.style.display, c.width, c.height, Array.from(px)];")
    assert canvas[:3] == ["block", expected["width"], expected["height"]]
    assert canvas[3][:3] in ([27, 158, 62], [224, 138, 0], [214, 39, 40])  # the label's colour by mask state

    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    deadline = time.time() + 20
    while "not an image" not in browser.find_element(By.ID, "result").text and time.time() < deadline:
        time.sleep(0.1)
    assert "notes.txt: not an image" in browser.find_element(By.ID, "result").text
    assert "HTTP 415" in browser.find_element(By.ID, "result").text


def _wait(driver, script: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def _not_blank(png: bytes) -> int:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").resize((200, 180))
    return len(set(img.getdata()))


@pytest.mark.slow
def test_page_screenshot_shows_model_and_demo_warning(server, browser, tmp_path):
    url, _ = server
    browser.get(url)
    text = _wait(browser, "const t = document.getElementById('model').textContent;"
                          "return t.includes('tf_efficientnet_lite0') ? t : null;")
    assert "multi head" in text and "on torch" in text
    banner = browser.find_element("id", "banner")
    assert banner.is_displayed() and "drawn demo data" in banner.text
    png = browser.get_screenshot_as_png()
    (tmp_path / "page.png").write_bytes(png)
    assert _not_blank(png) > 20


@pytest.mark.slow
def test_docs_screenshot_renders_offline(server, browser, tmp_path):
    """Swagger UI renders from this server's own files: every resource the page loaded is local."""
    url, _ = server
    browser.get(url + "docs")
    title = _wait(browser, "const t = document.querySelector('.swagger-ui .info .title');"
                           "return t && t.textContent.includes('maskcls') ? t.textContent : null;")
    assert "maskcls" in title
    _wait(browser, "return document.querySelectorAll('.opblock').length >= 3;")
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert resources and all(r.startswith(url) for r in resources), resources
    png = browser.get_screenshot_as_png()
    (tmp_path / "docs.png").write_bytes(png)
    assert _not_blank(png) > 20
