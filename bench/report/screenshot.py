"""A full-page PNG of a LEADERBOARD.html, taken in headless Chromium with every host name unresolvable (the page must
need nothing from a network to render).

    python -m bench.report.screenshot results/full/LEADERBOARD.html results/full/leaderboard.png

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the ``test`` extra). The browser
test of the page (tests/test_html_report.py) drives the same browser through :func:`chrome`.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from bench.core.errors import UserError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND")


def chrome(profile_dir, width: int = 1400, height: int = 1800):
    """A headless Chromium WebDriver that can resolve no host name, its console log recorded."""
    if not (CHROMIUM and DRIVER):
        raise UserError("no chromium + chromedriver installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def screenshot(page: Path, out: Path, width: int = 1400) -> tuple[int, int]:
    """Open ``page``, wait until it has rendered (``body[data-ready]``), resize the window to the page's full height
    and save a PNG to ``out``. Returns the (width, height) taken."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = Path(page).resolve()
    if not page.is_file():
        raise UserError(f"page {str(page)!r} not found")
    with tempfile.TemporaryDirectory() as profile:
        drv = chrome(profile, width)
        try:
            drv.get(page.as_uri())
            WebDriverWait(drv, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            height = int(drv.execute_script("return document.documentElement.scrollHeight"))
            drv.set_window_size(width, height)
            tmp = Path(out).with_name(f".{Path(out).stem}.part.png")
            drv.save_screenshot(str(tmp))
            tmp.replace(out)
        finally:
            drv.quit()
    return width, height


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write("usage: python -m bench.report.screenshot PAGE.html OUT.png\n")
        sys.exit(2)
    try:
        w, h = screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    print(f"{sys.argv[2]}: {w}×{h} px")
