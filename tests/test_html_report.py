"""LEADERBOARD.html: self-contained (no URL that loads anything), and working in a real headless Chromium with every
host name unresolvable: figures rendered, filters, sorting, a cell's detail, no console error."""
from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import pytest

from bench.cli import main as cli
from bench.report.screenshot import CHROMIUM, DRIVER, chrome, screenshot
from kit.synthetic_run import make_run

# what would make a page load a resource: a tag attribute naming one, a CSS url() or @import, a scheme, a script API
LOADING = [r"""<[a-z]+[^>]*\s(?:src|srcset|href|action|poster|data)\s*=\s*["']?(?!data:|#)""",
           r"url\(\s*['\"]?(?!data:|\$\{sp\.src\})", r"@import", r"(?:https?|ftp|file|wss?):", r"//cdn",
           r"\bimportScripts\b", r"\bXMLHttpRequest\b", r"\bfetch\s*\(", r"\bWebSocket\b", r"\bEventSource\b",
           r"sendBeacon", r"\.src\s*=(?!=)"]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    d = make_run(tmp_path_factory.mktemp("html") / "r", tasks=("denoise", "inpaint", "cs[m=0.1]"),
                 solvers=("aipo", "latent-lbfgs", "lasso-dct", "x-adam", "observed"), fail={("inpaint", "x-adam"): 2})
    assert cli(["report", str(d), "--no-figures"]) == 0
    return d / "LEADERBOARD.html"


def _data(html: str) -> dict:
    b64 = re.search(r'<script id="payload" type="application/octet-stream">([^<]*)</script>', html).group(1)
    return json.loads(gzip.decompress(base64.b64decode(b64)))


def test_page_loads_nothing_from_anywhere(page):
    html = page.read_text()
    for pattern in LOADING:
        hits = re.findall(r".{0,40}" + pattern + r".{0,40}", html)
        assert not hits, (pattern, hits[:3])
    assert "default-src 'none'" in html   # the browser itself refuses any load the page might attempt
    data = _data(html)
    assert all(s["src"].startswith("data:image/png;base64,") for s in data["sprites"].values())


def test_page_holds_aggregates_details_and_thumbnails(page):
    data = _data(page.read_text())
    assert len(data["rows"]) == 3 * 2 * 2 * 2      # task × prior × split × λ
    row = next(r for r in data["rows"] if r["task"] == "inpaint" and r["prior"] == "glow-xs"
               and r["split"] == "test" and r["lam"] == 0.5)
    assert row["cells"]["map_loss"]["x-adam"][2:] == [1, 2]          # n ok, failed
    assert len(data["detail"][str(row["id"])]["aipo"]) == 3           # 3 images, seed 0
    sp = data["sprites"][str(row["id"])]
    assert sp["cols"][:2] == ["clean", "doing nothing"] and sp["cols"].count("observed") == 0
    assert set(data["curves"]) == {"denoise", "inpaint", "cs[m=0.1]"}
    assert set(data["filters"]) >= {"base", "prior", "split", "lam"}


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver installed (apt-get install "
                                                       "chromium chromium-driver)")
def test_page_works_in_headless_chromium(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    drv = chrome(tmp_path / "profile")
    try:
        drv.get(page.as_uri())
        WebDriverWait(drv, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
        # every figure rendered: one canvas per chart panel (anytime + 3 data profiles + target ECDF)
        charts = drv.find_elements(By.CSS_SELECTOR, "#charts .chart")
        assert len(charts) == 5 and all(c.find_elements(By.TAG_NAME, "canvas") for c in charts)
        assert drv.execute_script("return [...document.querySelectorAll('#charts canvas')].every("
                                  "c => c.width > 100 && c.height > 100)")
        rows = lambda: drv.find_elements(By.CSS_SELECTOR, "#cells tbody tr")  # noqa: E731
        assert len(rows()) == 24
        Select(drv.find_element(By.CSS_SELECTOR, "select[data-filter=base]")).select_by_value("inpaint")
        assert len(rows()) == 8 and {r.find_element(By.TAG_NAME, "td").text for r in rows()} == {"inpaint"}
        # sorting by a solver's column orders the rows by its mean (MAP loss), and a second click reverses it
        head = drv.find_element(By.CSS_SELECTOR, "#cells th[data-key=aipo]")
        head.click()
        col = lambda: [float(c.text.split(" ")[0]) for c in  # noqa: E731
                       drv.find_elements(By.CSS_SELECTOR, "#cells tbody td[data-solver=aipo]")]
        assert col() == sorted(col()) and col() != sorted(col(), reverse=True)
        drv.find_element(By.CSS_SELECTOR, "#cells th[data-key=aipo]").click()
        assert col() == sorted(col(), reverse=True)
        # a click on a cell opens its per-image values and the reconstruction thumbnails
        drv.find_element(By.CSS_SELECTOR, "#cells tbody td[data-solver=latent-lbfgs]").click()
        detail = drv.find_element(By.ID, "detail")
        assert detail.is_displayed() and "latent-lbfgs" in detail.text
        assert len(detail.find_elements(By.CSS_SELECTOR, "table.per-image tbody tr")) == 3
        assert len(detail.find_elements(By.CSS_SELECTOR, ".tile")) >= 3 * 4
        assert detail.find_elements(By.CSS_SELECTOR, ".tile.hl")
        errors = [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        drv.quit()


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver installed")
def test_full_page_screenshot(page, tmp_path):
    """`python -m bench.report.screenshot` writes a PNG of the whole page, taller than one window."""
    w, h = screenshot(page, tmp_path / "shot.png")
    data = (tmp_path / "shot.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and w == 1400 and h > 1000
    assert not list(tmp_path.glob(".*.part.png"))
