"""Drive the ``infosam serve`` page in headless Chromium (selenium + Debian's chromium/chromedriver).

Shared by tests/test_serve.py and scripts/serve_screenshot.py. :func:`chromium` returns ``None`` when no browser or
driver can be found, so callers can skip.
"""

from __future__ import annotations

import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) executables, or None when either is missing."""
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = next((p for p in map(shutil.which, DRIVERS) if p), None)
    return (browser, driver) if browser and driver else None


@contextmanager
def chromium(width: int = 1280, height: int = 1000):
    """A headless Chromium selenium driver (closed on exit)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError(
            "chromium and chromedriver not found (apt-get install -y chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def served(page):
    """Launch a Gradio page on a free localhost port in this process; yields its URL."""
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


def wait_for(driver, condition, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def text(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id).text


def upload(driver, url: str | None, image: Path) -> None:
    """Open ``url`` (unless None: stay on the page) and upload ``image`` through the file input."""
    from selenium.webdriver.common.by import By

    if url is not None:
        driver.get(url)
    field = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))[0]
    field.send_keys(str(image))


def click_box(driver, corners: tuple[tuple[float, float], tuple[float, float]]) -> None:
    """Click two corners on the canvas image, given as fractions (fx, fy) of its displayed size."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    for fx, fy in corners:
        before = text(driver, "status")
        image = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#canvas img"))[0]
        w, h = image.size["width"], image.size["height"]
        ActionChains(driver).move_to_element_with_offset(
            image, int((fx - 0.5) * w), int((fy - 0.5) * h)
        ).click().perform()
        wait_for(driver, lambda d, before=before: text(d, "status") != before)


def wait_for_masks(driver, n_views: int, timeout: float = 30.0) -> None:
    from selenium.webdriver.common.by import By

    wait_for(
        driver,
        lambda d: all(d.find_elements(By.CSS_SELECTOR, f"#out-{i} img") for i in range(n_views)),
        timeout,
    )


def settle(seconds: float = 0.5) -> None:
    """Let the page finish painting before a screenshot."""
    time.sleep(seconds)
