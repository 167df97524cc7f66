"""The web page draws each face's box on the uploaded photo and on the camera stream (headless Chromium).

Chromium's fake camera (a test pattern) stands in for a webcam; the face
finder is replaced by known boxes, since neither drawn faces nor the test
pattern are faces a detector finds.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_browser import CHROMIUM, DRIVER, FLAGS, free_port, result_text

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                                 reason="needs /usr/bin/chromium and /usr/bin/chromedriver")]
pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")

BOX = [6, 10, 40, 52]  # in the pixels of whatever photo or frame is sent
CAMERA_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
RGB = {"wear": [27, 158, 62], "incorrect": [224, 138, 0], "not_wear": [214, 39, 40]}


@pytest.fixture(scope="module")
def page(tiny_run, tmp_path_factory):
    """The service (faces at ``BOX`` in every picture) on a free port and a Chromium with a fake camera."""
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as Driver

    from maskcls.serve.app import create_app
    from maskcls.serve.service import ServeSettings, Service

    service = Service.load([tiny_run], settings=ServeSettings(threads=1))
    service.finder.find = lambda img: (np.array([BOX]), np.array([0.99]))
    app = create_app(service=service)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS + CAMERA_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Driver(executable_path=str(DRIVER)), options=opts)
    yield f"http://127.0.0.1:{port}/", app, driver
    driver.quit()
    srv.should_exit = True


def canvas_px(driver, x: float, y: float) -> list:
    return driver.execute_script(
        "const c = document.getElementById('view');"
        f"return Array.from(c.getContext('2d').getImageData({x}, {y}, 1, 1).data).slice(0, 3);")


def test_upload_draws_each_face_box_and_the_mask_confidence(page, demo_root, tmp_path):
    from fastapi.testclient import TestClient
    from selenium.webdriver.common.by import By

    url, app, driver = page
    photo = sorted((demo_root / "eval" / "images").iterdir())[0]
    expected = TestClient(app).post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    face = expected["faces"][0]
    assert face["box"] == BOX
    driver.get(url)
    driver.find_element(By.ID, "file").send_keys(str(photo))
    text = result_text(driver)
    mask_pct = round(face["result"]["probabilities"]["mask"][face["result"]["mask"]] * 100)
    assert f"(mask {mask_pct}%)" in text and f"face 1 at [{', '.join(map(str, BOX))}]" in text
    time.sleep(0.5)
    w = driver.execute_script("return document.getElementById('view').width")
    scale = w / expected["width"]
    # the box's left edge, half way down, is drawn in the colour of the face's mask state
    assert canvas_px(driver, BOX[0] * scale + 0.5, (BOX[1] + BOX[3]) / 2 * scale) == RGB[face["result"]["mask"]]
    (tmp_path / "upload.png").write_bytes(driver.get_screenshot_as_png())


def test_camera_stream_gets_boxes(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, driver = page
    driver.get(url)
    driver.find_element(By.ID, "camera").click()
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "const c = document.getElementById('view'); return c.style.display === 'block' && c.width > 100;"))
    time.sleep(1.0)  # a few frames round trip
    w, vw = driver.execute_script("return [document.getElementById('view').width, "
                                  "document.getElementById('video').videoWidth]")
    scale = w / vw
    assert canvas_px(driver, BOX[0] * scale + 0.5, (BOX[1] + BOX[3]) / 2 * scale) in RGB.values()
    assert "face 1 at" in driver.find_element(By.ID, "result").text
    (tmp_path / "camera.png").write_bytes(driver.get_screenshot_as_png())
    driver.find_element(By.ID, "camera").click()  # stop
