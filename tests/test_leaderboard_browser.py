"""The built leaderboard in real headless Chromium (Debian ``chromium`` + ``chromium-driver``, via selenium).

Needs ``make browser`` (installs the two Debian packages). Screenshots go to ``tests/_screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from steerboard.leaderboard.build import build_site, run_page_name
from steerboard.leaderboard.ingest import ingest_logs
from steerboard.leaderboard.listing import load_listing_file
from steerboard.leaderboard.synthetic import (
    SYNTHETIC_LISTING,
    SyntheticRun,
    benchmark_runs,
    write_synthetic_log,
)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).parent / "_screenshots"
# Payloads that would set a sentinel global or open a dialog if any log string reached the DOM as markup.
HOSTILE_METHOD = "<script>window.__pwned=1;alert(1)</script>"
HOSTILE_TEXT = '<img src=x onerror="window.__pwned=2;alert(2)"><script>window.__pwned=3</script>'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, hostile_run) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("browser")
    listing_path = root / "listing.yaml"
    listing_path.write_text(yaml.safe_dump(SYNTHETIC_LISTING, sort_keys=False))
    listing = load_listing_file(listing_path)
    runs = benchmark_runs(3 * 12, 40)  # one model: base, prompt, an sae strength sweep, an actadd sweep
    hostile = hostile_run(HOSTILE_METHOD, HOSTILE_TEXT, n_samples=10, seed=4242, settings_key="cfg", model="model-0")
    for i, r in enumerate([*runs, hostile]):
        write_synthetic_log(r, root / "logs" / f"{i:03d}.eval")
    ingest_logs([root / "logs"], root / "r.duckdb", listing=listing, progress=False)
    out = root / "site"
    build_site(root / "r.duckdb", out, listing=listing)
    import duckdb

    con = duckdb.connect(str(root / "r.duckdb"), read_only=True)
    hostile_key = con.execute("SELECT run_key FROM runs WHERE method LIKE '<script>%'").fetchone()[0]
    con.close()
    return {
        "dir": out,
        "hostile_page": run_page_name(hostile_key),
        "n_rows": 12 + 1 + 3,
    }  # measured + hostile + reported rows with values in these columns (O'Brien et al.: clamp 0, 12, 10)


def _demo_like_runs() -> list[SyntheticRun]:
    """Rows shaped like the project's demo: a control, a prompt, an SAE sweep and preset, gated variants,
    ActAdd, DINM and DPO on three tasks, plus a short XSTest-only run (different coverage)."""
    methods: list[tuple[str, dict[str, Any]]] = [
        ("base", {}),
        ("prompt", {}),
        ("sae", {"strength": 15}),
        ("sae", {"strength": 30}),
        ("sae", {"preset": "smollm2-135m"}),
        ("sae", {"preset": "smollm2-135m", "gate": "text"}),
        ("actadd", {"coefficient": 4}),
        ("actadd", {"coefficient": 4, "gate": "text"}),
        ("dinm", {}),
        ("dpo", {"beta": 0.1}),
    ]
    runs = [
        SyntheticRun(task=t, method=m, model_args=cfg, n_samples=120, seed=100 * k + j)
        for k, (m, cfg) in enumerate(methods)
        for j, t in enumerate(("xstest", "crescendo", "mmlu"))
    ]
    runs.append(
        SyntheticRun(task="xstest", method="randdir", model_args={"alpha": 6}, n_samples=12, seed=999)
    )
    return runs


def _build(root: Path, runs: list[SyntheticRun]) -> Path:
    listing_path = root / "listing.yaml"
    listing_path.write_text(yaml.safe_dump(SYNTHETIC_LISTING, sort_keys=False))
    listing = load_listing_file(listing_path)
    for i, r in enumerate(runs):
        write_synthetic_log(r, root / "logs" / f"{i:03d}.eval")
    ingest_logs([root / "logs"], root / "r.duckdb", listing=listing, progress=False)
    build_site(root / "r.duckdb", root / "site", listing=listing)
    return root / "site"


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, site: dict[str, Any]) -> dict[str, Path]:
    """Extra sites served beside the main one: a demo-like board, and one with no control run whose only
    strength-like config is a one-point sweep."""
    demo = _build(tmp_path_factory.mktemp("demo"), _demo_like_runs())
    lone = _build(
        tmp_path_factory.mktemp("lone"),
        [
            SyntheticRun(task=t, method="sae", model_args={"strength": 8}, n_samples=10, seed=i)
            for i, t in enumerate(("xstest", "mmlu"))
        ],
    )
    return {"demo": demo, "lone": lone}


@pytest.fixture(scope="module")
def server(site: dict[str, Any], sites: dict[str, Path]) -> Iterator[str]:
    import shutil

    for name, d in sites.items():
        shutil.copytree(d, site["dir"] / name)
    handler = functools.partial(_QuietHandler, directory=str(site["dir"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("headless Chromium is missing: run `make browser` (Debian chromium + chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1440,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _severe(drv: Any) -> list[dict[str, Any]]:
    return [e for e in drv.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


def _no_alert(drv: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        _ = drv.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def _column(drv: Any, idx: int) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = drv.find_elements(By.CSS_SELECTOR, "#board tbody tr")
    return [
        r.find_elements(By.TAG_NAME, "td")[idx].get_attribute("data-sort") for r in rows if r.is_displayed()
    ]


def test_index_loads_without_console_errors_and_screenshot(
    driver: Any, server: str, site: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server + "/index.html")
    assert driver.title == "steerboard leaderboard"
    rows = driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
    assert len(rows) == site["n_rows"]
    assert driver.find_elements(By.CSS_SELECTOR, "svg circle")  # scatter rendered
    assert _severe(driver) == []
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / "leaderboard_index.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000


def test_clicking_a_header_sorts(driver: Any, server: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server + "/index.html")
    headers = driver.find_elements(By.CSS_SELECTOR, "#board thead th")
    idx = next(i for i, h in enumerate(headers) if "Refusal on unsafe" in h.text)
    before = _column(driver, idx)
    headers[idx].click()
    asc = [float(x) for x in _column(driver, idx) if x]
    assert asc == sorted(asc) and len(asc) >= 10
    assert "sort-asc" in headers[idx].get_attribute("class")
    headers[idx].click()
    desc = [float(x) for x in _column(driver, idx) if x]
    assert desc == sorted(desc, reverse=True)
    assert sorted(before, key=str) == sorted(_column(driver, idx), key=str)  # same rows, reordered
    # a text column sorts too
    method_idx = next(i for i, h in enumerate(headers) if h.text.strip() == "Method")
    headers[method_idx].click()
    names = [
        r.find_elements(By.TAG_NAME, "td")[method_idx].text.lower()
        for r in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
    ]
    assert names == sorted(names)
    assert _severe(driver) == []


def test_filter_box_filters(driver: Any, server: str, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server + "/index.html")
    box = driver.find_element(By.ID, "filter")
    box.send_keys("actadd")
    visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr") if r.is_displayed()]
    assert len(visible) == 4 and all("actadd" in r.text for r in visible)
    glance = [r for r in driver.find_elements(By.CSS_SELECTOR, "#glance tbody tr") if r.is_displayed()]
    assert len(glance) == 4 and all("actadd" in r.text for r in glance)  # one box filters both tables
    box.clear()
    box.send_keys(" ")  # clear() does not fire 'input'; whitespace-only query shows every row
    visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr") if r.is_displayed()]
    assert len(visible) == site["n_rows"]


def test_hostile_log_executes_no_script(driver: Any, server: str, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    for page in ("/index.html", "/" + site["hostile_page"]):
        driver.get(server + page)
        assert _no_alert(driver), page
        assert driver.execute_script("return typeof window.__pwned") == "undefined", page
        body = driver.execute_script("return document.body.textContent")  # text nodes only, no line wraps
        # shown as text: the model string on the run page, its method part (up to the first "/") on the board
        shown = HOSTILE_METHOD if page != "/index.html" else HOSTILE_METHOD.split("/")[0]
        assert shown in body, page
        assert not driver.find_elements(By.CSS_SELECTOR, "main img")  # the <img onerror> stayed text
    assert "<img src=x onerror=" in driver.find_element(By.TAG_NAME, "body").text
    SCREENSHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / "leaderboard_hostile_run.png"))
    assert _severe(driver) == []


def test_run_page_reads(driver: Any, server: str, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server + "/index.html")
    link = driver.find_element(By.CSS_SELECTOR, "#board tbody td.num a")
    link.click()
    assert "Settings that differ from the method's defaults" in driver.find_element(By.TAG_NAME, "body").text
    assert driver.find_elements(By.CSS_SELECTOR, ".sample")
    driver.save_screenshot(str(SCREENSHOTS / "leaderboard_run.png"))
    assert _severe(driver) == []


def _viewport(drv: Any, width: int, height: int, mobile: bool) -> None:
    drv.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


_GEOMETRY = """
const vw = window.innerWidth, vh = window.innerHeight;
const page = document.documentElement.scrollWidth;
const row = document.querySelector('#glance tbody tr');
const cells = Array.from(row.cells).slice(1, 4).map(c => c.getBoundingClientRect());
const plot = document.querySelector('svg.plot').getBoundingClientRect();
const labels = document.querySelectorAll('svg.plot text.pt-label').length;
return {vw: vw, vh: vh, page: page, cells: cells.map(r => [r.left, r.right, r.top, r.bottom]),
        plotTop: plot.top, plotLeft: plot.left, plotRight: plot.right, labels: labels};
"""


@pytest.mark.parametrize(("width", "height", "mobile"), [(1440, 900, False), (390, 844, True)])
def test_index_at_a_glance_at_both_widths(
    driver: Any, server: str, width: int, height: int, mobile: bool
) -> None:
    """First screen: every row's safety, over-refusal and capability scores with intervals; the plot near the
    top with labelled points; no sideways panning of the page."""
    from selenium.webdriver.common.by import By

    _viewport(driver, width, height, mobile)
    try:
        driver.get(server + "/demo/index.html")
        g = driver.execute_script(_GEOMETRY)
        assert g["vw"] == width and g["page"] <= width, g  # the page itself never scrolls sideways
        for left, right, _top, bottom in g["cells"]:  # the three scores of the first row, on screen
            assert 0 <= left and right <= width and bottom <= height, g
        head = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#glance thead th")][1:4]
        assert [h.split()[0] for h in head] == ["Safety", "Over-", "Capability"] or "Capa" in head[2]
        first = driver.find_elements(By.CSS_SELECTOR, "#glance tbody tr")[0].text
        assert first.count("\u2013") >= 3  # each score with its interval (low-high)
        assert "partial" not in first and "below chance" not in first
        assert g["labels"] >= 11  # one label per plotted point, drawn without hovering
        assert 0 <= g["plotLeft"] and g["plotRight"] <= width + 1, g
        if not mobile:
            assert g["plotTop"] < height, g  # the plot is on the first screen
        assert _severe(driver) == []
        SCREENSHOTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"leaderboard-{width}.png"))
        # run pages on a phone: the page does not pan; the metrics table scrolls inside its own box
        driver.get(
            server
            + "/demo/"
            + driver.find_element(By.CSS_SELECTOR, "#board tbody td.num a")
            .get_attribute("href")
            .rsplit("/", 1)[-1]
        )
        page = driver.execute_script("return document.documentElement.scrollWidth")
        assert page <= width
        box = driver.execute_script(
            "const w = document.querySelector('table.metrics').parentElement;"
            "return [getComputedStyle(w).overflowX, w.getBoundingClientRect().right];"
        )
        assert box[0] == "auto" and box[1] <= width  # the table scrolls inside its own box
        heads = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table.metrics thead th")]
        assert heads[1:8] == ["Value", "95 % CI", "Δ vs base", "Δ 95 % CI", "p", "p (Holm)", "MDE (80 % power)"]
        assert _severe(driver) == []
        driver.save_screenshot(str(SCREENSHOTS / f"leaderboard-run-{width}.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_no_control_and_one_point_sweep_site_has_no_console_errors(driver: Any, server: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server + "/lone/index.html")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#glance tbody tr")) == 1
    assert "No method has been run at several strengths yet." in driver.find_element(By.TAG_NAME, "body").text
    assert _severe(driver) == []
    driver.find_element(By.CSS_SELECTOR, "#board tbody td.num a").click()
    assert "Settings that differ from the method's defaults" in driver.find_element(By.TAG_NAME, "body").text
    assert _severe(driver) == []


def test_no_base_one_point_sweep_and_unrecorded_site_has_no_console_errors(
    driver: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A board with no base/ run, one point of a strength sweep and a log without recorded settings."""
    from selenium.webdriver.common.by import By

    root = tmp_path_factory.mktemp("nobase")
    listing_path = root / "listing.yaml"
    listing_path.write_text(yaml.safe_dump(SYNTHETIC_LISTING, sort_keys=False))
    listing = load_listing_file(listing_path)
    write_synthetic_log(SyntheticRun(task="xstest", method="sae", model_args={"strength": 4}, seed=1), root / "l" / "a.eval")
    write_synthetic_log(SyntheticRun(task="xstest", method="prompt", seed=2, precision=None), root / "l" / "b.eval")
    ingest_logs([root / "l"], root / "r.duckdb", listing=listing, progress=False)
    build_site(root / "r.duckdb", root / "site", listing=listing)
    handler = functools.partial(_QuietHandler, directory=str(root / "site"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        driver.get(base + "/index.html")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "settings not recorded" in body
        assert _severe(driver) == []
        hrefs = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#board tbody td.cfg a")]
        assert len(hrefs) == 2
        for href in hrefs:  # each row's short config links its full settings
            driver.get(href)
            text = driver.find_element(By.TAG_NAME, "body").text
            assert "Settings that differ from the method's defaults" in text and "no deltas" in text
            assert _severe(driver) == []
    finally:
        httpd.shutdown()
        httpd.server_close()
